//! The oracle annotator for the math task: given the question, the corrected prefix and the
//! upstream's sentence, it copies the sentence when it is right, and otherwise writes the
//! correct next step (or "The answer is N." once the solution is complete).
//!
//! "Right" means: every equation in the sentence is true, every result it claims lies on the
//! solution's path from here, and a stated final answer is the answer. A sentence without
//! equations is right only as the opening (before anything is written) and when it brings in no
//! number the question doesn't have: later, such narration makes no progress and spends one of
//! the answer's sentences, so it is rewritten into the next step.

use std::collections::HashMap;

use super::problems::Problem;
use crate::align::{Correction, Corrector};
use crate::error::{Error, Result};
use crate::text::arithmetic::{equations, numbers, stated_answer};

/// How many of the solution's steps the prefix has already derived, in order.
pub fn steps_done(p: &Problem, prefix: &str) -> usize {
    let results: Vec<f64> = equations(prefix).into_iter().map(|(_, c)| c).collect();
    let mut k = 0;
    for r in results {
        if k < p.steps.len() && r == p.steps[k].result as f64 {
            k += 1;
        }
    }
    k
}

/// Whether `original` may be copied after `prefix`.
pub fn is_correct(p: &Problem, prefix: &str, original: &str) -> bool {
    let k = steps_done(p, prefix);
    let ahead: Vec<f64> = p.steps[k..].iter().map(|s| s.result as f64).collect();
    let eqs = equations(original);
    for &(value, claimed) in &eqs {
        let true_eq = value.is_some_and(|v| (v - claimed).abs() < 1e-9);
        if !true_eq || !(ahead.contains(&claimed) || claimed == p.answer as f64) {
            return false;
        }
    }
    if let Some(a) = stated_answer(original) {
        return a == p.answer as f64
            && eqs
                .iter()
                .all(|&(_, c)| c == p.answer as f64 || ahead.contains(&c));
    }
    if eqs.is_empty() {
        // Narration is copied only as an opening ("Let's solve it step by step.", "She starts
        // with 12."): later it would spend a round and a sentence without progress, so it is
        // rewritten into the next step. Its numbers must come from the question.
        if !prefix.trim().is_empty() {
            return false;
        }
        let known = numbers(&p.question);
        return numbers(original).iter().all(|n| known.contains(n));
    }
    true
}

/// The correct next sentence after `prefix`.
pub fn next_step(p: &Problem, prefix: &str) -> String {
    let k = steps_done(p, prefix);
    match p.steps.get(k) {
        Some(s) => s.sentence.clone(),
        None => format!("The answer is {}.", p.answer),
    }
}

/// The oracle as a [`Corrector`]: stands in for the aligner when making training data.
pub struct Oracle {
    problems: HashMap<String, Problem>,
}

impl Oracle {
    pub fn new(problems: impl IntoIterator<Item = Problem>) -> Self {
        Self {
            problems: problems
                .into_iter()
                .map(|p| (p.question.clone(), p))
                .collect(),
        }
    }
}

impl Corrector for Oracle {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        let p = self
            .problems
            .get(query)
            .ok_or_else(|| Error::NotFound(format!("the oracle has no problem {query:?}")))?;
        let text = if is_correct(p, prefix, original) {
            original.to_string()
        } else {
            next_step(p, prefix)
        };
        Ok(Correction {
            text,
            tokens: 0,
            accepted: 0,
            passes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::problems::generate;
    use super::*;

    #[test]
    fn the_canonical_solution_is_copied_and_mistakes_are_rewritten() {
        for seed in 0..50 {
            let p = generate(seed, &[]);
            let mut prefix = String::new();
            for s in &p.steps {
                assert!(
                    is_correct(&p, &prefix, &s.sentence),
                    "{}: {}",
                    p.question,
                    s.sentence
                );
                let wrong = s
                    .sentence
                    .replace(&format!("= {}", s.result), &format!("= {}", s.result + 1));
                assert!(!is_correct(&p, &prefix, &wrong), "{wrong}");
                assert_eq!(next_step(&p, &prefix), s.sentence);
                prefix.push_str(&s.sentence);
                prefix.push('\n');
            }
            assert_eq!(
                next_step(&p, &prefix),
                format!("The answer is {}.", p.answer)
            );
            assert!(is_correct(
                &p,
                &prefix,
                &format!("So the answer is {}.", p.answer)
            ));
            assert!(!is_correct(
                &p,
                &prefix,
                &format!("So the answer is {}.", p.answer + 2)
            ));
        }
    }

    #[test]
    fn narration_opens_with_known_numbers_and_is_rewritten_later() {
        let p = generate(11, &[]);
        let first = p.steps[0].a;
        assert!(is_correct(&p, "", &format!("We start with {first}.")));
        assert!(is_correct(&p, "", "Let's solve this step by step."));
        assert!(!is_correct(
            &p,
            "",
            &format!("We start with {}.", first + 1000)
        ));
        // After the opening, narration makes no progress: the oracle writes the next step.
        let opening = "Let's solve this step by step.";
        assert!(!is_correct(&p, opening, &format!("We start with {first}.")));
        let after_one = format!("{opening}\n{}", p.steps[0].sentence);
        assert!(!is_correct(&p, &after_one, "Let's keep going."));
        assert_eq!(next_step(&p, &after_one), p.steps[1].sentence);
    }
}
