//! The aligner: copies the upstream's sentence or rewrites it.
//!
//! Copy-speculation: the aligner usually copies, so the original sentence is a draft. All its
//! tokens are scored in one forward pass; the longest prefix that greedy decoding would have
//! produced is accepted, and decoding resumes only from the first mismatch. Under greedy
//! decoding the result is the plain decoding's, token for token; a copied sentence costs one
//! pass instead of one per token. With the calculator on, a draft token is accepted only if it is
//! also what the calculator would write, so a copied "18 + 22 = 30" becomes "18 + 22 = 40".

use std::sync::Arc;

use super::prompt::AlignerPrompt;
use crate::cancel::CancelToken;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::sampler::argmax;
use crate::model::{KvCache, Logits};
use crate::text::Calculator;

#[derive(Debug, Clone, PartialEq)]
pub struct Correction {
    pub text: String,
    /// Tokens of the corrected sentence.
    pub tokens: usize,
    /// Of those, how many came from the draft in the single verification pass.
    pub accepted: usize,
    /// Forward passes spent (prompt prefill not counted).
    pub passes: usize,
}

pub struct Aligner {
    engine: Arc<Engine>,
    cache: KvCache,
    pub prompt: AlignerPrompt,
    /// Verify the original as a draft first (lossless under greedy decoding).
    pub speculate: bool,
    /// Keep the KV cache across rounds (prefill only what changed); off, every round starts cold.
    pub reuse_cache: bool,
    /// A cap on the revision's tokens (besides twice the original's plus 32).
    pub max_tokens: usize,
    /// Calculator-assisted decoding: the revision's "expression =" gets the right value, also
    /// in a sentence the aligner otherwise copies.
    pub calculator: bool,
    pub cancel: CancelToken,
}

/// What corrects a sentence: the aligner model, or (for training data) an oracle.
#[allow(async_fn_in_trait)]
pub trait Corrector {
    /// The corrected version of `original`, given the query and the corrected prefix so far.
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction>;
    /// Checked between rounds.
    fn cancel_token(&self) -> &CancelToken;
}

impl Corrector for Aligner {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        Aligner::correct(self, query, prefix, original).await
    }
    fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }
}

impl Aligner {
    pub fn new(engine: Arc<Engine>) -> Self {
        let cache = engine.model.new_cache();
        Self {
            engine,
            cache,
            prompt: AlignerPrompt::default(),
            speculate: true,
            reuse_cache: true,
            max_tokens: usize::MAX,
            calculator: false,
            cancel: CancelToken::default(),
        }
    }

    /// The corrected version of `original`, given the query and the corrected prefix so far.
    pub async fn correct(
        &mut self,
        query: &str,
        prefix: &str,
        original: &str,
    ) -> Result<Correction> {
        let e = &self.engine;
        let prompt =
            e.tokenizer
                .encode(&self.prompt.render(&e.template, query, prefix, original)?)?;
        if !self.reuse_cache {
            self.cache.truncate(0);
        }
        let original_ids = e.tokenizer.encode(original)?;
        // A revision much longer than the original is a runaway, not a correction.
        let max_tokens = (2 * original_ids.len() + 32).min(self.max_tokens);
        let draft = if self.speculate {
            original_ids
        } else {
            Vec::new()
        };
        let mut logits = e.model.prefill(&prompt, &mut self.cache).await?;
        let mut out: Vec<u32> = Vec::new();
        let mut calculator = Calculator::new(self.calculator);
        let mut passes = 0;
        if !draft.is_empty() {
            let room = e.model.config.context.saturating_sub(self.cache.len());
            let draft = &draft[..draft.len().min(room)];
            let rows = e.model.logits(draft, &mut self.cache, Logits::All).await?;
            passes += 1;
            let vocab = e.model.config.vocab;
            let row = |i: usize| &rows[i * vocab..(i + 1) * vocab];
            // Accept while greedy decoding would have produced the draft's next token.
            while out.len() < draft.len() {
                let predicted = calculator.forced().unwrap_or_else(|| {
                    argmax(if out.is_empty() {
                        &logits
                    } else {
                        row(out.len() - 1)
                    })
                });
                if predicted != draft[out.len()] {
                    break;
                }
                out.push(predicted);
                calculator.advance(&e.tokenizer, &out)?;
            }
            if !out.is_empty() {
                logits = row(out.len() - 1).to_vec();
            }
            self.cache.truncate(prompt.len() + out.len());
        }
        let accepted = out.len();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let id = calculator.forced().unwrap_or_else(|| argmax(&logits));
            if e.tokenizer.is_stop(id)
                || out.len() >= max_tokens
                || self.cache.len() + 1 >= e.model.config.context
            {
                break;
            }
            out.push(id);
            calculator.advance(&e.tokenizer, &out)?;
            logits = e.model.logits(&[id], &mut self.cache, Logits::Last).await?;
            passes += 1;
        }
        Ok(Correction {
            text: e.tokenizer.decode(&out)?,
            tokens: out.len(),
            accepted,
            passes,
        })
    }
}
