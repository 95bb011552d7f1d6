//! The local upstream: our engine. Its KV cache is kept across rounds; each round rolls back to
//! the committed prefix and prefills only what differs, then decodes until the sentence ends.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::{Upstream, UpstreamSentence};
use crate::cancel::CancelToken;
use crate::decoder::GenerateOptions;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::KvCache;
use crate::text::{Message, SentenceSplitter};

pub struct LocalUpstream {
    engine: Arc<Engine>,
    cache: KvCache,
    pub options: GenerateOptions,
    pub cancel: CancelToken,
    /// Keep the KV cache across rounds (prefill only what changed); off, every round starts cold.
    pub reuse_cache: bool,
}

impl LocalUpstream {
    pub fn new(engine: Arc<Engine>, options: GenerateOptions) -> Self {
        let cache = engine.model.new_cache();
        Self {
            engine,
            cache,
            options,
            cancel: CancelToken::default(),
            reuse_cache: true,
        }
    }

    /// A twin of this upstream that samples at `temperature`, what `align::Resampled` draws
    /// from: the same engine, options and cancel token, a KV cache of its own.
    pub fn sampling(&self, temperature: f32) -> Self {
        let mut twin = Self::new(self.engine.clone(), self.options.clone());
        twin.options.sampler.temperature = temperature;
        twin.cancel = self.cancel.clone();
        twin.reuse_cache = self.reuse_cache;
        twin
    }

    /// Token ids of the query's chat prompt continued by `prefix` in the assistant turn.
    fn prompt(&mut self, query: &str, prefix: &str) -> Result<Vec<u32>> {
        if !self.reuse_cache {
            self.cache.truncate(0);
        }
        if query.trim().is_empty() {
            return Err(Error::EmptyInput("the query is empty"));
        }
        let text = self
            .engine
            .template
            .continuation(&[Message::user(query)], prefix)?;
        self.engine.tokenizer.encode(&text)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Tokens of the KV cache reused in the last round (for tests and reports).
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }
}

impl Upstream for LocalUpstream {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        let ids = self.prompt(query, prefix)?;
        let mut splitter = SentenceSplitter::new();
        let mut end = None;
        let cancel = &self.cancel;
        let (_, stats) = self
            .engine
            .generate(&ids, &self.options, &mut self.cache, |_, piece| {
                cancel.flow()?;
                match splitter.push(piece) {
                    Some(e) => {
                        end = Some(e);
                        ControlFlow::Break(())
                    }
                    None => ControlFlow::Continue(()),
                }
            })
            .await?;
        self.cancel.check()?;
        let text = splitter.text();
        let (text, last) = match end.or_else(|| splitter.finish()) {
            // The answer went on past this sentence (or was cut by max tokens).
            Some(e) if end.is_some() => (text[..e].to_string(), false),
            Some(e) => (
                text[..e].to_string(),
                stats.stop == crate::decoder::StopReason::EndOfText,
            ),
            None => (String::new(), true),
        };
        Ok(UpstreamSentence {
            text,
            last,
            tokens: stats.generated_tokens,
        })
    }

    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        let ids = self.prompt(query, prefix)?;
        let mut out = String::new();
        let cancel = &self.cancel;
        self.engine
            .generate(&ids, &self.options, &mut self.cache, |_, piece| {
                out.push_str(piece);
                cancel.flow()
            })
            .await?;
        self.cancel.check()?;
        Ok(out)
    }

    fn reseed(&mut self, seed: u64) {
        self.options.sampler.seed = seed;
    }
}
