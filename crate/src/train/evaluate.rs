//! Evaluation by rounds on word problems: the upstream alone, the aligner answering alone, the
//! whole-answer Aligner, and the stream aligner after 1, 2, … N correction rounds (the upstream
//! finishing uncorrected after the last).
//!
//! Decoding is greedy, so "N rounds" need not be run N times: the answer after k rounds is the
//! full run's first k sentences, then the upstream's own sentences passed through, exactly as
//! `pipeline::run` with `max_rounds = k` would produce it.
//!
//! Best of K ([`Evaluator::best_of`]) is measured apart: K runs of the loop with the upstream
//! sampled, and the answer `align::choose` keeps, beside one sample and the plain vote.

use std::ops::ControlFlow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::align::{
    Aligner, PipelineConfig, Resampled, SentenceEvent, Uncorrected, best_of, majority,
};
use crate::cancel::CancelToken;
use crate::decoder::GenerateOptions;
use crate::engine::Engine;
use crate::error::Result;
pub use crate::text::arithmetic::predicted_answer;
use crate::text::arithmetic::{claims, computations, same};
use crate::train::gsm8k::Reference;
use crate::train::synthetic::wrong_operator_records;
use crate::upstream::{LocalUpstream, Posthoc, Upstream, UpstreamSentence};

fn correct(text: &str, answer: f64) -> bool {
    predicted_answer(text).is_some_and(|p| (p - answer).abs() < 1e-6)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub correct: bool,
    pub ms: f64,
    pub text: String,
}

/// One correction round of the full stream run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub changed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    pub upstream: Outcome,
    /// The upstream alone with calculator-assisted decoding (when the aligner has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_calculator: Option<Outcome>,
    pub aligner_alone: Outcome,
    pub aligner_whole: Outcome,
    /// `stream[k - 1]`: after k correction rounds.
    pub stream: Vec<Outcome>,
    pub rounds: Vec<Round>,
}

/// Best of K on one problem: every run's answer (after all rounds; `ms` is the K runs' time
/// shared out), the one kept, and whether the plain vote's is right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampled {
    pub samples: Vec<Outcome>,
    pub chosen: usize,
    pub voted: bool,
}

/// Best of K over a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampledSummary {
    pub problems: usize,
    pub samples: usize,
    /// Accuracy of one run (the mean over the K).
    pub one_sample: f64,
    /// Of the first run alone (the greedy one: the stream aligner's answer).
    pub first_sample: f64,
    /// The answer `align::choose` keeps.
    pub chosen: f64,
    /// The answer most runs end on (self-consistency alone).
    pub voted: f64,
    /// Some run is right (what a perfect choice would reach).
    pub any: f64,
    /// The K runs' time, per problem.
    pub ms_per_problem: f64,
}

impl SampledSummary {
    pub fn new(results: &[Sampled]) -> Self {
        let n = results.len().max(1) as f64;
        let share =
            |f: &dyn Fn(&Sampled) -> bool| results.iter().filter(|r| f(r)).count() as f64 / n;
        let k = results.iter().map(|r| r.samples.len()).max().unwrap_or(0);
        let right = |r: &Sampled| r.samples.iter().filter(|o| o.correct).count() as f64;
        Self {
            problems: results.len(),
            samples: k,
            one_sample: results
                .iter()
                .map(|r| right(r) / r.samples.len().max(1) as f64)
                .sum::<f64>()
                / n,
            first_sample: share(&|r| r.samples.first().is_some_and(|o| o.correct)),
            chosen: share(&|r| r.samples.get(r.chosen).is_some_and(|o| o.correct)),
            voted: share(&|r| r.voted),
            any: share(&|r| r.samples.iter().any(|o| o.correct)),
            ms_per_problem: results
                .iter()
                .map(|r| r.samples.iter().map(|o| o.ms).sum::<f64>())
                .sum::<f64>()
                / n,
        }
    }
}

pub struct Evaluator {
    upstream: LocalUpstream,
    aligner_alone: LocalUpstream,
    aligner: Aligner,
    /// The upstream with the calculator, as a baseline for an aligner that has it.
    upstream_calculator: Option<LocalUpstream>,
    pub rounds: usize,
    pub max_sentences: usize,
    /// Best of K: the upstream that samples, and K.
    sampled: Option<(LocalUpstream, usize)>,
    /// The upstream that draws another sentence for a step whose correction does not hold up
    /// ([`Resampled`]), and how many it draws at most (0: none).
    resampler: LocalUpstream,
    tries: usize,
}

impl Evaluator {
    /// `upstream` is the base model, `aligner` the base with the adapter; greedy decoding.
    pub fn new(
        upstream: Arc<Engine>,
        aligner: Arc<Engine>,
        rounds: usize,
        max_tokens: usize,
    ) -> Self {
        let options = GenerateOptions {
            max_tokens,
            ..GenerateOptions::default()
        };
        let mut corrector = Aligner::new(aligner.clone());
        corrector.max_tokens = max_tokens;
        Self {
            resampler: LocalUpstream::new(upstream.clone(), options.clone()),
            tries: 0,
            upstream: LocalUpstream::new(upstream, options.clone()),
            aligner_alone: LocalUpstream::new(aligner, options),
            aligner: corrector,
            upstream_calculator: None,
            rounds: rounds.max(1),
            max_sentences: 8,
            sampled: None,
        }
    }

    /// The loop's runs (accuracy's and best of K's) draw up to `tries` more sentences, the
    /// upstream sampled at `temperature`, for a step whose correction does not hold up.
    pub fn with_resample(mut self, tries: usize, temperature: f32) -> Self {
        self.resampler.options.sampler.temperature = temperature;
        self.tries = tries;
        self
    }

    /// Best of `samples` runs with the upstream sampled at `temperature` ([`Self::best_of`]).
    pub fn with_best_of(mut self, samples: usize, temperature: f32) -> Self {
        let mut options = self.upstream.options.clone();
        options.sampler.temperature = temperature;
        let upstream = LocalUpstream::new(self.upstream.engine().clone(), options);
        self.sampled = Some((upstream, samples.max(1)));
        self
    }

    /// The aligner keeps an original token unless its rewrite is likelier by more than
    /// `margin` nats (`Aligner::copy_margin`).
    pub fn with_copy_margin(mut self, margin: f32) -> Self {
        self.aligner.copy_margin = margin;
        self
    }

    /// The aligner repairs a step its quantities rule out (`Aligner::repair_margin`).
    pub fn with_repair_margin(mut self, margin: Option<f32>) -> Self {
        self.aligner.repair_margin = margin;
        self
    }

    /// The aligner (answering alone and correcting) decodes with the calculator, and the
    /// upstream alone is also measured with it, so the comparison stays fair.
    pub fn with_calculator(mut self, on: bool) -> Self {
        self.aligner.calculator = on;
        self.aligner_alone.options.calculator = on;
        self.upstream_calculator = on.then(|| {
            let mut up = LocalUpstream::new(
                self.upstream.engine().clone(),
                self.upstream.options.clone(),
            );
            up.options.calculator = true;
            up
        });
        self
    }

    pub async fn problem(&mut self, question: &str, answer: f64) -> Result<ProblemResult> {
        let outcome = |text: String, ms: f64| Outcome {
            correct: correct(&text, answer),
            ms,
            text,
        };
        let t = Instant::now();
        let up = self.upstream.rest(question, "").await?;
        let upstream_ms = ms(t);
        let upstream_calculator = match &mut self.upstream_calculator {
            Some(u) => {
                let t = Instant::now();
                let text = u.rest(question, "").await?;
                Some(outcome(text, ms(t)))
            }
            None => None,
        };
        let t = Instant::now();
        let alone = self.aligner_alone.rest(question, "").await?;
        let alone_ms = ms(t);
        let t = Instant::now();
        let whole = self.aligner.correct(question, "", up.trim()).await?;
        let whole_ms = upstream_ms + ms(t);

        // The full run, remembering the time after every round.
        let config = PipelineConfig {
            max_rounds: self.rounds,
            max_sentences: self.max_sentences,
        };
        let mut at = Vec::new();
        let t = Instant::now();
        let full = crate::align::run(
            &mut self.upstream,
            &mut Resampled::new(&mut self.aligner, &mut self.resampler, self.tries),
            question,
            &config,
            &CancelToken::default(),
            |_| {
                at.push(ms(t));
                ControlFlow::Continue(())
            },
        )
        .await?;
        let full_ms = ms(t);
        let mut stream = Vec::with_capacity(self.rounds);
        for k in 1..=self.rounds {
            // With k rounds the loop would have gone on uncorrected after round k, if the full
            // run went on past it (with `rounds` rounds, it is the full run).
            let o = match full.events.get(k) {
                Some(_) if k < self.rounds => {
                    let t = Instant::now();
                    let text = self.uncorrected_after(question, &full.events[..k]).await?;
                    outcome(text, at[k - 1] + ms(t))
                }
                _ => outcome(full.text.clone(), full_ms),
            };
            stream.push(o);
        }
        let rounds = full.events.iter().filter(|e| e.aligned);
        let rounds = rounds.map(|e| Round { changed: e.changed }).collect();
        Ok(ProblemResult {
            upstream: outcome(up, upstream_ms),
            upstream_calculator,
            aligner_alone: outcome(alone, alone_ms),
            aligner_whole: outcome(whole.text, whole_ms),
            stream,
            rounds,
        })
    }
}

impl Evaluator {
    /// Best of K (set by [`Self::with_best_of`]): K runs of the loop with all its rounds, the
    /// first over the greedy upstream (the stream aligner's answer), the others over it sampled
    /// with seeds 0 … K-2; the answer kept, and the one most runs end on.
    pub async fn best_of(&mut self, question: &str, answer: f64) -> Result<Sampled> {
        let Some((sampler, samples)) = &mut self.sampled else {
            return Err(crate::error::Error::EmptyInput(
                "best of K is measured after with_best_of",
            ));
        };
        let config = PipelineConfig {
            max_rounds: self.rounds,
            max_sentences: self.max_sentences,
        };
        let t = Instant::now();
        let cancel = CancelToken::default();
        let quiet = |_: &SentenceEvent| ControlFlow::Continue(());
        let up = &mut self.upstream;
        let aligner = &mut Resampled::new(&mut self.aligner, &mut self.resampler, self.tries);
        let b = best_of(
            up, sampler, aligner, question, &config, *samples, 0, &cancel, quiet,
        );
        let b = b.await?;
        let ms = ms(t);
        let texts: Vec<&str> = b.answers.iter().map(|a| a.text.as_str()).collect();
        let voted = majority(&texts).is_some_and(|i| correct(texts[i], answer));
        Ok(Sampled {
            samples: b
                .answers
                .iter()
                .map(|a| Outcome {
                    correct: correct(&a.text, answer),
                    ms: ms / b.answers.len() as f64,
                    text: a.text.clone(),
                })
                .collect(),
            chosen: b.chosen,
            voted,
        })
    }

    /// The answer the loop gives when its rounds end after `done`: those sentences, then the
    /// upstream's own, passed through uncorrected.
    async fn uncorrected_after(
        &mut self,
        question: &str,
        done: &[SentenceEvent],
    ) -> Result<String> {
        let mut replay = Replay {
            done: done.iter().map(|e| e.corrected.clone()).collect(),
            inner: &mut self.upstream,
        };
        let config = PipelineConfig {
            max_rounds: 0,
            max_sentences: self.max_sentences,
        };
        let (cancel, none) = (CancelToken::default(), &mut Uncorrected);
        let answer = crate::align::run(&mut replay, none, question, &config, &cancel, |_| {
            ControlFlow::Continue(())
        });
        Ok(answer.await?.text)
    }

    /// Preservation: a correct answer (the reference solution) corrected post hoc, sentence by
    /// sentence. It should come out still correct, with few sentences changed.
    pub async fn preservation(
        &mut self,
        question: &str,
        solution: &str,
        answer: f64,
    ) -> Result<Preserved> {
        let config = PipelineConfig {
            max_rounds: usize::MAX,
            max_sentences: 64,
        };
        let t = Instant::now();
        let out = crate::align::run(
            &mut Posthoc::new(solution),
            &mut self.aligner,
            question,
            &config,
            &CancelToken::default(),
            |_| ControlFlow::Continue(()),
        )
        .await?;
        Ok(Preserved {
            correct: correct(&out.text, answer),
            sentences: out.events.len(),
            changed: out.events.iter().filter(|e| e.changed).count(),
            ms: ms(t),
            text: out.text,
        })
    }

    /// The operation check: one step of the reference solution done with the wrong operation
    /// (`synthetic::wrong_operator_records`, seeded by the reference) and the same step done
    /// right, each corrected once after the reference's earlier steps. The wrong one should be
    /// rewritten to the step's value, the right one left at it. None where no step has one operation
    /// another can replace.
    pub async fn operation_check(&mut self, reference: &Reference) -> Result<Option<Checked>> {
        let records =
            wrong_operator_records(std::slice::from_ref(reference), reference.index as u64);
        let [wrong, right] = &records[..] else {
            return Ok(None);
        };
        let t = Instant::now();
        let q = &reference.question;
        let fixed = self
            .aligner
            .correct(q, &wrong.prefix, &wrong.original)
            .await?
            .text;
        let kept = self
            .aligner
            .correct(q, &right.prefix, &right.original)
            .await?
            .text;
        Ok(Some(Checked {
            fixed: reaches(&fixed, &wrong.corrected),
            kept: reaches(&kept, &right.original),
            wrong: wrong.original.clone(),
            step: right.original.clone(),
            rewritten: fixed,
            kept_text: kept,
            ms: ms(t),
        }))
    }
}

/// Whether the last value `text` claims is the one `step` claims last (its result), and `text`
/// computes something: "so 78 - 38 = 40 bottles" reaches "He gives 38 away, so 78 - 38 = 40.";
/// a bare "The answer is 40." does not.
fn reaches(text: &str, step: &str) -> bool {
    let last = |s: &str| claims(s).last().map(|&(_, v)| v);
    match (last(text), last(step)) {
        (Some(got), Some(want)) => same(got, want) && !computations(text).is_empty(),
        _ => false,
    }
}

/// One reference step checked both ways ([`Evaluator::operation_check`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    /// The wrong-operation step was rewritten to the step's value.
    pub fixed: bool,
    /// The right step came back still at its value (reworded or not).
    pub kept: bool,
    pub wrong: String,
    pub step: String,
    pub rewritten: String,
    pub kept_text: String,
    pub ms: f64,
}

/// The operation check over a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    pub steps: usize,
    /// Share of wrong-operation steps rewritten to the step's value.
    pub fixed: f64,
    /// Share of right steps still at their value after correction.
    pub kept: f64,
}

impl CheckSummary {
    pub fn new(results: &[Checked]) -> Self {
        let n = results.len().max(1) as f64;
        Self {
            steps: results.len(),
            fixed: results.iter().filter(|c| c.fixed).count() as f64 / n,
            kept: results.iter().filter(|c| c.kept).count() as f64 / n,
        }
    }
}

/// A correct solution after post-hoc correction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preserved {
    /// Whether it still ends on the right answer.
    pub correct: bool,
    pub sentences: usize,
    pub changed: usize,
    pub ms: f64,
    pub text: String,
}

/// Preservation over a set: the share of correct solutions that stay correct, and of their
/// sentences the aligner changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreservationSummary {
    pub problems: usize,
    pub kept_correct: f64,
    pub sentences_changed: f64,
    /// Solutions with no sentence changed.
    pub untouched: f64,
    pub ms_per_answer: f64,
}

impl PreservationSummary {
    pub fn new(results: &[Preserved]) -> Self {
        let n = results.len().max(1) as f64;
        let sentences = results.iter().map(|p| p.sentences).sum::<usize>().max(1) as f64;
        Self {
            problems: results.len(),
            kept_correct: results.iter().filter(|p| p.correct).count() as f64 / n,
            sentences_changed: results.iter().map(|p| p.changed).sum::<usize>() as f64 / sentences,
            untouched: results.iter().filter(|p| p.changed == 0).count() as f64 / n,
            ms_per_answer: results.iter().map(|p| p.ms).sum::<f64>() / n,
        }
    }
}

/// The upstream after a run's first rounds: their sentences again, then the upstream's own.
struct Replay<'a> {
    done: std::collections::VecDeque<String>,
    inner: &'a mut LocalUpstream,
}

impl Upstream for Replay<'_> {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        match self.done.pop_front() {
            Some(text) => Ok(UpstreamSentence {
                text,
                last: false,
                tokens: 0,
            }),
            None => self.inner.next_sentence(query, prefix).await,
        }
    }

    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        self.inner.rest(query, prefix).await
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Accuracy and mean time of one mode over the problems.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeSummary {
    pub accuracy: f64,
    pub ms_per_answer: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundSummary {
    /// Problems whose answer reached this round.
    pub sentences: usize,
    pub copy_rate: f64,
    pub rewrite_rate: f64,
}

/// The table, as one JSON object (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub problems: usize,
    pub upstream: ModeSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_calculator: Option<ModeSummary>,
    pub aligner_alone: ModeSummary,
    pub aligner_whole: ModeSummary,
    /// Keyed by the number of correction rounds.
    pub stream: std::collections::BTreeMap<String, ModeSummary>,
    pub rounds: std::collections::BTreeMap<String, RoundSummary>,
}

impl Summary {
    pub fn new(results: &[ProblemResult]) -> Self {
        let n = results.len().max(1) as f64;
        let mode = |f: &dyn Fn(&ProblemResult) -> &Outcome| ModeSummary {
            accuracy: results.iter().filter(|r| f(r).correct).count() as f64 / n,
            ms_per_answer: results.iter().map(|r| f(r).ms).sum::<f64>() / n,
        };
        let upstream_calculator = (!results.is_empty()
            && results.iter().all(|r| r.upstream_calculator.is_some()))
        .then(|| mode(&|r| r.upstream_calculator.as_ref().expect("checked")));
        let rounds_n = results.iter().map(|r| r.stream.len()).max().unwrap_or(0);
        let stream = (1..=rounds_n)
            .map(|k| (k.to_string(), mode(&|r: &ProblemResult| &r.stream[k - 1])))
            .collect();
        let rounds = (1..=rounds_n)
            .map(|k| {
                let seen: Vec<&Round> =
                    results.iter().filter_map(|r| r.rounds.get(k - 1)).collect();
                let s = seen.len().max(1) as f64;
                let changed = seen.iter().filter(|r| r.changed).count() as f64;
                let summary = RoundSummary {
                    sentences: seen.len(),
                    copy_rate: (seen.len() as f64 - changed) / s,
                    rewrite_rate: changed / s,
                };
                (k.to_string(), summary)
            })
            .collect();
        Self {
            problems: results.len(),
            upstream: mode(&|r| &r.upstream),
            upstream_calculator,
            aligner_alone: mode(&|r| &r.aligner_alone),
            aligner_whole: mode(&|r| &r.aligner_whole),
            stream,
            rounds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_read_after_its_marker_else_last() {
        assert_eq!(
            predicted_answer("So 3 + 4 = 7. The answer is 7."),
            Some(7.0)
        );
        assert_eq!(
            predicted_answer("The answer is 1,250 apples, not 3."),
            Some(1250.0)
        );
        assert_eq!(predicted_answer("He has 12 - 5 = 7 left"), Some(7.0));
        assert_eq!(predicted_answer("no numbers"), None);
        assert!(correct("The answer is 42.", 42.0));
        assert!(!correct("The answer is 41.", 42.0));
    }

    #[test]
    fn best_of_is_summed_up_as_the_kept_answer_the_greedy_run_one_run_the_vote_and_any() {
        let o = |correct: bool| Outcome {
            correct,
            ms: 10.0,
            text: String::new(),
        };
        let results = [
            Sampled {
                samples: vec![o(false), o(true), o(false), o(false)],
                chosen: 1,
                voted: false,
            },
            Sampled {
                samples: vec![o(true), o(true), o(false), o(true)],
                chosen: 2,
                voted: true,
            },
        ];
        let s = SampledSummary::new(&results);
        assert_eq!((s.problems, s.samples), (2, 4));
        assert_eq!(s.chosen, 0.5, "the second kept a wrong run");
        assert_eq!(s.first_sample, 0.5);
        assert_eq!(s.one_sample, (0.25 + 0.75) / 2.0);
        assert_eq!((s.voted, s.any), (0.5, 1.0));
        assert_eq!(s.ms_per_problem, 40.0);
    }

    #[test]
    fn a_wrong_operation_is_fixed_only_by_a_computation_of_the_steps_value() {
        let step = "He gives 38 to his cousin, so 78 - 38 = 40 bottles.";
        assert!(reaches("He gives 38 away, so 78 - 38 = 40 bottles.", step));
        assert!(reaches(step, step));
        assert!(!reaches(
            "He gives 38 to his cousin, so 78 + 38 = 116 bottles.",
            step
        ));
        assert!(!reaches("The answer is 40.", step));
        assert!(!reaches("He gives some away.", step));
    }
}
