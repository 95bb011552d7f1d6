//! Best of K: the sentence loop run K times, first with the upstream as it is (greedy: the
//! method's own answer), then K - 1 times with it sampled (each run its own seed), and one
//! answer chosen among them.
//!
//! The choice reads only the answers: first how many of the question's numbers an answer's
//! steps compute with ([`coverage`]: a solution that leaves a given quantity unused, or works
//! with one it invented, is suspect), then whether every step fits the quantities it uses
//! ([`fits`]: no rate added to a count, no subtraction after a quoted gain), then how many
//! answers end on the same number (the vote of self-consistency), then the earlier sample. An
//! answer that ends on no number comes last.
//! The chosen answer's events are sent once all K are done; the loop of each run is the method's,
//! unchanged.

use std::cmp::Ordering;
use std::ops::ControlFlow;

use super::aligner::Corrector;
use super::pipeline::{Answer, PipelineConfig, SentenceEvent, run};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::text::arithmetic::{computations, numbers, predicted_answer, same};
use crate::text::quantities::fits_quantities;
use crate::text::split_sentences;
use crate::upstream::Upstream;

/// K answers to one query and the one chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct BestOf {
    pub answers: Vec<Answer>,
    pub chosen: usize,
}

impl BestOf {
    pub fn answer(&self) -> &Answer {
        &self.answers[self.chosen]
    }
}

/// The share of the question's distinct numbers that the answer's equations compute with (1
/// when the question has none).
pub fn coverage(question: &str, answer: &str) -> f64 {
    let mut given: Vec<f64> = Vec::new();
    for n in numbers(question) {
        if !given.iter().any(|&g| same(g, n)) {
            given.push(n);
        }
    }
    if given.is_empty() {
        return 1.0;
    }
    let operands: Vec<f64> = computations(answer)
        .into_iter()
        .flat_map(|(operands, _)| operands)
        .collect();
    let used = given
        .iter()
        .filter(|&&g| operands.iter().any(|&o| same(o, g)))
        .count();
    used as f64 / given.len() as f64
}

/// Whether every sentence of an answer fits the quantities it uses, after the ones before it
/// ([`fits_quantities`]).
pub fn fits(question: &str, answer: &str) -> bool {
    let mut prefix = String::new();
    split_sentences(answer).into_iter().all(|s| {
        let ok = fits_quantities(question, &prefix, s);
        prefix.push_str(s);
        ok
    })
}

/// How many of `answers` end on the same number as each one (0 for one that ends on none).
fn votes(answers: &[&str]) -> Vec<usize> {
    let finals: Vec<Option<f64>> = answers.iter().map(|a| predicted_answer(a)).collect();
    let agree = |v: f64| finals.iter().flatten().filter(|&&w| same(v, w)).count();
    finals.iter().map(|f| f.map_or(0, agree)).collect()
}

/// The first index of `0..n` whose key is the greatest.
fn first_best<K>(
    n: usize,
    key: impl Fn(usize) -> K,
    cmp: impl Fn(&K, &K) -> Ordering,
) -> Option<usize> {
    // `max_by` keeps the last of equals: walk the indices backwards.
    (0..n).rev().max_by(|&a, &b| cmp(&key(a), &key(b)))
}

/// The index of the answer to keep among `answers` to `question` (see the module's order);
/// `None` when there are none.
pub fn choose(question: &str, answers: &[&str]) -> Option<usize> {
    let votes = votes(answers);
    // Each answer's key once: the comparisons of `first_best` would read it again and again.
    let keys: Vec<_> = answers
        .iter()
        .zip(&votes)
        .map(|(a, &v)| (v > 0, coverage(question, a), fits(question, a), v))
        .collect();
    first_best(
        answers.len(),
        |i| keys[i],
        |x, y| {
            x.0.cmp(&y.0)
                .then(x.1.total_cmp(&y.1))
                .then(x.2.cmp(&y.2))
                .then(x.3.cmp(&y.3))
        },
    )
}

/// Self-consistency alone: the first of the answers that most answers agree with.
pub fn majority(answers: &[&str]) -> Option<usize> {
    let votes = votes(answers);
    first_best(answers.len(), |i| votes[i], Ord::cmp)
}

/// Runs the loop `samples` times, once over `upstream`, then over `sampler` reseeded with `seed`,
/// `seed + 1`, … (its sampling settings decide how different the runs are), and chooses one
/// answer. Its events go to `on_event` at the end; `Break` there ends the sending, not the
/// answer.
#[allow(clippy::too_many_arguments)]
pub async fn best_of<U: Upstream, S: Upstream, C: Corrector>(
    upstream: &mut U,
    sampler: &mut S,
    aligner: &mut C,
    query: &str,
    config: &PipelineConfig,
    samples: usize,
    seed: u64,
    cancel: &CancelToken,
    mut on_event: impl FnMut(&SentenceEvent) -> ControlFlow<()>,
) -> Result<BestOf> {
    if samples == 0 {
        return Err(Error::EmptyInput("best of K needs at least one sample"));
    }
    let quiet = |_: &SentenceEvent| ControlFlow::Continue(());
    let mut answers = vec![run(upstream, aligner, query, config, cancel, quiet).await?];
    for s in 1..samples as u64 {
        sampler.reseed(seed.wrapping_add(s - 1));
        answers.push(run(sampler, aligner, query, config, cancel, quiet).await?);
    }
    let texts: Vec<&str> = answers.iter().map(|a| a.text.as_str()).collect();
    let chosen = choose(query, &texts).unwrap_or(0);
    for ev in &answers[chosen].events {
        if on_event(ev).is_break() {
            break;
        }
    }
    Ok(BestOf { answers, chosen })
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "Lena buys 7 kilograms of apples at 3 dollars per kilogram and pays with a 50 dollar bill. How much change does she get?";

    #[test]
    fn coverage_counts_the_questions_numbers_the_steps_compute_with() {
        let right = "She pays 7 * 3 = 21 dollars. Her change is 50 - 21 = 29 dollars.";
        assert_eq!(coverage(Q, right), 1.0);
        let half = "Lena buys 7 kilograms, so 3 + 7 = 10 kilograms. The answer is 10.";
        assert!((coverage(Q, half) - 2.0 / 3.0).abs() < 1e-9, "50 unused");
        assert_eq!(coverage(Q, "Narration only: 7, 3 and 50."), 0.0);
        assert_eq!(coverage("How many legs has a cat?", "4"), 1.0);
    }

    #[test]
    fn the_answer_using_every_number_wins_then_the_fitting_one_then_the_vote_then_the_first() {
        let wrong_a = "She buys 7, so 3 + 7 = 10. Then 10 * 50 = 500. The answer is 500.";
        let wrong_b = "3 + 7 = 10 kilograms. The answer is 10.";
        let wrong_c = "She pays 7 * 3 = 21 dollars. Then 50 * 21 = 1050. The answer is 1050.";
        let right = "7 * 3 = 21 dollars. 50 - 21 = 29 dollars. The answer is 29.";
        assert!(
            !fits(Q, wrong_a),
            "3 dollars per kilogram added to 7 kilograms"
        );
        assert!(fits(Q, right) && fits(Q, wrong_c));
        assert_eq!(choose(Q, &[wrong_b, right, wrong_b]), Some(1), "coverage");
        assert_eq!(choose(Q, &[wrong_a, right]), Some(1), "fits its quantities");
        assert_eq!(choose(Q, &[wrong_c, right, right]), Some(1), "the vote");
        assert_eq!(choose(Q, &[wrong_c, right]), Some(0), "the first of equals");
        assert_eq!(choose(Q, &["I don't know.", wrong_b]), Some(1), "no number");
        assert_eq!(choose(Q, &[]), None);
        assert_eq!(
            majority(&[wrong_b, right, wrong_b]),
            Some(0),
            "no coverage in the vote"
        );
        assert_eq!(majority(&["none", wrong_a, right]), Some(1));
    }
}
