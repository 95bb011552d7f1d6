//! The oracle grounded in a reference solution: given the question, the reference's steps, the
//! corrected prefix and the upstream's sentence, it keeps a sentence that is right in any
//! wording, and otherwise writes the next reference step the prefix still lacks.
//!
//! A sentence is right when
//! - every equation in it is true (the calculator agrees) and claims a number on the
//!   reference's path (some step's result, or the answer);
//! - every other number in it is known: the question's, the prefix's, a constant of the
//!   reference (60 minutes, 7 days), or one it derives itself (so a step that uses the result
//!   of a step not yet taken, a skipped step, is not right);
//! - it makes progress: an equation derives a result the prefix hasn't, or it is a reference
//!   step the prefix lacks, or it states the right final answer;
//! - or, before anything is written, it is an opening that brings in no unknown number.

use std::collections::HashMap;

use super::gsm8k::{Reference, known_numbers};
use crate::align::{Correction, Corrector};
use crate::error::{Error, Result};
use crate::text::arithmetic::{claims, numbers, same, stated_answer};

fn contains(set: &[f64], n: f64) -> bool {
    set.iter().any(|&x| same(x, n))
}

/// The numbers a prefix has derived: its equations' results, and the numbers of its sentences
/// without equations that the question doesn't have.
fn derived(r: &Reference, prefix: &str) -> Vec<f64> {
    let question = numbers(&r.question);
    let mut out: Vec<f64> = claims(prefix).into_iter().map(|(_, c)| c).collect();
    for s in crate::text::split_sentences(prefix) {
        if claims(s).is_empty() {
            out.extend(numbers(s).into_iter().filter(|&n| !contains(&question, n)));
        }
    }
    out
}

/// The results each step claims.
fn results(r: &Reference) -> Vec<Vec<f64>> {
    r.steps
        .iter()
        .map(|s| claims(s).into_iter().map(|(_, c)| c).collect())
        .collect()
}

/// The index of the first reference step the prefix lacks (`steps.len()` when it has them all).
/// A step with results is done when the prefix derived them all (each derived number serves
/// one step: two steps may both come to 6); one without (narration, a fact) when the prefix has
/// it word for word or a later step is done.
pub fn next_index(r: &Reference, prefix: &str) -> usize {
    let mut have = derived(r, prefix);
    let res = results(r);
    let done: Vec<bool> = res
        .iter()
        .zip(&r.steps)
        .map(|(rs, s)| {
            if rs.is_empty() {
                return prefix.contains(s.as_str());
            }
            let at: Option<Vec<usize>> = rs
                .iter()
                .map(|&x| have.iter().position(|&h| same(h, x)))
                .collect();
            match at {
                Some(mut at) => {
                    at.sort_unstable();
                    at.dedup();
                    for i in at.into_iter().rev() {
                        have.remove(i);
                    }
                    true
                }
                None => false,
            }
        })
        .collect();
    let last_done = done.iter().rposition(|&d| d);
    // A step without results (narration, a fact) is passed once a later step is done.
    let passed = |i: usize| res[i].is_empty() && last_done.is_some_and(|l| l > i);
    (0..r.steps.len())
        .find(|&i| !done[i] && !passed(i))
        .unwrap_or(r.steps.len())
}

/// The sentence the oracle writes after `prefix`.
pub fn next_step(r: &Reference, prefix: &str) -> String {
    r.steps
        .get(next_index(r, prefix))
        .cloned()
        .unwrap_or_else(|| r.final_sentence())
}

/// Whether `original` may be kept after `prefix`.
pub fn is_correct(r: &Reference, prefix: &str, original: &str) -> bool {
    let original = original.trim();
    if original.is_empty() {
        return false;
    }
    let path: Vec<f64> = results(r).into_iter().flatten().chain([r.answer]).collect();
    let have = derived(r, prefix);
    let eqs = claims(original);
    // Equations: true, on the path.
    for &(value, claimed) in &eqs {
        if value.is_some_and(|v| !same(v, claimed)) || !contains(&path, claimed) {
            return false;
        }
    }
    // Every other number is known, derived before or derived here; a sentence without
    // equations may state a number on the path.
    let mut known = known_numbers(r);
    known.extend(numbers(prefix));
    known.extend(&have);
    known.extend(eqs.iter().map(|&(_, c)| c));
    let stated = stated_answer(original);
    if let Some(a) = stated {
        known.push(a);
    }
    if !numbers(original).iter().all(|&n| contains(&known, n)) {
        return false;
    }
    if let Some(a) = stated {
        return same(a, r.answer);
    }
    // Progress: a reference step the prefix lacks, a new result derived, or (as the opening)
    // anything.
    let k = next_index(r, prefix);
    if r.steps[k..].iter().any(|s| s == original) || prefix.trim().is_empty() {
        return true;
    }
    let count = |set: &[f64], n: f64| set.iter().filter(|&&x| same(x, n)).count();
    eqs.iter().any(|&(_, c)| count(&path, c) > count(&have, c))
}

/// The grounded oracle as a [`Corrector`]: the aligner's seat when making data from references.
pub struct GroundedOracle {
    references: HashMap<String, Reference>,
}

impl GroundedOracle {
    pub fn new(references: impl IntoIterator<Item = Reference>) -> Self {
        Self {
            references: references
                .into_iter()
                .map(|r| (r.question.clone(), r))
                .collect(),
        }
    }

    /// The oracle's sentence: `original` when it is right, else the next reference step.
    pub fn decide(r: &Reference, prefix: &str, original: &str) -> String {
        if is_correct(r, prefix, original) {
            original.trim().to_string()
        } else {
            next_step(r, prefix)
        }
    }
}

impl Corrector for GroundedOracle {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        let r = self
            .references
            .get(query)
            .ok_or_else(|| Error::NotFound(format!("the oracle has no reference for {query:?}")))?;
        Ok(Correction {
            text: Self::decide(r, prefix, original),
            tokens: 0,
            accepted: 0,
            passes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::gsm8k::read;
    use super::super::synthetic::with_claim;
    use super::*;

    /// The shipped validation split: real GSM8K solutions in their writers' words.
    fn references() -> Vec<Reference> {
        let (refs, _) = read(include_str!("../../../models/eval/gsm8k-val.jsonl")).unwrap();
        assert!(refs.len() > 250, "{}", refs.len());
        refs
    }

    fn prefix(r: &Reference, k: usize) -> String {
        r.steps[..k].join(" ")
    }

    #[test]
    fn every_reference_step_is_copied_and_then_the_answer_is_written() {
        for r in references() {
            for k in 0..r.steps.len() {
                let p = prefix(&r, k);
                assert!(
                    is_correct(&r, &p, &r.steps[k]),
                    "{:?}\n{p}\n>> {}",
                    r.question,
                    r.steps[k]
                );
            }
            let all = prefix(&r, r.steps.len());
            assert_eq!(next_step(&r, &all), r.final_sentence(), "{:?}", r.steps);
            assert!(
                is_correct(&r, &all, &r.final_sentence()),
                "{all} {}",
                r.final_sentence()
            );
        }
    }

    /// The first step with exactly one equation whose operands are written out.
    fn equation_step(r: &Reference) -> Option<(usize, f64)> {
        r.steps
            .iter()
            .enumerate()
            .find_map(|(k, s)| match claims(s).as_slice() {
                [(Some(v), c)] if same(*v, *c) => Some((k, *c)),
                _ => None,
            })
    }

    #[test]
    fn wrong_results_wrong_operands_and_invented_numbers_are_rewritten() {
        let (mut wrong_result, mut wrong_operand, mut invented) = (0, 0, 0);
        for r in references() {
            let Some((k, c)) = equation_step(&r) else {
                continue;
            };
            let p = prefix(&r, k);
            let s = &r.steps[k];
            let eq = s.rfind('=').unwrap();
            let path: Vec<f64> = r
                .steps
                .iter()
                .flat_map(|s| claims(s))
                .map(|(_, c)| c)
                .collect();
            let off = |v: f64| !path.iter().any(|&x| same(x, v)) && !same(v, r.answer);
            // A wrong result: the claimed number changed.
            let bad = c + 7.0;
            if let Some(wrong) = with_claim(s, eq, bad).filter(|_| off(bad)) {
                assert!(!is_correct(&r, &p, &wrong), "{wrong}");
                assert_eq!(next_step(&r, &p), *s);
                wrong_result += 1;
            }
            // Wrong operands, arithmetic right: "+ 1" inside the expression, result off the path.
            let expr_end = s[..eq].trim_end();
            let value = crate::text::arithmetic::pending_value(&format!("{expr_end} + 1 ="));
            if let Some(v) = value.filter(|&v| off(v)) {
                let changed = format!(
                    "{expr_end} + 1 = {}.",
                    crate::text::arithmetic::format_number(v)
                );
                assert!(!is_correct(&r, &p, &changed), "{changed}");
                wrong_operand += 1;
            }
            // An invented number beside the right equation.
            let extra = format!("{} Then 9137 more come.", s);
            assert!(!is_correct(&r, &p, &extra), "{extra}");
            invented += 1;
        }
        assert!(
            wrong_result > 100 && wrong_operand > 100 && invented > 200,
            "{wrong_result} {wrong_operand} {invented}"
        );
    }

    #[test]
    fn a_skipped_step_whose_result_is_needed_is_rewritten() {
        let mut skipped = 0;
        for r in references() {
            for k in 0..r.steps.len().saturating_sub(1) {
                let rk: Vec<f64> = claims(&r.steps[k]).into_iter().map(|(_, c)| c).collect();
                let next = &r.steps[k + 1];
                // Step k+1 uses step k's result as an operand, and nothing else says it.
                let p = prefix(&r, k);
                let uses = rk.iter().any(|&x| {
                    !numbers(&p).iter().any(|&n| same(n, x))
                        && numbers(next).iter().any(|&n| same(n, x))
                        && !claims(next).iter().any(|&(_, c)| same(c, x))
                        && !numbers(&r.question).iter().any(|&n| same(n, x))
                        && !known_numbers(&r).iter().any(|&n| same(n, x))
                });
                if rk.is_empty() || !uses {
                    continue;
                }
                assert!(!is_correct(&r, &p, next), "skipped to {next:?} after {p:?}");
                assert_eq!(next_step(&r, &p), r.steps[k]);
                skipped += 1;
            }
        }
        assert!(skipped > 100, "{skipped}");
    }

    #[test]
    fn narration_is_an_opening_only_and_answers_must_be_right() {
        for r in references().iter().take(50) {
            assert!(is_correct(r, "", "Let's solve this step by step."));
            let p = prefix(r, 1);
            assert!(!is_correct(r, &p, "Let's think step by step."), "{p}");
            assert_eq!(
                next_step(r, &p),
                r.steps
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| r.final_sentence())
            );
            let wrong = format!("The answer is {}.", r.answer + 3.0);
            assert!(!is_correct(r, &prefix(r, r.steps.len()), &wrong));
            assert!(is_correct(
                r,
                &p,
                &format!("So the answer is {}.", r.answer)
            ));
        }
    }
}
