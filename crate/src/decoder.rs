//! The one decoding routine: prefill (reusing what the KV cache already holds), an optional
//! draft verified in one pass (copy-speculation), then one token a step, with the calculator and
//! the stop rules. `Engine::generate` streams text from it; the aligner decodes its revision with
//! the original sentence as the draft.
//!
//! Copy-speculation is lossless: a draft token is accepted only where decoding would have chosen
//! it (the calculator's token where it writes one, else the sampler's), and the first token that
//! differs is the one decoding chose there. A copied sentence costs one pass instead of one a token.
//! A `copy_margin` changes what decoding chooses, not how it is verified: while the output follows
//! the draft, the draft's token wins unless another beats it by more than the margin, in the
//! speculative pass and the token-by-token loop alike.

use std::ops::ControlFlow;

use web_time::Instant;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Readback, Sampler, SamplerConfig, Scores};
use crate::text::{Calculator, StreamDecoder};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Calculator-assisted decoding: after "expression =", the calculator writes the value.
    pub calculator: bool,
    /// How far (in logits, i.e. nats of log-probability) decoding prefers the draft: while the
    /// output still follows it, the draft's next token is taken unless the chosen token's logit
    /// beats it by more than this. 0 decodes as if there were no draft.
    pub copy_margin: f32,
    /// Verify the draft in one pass (copy-speculation) rather than a token a step; the tokens
    /// decided are the same either way.
    pub speculate: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampler: SamplerConfig::greedy(),
            calculator: false,
            copy_margin: 0.0,
            speculate: true,
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

/// What one decoding produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    /// Of `tokens`, how many were accepted from the draft in its verification pass.
    pub accepted: usize,
    /// Forward passes after the prefill (the draft's verification is one).
    pub passes: usize,
    pub stats: GenerationStats,
}

/// What decides the next token, and what has been decided.
struct Choice<'a> {
    engine: &'a Engine,
    sampler: Sampler,
    calculator: Calculator,
    /// The prompt, then the tokens decided (the repetition penalty's context).
    history: Vec<u32>,
    prompt_len: usize,
    /// The continuation decoding prefers by `copy_margin`.
    draft: &'a [u32],
    copy_margin: f32,
}

impl Choice<'_> {
    /// The tokens decided so far.
    fn out(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// Whether decoding may take another token: under `max_tokens`, or past it while the
    /// calculator finishes a value (a cut "= 9" of "= 92" would read as a wrong result).
    fn room(&self, max_tokens: usize) -> bool {
        self.out().len() < max_tokens || self.calculator.forced().is_some()
    }

    /// The draft's next token, while what has been decided still follows the draft.
    fn draft_next(&self) -> Option<u32> {
        let out = self.out();
        (self.draft.len() > out.len() && self.draft.starts_with(out)).then(|| self.draft[out.len()])
    }

    /// What to read back of the rows whose next tokens follow `gather` (the draft's tokens
    /// there): only the best candidates the sampler needs and those tokens' logits, unless the
    /// sampler needs every logit.
    fn readback(&self, gather: Vec<Option<u32>>) -> Readback {
        Readback::top(self.sampler.needs(), gather)
    }

    /// The token decoding picks after `scores`: the calculator's if it is writing a value, else
    /// the sampler's, unless the draft's token is within `copy_margin` of it.
    fn next(&mut self, scores: &Scores) -> u32 {
        if let Some(id) = self.calculator.forced() {
            return id;
        }
        let chosen = self.sampler.pick(scores, &self.history);
        match self.draft_next() {
            Some(d) if self.copy_margin > 0.0 && d != chosen => {
                let logit = |id: u32| scores.logit(id).unwrap_or(f32::NEG_INFINITY);
                if logit(d) + self.copy_margin >= logit(chosen) {
                    d
                } else {
                    chosen
                }
            }
            _ => chosen,
        }
    }

    /// Takes `id` as decided; says why decoding stops here, if it does.
    fn take(
        &mut self,
        id: u32,
        on_token: &mut impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Option<StopReason>> {
        if self.engine.tokenizer.is_stop(id) {
            return Ok(Some(StopReason::EndOfText));
        }
        self.history.push(id);
        let out = &self.history[self.prompt_len..];
        self.calculator.advance(&self.engine.tokenizer, out)?;
        Ok(on_token(id).is_break().then_some(StopReason::Caller))
    }
}

/// How a draft's verification ended.
struct Verified {
    /// The scores after the last accepted token.
    scores: Scores,
    /// The token decoding chose where the draft differs.
    differs: Option<u32>,
    stop: Option<StopReason>,
    /// Forward passes spent: one, or none when no draft token fit.
    passes: usize,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Engine {
    /// Decodes after `prompt`, reusing what `cache` already holds of it. A non-empty `draft` is
    /// verified first in one pass. `on_token` sees every decided token; `Break` stops decoding.
    pub async fn decode(
        &self,
        prompt: &[u32],
        draft: &[u32],
        opts: &GenerateOptions,
        cache: &mut KvCache,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Decoded> {
        let ctx = self.model.config.context;
        if prompt.len() >= ctx {
            return Err(Error::ContextOverflow {
                needed: prompt.len() + 1,
                max: ctx,
            });
        }
        let mut choice = Choice {
            engine: self,
            sampler: Sampler::new(opts.sampler.clone())?,
            calculator: Calculator::new(opts.calculator),
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            draft,
            copy_margin: opts.copy_margin,
        };
        let t0 = Instant::now();
        let reused = cache.common_prefix(prompt).min(prompt.len() - 1);
        let first = choice.readback(vec![draft.first().copied()]);
        let scores = self.model.prefill_scores(prompt, cache, &first).await?;
        let prefill_ms = ms(t0);
        let t1 = Instant::now();
        let v = self
            .verify(
                if opts.speculate { draft } else { &[] },
                scores,
                opts.max_tokens,
                &mut choice,
                cache,
                &mut on_token,
            )
            .await?;
        let (mut scores, mut differs, mut stop, mut passes) =
            (v.scores, v.differs, v.stop, v.passes);
        let accepted = choice.out().len();
        while stop.is_none() && choice.room(opts.max_tokens) {
            let id = differs.take().unwrap_or_else(|| choice.next(&scores));
            stop = choice.take(id, &mut on_token)?;
            if stop.is_some() || !choice.room(opts.max_tokens) || cache.len() + 1 >= ctx {
                break;
            }
            let readback = choice.readback(vec![choice.draft_next()]);
            scores = self
                .model
                .scores(&[id], cache, Logits::Last, &readback)
                .await?
                .pop()
                .ok_or(Error::EmptyInput("no tokens to run"))?;
            passes += 1;
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: choice.out().len(),
            prefill_ms,
            decode_ms: ms(t1),
            stop: stop.unwrap_or(StopReason::MaxTokens),
        };
        Ok(Decoded {
            tokens: choice.history.split_off(choice.prompt_len),
            accepted,
            passes,
            stats,
        })
    }

    /// Scores the draft (as much as fits) in one pass and accepts its tokens while decoding would
    /// have chosen them; the cache keeps only the accepted ones.
    async fn verify(
        &self,
        draft: &[u32],
        scores: Scores,
        max_tokens: usize,
        choice: &mut Choice<'_>,
        cache: &mut KvCache,
        on_token: &mut impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Verified> {
        let room = self.model.config.context.saturating_sub(cache.len());
        let draft = &draft[..draft.len().min(room).min(max_tokens)];
        let (mut differs, mut stop) = (None, None);
        if draft.is_empty() {
            return Ok(Verified {
                scores,
                differs,
                stop,
                passes: 0,
            });
        }
        let base = cache.len();
        // Row i decides the token after draft[i]: its comparison is with the draft's next one
        // (read from the whole draft: the last row's may lie past what is verified here).
        let readback = choice.readback(
            (1..=draft.len())
                .map(|i| choice.draft.get(i).copied())
                .collect(),
        );
        let mut rows = self
            .model
            .scores(draft, cache, Logits::All, &readback)
            .await?;
        for (i, &token) in draft.iter().enumerate() {
            let chosen = choice.next(if i == 0 { &scores } else { &rows[i - 1] });
            if chosen != token {
                differs = Some(chosen);
                break;
            }
            stop = choice.take(token, on_token)?;
            if stop.is_some() {
                break;
            }
        }
        let n = choice.out().len();
        cache.truncate(base + n);
        Ok(Verified {
            scores: if n == 0 {
                scores
            } else {
                rows.swap_remove(n - 1)
            },
            differs,
            stop,
            passes: 1,
        })
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
        let mut decoder = StreamDecoder::new();
        let mut failed = None;
        let d = self
            .decode(prompt, &[], opts, cache, |id| {
                match decoder.push(&self.tokenizer, id) {
                    Ok(piece) => on_text(id, &piece.unwrap_or_default()),
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })
            .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        let rest = decoder.finish(&self.tokenizer)?;
        if !rest.is_empty() {
            let _ = on_text(*d.tokens.last().unwrap_or(&0), &rest);
        }
        Ok((d.tokens, d.stats))
    }
}
