//! The tokenizer, built from the GGUF's own vocabulary and merges with the `tokenizers` crate.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::error::{Error, Result};
use crate::model::gguf::Gguf;

/// GGUF token type of control tokens (`<|im_start|>` …): matched whole, never split.
const CONTROL: u64 = 3;

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    /// Tokens that end a turn (eos, and `<|im_end|>`/`<|eot_id|>`/`<|endoftext|>` when present).
    pub stop: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("eos", &self.eos)
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model '{model}' is not supported (gpt2 byte-level BPE is)"
            )));
        }
        let tokens = tokens(g)?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges(g)?)
            .build()
            .map_err(err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(
            g.get_str("tokenizer.ggml.pre").unwrap_or("default"),
        )?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.add_special_tokens(&control_tokens(g, &tokens));
        let id = |k: &str| {
            g.get_u64(k)
                .ok()
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < tokens.len())
        };
        let eos = id("tokenizer.ggml.eos_token_id").ok_or_else(|| err("no valid eos token id"))?;
        Ok(Self {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            stop: stop_tokens(&tokens, eos),
        })
    }

    /// Encodes text; special tokens written in it (`<|im_start|>`) become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(err)?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.contains(&id)
    }
}

/// The vocabulary: token strings by id.
fn tokens(g: &Gguf) -> Result<Vec<String>> {
    g.get_array("tokenizer.ggml.tokens")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| err("a token is not a string"))
        })
        .collect()
}

/// The BPE merges, each stored as "left right".
fn merges(g: &Gguf) -> Result<Vec<(String, String)>> {
    g.get_array("tokenizer.ggml.merges")?
        .iter()
        .map(|v| {
            let s = v.as_str().ok_or_else(|| err("a merge is not a string"))?;
            let (a, b) = s
                .split_once(' ')
                .ok_or_else(|| err(format!("merge '{s}' has no space")))?;
            Ok((a.to_owned(), b.to_owned()))
        })
        .collect()
}

/// The pre-tokenizer GGUF's `tokenizer.ggml.pre` names.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    Ok(match pre {
        // SmolLM / StarCoder: every digit on its own, then GPT-2's byte-level split.
        "smollm" | "starcoder" | "refact" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ])),
        "gpt2" | "default" => byte_level,
        other => return Err(err(format!("pre-tokenizer '{other}' is not supported"))),
    })
}

/// The control tokens (`<|im_start|>` …), matched whole and never split.
fn control_tokens(g: &Gguf, tokens: &[String]) -> Vec<AddedToken> {
    let types = g.get_array("tokenizer.ggml.token_type").ok();
    tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types.and_then(|t| t.get(*i)).and_then(|v| v.as_u64()) == Some(CONTROL))
        .map(|(_, t)| AddedToken::from(t.clone(), true).normalized(false))
        .collect()
}

/// `eos` and the usual end-of-turn tokens the vocabulary has.
fn stop_tokens(tokens: &[String], eos: u32) -> Vec<u32> {
    let mut stop = vec![eos];
    for name in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>"] {
        if let Some(i) = tokens.iter().position(|t| t == name)
            && !stop.contains(&(i as u32))
        {
            stop.push(i as u32);
        }
    }
    stop
}
