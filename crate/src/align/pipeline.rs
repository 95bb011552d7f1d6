//! The sentence loop (Algorithm 1 of the paper): the upstream writes a sentence, the aligner
//! corrects it, the corrected sentence joins the prefix the upstream continues from.
//!
//! ```text
//! loop {                                                     // one round per sentence
//!     original  = upstream.next_sentence(query, prefix)      // stops at the sentence end
//!     corrected = aligner.correct(query, prefix, original)   // copy or rewrite
//!     emit(event); prefix += corrected
//! } until the answer ends | max_sentences | a loop repeats | the caller stops
//! ```
//!
//! The answer ends when the upstream's last sentence is copied. When the aligner rewrote it, the
//! upstream's ending was decided on text that is no longer there: it is asked to go on from the
//! corrected prefix, and ends the answer by writing nothing. After `max_rounds` the sentences
//! pass through uncorrected. The other modes are the same loop over another upstream or
//! corrector ([`run_mode`]), except the predecessor's whole-answer correction ([`whole`]).

use std::ops::ControlFlow;

use serde::Serialize;
use web_time::Instant;

use super::aligner::{Correction, Corrector, Uncorrected};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::upstream::{Posthoc, Upstream, UpstreamSentence};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The method: correct each sentence as it streams, feed the correction back.
    Stream,
    /// Correct a complete answer sentence by sentence (no upstream).
    Posthoc,
    /// The predecessor (Aligner): correct the whole answer at once.
    Aligner,
    /// No correction.
    Upstream,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stream" => Ok(Self::Stream),
            "posthoc" => Ok(Self::Posthoc),
            "aligner" => Ok(Self::Aligner),
            "upstream" => Ok(Self::Upstream),
            _ => Err(format!(
                "unknown mode '{s}' (stream, posthoc, aligner, upstream)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Correction rounds; after them the upstream's sentences pass through uncorrected.
    pub max_rounds: usize,
    pub max_sentences: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_rounds: usize::MAX,
            max_sentences: 32,
        }
    }
}

/// One round: what the upstream wrote and what the aligner made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentenceEvent {
    pub index: usize,
    /// The corrected answer before this sentence: what the upstream continued and the aligner
    /// judged the sentence against.
    #[serde(skip)]
    pub prefix: String,
    pub original: String,
    pub corrected: String,
    pub changed: bool,
    /// Whether the aligner saw this sentence (false after `max_rounds`, and in upstream mode).
    pub aligned: bool,
    pub upstream_ms: f64,
    pub aligner_ms: f64,
    /// What the upstream spent on the sentence: tokens (local), streamed chunks (remote: one
    /// token a chunk on llama.cpp, vLLM and OpenAI).
    pub upstream_tokens: usize,
    pub aligner_tokens: usize,
    /// Aligner tokens accepted from the draft in one pass (copy-speculation).
    pub accepted_tokens: usize,
}

/// Why an answer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The upstream ended the answer: its last sentence was kept, or it had nothing more.
    Finished,
    /// `max_sentences` rounds were run.
    MaxSentences,
    /// A generated sentence repeated one of the two before it: a loop, not an answer. The
    /// repeat is left out of the answer (and sends no event).
    Repeat,
    /// The caller's event handler asked to stop.
    Caller,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub text: String,
    pub events: Vec<SentenceEvent>,
    pub stop: Stop,
}

impl Answer {
    fn new() -> Self {
        Self {
            text: String::new(),
            events: Vec::new(),
            stop: Stop::Finished,
        }
    }

    /// Whether `ev` says again what one of the two sentences before it said.
    fn repeats(&self, ev: &SentenceEvent) -> bool {
        let recent = self.events.iter().rev().take(2);
        recent
            .map(|e| e.corrected.trim())
            .any(|c| c == ev.corrected.trim())
    }

    fn push(&mut self, ev: SentenceEvent) {
        self.text.push_str(&ev.corrected);
        self.events.push(ev);
    }

    fn stopped(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }
}

impl SentenceEvent {
    /// The round's event; `ms` are the upstream's and the aligner's milliseconds.
    fn new(
        index: usize,
        prefix: &str,
        s: UpstreamSentence,
        c: Correction,
        aligned: bool,
        ms: [f64; 2],
    ) -> Self {
        let corrected = with_spacing(&s.text, &c.text);
        Self {
            index,
            prefix: prefix.to_string(),
            changed: corrected != s.text,
            aligned,
            upstream_ms: ms[0],
            aligner_ms: ms[1],
            upstream_tokens: s.tokens,
            aligner_tokens: c.tokens,
            accepted_tokens: c.accepted,
            original: s.text,
            corrected,
        }
    }
}

/// Runs `f`, with the milliseconds it took.
async fn timed<T>(f: impl Future<Output = Result<T>>) -> Result<(T, f64)> {
    let t = Instant::now();
    let out = f.await?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

/// The corrected text keeps the original's surrounding whitespace (the aligner sees it trimmed):
/// a sentence that ended a line still does.
fn with_spacing(original: &str, corrected: &str) -> String {
    let lead = &original[..original.len() - original.trim_start().len()];
    let trail = &original[original.trim_end().len()..];
    format!("{lead}{}{trail}", corrected.trim())
}

/// Whether the answer ends after a round whose upstream sentence was `last`: only when that
/// sentence was copied. A rewritten last sentence lets the upstream go on from the correction.
pub fn answer_ends(last: bool, changed: bool) -> bool {
    last && !changed
}

fn check_query(query: &str) -> Result<()> {
    match query.trim().is_empty() {
        true => Err(Error::EmptyInput("the query is empty")),
        false => Ok(()),
    }
}

/// The method: one answer, sentence by sentence, each correction joining the prefix.
pub async fn run<U: Upstream, C: Corrector>(
    upstream: &mut U,
    aligner: &mut C,
    query: &str,
    config: &PipelineConfig,
    cancel: &CancelToken,
    mut on_event: impl FnMut(&SentenceEvent) -> ControlFlow<()>,
) -> Result<Answer> {
    check_query(query)?;
    let mut answer = Answer::new();
    for index in 0..config.max_sentences {
        cancel.check()?;
        let prefix = &answer.text;
        let (s, upstream_ms) = timed(upstream.next_sentence(query, prefix)).await?;
        if s.text.trim().is_empty() {
            return Ok(answer.stopped(Stop::Finished));
        }
        let aligned = index < config.max_rounds;
        let (c, aligner_ms) = match aligned {
            true => timed(aligner.correct(query, prefix, s.text.trim())).await?,
            false => timed(Uncorrected.correct(query, prefix, s.text.trim())).await?,
        };
        let last = s.last;
        let ev = SentenceEvent::new(index, prefix, s, c, aligned, [upstream_ms, aligner_ms]);
        if upstream.generates() && answer.repeats(&ev) {
            return Ok(answer.stopped(Stop::Repeat));
        }
        let ends = answer_ends(last, ev.changed).then_some(Stop::Finished);
        let caller = on_event(&ev).is_break().then_some(Stop::Caller);
        answer.push(ev);
        if let Some(stop) = ends.or(caller) {
            return Ok(answer.stopped(stop));
        }
    }
    Ok(answer.stopped(Stop::MaxSentences))
}

/// The predecessor (Aligner): the upstream's whole answer, corrected at once.
pub async fn whole<U: Upstream, C: Corrector>(
    upstream: &mut U,
    aligner: &mut C,
    query: &str,
    cancel: &CancelToken,
    mut on_event: impl FnMut(&SentenceEvent) -> ControlFlow<()>,
) -> Result<Answer> {
    check_query(query)?;
    let (text, upstream_ms) = timed(upstream.rest(query, "")).await?;
    cancel.check()?;
    let (c, aligner_ms) = timed(aligner.correct(query, "", text.trim())).await?;
    let s = UpstreamSentence {
        text,
        last: true,
        tokens: 0,
    };
    let ev = SentenceEvent::new(0, "", s, c, true, [upstream_ms, aligner_ms]);
    let caller = on_event(&ev).is_break();
    let mut answer = Answer::new();
    answer.push(ev);
    Ok(answer.stopped(if caller { Stop::Caller } else { Stop::Finished }))
}

/// Runs one answer in `mode`: the method over `upstream`; posthoc, the same loop over the given
/// `answer`'s sentences; upstream, the loop with no correction round; aligner, [`whole`].
#[allow(clippy::too_many_arguments)]
pub async fn run_mode<U: Upstream, C: Corrector>(
    mode: Mode,
    upstream: &mut U,
    aligner: &mut C,
    query: &str,
    answer: Option<&str>,
    config: &PipelineConfig,
    cancel: &CancelToken,
    on_event: impl FnMut(&SentenceEvent) -> ControlFlow<()>,
) -> Result<Answer> {
    match (mode, answer) {
        (Mode::Stream, _) => run(upstream, aligner, query, config, cancel, on_event).await,
        (Mode::Upstream, _) => {
            let config = PipelineConfig {
                max_rounds: 0,
                ..*config
            };
            run(upstream, aligner, query, &config, cancel, on_event).await
        }
        (Mode::Posthoc, Some(a)) => {
            run(
                &mut Posthoc::new(a),
                aligner,
                query,
                config,
                cancel,
                on_event,
            )
            .await
        }
        (Mode::Posthoc, None) => Err(Error::EmptyInput(
            "posthoc mode needs the answer to correct",
        )),
        (Mode::Aligner, _) => whole(upstream, aligner, query, cancel, on_event).await,
    }
}
