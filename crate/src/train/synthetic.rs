//! Training records made from reference solutions without running the upstream: the rounds an
//! aligner meets in front of a strong model (a right sentence, in the reference's words or in
//! others, to keep) and the mistakes it must catch (a wrong result, wrong operands, a skipped
//! step, an invented number, a wrong final answer, narration that makes no progress, a sentence
//! about another problem). The grounded oracle labels every record, so a "mistake" that
//! happens to be right is kept.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::grounded::{GroundedOracle, next_index, next_step};
use super::gsm8k::{FAMILY, Reference, answer_sentence, known_numbers, other_number};
use super::story::lower_first;
use super::trainer::Record;
use crate::text::arithmetic::{claims, format_number, numbers, pending_value, same};

/// What a record's "upstream" sentence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ReferenceStep,
    Paraphrase,
    FinalAnswer,
    Opening,
    WrongResult,
    WrongOperand,
    SkippedStep,
    InventedNumber,
    WrongFinalAnswer,
    PrematureAnswer,
    Narration,
    OtherProblem,
    MergedEvents,
    TwoStepsWrong,
    TwoStepsRight,
    AfterMerged,
    AfterCombined,
    /// `AfterCombined` where the two steps are the last: what follows is the answer.
    AfterCombinedLast,
    /// The step with another operator and its true result ("She buys 5 more, so 12 - 5 = 7
    /// apples."): true arithmetic on known numbers, the wrong operation.
    WrongOperator,
}

impl Kind {
    /// The record's `kind` field: the variant in snake case.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Relative weights of the kinds: about half the sentences are right.
const KINDS: &[(Kind, u32)] = &[
    (Kind::ReferenceStep, 26),
    (Kind::Paraphrase, 14),
    (Kind::FinalAnswer, 6),
    (Kind::Opening, 6),
    (Kind::WrongResult, 12),
    (Kind::WrongOperand, 10),
    (Kind::SkippedStep, 8),
    (Kind::InventedNumber, 6),
    (Kind::WrongFinalAnswer, 4),
    (Kind::PrematureAnswer, 8),
    (Kind::Narration, 4),
    (Kind::OtherProblem, 4),
    (Kind::MergedEvents, 6),
];

const OPENINGS: &[&str] = &[
    "Let's solve this step by step.",
    "Let's think step by step.",
    "Let's break this down.",
    "We need to work this out one step at a time.",
    "To solve this, we follow the numbers in order.",
];

const NARRATION: &[&str] = &[
    "Let's think step by step.",
    "Now let's keep going.",
    "We need to find the total.",
    "This is an important step.",
    "Let's look at the question again.",
];

const CONNECTIVES: &[&str] = &["So", "Then", "Next,", "This means", "That means"];

/// Where an equation's expression starts, given the position of its "=".
fn expression_start(s: &str, eq: usize) -> usize {
    let before = &s[..eq];
    let run = before
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_ascii_digit() || " .+-*/×÷()".contains(c))
        .last()
        .map_or(eq, |(i, _)| i);
    run + (before[run..].len() - before[run..].trim_start().len())
}

/// The sentence with its only equation's claimed value replaced by `value`.
pub(crate) fn with_claim(s: &str, eq: usize, value: f64) -> Option<String> {
    let after = &s[eq + 1..];
    let skip = after.len() - after.trim_start_matches([' ', '$']).len();
    let num_start = eq + 1 + skip;
    let len = s[num_start..]
        .char_indices()
        .take_while(|&(j, c)| {
            c.is_ascii_digit()
                || c == '.' && s[num_start + j + 1..].starts_with(|d: char| d.is_ascii_digit())
        })
        .last()
        .map(|(j, c)| j + c.len_utf8())?;
    Some(format!(
        "{}{}{}",
        &s[..num_start],
        format_number(value),
        &s[num_start + len..]
    ))
}

/// A right sentence in other words: after a connective, with other operator signs, or as the
/// bare equation.
fn paraphrase(rng: &mut SmallRng, s: &str) -> String {
    let eq = s.find('=');
    match rng.random_range(0..3) {
        0 => {
            let c = CONNECTIVES[rng.random_range(0..CONNECTIVES.len())];
            let first = s.split_whitespace().next().unwrap_or("");
            let lower = [
                "He", "She", "They", "The", "There", "It", "We", "This", "That",
            ]
            .contains(&first);
            let body = if lower { lower_first(s) } else { s.to_string() };
            format!("{c} {body}")
        }
        1 => s
            .replace('*', " x ")
            .replace('/', " / ")
            .replace("  ", " ")
            .replace("x  ", "x "),
        _ => match eq {
            Some(eq) => {
                let start = expression_start(s, eq);
                let claim = claims(s).first().map(|&(_, c)| c);
                match claim {
                    Some(c) if start < eq => {
                        format!("{} = {}.", s[start..eq].trim(), format_number(c))
                    }
                    _ => s.to_string(),
                }
            }
            None => s.to_string(),
        },
    }
}

/// The step with one operand replaced by `n` (and its result recomputed, so the arithmetic
/// holds but the step is off the reference's path), or with "+ n" appended to its expression.
fn changed_operand(s: &str, n: f64, append: bool) -> Option<String> {
    let eq = s.find('=')?;
    let start = expression_start(s, eq);
    let expr = s[start..eq].trim_end();
    let new_expr = if append {
        format!("{expr} + {}", format_number(n))
    } else {
        // Replace the last operand.
        let at = expr.rfind(|c: char| !(c.is_ascii_digit() || c == '.'))? + 1;
        (at < expr.len() && at > 0).then_some(())?;
        format!("{}{}", &expr[..at], format_number(n))
    };
    let text = format!("{}{new_expr} ={}", &s[..start], &s[eq + 1..]);
    let eq = start + new_expr.len() + 1;
    let value = pending_value(&text[..=eq])?;
    (value >= 0.0).then_some(())?;
    with_claim(&text, eq, value)
}

fn pick<'a>(rng: &mut SmallRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// A kind drawn by its weight.
fn draw_kind(rng: &mut SmallRng) -> Option<Kind> {
    let total: u32 = KINDS.iter().map(|k| k.1).sum();
    let mut roll = rng.random_range(0..total);
    KINDS
        .iter()
        .find(|&&(_, w)| {
            let hit = roll < w;
            roll = roll.saturating_sub(w);
            hit
        })
        .map(|k| k.0)
}

/// Where a record of `kind` stands in a solution of `n` steps: how many steps precede it.
/// None when the solution is too short for the kind.
fn position(rng: &mut SmallRng, kind: Kind, n: usize) -> Option<usize> {
    Some(match kind {
        Kind::FinalAnswer | Kind::WrongFinalAnswer => n,
        Kind::Opening => 0,
        Kind::Narration => rng.random_range(1..=n),
        Kind::PrematureAnswer => rng.random_range(1..n.max(2)),
        Kind::SkippedStep => rng.random_range(0..n.checked_sub(1)?),
        _ => rng.random_range(0..n),
    })
}

/// One record about `r`: a kind drawn by its weight, a place in the solution, the sentence;
/// None when the kind doesn't fit this solution.
fn record(rng: &mut SmallRng, r: &Reference, other: &Reference) -> Option<Record> {
    let kind = draw_kind(rng)?;
    let k = position(rng, kind, r.steps.len())?;
    let mut prefix_parts: Vec<&str> = r.steps[..k].iter().map(String::as_str).collect();
    if k > 0 && rng.random_bool(0.2) {
        prefix_parts.insert(0, pick(rng, OPENINGS));
    }
    let prefix = prefix_parts.join(" ");
    let step = r.steps.get(k).map(String::as_str).unwrap_or("");
    let original = upstream_sentence(rng, kind, r, other, k)?
        .trim()
        .to_string();
    (!original.is_empty() && original != step || matches!(kind, Kind::ReferenceStep))
        .then_some(())?;
    // A merged sentence's numbers all lie on the path, so the oracle would keep it: it is
    // labelled here, rewritten into the step it only half tells.
    let corrected = match kind {
        Kind::MergedEvents => step.to_string(),
        _ => GroundedOracle::decide(r, &prefix, &original),
    };
    debug_assert!(next_index(r, &prefix) <= r.steps.len());
    Some(labelled(r, prefix, kind, original, corrected))
}

/// A record about `r` of `kind`: `original` after `prefix`, labelled `corrected`.
fn labelled(
    r: &Reference,
    prefix: String,
    kind: Kind,
    original: String,
    corrected: String,
) -> Record {
    Record {
        question: r.question.clone(),
        prefix,
        copy: corrected == original,
        original,
        corrected,
        family: FAMILY,
        seed: r.index as u64,
        kind: kind.name(),
    }
}

/// The numbers a wrong value must not be: the known ones and every step's result.
fn path_numbers(r: &Reference) -> Vec<f64> {
    let mut numbers = known_numbers(r);
    numbers.extend(claims(&r.steps.join(" ")).into_iter().map(|(_, c)| c));
    numbers
}

/// The "upstream" sentence of a record of `kind` after `r`'s first `k` steps (`other` lends a
/// sentence about another problem); None when the kind doesn't fit the step.
fn upstream_sentence(
    rng: &mut SmallRng,
    kind: Kind,
    r: &Reference,
    other: &Reference,
    k: usize,
) -> Option<String> {
    let step = r.steps.get(k).map(String::as_str).unwrap_or("");
    let mut avoid = path_numbers(r);
    avoid.push(r.answer);
    Some(match kind {
        Kind::ReferenceStep => step.to_string(),
        Kind::Paraphrase => paraphrase(rng, step),
        Kind::FinalAnswer => {
            let a = format_number(r.answer);
            pick(
                rng,
                &[
                    "The answer is {}.",
                    "So the answer is {}.",
                    "Therefore, the answer is {}.",
                ],
            )
            .replace("{}", &a)
        }
        Kind::Opening => pick(rng, OPENINGS).to_string(),
        Kind::WrongResult => {
            let eq = step.rfind('=')?;
            let (_, c) = *claims(step).last()?;
            with_claim(step, eq, other_number(rng, c, &avoid))?
        }
        Kind::WrongOperand | Kind::InventedNumber => {
            (claims(step).len() == 1).then_some(())?;
            let near = numbers(step).first().copied().unwrap_or(5.0);
            let v = other_number(rng, near, &avoid);
            changed_operand(step, v, kind == Kind::InventedNumber)?
        }
        Kind::SkippedStep => r.steps[k + 1].clone(),
        Kind::WrongFinalAnswer => answer_sentence(other_number(rng, r.answer, &avoid)),
        // "The answer is" on the latest intermediate result, with steps still to take: the
        // most common way a correct solution was broken (the aligner ended it early).
        Kind::PrematureAnswer => {
            let (_, c) = *claims(r.steps.get(k - 1)?).last()?;
            (!same(c, r.answer)).then_some(())?;
            answer_sentence(c)
        }
        Kind::Narration => pick(rng, NARRATION).to_string(),
        Kind::OtherProblem => other.steps[rng.random_range(0..other.steps.len())].clone(),
        // "She buys 5 more and then gives away 3, so 12 + 5 = 17 apples.": the question's
        // sentence quoted whole where it tells two events, with the arithmetic of the first.
        Kind::MergedEvents => {
            let (event, math) = step.split_once(", so ")?;
            let told = r
                .question
                .split_inclusive(". ")
                .map(|s| s.trim().trim_end_matches('.'))
                .find(|s| s.starts_with(event) && s[event.len()..].contains(" then "))?;
            format!("{told}, so {math}")
        }
        Kind::TwoStepsWrong | Kind::TwoStepsRight => {
            two_steps(rng, r, k, kind == Kind::TwoStepsRight)?
        }
        // Made by their own record builders, beside the sentences they pair with.
        Kind::AfterMerged | Kind::AfterCombined | Kind::AfterCombinedLast | Kind::WrongOperator => {
            return None;
        }
    })
}

/// `per_problem` records about each reference (seeded by `seed` and the reference's index).
pub fn records(refs: &[Reference], per_problem: usize, seed: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let mut rng = SmallRng::seed_from_u64(seed ^ (r.index as u64).wrapping_mul(0x9E37_79B9));
        let other = &refs[(i + 1 + rng.random_range(0..refs.len().max(2) - 1)) % refs.len()];
        let mut made = 0;
        for _ in 0..per_problem * 8 {
            if made == per_problem {
                break;
            }
            if let Some(rec) = record(&mut rng, r, other) {
                out.push(rec);
                made += 1;
            }
        }
    }
    out
}

/// Steps `k` and `k + 1` told as one sentence in an upstream's own words, with the second
/// applied to the first's result: "She buys 5 more and she gives away 3, so 12 + 5 - 3 = 14
/// apples." (right), or the same with a wrong result, or chained ("12 + 5 - 3 = 17 - 3 = 9").
/// None unless both steps read "<event>, so <expression> = <result>..." and the second's
/// expression starts with the first's result.
fn two_steps(rng: &mut SmallRng, r: &Reference, k: usize, right: bool) -> Option<String> {
    let (first, second) = (r.steps.get(k)?, r.steps.get(k + 1)?);
    let (event1, math1) = first.split_once(", so ")?;
    let (event2, math2) = second.split_once(", so ")?;
    let event2 = event2.strip_prefix("Then ").unwrap_or(event2);
    let event2 = lower_first(event2.strip_prefix("then ").unwrap_or(event2));
    // "and she gives away 3" or, as often, "and gives away 3".
    let event2 = match event2.split_once(' ') {
        Some((he, rest)) if ["he", "she", "they"].contains(&he) && rng.random_bool(0.5) => {
            rest.to_string()
        }
        _ => event2,
    };
    let (eq1, eq2) = (math1.find('=')?, math2.find('=')?);
    let expr1 = math1[expression_start(math1, eq1)..eq1].trim();
    let start2 = expression_start(math2, eq2);
    (start2 == 0).then_some(())?;
    let v1 = format_number(claims(first).last()?.1);
    let tail = math2[..eq2].trim().strip_prefix(v1.as_str())?.trim();
    (!tail.is_empty() && !tail.contains(['(', ')'])).then_some(())?;
    // "(68 - 29) / 3": the first step's sum first.
    let expr1 = if tail.starts_with(['*', '/', 'x', '×', '÷']) && expr1[1..].contains(['+', '-'])
    {
        format!("({expr1})")
    } else {
        expr1.to_string()
    };
    let right_text = format!(
        "{event1} and {event2}, so {expr1} {tail} ={}",
        &math2[eq2 + 1..]
    );
    let (_, v2) = *claims(second).last()?;
    if right {
        return Some(right_text);
    }
    let wrong = other_number(rng, v2, &path_numbers(r));
    let eq = right_text.rfind('=')?;
    if rng.random_bool(0.5) {
        with_claim(&right_text, eq, wrong)
    } else {
        let chained = format!(
            "{} {v1} {tail} ={}",
            &right_text[..=eq],
            &right_text[eq + 1..]
        );
        with_claim(&chained, chained.rfind('=')?, wrong)
    }
}

/// Records about sentences that tell two events at once, for every step of `refs` where one
/// fits: the question's joined sentence ("She buys 5 more and then gives away 3.") quoted whole
/// with the first event's arithmetic, rewritten into the step (it is labelled here: its numbers
/// all lie on the path), beside the step itself to keep; and two steps told as one in other
/// words, kept when the combined arithmetic is right and rewritten into the first step when it
/// is wrong (labelled by the oracle).
pub fn merged_records(refs: &[Reference]) -> Vec<Record> {
    let mut rng = SmallRng::seed_from_u64(0);
    let mut out = Vec::new();
    for r in refs {
        for k in 0..r.steps.len() {
            let prefix = r.steps[..k].join(" ");
            let mut push = |kind: Kind, original: String, corrected: String| {
                out.push(labelled(r, prefix.clone(), kind, original, corrected))
            };
            if let Some(merged) = upstream_sentence(&mut rng, Kind::MergedEvents, r, r, k) {
                push(Kind::MergedEvents, merged, r.steps[k].clone());
                push(Kind::ReferenceStep, r.steps[k].clone(), r.steps[k].clone());
            }
            for (kind, right) in [(Kind::TwoStepsRight, true), (Kind::TwoStepsWrong, false)] {
                if let Some(original) = two_steps(&mut rng, r, k, right) {
                    let corrected = GroundedOracle::decide(r, &prefix, &original);
                    push(kind, original, corrected);
                }
            }
        }
    }
    out
}

/// `step` with its one operation replaced by another, drawn among those whose result is
/// non-negative, has at most two decimals and differs from the step's, with the true result
/// written: "buys 5 more, so 12 - 5 = 7". None unless the step has one equation whose
/// expression has one operator.
fn wrong_operator(rng: &mut SmallRng, step: &str) -> Option<String> {
    let [(_, claimed)] = claims(step)[..] else {
        return None;
    };
    let eq = step.find('=')?;
    // The expression before "=", "x" as a times sign too ("0.2 x 50"), from its first operand.
    let run = step[..eq]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_ascii_digit() || " .+-*/×÷()x".contains(c))
        .last()?
        .0;
    let start = run + step[run..eq].find(|c: char| c.is_ascii_digit() || c == '(')?;
    let expr = &step[start..eq];
    let ops: Vec<(usize, char)> = expr
        .char_indices()
        .skip(1)
        .filter(|&(i, c)| "+-*/×÷".contains(c) || c == 'x' && expr[..i].ends_with(' '))
        .collect();
    let [(at, op)] = ops[..] else { return None };
    let candidates: Vec<String> = ['+', '-', '*', '/']
        .into_iter()
        .filter(|&o| o != op && !(o == '*' && "x×".contains(op) || o == '/' && op == '÷'))
        .filter_map(|o| {
            let text = format!(
                "{}{o}{}",
                &step[..start + at],
                &step[start + at + op.len_utf8()..]
            );
            let eq = text.find('=')?;
            let value = pending_value(&text[..=eq])?;
            let cents = value * 100.0;
            (value >= 0.0 && (cents - cents.round()).abs() < 1e-6).then_some(())?;
            // 2 * 2 for 2 + 2 is not a mistake.
            (!same(value, claimed)).then_some(())?;
            with_claim(&text, eq, value)
        })
        .collect();
    (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())].clone())
}

/// Records about steps done with the wrong operation, one step of each reference where one
/// fits ([`wrong_operator`], rewritten into the step: labelled by construction, as the oracle
/// would keep the one whose wrong result happens to lie on the path), each beside the step
/// itself, kept. A wrong operation is the commonest slip on problems told in
/// other words ("buys 45 books, so 230 - 45 = 185") and the copy margin's blind spot: its
/// arithmetic checks out, with known numbers.
pub fn wrong_operator_records(refs: &[Reference], seed: u64) -> Vec<Record> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x0BE7);
    let mut out = Vec::new();
    for r in refs {
        let fits: Vec<(usize, String)> = (0..r.steps.len())
            .filter_map(|k| Some((k, wrong_operator(&mut rng, &r.steps[k])?)))
            .collect();
        if fits.is_empty() {
            continue;
        }
        let (k, wrong) = fits[rng.random_range(0..fits.len())].clone();
        let prefix = r.steps[..k].join(" ");
        let step = r.steps[k].clone();
        out.push(labelled(
            r,
            prefix.clone(),
            Kind::WrongOperator,
            wrong,
            step.clone(),
        ));
        out.push(labelled(r, prefix, Kind::ReferenceStep, step.clone(), step));
    }
    out
}

/// `r`'s first `k` steps, then `sentence`: a prefix that ends with something the aligner wrote.
fn steps_then(r: &Reference, k: usize, sentence: &str) -> String {
    let mut parts: Vec<&str> = r.steps[..k].iter().map(String::as_str).collect();
    parts.push(sentence);
    parts.join(" ")
}

/// Words that open a question without naming who it is about.
const NOT_NAMES: &[&str] = &["A", "An", "The", "There", "Each", "Every", "In", "On", "At"];

/// "Mia has 17 apples now.": the latest result restated, with no progress; the question's
/// first word as the subject when it is a name.
fn restatement(rng: &mut SmallRng, r: &Reference, step: &str) -> Option<String> {
    let (_, v) = *claims(step).last()?;
    let v = format_number(v);
    let unit = step[step.rfind('=')? + 1..]
        .trim_start()
        .strip_prefix(v.as_str())?
        .trim()
        .trim_end_matches('.');
    let first = r.question.split_whitespace().next().unwrap_or("");
    let named = first.chars().next().is_some_and(char::is_uppercase) && !NOT_NAMES.contains(&first);
    let subject = if named {
        format!("{first} has")
    } else {
        "There are".to_string()
    };
    Some(
        match rng.random_range(0..3) {
            0 => format!("{subject} {v} {unit} now."),
            1 => format!("So that makes {v} {unit}."),
            _ => format!("Now we have {v} {unit}."),
        }
        .replace("  ", " "),
    )
}

/// Records about what follows the aligner's own slip, for every step of `refs` where the
/// question tells two events in one sentence: the prefix ends with that sentence quoted whole
/// and the first event computed ("She buys 5 more and then gives away 3, so 12 + 5 = 17
/// apples."), and the upstream goes on as if both were done (the result restated, or "The
/// answer is 17.") or with the step still missing, in the reference's words or others. The
/// grounded oracle labels them: the first two are rewritten into the missing step, the last two
/// kept, so an incomplete prefix is completed where it happened instead of ending on the
/// half-done result. Followed by [`after_combined_records`], where both events were computed.
pub fn after_merged_records(refs: &[Reference], seed: u64) -> Vec<Record> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for r in refs {
        for k in 0..r.steps.len().saturating_sub(1) {
            let Some(merged) = upstream_sentence(&mut rng, Kind::MergedEvents, r, r, k) else {
                continue;
            };
            let prefix = steps_then(r, k, &merged);
            let Some(&(_, v)) = claims(&r.steps[k]).last() else {
                continue;
            };
            let next = &r.steps[k + 1];
            let originals = [
                restatement(&mut rng, r, &r.steps[k]),
                Some(answer_sentence(v)),
                Some(next.clone()),
                Some(paraphrase(&mut rng, next)),
            ];
            for original in originals.into_iter().flatten() {
                let corrected = GroundedOracle::decide(r, &prefix, &original);
                out.push(labelled(
                    r,
                    prefix.clone(),
                    Kind::AfterMerged,
                    original,
                    corrected,
                ));
            }
        }
    }
    out.extend(after_combined_records(refs, seed));
    out
}

/// The counterpart of [`after_merged_records`]: the prefix ends with two steps told as one
/// sentence and both computed ("She buys 5 more and then gives away 3, so 12 + 5 - 3 = 14
/// apples."), so nothing is missing: the second step told again, the result restated, or an
/// early answer are rewritten into the step after the two (or the final answer), and that
/// step is kept. Labelled by the grounded oracle on the prefix with the two steps written out,
/// which is what the sentence derives. Where the two steps are the last, the kind is
/// `after_combined_last` (its records keep "The answer is N." right after the combined
/// sentence), so a run can leave them out.
fn after_combined_records(refs: &[Reference], seed: u64) -> Vec<Record> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xC0B1);
    let mut out = Vec::new();
    for r in refs {
        for k in 0..r.steps.len().saturating_sub(1) {
            let Some(combined) = two_steps(&mut rng, r, k, true) else {
                continue;
            };
            // The question's own two-event sentence quoted, where it has one (as the aligner
            // writes it: the same prefix as an `after_merged` record, the other event computed
            // too), else, for one step pair in six, the two events in other words.
            let combined = match upstream_sentence(&mut rng, Kind::MergedEvents, r, r, k) {
                Some(merged) => match (merged.split_once(", so "), combined.split_once(", so ")) {
                    (Some((told, _)), Some((_, math))) => format!("{told}, so {math}"),
                    _ => combined,
                },
                None if rng.random_range(0..6) == 0 => combined,
                None => continue,
            };
            let prefix = steps_then(r, k, &combined);
            let written_out = r.steps[..k + 2].join(" ");
            let Some(&(_, v)) = claims(&r.steps[k + 1]).last() else {
                continue;
            };
            let next = r
                .steps
                .get(k + 2)
                .cloned()
                .unwrap_or_else(|| r.final_sentence());
            let originals = [
                Some(r.steps[k + 1].clone()),
                restatement(&mut rng, r, &r.steps[k + 1]),
                Some(answer_sentence(v)),
                Some(next),
            ];
            let kind = if k + 2 == r.steps.len() {
                Kind::AfterCombinedLast
            } else {
                Kind::AfterCombined
            };
            let mut told: Vec<String> = Vec::new();
            for original in originals.into_iter().flatten() {
                // After the last two steps the early answer is the answer, told once.
                if told.contains(&original) {
                    continue;
                }
                told.push(original.clone());
                // The second step told again derives nothing new; the oracle would keep it
                // where its result is also the answer (it counts that number twice).
                let corrected = if original == r.steps[k + 1] {
                    next_step(r, &written_out)
                } else {
                    GroundedOracle::decide(r, &written_out, &original)
                };
                out.push(labelled(r, prefix.clone(), kind, original, corrected));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::gsm8k::read;
    use super::*;

    #[test]
    fn records_are_labelled_by_the_oracle_and_about_half_are_kept() {
        let (refs, _) = read(include_str!("../../../models/eval/gsm8k-val.jsonl")).unwrap();
        let recs = records(&refs, 2, 5);
        assert_eq!(recs, records(&refs, 2, 5), "seeded");
        assert!(recs.len() > refs.len(), "{}", recs.len());
        let mut kept = std::collections::HashMap::<&str, (usize, usize)>::new();
        for r in &recs {
            assert_eq!(r.copy, r.corrected == r.original, "{r:?}");
            assert!(!r.corrected.is_empty());
            let e = kept.entry(r.kind.as_str()).or_default();
            e.0 += 1;
            e.1 += r.copy as usize;
        }
        // Reference steps are always kept; mistakes almost never are.
        let reference = kept[Kind::ReferenceStep.name().as_str()];
        assert_eq!(reference.0, reference.1);
        for k in [
            Kind::WrongResult,
            Kind::WrongOperand,
            Kind::WrongFinalAnswer,
            Kind::PrematureAnswer,
            Kind::Narration,
        ] {
            let (n, c) = kept[k.name().as_str()];
            assert!(n > 5 && c * 10 <= n, "{k:?}: {c} of {n} kept");
        }
        let copies = recs.iter().filter(|r| r.copy).count() as f64 / recs.len() as f64;
        assert!((0.35..0.7).contains(&copies), "{copies}");
    }

    /// The demo's example: two events told in one sentence of the question.
    fn mia() -> Reference {
        Reference {
            question: "Mia has 12 apples. She buys 5 more and then gives away 3. How many?".into(),
            steps: vec![
                "She buys 5 more, so 12 + 5 = 17 apples.".into(),
                "Then she gives away 3, so 17 - 3 = 14 apples.".into(),
            ],
            answer: 14.0,
            index: 0,
        }
    }

    #[test]
    fn a_sentence_that_tells_two_events_and_computes_one_is_rewritten() {
        let recs = merged_records(&[mia()]);
        assert_eq!(recs.len(), 4, "{recs:?}");
        let merged = &recs[0];
        assert_eq!(merged.kind, Kind::MergedEvents.name());
        assert_eq!(
            merged.original,
            "She buys 5 more and then gives away 3, so 12 + 5 = 17 apples."
        );
        assert_eq!(merged.corrected, "She buys 5 more, so 12 + 5 = 17 apples.");
        assert!(!merged.copy && recs[1].copy);
        // The two steps told as one in other words: kept when right, the first step when wrong.
        let right = &recs[2];
        assert_eq!(right.kind, Kind::TwoStepsRight.name());
        assert!(
            [
                "She buys 5 more and she gives away 3, so 12 + 5 - 3 = 14 apples.",
                "She buys 5 more and gives away 3, so 12 + 5 - 3 = 14 apples."
            ]
            .contains(&right.original.as_str()),
            "{right:?}"
        );
        assert!(right.copy, "{right:?}");
        let wrong = &recs[3];
        assert_eq!(wrong.kind, Kind::TwoStepsWrong.name());
        assert!(
            wrong.original.starts_with("She buys 5 more and ")
                && wrong.original.contains("gives away 3, so 12 + 5 - 3 = "),
            "{wrong:?}"
        );
        assert!(!wrong.original.ends_with("= 14 apples."), "{wrong:?}");
        assert_eq!(wrong.corrected, "She buys 5 more, so 12 + 5 = 17 apples.");
    }

    #[test]
    fn after_a_half_done_merged_sentence_the_missing_step_is_written() {
        let all = after_merged_records(&[mia()], 3);
        let (recs, combined): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|x| x.kind == Kind::AfterMerged.name());
        assert_eq!(recs.len(), 4, "{recs:?}");
        let merged = "She buys 5 more and then gives away 3, so 12 + 5 = 17 apples.";
        assert!(recs.iter().all(|x| x.prefix == merged), "{recs:?}");
        assert!(recs.iter().all(|x| x.kind == Kind::AfterMerged.name()));
        let step = "Then she gives away 3, so 17 - 3 = 14 apples.";
        let restated = &recs[0];
        assert!(
            [
                "Mia has 17 apples now.",
                "So that makes 17 apples.",
                "Now we have 17 apples."
            ]
            .contains(&restated.original.as_str()),
            "{restated:?}"
        );
        assert_eq!(restated.corrected, step);
        assert_eq!(recs[1].original, "The answer is 17.");
        assert_eq!(recs[1].corrected, step);
        assert!(recs[2].copy && recs[2].original == step, "{:?}", recs[2]);
        assert!(recs[3].copy, "{:?}", recs[3]);
        // Both events computed: nothing is missing, the second step is not taken again.
        assert_eq!(combined.len(), 3, "{combined:?}");
        let both = "She buys 5 more and then gives away 3, so 12 + 5 - 3 = 14 apples.";
        assert!(combined.iter().all(|x| x.prefix == both), "{combined:?}");
        assert!(
            combined
                .iter()
                .all(|x| x.kind == Kind::AfterCombinedLast.name())
        );
        assert_eq!(combined[0].original, step);
        assert_eq!(combined[0].corrected, "The answer is 14.");
        assert_eq!(combined[1].corrected, "The answer is 14.");
        assert!(combined[2].copy && combined[2].original == "The answer is 14.");
    }

    #[test]
    fn a_step_done_with_the_wrong_operation_is_rewritten_and_the_step_kept() {
        let mut rng = SmallRng::seed_from_u64(1);
        let step = "She buys 5 more, so 12 + 5 = 17 apples.";
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            seen.insert(wrong_operator(&mut rng, step).unwrap());
        }
        let want = [
            "She buys 5 more, so 12 - 5 = 7 apples.",
            "She buys 5 more, so 12 * 5 = 60 apples.",
            "She buys 5 more, so 12 / 5 = 2.4 apples.",
        ];
        assert_eq!(
            seen,
            want.iter().map(|s| s.to_string()).collect(),
            "{seen:?}"
        );
        // 0.2 x 50: "x" is the operator; 17 / 3 has too many decimals; two operators: none.
        let all: Vec<_> = (0..40)
            .filter_map(|_| wrong_operator(&mut rng, "She earned 0.2 x 50 = 10."))
            .collect();
        assert!(all.iter().all(|s| !s.contains(" x ")), "{all:?}");
        assert!(
            all.contains(&"She earned 0.2 + 50 = 50.2.".to_string()),
            "{all:?}"
        );
        for _ in 0..20 {
            let s = wrong_operator(&mut rng, "So 17 * 3 = 51.").unwrap();
            assert!(s == "So 17 + 3 = 20." || s == "So 17 - 3 = 14.", "{s}");
        }
        for _ in 0..20 {
            let s = wrong_operator(&mut rng, "So 2 + 2 = 4.").unwrap();
            assert!(
                s == "So 2 - 2 = 0." || s == "So 2 / 2 = 1.",
                "{s}: 2 * 2 is right"
            );
        }
        assert_eq!(wrong_operator(&mut rng, "So 12 + 5 - 3 = 14."), None);
        assert_eq!(wrong_operator(&mut rng, "Mia has 12 apples."), None);

        let recs = wrong_operator_records(&[mia()], 2);
        assert_eq!(recs.len(), 2, "{recs:?}");
        let (wrong, kept) = (&recs[0], &recs[1]);
        assert_eq!(wrong.kind, Kind::WrongOperator.name());
        let k = usize::from(!wrong.prefix.is_empty());
        assert!(
            !wrong.copy && wrong.corrected == mia().steps[k],
            "{wrong:?}"
        );
        assert_eq!(kept.kind, Kind::ReferenceStep.name());
        assert!(kept.copy && kept.prefix == wrong.prefix && kept.original == wrong.corrected);
    }

    #[test]
    fn paraphrases_keep_the_equation() {
        let mut rng = SmallRng::seed_from_u64(1);
        let s = "Natalia sold 48/2 = 24 clips in May.";
        for _ in 0..20 {
            let p = paraphrase(&mut rng, s);
            assert_eq!(claims(&p).last().map(|c| c.1), Some(24.0), "{p}");
        }
        assert_eq!(
            changed_operand(s, 3.0, false).as_deref(),
            Some("Natalia sold 48/3 = 16 clips in May.")
        );
        assert_eq!(
            changed_operand(s, 5.0, true).as_deref(),
            Some("Natalia sold 48/2 + 5 = 29 clips in May.")
        );
    }
}
