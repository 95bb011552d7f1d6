//! GSM8K's human-written solutions as references (Cobbe et al., 2021; MIT licence): one
//! sentence per step, in the writers' own wording, with the `<<48/2=24>>` calculator
//! annotations turned into the form our calculator writes ("48/2 = 24"), then
//! "The answer is N.".
//!
//! A seeded validation split of the training file never enters training data: it is written to
//! `models/eval/` and evaluated like any other problem set.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::problems::{Gsm8kRecord, Problem};
use crate::error::{Error, Result};
use crate::text::arithmetic::{claims, format_number, numbers, pending_value, same, stated_answer};
use crate::text::split_sentences;

/// The `family` written in training records made from GSM8K (0–4 are the generator's).
pub const FAMILY: usize = 9;

/// A problem with its reference solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub question: String,
    /// The solution's sentences, before the final "The answer is N.".
    pub steps: Vec<String>,
    pub answer: f64,
    /// The line of the source file it came from (training records' `seed`).
    pub index: usize,
}

/// "The answer is N.", with N as the calculator writes it.
pub fn answer_sentence(n: f64) -> String {
    format!("The answer is {}.", format_number(n))
}

impl Reference {
    /// The final sentence.
    pub fn final_sentence(&self) -> String {
        answer_sentence(self.answer)
    }

    /// The whole solution, one sentence after another, as an answer to correct post hoc.
    pub fn solution(&self) -> String {
        let mut s = self.steps.join(" ");
        if !s.is_empty() {
            s.push(' ');
        }
        s + &self.final_sentence()
    }

    /// A generated problem's canonical solution as a reference.
    pub fn from_problem(p: &Problem) -> Self {
        Self {
            question: p.question.clone(),
            steps: p.steps.iter().map(|s| s.sentence.clone()).collect(),
            answer: p.answer as f64,
            index: p.seed as usize,
        }
    }
}

/// "1,000" → "1000": the calculator reads no thousands separators.
fn plain_numbers(s: &str) -> String {
    let b = s.as_bytes();
    s.char_indices()
        .filter(|&(i, c)| {
            !(c == ','
                && i > 0
                && b[i - 1].is_ascii_digit()
                && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        })
        .map(|(_, c)| c)
        .collect()
}

/// ".5" → "0.5" inside an annotation's expression.
fn leading_zeros(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len() + 2);
    let mut prev = ' ';
    for c in expr.chars() {
        if c == '.' && !prev.is_ascii_digit() {
            out.push('0');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// One line of a GSM8K solution with its annotations in our calculator's form: "sold 48/2 =
/// <<48/2=24>>24 clips" → "sold 48/2 = 24 clips"; "has <<5*2=10>>10" → "has 5*2 = 10". None
/// when an annotation is malformed or the equation it leaves doesn't hold.
pub fn convert_line(line: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(open) = rest.find("<<") {
        let close = open + rest[open..].find(">>")?;
        let (expr, value) = rest[open + 2..close].rsplit_once('=')?;
        let value: f64 = value.trim().parse().ok()?;
        let before = rest[..open].trim_end_matches('$').trim_end();
        out.push_str(before);
        // The text already says "expr =" (most lines): keep it when the calculator reads the
        // value there; otherwise the annotation's own expression is written out.
        let keep = before.ends_with('=')
            && pending_value(&plain_numbers(&out)).is_some_and(|v| same(v, value));
        if !keep {
            out.push_str(&format!(" {} =", leading_zeros(expr.trim())));
        }
        out.push(' ');
        rest = rest[close + 2..].trim_start_matches('$');
    }
    out.push_str(rest);
    let line = plain_numbers(&out).replace("  ", " ");
    let line = line.trim().to_string();
    // Every equation must be one the calculator agrees with.
    claims(&line)
        .iter()
        .all(|&(v, c)| v.is_some_and(|v| same(v, c)))
        .then_some(line)
}

/// A GSM8K record as a reference; None when its solution can't be put in calculator form.
pub fn reference(r: &Gsm8kRecord, index: usize) -> Option<Reference> {
    let (body, answer) = r.answer.rsplit_once("####")?;
    let answer: f64 = answer.trim().replace([',', '$'], "").parse().ok()?;
    let mut steps = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let mut line = convert_line(line)?;
        // Many solutions' lines end without a full stop: each line is a sentence of its own.
        if !line.ends_with(['.', '!', '?']) {
            line.push('.');
        }
        steps.extend(
            split_sentences(&line)
                .into_iter()
                .map(|s| s.trim().to_string()),
        );
    }
    let mut steps: Vec<String> = steps.into_iter().filter(|s| !s.is_empty()).collect();
    // A solution that already ends by stating its answer (the generator's) ends once.
    if steps.last().is_some_and(|s| stated_answer(s).is_some()) {
        steps.pop();
    }
    // Negative quantities (temperatures) are left out: sentences' numbers are read unsigned.
    let negative = steps
        .iter()
        .flat_map(|s| claims(s))
        .any(|(v, _)| v.is_some_and(|v| v < 0.0));
    (!steps.is_empty() && answer.is_finite() && answer >= 0.0 && !negative).then(|| Reference {
        question: r.question.trim().to_string(),
        steps,
        answer,
        index,
    })
}

/// Reads GSM8K-format JSONL as references, keeping each line's index; lines whose solution
/// can't be put in calculator form are counted and left out.
pub fn read(text: &str) -> Result<(Vec<Reference>, usize)> {
    let mut refs = Vec::new();
    let mut dropped = 0;
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let r: Gsm8kRecord =
            serde_json::from_str(l).map_err(|e| Error::Data(format!("line {}: {e}", i + 1)))?;
        match reference(&r, i) {
            Some(r) => refs.push(r),
            None => dropped += 1,
        }
    }
    Ok((refs, dropped))
}

/// The seeded validation split: `count` line indices out of `n`, sorted. The rest is training.
pub fn validation_indices(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut SmallRng::seed_from_u64(seed));
    let mut v = idx[..count.min(n)].to_vec();
    v.sort_unstable();
    v
}

/// Numbers a solution may use without deriving them: the question's, and those its reference
/// brings in (60 minutes, 7 days, "ten" written in words): a number in a step that no earlier
/// step derived and that the step itself doesn't claim.
pub fn known_numbers(r: &Reference) -> Vec<f64> {
    let mut known = numbers(&r.question);
    let mut earlier: Vec<f64> = Vec::new();
    for s in &r.steps {
        let own: Vec<f64> = claims(s).into_iter().map(|(_, c)| c).collect();
        known.extend(
            numbers(s)
                .into_iter()
                .filter(|n| !earlier.iter().chain(&own).any(|&r| same(r, *n))),
        );
        earlier.extend(own);
    }
    known.extend([1.0, 2.0, 100.0]);
    known
}

/// A number not in `avoid`, near `near` (an invented or mistaken value).
pub fn other_number(rng: &mut SmallRng, near: f64, avoid: &[f64]) -> f64 {
    for _ in 0..64 {
        let v = match rng.random_range(0..4) {
            0 => near + rng.random_range(1..=9) as f64,
            1 => (near - rng.random_range(1..=9) as f64).abs(),
            2 => near * rng.random_range(2..=4) as f64,
            _ => rng.random_range(3..=60) as f64,
        };
        let v = v.round();
        if v > 0.0 && !avoid.iter().any(|&a| same(a, v)) {
            return v;
        }
    }
    near + 1013.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_calculator_equations() {
        let c = |s: &str| convert_line(s);
        assert_eq!(
            c("Natalia sold 48/2 = <<48/2=24>>24 clips in May."),
            Some("Natalia sold 48/2 = 24 clips in May.".into())
        );
        assert_eq!(
            c("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute."),
            Some("Weng earns 12/60 = 0.2 per minute.".into())
        );
        assert_eq!(
            c("She has <<5*2=10>>10 apples."),
            Some("She has 5*2 = 10 apples.".into())
        );
        assert_eq!(
            c("That is 20% of 50 = <<.2*50=10>>10 pens."),
            Some("That is 20% of 50 = 0.2*50 = 10 pens.".into())
        );
        assert_eq!(
            c("In all 1,000 + 200 = <<1000+200=1200>>1,200 cars."),
            Some("In all 1000 + 200 = 1200 cars.".into())
        );
        assert_eq!(c("Broken <<3+4=7 here."), None);
        assert_eq!(c("Wrong 3+4 = <<3+4=8>>8."), None);
        assert_eq!(c("No arithmetic here."), Some("No arithmetic here.".into()));
    }

    #[test]
    fn a_record_becomes_sentences_and_an_answer() {
        let r = Gsm8kRecord {
            question: "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?".into(),
            answer: "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72".into(),
        };
        let r = reference(&r, 0).unwrap();
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.answer, 72.0);
        assert!(r.solution().ends_with("April and May. The answer is 72."));
        assert_eq!(claims(&r.steps[1]), vec![(Some(72.0), 72.0)]);
    }

    #[test]
    fn the_validation_split_is_seeded_and_disjoint_from_training() {
        let v = validation_indices(1000, 100, 7);
        assert_eq!(v, validation_indices(1000, 100, 7));
        assert_ne!(v, validation_indices(1000, 100, 8));
        assert_eq!(v.len(), 100);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }
}
