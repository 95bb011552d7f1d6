//! The sentence loop: the upstream writes a sentence, the aligner corrects it, the corrected
//! sentence joins the prefix the upstream continues from.
//!
//! ```text
//! loop {                                                     // one round per sentence
//!     original  = upstream.next_sentence(query, prefix)      // stops at the sentence end
//!     corrected = aligner.correct(query, prefix, original)   // copy or rewrite
//!     emit(event); prefix += corrected
//! } until the answer ends | max_sentences | a loop repeats | max_rounds (then: rest uncorrected)
//! ```
//!
//! The answer ends when the upstream's last sentence is copied. When the aligner rewrote it, the
//! upstream's ending was decided on text that is no longer there: it is asked to go on from the
//! corrected prefix, and ends the answer by writing nothing.

use std::ops::ControlFlow;

use serde::Serialize;
use web_time::Instant;

use super::aligner::Corrector;
use crate::error::{Error, Result};
use crate::text::split_sentences;
use crate::upstream::Upstream;

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

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub mode: Mode,
    /// Correction rounds; after them the upstream finishes the answer uncorrected.
    pub max_rounds: usize,
    pub max_sentences: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Stream,
            max_rounds: usize::MAX,
            max_sentences: 32,
        }
    }
}

/// One round: what the upstream wrote and what the aligner made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentenceEvent {
    pub index: usize,
    pub original: String,
    pub corrected: String,
    pub changed: bool,
    /// Whether the aligner saw this sentence (false after `max_rounds`, and in upstream mode).
    pub aligned: bool,
    pub upstream_ms: f64,
    pub aligner_ms: f64,
    pub upstream_tokens: usize,
    pub aligner_tokens: usize,
    /// Aligner tokens accepted from the draft in one pass (copy-speculation).
    pub accepted_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub text: String,
    pub events: Vec<SentenceEvent>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
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

/// Runs one answer. `answer` is the complete text to correct in posthoc mode.
pub async fn run<U: Upstream, C: Corrector>(
    upstream: &mut U,
    aligner: &mut C,
    query: &str,
    answer: Option<&str>,
    config: &PipelineConfig,
    mut on_event: impl FnMut(&SentenceEvent) -> ControlFlow<()>,
) -> Result<Answer> {
    if query.trim().is_empty() {
        return Err(Error::EmptyInput("the query is empty"));
    }
    let mut prefix = String::new();
    let mut events: Vec<SentenceEvent> = Vec::new();
    let mut emit = |ev: SentenceEvent, prefix: &mut String, events: &mut Vec<SentenceEvent>| {
        prefix.push_str(&ev.corrected);
        let flow = on_event(&ev);
        events.push(ev);
        flow
    };
    let posthoc: Vec<&str> = match (config.mode, answer) {
        (Mode::Posthoc, Some(a)) => split_sentences(a),
        (Mode::Posthoc, None) => {
            return Err(Error::EmptyInput(
                "posthoc mode needs the answer to correct",
            ));
        }
        _ => Vec::new(),
    };
    match config.mode {
        Mode::Aligner => {
            let t = Instant::now();
            let original = upstream.rest(query, "").await?;
            let upstream_ms = ms(t);
            let t = Instant::now();
            let c = aligner.correct(query, "", original.trim()).await?;
            let corrected = with_spacing(&original, &c.text);
            let ev = SentenceEvent {
                index: 0,
                changed: corrected != original,
                aligned: true,
                upstream_ms,
                aligner_ms: ms(t),
                upstream_tokens: 0,
                aligner_tokens: c.tokens,
                accepted_tokens: c.accepted,
                original,
                corrected,
            };
            let _ = emit(ev, &mut prefix, &mut events);
        }
        _ => {
            for index in 0..config.max_sentences {
                if aligner.cancel_token().is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let aligned = config.mode != Mode::Upstream && index < config.max_rounds;
                let t = Instant::now();
                let (original, last, upstream_tokens) = if config.mode == Mode::Posthoc {
                    let Some(s) = posthoc.get(index) else { break };
                    (s.to_string(), index + 1 == posthoc.len(), 0)
                } else if !aligned && config.mode == Mode::Stream {
                    // Past max_rounds: the upstream finishes the answer uncorrected.
                    (upstream.rest(query, &prefix).await?, true, 0)
                } else {
                    let s = upstream.next_sentence(query, &prefix).await?;
                    (s.text, s.last, s.tokens)
                };
                let upstream_ms = ms(t);
                if original.trim().is_empty() {
                    break;
                }
                let t = Instant::now();
                let c = if aligned {
                    Some(aligner.correct(query, &prefix, original.trim()).await?)
                } else {
                    None
                };
                let corrected = c
                    .as_ref()
                    .map_or(original.clone(), |c| with_spacing(&original, &c.text));
                let ev = SentenceEvent {
                    index,
                    changed: corrected != original,
                    aligned,
                    upstream_ms,
                    aligner_ms: if aligned { ms(t) } else { 0.0 },
                    upstream_tokens,
                    aligner_tokens: c.as_ref().map_or(0, |c| c.tokens),
                    accepted_tokens: c.as_ref().map_or(0, |c| c.accepted),
                    original,
                    corrected,
                };
                // A generated sentence repeating one of the last two is a loop, not an answer.
                let repeats = config.mode != Mode::Posthoc
                    && events
                        .iter()
                        .rev()
                        .take(2)
                        .any(|e| e.corrected.trim() == ev.corrected.trim());
                let ended = answer_ends(last, ev.changed);
                if repeats || emit(ev, &mut prefix, &mut events).is_break() || ended {
                    break;
                }
            }
        }
    }
    Ok(Answer {
        text: prefix,
        events,
    })
}
