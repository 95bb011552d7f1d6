//! The engine: model, tokenizer and chat template from one GGUF, and streaming generation.

use std::ops::ControlFlow;

use web_time::Instant;

use crate::error::{Error, Result};
use crate::model::{EngineDevice, Gguf, KvCache, Llama, Sampler, SamplerConfig};
use crate::text::{Calculator, ChatTemplate, Message, StreamDecoder, Tokenizer};

#[derive(Debug, Clone)]
pub struct Engine {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Calculator-assisted decoding: after "expression =", the calculator writes the value.
    pub calculator: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampler: SamplerConfig::greedy(),
            calculator: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-turn token.
    EndOfText,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The caller's callback asked to stop.
    Caller,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache entries were reused rather than computed again.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub stop: StopReason,
}

impl GenerationStats {
    pub fn prefill_tok_s(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / (self.prefill_ms / 1e3)
    }
    /// Decode speed: tokens after the first (which the prefill produced) over decode time.
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / (self.decode_ms / 1e3)
    }
}

impl Engine {
    pub fn from_gguf(g: &Gguf, device: &EngineDevice) -> Result<Self> {
        let model = Llama::from_gguf(g, device)?;
        let tokenizer = Tokenizer::from_gguf(g)?;
        if tokenizer.vocab_size() > model.config.vocab {
            return Err(Error::Config(format!(
                "tokenizer has {} tokens, the model {}",
                tokenizer.vocab_size(),
                model.config.vocab
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            template: ChatTemplate::from_gguf(g)?,
        })
    }

    pub fn from_bytes(bytes: Vec<u8>, device: &EngineDevice) -> Result<Self> {
        Self::from_gguf(&Gguf::parse(bytes)?, device)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &std::path::Path, device: &EngineDevice) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?, device)
    }

    /// The same base with a LoRA adapter applied: the weights are shared, not copied.
    pub fn with_adapter(&self, adapter: crate::model::Adapter) -> Result<Self> {
        Ok(Self {
            model: self.model.with_adapter(adapter)?,
            ..self.clone()
        })
    }

    /// Reads a safetensors adapter made for this engine's base and applies it.
    pub fn with_adapter_bytes(&self, bytes: &[u8]) -> Result<Self> {
        let adapter = crate::model::Adapter::from_safetensors(
            bytes,
            &self.model.config,
            &self.model.device.device,
        )?;
        self.with_adapter(adapter)
    }

    /// The token ids of a chat prompt (template applied, generation prompt added).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(Error::EmptyInput("the prompt is empty"));
        }
        self.tokenizer
            .encode(&self.template.render(messages, true)?)
    }

    /// Generates after `prompt`, reusing what `cache` already holds of it, and calls `on_text`
    /// with each piece of text as it completes; `on_text` returning `Break` stops generation.
    pub async fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        cache: &mut KvCache,
        mut on_text: impl FnMut(u32, &str) -> ControlFlow<()>,
    ) -> Result<(Vec<u32>, GenerationStats)> {
        let ctx = self.model.config.context;
        if prompt.len() >= ctx {
            return Err(Error::ContextOverflow {
                needed: prompt.len() + 1,
                max: ctx,
            });
        }
        let mut sampler = Sampler::new(opts.sampler.clone())?;
        let t0 = Instant::now();
        let reused = cache.common_prefix(prompt).min(prompt.len() - 1);
        let mut logits = self.model.prefill(prompt, cache).await?;
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut history = prompt.to_vec();
        let mut out = Vec::new();
        let mut decoder = StreamDecoder::new();
        let mut stop = StopReason::MaxTokens;
        let mut calculator = Calculator::new(opts.calculator);
        while out.len() < opts.max_tokens {
            let id = match calculator.forced() {
                Some(id) => id,
                None => sampler.sample(&logits, &history),
            };
            if self.tokenizer.is_stop(id) {
                stop = StopReason::EndOfText;
                break;
            }
            out.push(id);
            history.push(id);
            calculator.advance(&self.tokenizer, &out)?;
            let piece = decoder.push(&self.tokenizer, id)?.unwrap_or_default();
            if on_text(id, &piece).is_break() {
                stop = StopReason::Caller;
                break;
            }
            if out.len() == opts.max_tokens || cache.len() + 1 >= ctx {
                break;
            }
            logits = self
                .model
                .logits(&[id], cache, crate::model::Logits::Last)
                .await?;
        }
        let rest = decoder.finish(&self.tokenizer)?;
        if !rest.is_empty() {
            let _ = on_text(*out.last().unwrap_or(&0), &rest);
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: out.len(),
            prefill_ms,
            decode_ms: t1.elapsed().as_secs_f64() * 1e3,
            stop,
        };
        Ok((out, stats))
    }
}
