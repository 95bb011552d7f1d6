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

use super::problems::{Op, Problem};
use crate::align::{Correction, Corrector};
use crate::error::{Error, Result};

/// Numbers and operators of a sentence, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Op(Op),
    Eq,
    Other,
}

fn tokens(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut j = i;
            let mut num = String::new();
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == ','
                    || (chars[j] == '.' && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit())))
            {
                if chars[j] != ',' {
                    num.push(chars[j]);
                }
                j += 1;
            }
            out.push(num.parse().map_or(Tok::Other, Tok::Num));
            i = j;
            continue;
        }
        out.push(match c {
            '+' => Tok::Op(Op::Add),
            '-' | '−' => Tok::Op(Op::Sub),
            '*' | '×' | 'x' if i > 0 && chars[i - 1] == ' ' && chars.get(i + 1) == Some(&' ') => {
                Tok::Op(Op::Mul)
            }
            '*' | '×' => Tok::Op(Op::Mul),
            '/' | '÷' => Tok::Op(Op::Div),
            '=' => Tok::Eq,
            ' ' | '$' | '€' => {
                i += 1;
                continue;
            }
            _ => Tok::Other,
        });
        i += 1;
    }
    out
}

/// Evaluates `n (op n)*` with × and ÷ before + and −.
fn eval(expr: &[Tok]) -> Option<f64> {
    let mut terms: Vec<f64> = Vec::new();
    let mut signs: Vec<f64> = Vec::new();
    let mut i = 0;
    let mut sign = 1.0;
    while i < expr.len() {
        let Tok::Num(mut v) = expr[i] else {
            return None;
        };
        i += 1;
        while i + 1 < expr.len() && matches!(expr[i], Tok::Op(Op::Mul | Op::Div)) {
            let Tok::Num(w) = expr[i + 1] else {
                return None;
            };
            v = if expr[i] == Tok::Op(Op::Mul) {
                v * w
            } else {
                v / w
            };
            i += 2;
        }
        terms.push(v);
        signs.push(sign);
        match expr.get(i) {
            None => break,
            Some(Tok::Op(Op::Add)) => sign = 1.0,
            Some(Tok::Op(Op::Sub)) => sign = -1.0,
            _ => return None,
        }
        i += 1;
    }
    (!terms.is_empty()).then(|| terms.iter().zip(&signs).map(|(t, s)| t * s).sum())
}

/// Equations `expr = n` in a sentence: (value of expr, claimed n). `None` when an expression
/// doesn't parse.
fn equations(s: &str) -> Vec<(Option<f64>, f64)> {
    let t = tokens(s);
    let mut out = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        if *tok != Tok::Eq {
            continue;
        }
        let Some(&Tok::Num(claimed)) = t.get(i + 1) else {
            continue;
        };
        // The expression: the longest run of numbers and operators before '='.
        let mut start = i;
        while start > 0 && matches!(t[start - 1], Tok::Num(_) | Tok::Op(_)) {
            start -= 1;
        }
        out.push((eval(&t[start..i]), claimed));
    }
    out
}

pub(crate) fn numbers(s: &str) -> Vec<f64> {
    tokens(s)
        .into_iter()
        .filter_map(|t| if let Tok::Num(n) = t { Some(n) } else { None })
        .collect()
}

/// The stated final answer, if the sentence states one ("the answer is 17").
pub(crate) fn stated_answer(s: &str) -> Option<f64> {
    let lower = s.to_lowercase();
    let at = lower.find("answer is").or_else(|| lower.find("answer:"))?;
    numbers(&s[at..]).first().copied()
}

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
    fn equations_are_checked_with_precedence() {
        assert_eq!(
            equations("so 12 + 5 = 17 marbles"),
            vec![(Some(17.0), 17.0)]
        );
        assert_eq!(equations("17 * 23 = 381."), vec![(Some(391.0), 381.0)]);
        assert_eq!(equations("2 + 3 * 4 = 14"), vec![(Some(14.0), 14.0)]);
        assert_eq!(equations("$1,200 / 4 = $300"), vec![(Some(300.0), 300.0)]);
    }

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
