//! The aligner: copies the upstream's sentence or rewrites it.
//!
//! Copy-speculation: the aligner usually copies, so the original sentence is a draft. All its
//! tokens are scored in one forward pass; the longest prefix that greedy decoding would have
//! produced is accepted, and decoding resumes only from the first mismatch. Under greedy
//! decoding the result is the plain decoding's, token for token; a copied sentence costs one
//! pass instead of one per token (decoder.rs). With the calculator on, a draft token is accepted
//! only if it is also what the calculator would write, so a copied "18 + 22 = 30" becomes
//! "18 + 22 = 40".

use std::sync::Arc;

use super::prompt::AlignerPrompt;
use crate::cancel::CancelToken;
use crate::decoder::GenerateOptions;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{KvCache, Logits, SamplerConfig};
use crate::text::arithmetic::{
    checks_out, checks_out_with, computations, equations, implied_numbers, numbers, same,
    same_computation, stated_answer,
};
use crate::text::events::{compares, leaves_out, repeats, shares, skips};
use crate::text::quantities::{
    against_the_cue, fits_quantities, lost_part, refits, regrounds, renews,
};

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

/// The shipped copy margin: the aligner leaves a sentence that checks out ([`protected`]) only
/// where its rewrite's first differing token is more than this many nats likelier than the
/// original's. With the shipped adapter (`lora-mix-13`) it keeps 97.7% of the 263 checkable GSM8K
/// validation references correct (models/aligner/README.md).
pub const DEFAULT_COPY_MARGIN: f32 = 3.0;

/// The shipped repair margin ([`Aligner::repair_margin`]): a step its quantities rule out
/// becomes the likeliest operation that fits when the aligner scores it at most this many nats
/// below its own revision, the copy margin's size. On GSM8K training problems a wider margin
/// fixed more wrong operations, but on the validation references 10 nats turned five right steps
/// into wrong ones (one answer lost); at 3 none, and every hand-written answer it won at 10 is
/// still won (models/aligner/README.md).
pub const DEFAULT_REPAIR_MARGIN: f32 = 3.0;

/// The repair's margin for a step whose numbers it changes ([`regrounds`], [`renews`]): the
/// option must score at most this many nats below the aligner's own revision. On the GSM8K
/// validation references the aligner scored a right step's knowledge it was not given ("2 * 1000
/// = 2000 g" for 2 kg, "600 * 3" after 10 minutes) 2.7-3.0 nats above the given numbers put in
/// its place; on the hand-written set the options that were right scored 0.9 above to 1.2 below
/// its own (models/aligner/README.md).
pub const NUMBER_MARGIN: f32 = 1.5;

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
    /// How much more likely (in nats) a rewrite's first differing token must be than the
    /// original's for the aligner to leave the original (see [`DEFAULT_COPY_MARGIN`]).
    pub copy_margin: f32,
    /// The operation repair: a revision with a step its quantities rule out
    /// ([`refits`]) becomes the likeliest of the operations that fit, when the aligner finds it
    /// no more than this many nats less likely than its own (None: off).
    pub repair_margin: Option<f32>,
    pub cancel: CancelToken,
}

/// What corrects a sentence: the aligner model, or (for training data) an oracle.
#[allow(async_fn_in_trait)]
pub trait Corrector {
    /// The corrected version of `original`, given the query and the corrected prefix so far.
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction>;
}

/// The pass-through corrector: every sentence kept as it is (upstream-only answers, and the
/// sentences after the last correction round).
pub struct Uncorrected;

impl Corrector for Uncorrected {
    async fn correct(&mut self, _: &str, _: &str, original: &str) -> Result<Correction> {
        Ok(Correction {
            text: original.to_string(),
            tokens: 0,
            accepted: 0,
            passes: 0,
        })
    }
}

impl Corrector for Aligner {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        Aligner::correct(self, query, prefix, original).await
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
            copy_margin: DEFAULT_COPY_MARGIN,
            repair_margin: Some(DEFAULT_REPAIR_MARGIN),
            cancel: CancelToken::default(),
        }
    }

    /// The corrected version of `original`, given the query and the corrected prefix so far:
    /// greedy decoding of the revision, with the original as the draft.
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
        let options = GenerateOptions {
            // A revision much longer than the original is a runaway, not a correction.
            max_tokens: (2 * original_ids.len() + 32).min(self.max_tokens),
            sampler: SamplerConfig::greedy(),
            calculator: self.calculator,
            copy_margin: if protected(query, prefix, original) {
                self.copy_margin
            } else {
                0.0
            },
            speculate: self.speculate,
        };
        let cancel = &self.cancel;
        let d = e
            .decode(&prompt, &original_ids, &options, &mut self.cache, |_| {
                cancel.flow()
            })
            .await?;
        self.cancel.check()?;
        let mut out = Correction {
            text: e.tokenizer.decode(&d.tokens)?,
            tokens: d.tokens.len(),
            accepted: d.accepted,
            passes: d.passes,
        };
        if let Some(margin) = self.repair_margin {
            self.repair(&prompt, query, prefix, margin, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// The step repair ([`Self::repair_margin`]): when the revision's step does not fit its
    /// quantities, each operation that does ([`refits`]) is scored by the aligner after the
    /// same prompt, and the likeliest replaces the revision if it is within `margin` nats of it,
    /// or, when the step goes against the cue of the event it quotes, the cued operation
    /// whatever its score ([`against_the_cue`]: "9 more left, so 32 + 9" becomes "32 - 9",
    /// which the aligner scored 10-20 nats below its own sum). The rule says which operations
    /// are possible; the aligner, which one the step meant. A step that fits but computes with
    /// a number from nowhere ([`regrounds`]) or does a computation again ([`renews`]) is offered
    /// the numbers it was given instead, within the narrower [`NUMBER_MARGIN`]: a number of the
    /// step changes, not only its operation. First of all, a revision that skips the next event
    /// of a question the answer tells in order ([`skips`]) becomes that event carried out by the
    /// operation the aligner finds likeliest, whatever its own revision's score: the order says
    /// a step is missing, the aligner only which operation.
    /// So does a revision that tells a rate and a count (quoting an event or in its own words)
    /// and computes with only one of them, not per unit ([`leaves_out`]): it becomes the rate
    /// times the count carried on by the operation the aligner finds likeliest; and so does one
    /// that quotes the next event but computes with its number twice, not with the latest result
    /// ([`repeats`]): it becomes that event on the latest result; and one that tells a sharing by
    /// one who shares too and computes with the others' number ([`shares`]): it divides by the
    /// whole group; one that does a comparison with an event's number ("twice as many on
    /// Tuesday" as the 25 of Monday) on the latest result ([`compares`]): it compares first,
    /// then carries that on; and one that carries on the part a loss took, not the rest
    /// ([`lost_part`]: "sells a third of them, so 132 / 3 = 44" then "buys 15, so 44 + 15"): it
    /// carries the rest on. When none of those fits, the repairs below are asked.
    async fn repair(
        &mut self,
        prompt: &[u32],
        query: &str,
        prefix: &str,
        margin: f32,
        out: &mut Correction,
    ) -> Result<()> {
        let text = &out.text;
        let Some((options, margin)) = skips(query, prefix, text)
            .or_else(|| repeats(query, prefix, text).filter(|o| !o.is_empty()))
            .or_else(|| shares(query, prefix, text).filter(|o| !o.is_empty()))
            .or_else(|| compares(query, prefix, text).filter(|o| !o.is_empty()))
            .or_else(|| lost_part(query, prefix, text).filter(|o| !o.is_empty()))
            .or_else(|| leaves_out(query, prefix, text).filter(|o| !o.is_empty()))
            .map(|options| (options, f32::INFINITY))
            .or_else(|| {
                // Against its event's cue, a step is wrong whatever the aligner thinks of it.
                let cued = against_the_cue(query, prefix, text).filter(|o| !o.is_empty());
                cued.map(|options| (options, f32::INFINITY))
            })
            .or_else(|| refits(query, prefix, text).map(|options| (options, margin)))
            .or_else(|| {
                let mut options =
                    regrounds(query, prefix, text).or_else(|| renews(query, prefix, text))?;
                options.retain(|o| makes_progress(prefix, o));
                Some((options, margin.min(NUMBER_MARGIN)))
            })
        else {
            return Ok(());
        };
        if options.is_empty() {
            return Ok(());
        }
        let own = if margin.is_finite() {
            let Some(own) = self.log_prob(prompt, &out.text).await? else {
                return Ok(());
            };
            out.passes += 1;
            own
        } else {
            f32::NEG_INFINITY
        };
        let mut best: Option<(f32, String)> = None;
        for option in options {
            self.cancel.check()?;
            let Some(score) = self.log_prob(prompt, &option).await? else {
                continue;
            };
            out.passes += 1;
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, option));
            }
        }
        if let Some((score, text)) = best
            && score >= own - margin
        {
            out.tokens = self.engine.tokenizer.encode(&text)?.len();
            out.accepted = 0;
            out.text = text;
        }
        Ok(())
    }

    /// The aligner's log-probability of `text` as the revision after `prompt` (one pass, the
    /// prompt's cached part reused); None when it would not fit the context.
    async fn log_prob(&mut self, prompt: &[u32], text: &str) -> Result<Option<f32>> {
        let e = &self.engine;
        let revision = e.tokenizer.encode(text)?;
        let ids: Vec<u32> = prompt.iter().chain(&revision).copied().collect();
        if revision.is_empty() || ids.len() >= e.model.config.context {
            return Ok(None);
        }
        let keep = self.cache.common_prefix(&ids).min(prompt.len() - 1);
        self.cache.truncate(keep);
        let rows = e
            .model
            .logits(
                &ids[keep..],
                &mut self.cache,
                Logits::From(prompt.len() - 1 - keep),
            )
            .await?;
        let vocab = e.model.config.vocab;
        Ok(Some(
            rows.chunks_exact(vocab)
                .zip(&revision)
                .map(|(row, &id)| log_softmax_at(row, id as usize))
                .sum(),
        ))
    }
}

/// `row`'s log-softmax at `i`.
fn log_softmax_at(row: &[f32], i: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    row[i] - max - sum.ln()
}

/// Whether one of the sentence's equations does a computation the prefix hasn't done: a new
/// step, not one done again ("In 7 days, he runs 4 + 3 = 7 kilometers each day" after "4 + 3 =
/// 7 kilometers each day"). A new step may reach a number already known ("2 + 4 = 6 hours" after
/// "2 * 3 = 6 miles").
fn makes_progress(prefix: &str, sentence: &str) -> bool {
    let done = computations(prefix);
    computations(sentence)
        .iter()
        .any(|c| !done.iter().any(|d| same_computation(c, d)))
}

/// Whether the copy margin protects `original`: the opening, a step whose arithmetic checks out
/// ([`checks_out`]), is a new one ([`makes_progress`]) and fits its quantities
/// ([`fits_quantities`]), and an answer that states a number the answer has reached. Narration
/// after the opening, a false step, a step computed with a number from nowhere, a step done
/// again, an operation its quantities rule out and anything after the answer was stated get no
/// margin: the aligner was trained to rewrite them (into the next step, or to end the answer).
fn protected(query: &str, prefix: &str, original: &str) -> bool {
    if stated_answer(prefix).is_some()
        || !checks_out(original, &format!("{query}\n{prefix}"))
        || !fits_quantities(query, prefix, original)
    {
        return false;
    }
    match stated_answer(original) {
        _ if prefix.trim().is_empty() => true,
        None => makes_progress(prefix, original),
        Some(answer) => reached(prefix, original, answer),
    }
}

/// Whether `answer` is a number the answer so far or the sentence stating it has reached.
fn reached(prefix: &str, sentence: &str, answer: f64) -> bool {
    numbers(prefix)
        .into_iter()
        .chain(equations(sentence).into_iter().map(|(_, n)| n))
        .any(|n| same(n, answer))
}

/// Whether a corrected sentence holds up as the answer's next step: its arithmetic checks out
/// against the question, the numbers the question's words imply ([`implied_numbers`]: "twice",
/// "a week" of days) and the answer so far; a sentence with an equation does a new computation
/// ([`makes_progress`]) and fits the quantities it uses ([`fits_quantities`]: no rate added to
/// a count, no subtraction after a quoted gain); a stated answer is a number reached. Narration
/// holds up. What fails is what the aligner was trained to rewrite and sometimes still copies or
/// writes: a false step, a number from nowhere, a step done again, an operation its quantities
/// rule out, an answer nobody computed ([`super::Resampled`] asks the upstream for another
/// sentence then).
pub fn holds_up(query: &str, prefix: &str, sentence: &str) -> bool {
    let context = format!("{query}\n{prefix}");
    if stated_answer(prefix).is_some()
        || !checks_out_with(sentence, &context, &implied_numbers(query))
    {
        return false;
    }
    match stated_answer(sentence) {
        Some(answer) => reached(prefix, sentence, answer),
        None => {
            equations(sentence).is_empty()
                || makes_progress(prefix, sentence) && fits_quantities(query, prefix, sentence)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{holds_up, protected};

    #[test]
    fn a_step_holds_up_when_true_grounded_new_and_its_answer_reached() {
        let q = "Eva walks her dog for 25 minutes twice a day. How many minutes in a week?";
        let p = "Eva walks 25 * 2 = 50 minutes a day.";
        assert!(holds_up(q, "", "Let's solve it step by step."));
        assert!(
            holds_up(q, "", "Eva walks 25 * 2 = 50 minutes a day."),
            "twice is 2"
        );
        assert!(
            holds_up(q, p, "In a week she walks 50 * 7 = 350 minutes."),
            "a week is 7 days"
        );
        assert!(holds_up(q, p, "That is a lot of walking."), "narration");
        assert!(holds_up(
            &format!("{q} "),
            &format!("{p} 50 * 7 = 350."),
            "The answer is 350."
        ));
        assert!(
            !holds_up(q, "", "She walks 25 * 24 = 600 minutes."),
            "24 from nowhere"
        );
        assert!(!holds_up(q, p, "She walks 50 * 7 = 340 minutes."), "false");
        assert!(
            !holds_up(q, p, "She walks 50 minutes a day, so 50 + 25 = 75 minutes."),
            "a rate added to a count"
        );
        assert!(
            !holds_up(q, p, "So 25 * 2 = 50 minutes each day."),
            "done again"
        );
        assert!(!holds_up(q, p, "The answer is 340."), "nobody computed 340");
        assert!(
            !holds_up(q, &format!("{p} The answer is 50."), "Then 50 * 7 = 350."),
            "after the answer"
        );
    }

    #[test]
    fn the_margin_protects_the_opening_true_steps_and_an_answer_already_reached() {
        let q = "Mia has 12 apples. She buys 5 more and then gives away 3.";
        let p = "Mia has 12 apples. She buys 5, so 12 + 5 = 17 apples.";
        assert!(
            protected(q, "", "Let's solve it step by step."),
            "the opening"
        );
        assert!(protected(q, p, "She gives away 3, so 17 - 3 = 14 apples."));
        assert!(
            !protected(q, p, "Then she has 12 + 5 = 17 apples."),
            "a step done again"
        );
        assert!(
            protected(q, p, "She eats 5, so 17 - 5 = 12 apples."),
            "a new step, though it reaches a known number"
        );
        assert!(protected(q, p, "The answer is 17."), "states a result");
        assert!(
            protected(q, p, "The answer is 12."),
            "a number the answer reached (the smaller of two compared, say)"
        );
        assert!(
            !protected(q, p, "The answer is 14."),
            "a result nobody computed"
        );
        assert!(
            !protected(q, p, "Let's think about what she does next."),
            "later narration"
        );
        assert!(
            !protected(q, p, "She gives away 3, so 17 - 3 = 15 apples."),
            "false"
        );
        assert!(
            !protected(q, p, "She doubles them: 17 * 2 = 34."),
            "2 from nowhere"
        );
        assert!(
            !protected(q, p, "She gives away 3, so 17 + 3 = 20 apples."),
            "a loss added"
        );
        assert!(!protected(q, "", "So 12 + 5 = 18."), "a false opening");
        assert!(
            !protected(
                q,
                &format!("{p} So 17 - 3 = 14. The answer is 14."),
                "So 12 + 5 = 17."
            ),
            "after the answer"
        );
    }
}
