//! Arithmetic in text, read one way for everyone: the operations (`Op`), one tokenizer of
//! numbers and operators, one evaluator of expressions, and what is built on them:
//!
//! - [`pending_value`]: the value of the expression a text ends with before "=" (the
//!   calculator writes it while decoding; GSM8K's annotations are checked with it);
//! - [`equations`] and [`claims`]: the equations a sentence states, each with the value of its
//!   expression and the number it claims (the generator's oracle reads every "expression = n";
//!   the grounded oracle reads them as the calculator writes them); [`computations`]: the same
//!   equations as the numbers they combine (a step done again is the same computation), and
//!   [`operations`] those of one operation on two numbers;
//! - [`numbers`], [`stated_answer`] and [`predicted_answer`]: a sentence's numbers, the answer
//!   a sentence states, and the number a whole answer ends on (evaluation);
//! - [`format_number`] and [`same`]: a value as the calculator writes it, and two values that
//!   agree to its two decimals.

use serde::{Deserialize, Serialize};

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }

    /// The operation a sign stands for: + - − * × x / ÷.
    pub fn from_symbol(s: &str) -> Option<Op> {
        match s {
            "+" => Some(Op::Add),
            "-" | "−" => Some(Op::Sub),
            "*" | "×" | "x" => Some(Op::Mul),
            "/" | "÷" => Some(Op::Div),
            _ => None,
        }
    }

    /// `a op b`, when it is a whole number.
    pub fn apply(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div => (b != 0 && a % b == 0).then(|| a / b),
        }
    }

    /// `a op b` in decimals; None for a division by zero.
    pub fn eval(self, a: f64, b: f64) -> Option<f64> {
        match self {
            Op::Add => Some(a + b),
            Op::Sub => Some(a - b),
            Op::Mul => Some(a * b),
            Op::Div => (b != 0.0).then(|| a / b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Num(f64),
    Op(Op),
    Open,
    Close,
    Eq,
    Other,
}

/// The tokens of `s`: numbers ("1,200" is 1200; a "." belongs to a number only when a digit
/// follows it), operators (× ÷ − too, and "x" as a word of its own: "3 x 4"), parentheses, "="
/// and anything else. Spaces and currency signs are skipped: "2 × $3" multiplies.
fn tokens(s: &str) -> Vec<Token> {
    spanned(s).into_iter().map(|(t, _)| t).collect()
}

/// As [`tokens`], each with the bytes of `s` it was read from.
fn spanned(s: &str) -> Vec<(Token, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let token = match c {
            '0'..='9' => {
                let mut digits = String::from(c);
                while let Some(&(j, d)) = chars.peek() {
                    // A point or a comma inside a number has a digit after it ("2.5", "1,200");
                    // "= 120, leaving" ends the number at the comma.
                    let inside = (d == '.' || d == ',')
                        && s[j + 1..].starts_with(|n: char| n.is_ascii_digit());
                    if !(d.is_ascii_digit() || inside) {
                        break;
                    }
                    if d != ',' {
                        digits.push(d);
                    }
                    chars.next();
                }
                digits.parse().map_or(Token::Other, Token::Num)
            }
            ' ' | '$' | '€' => continue,
            'x' if s[..i].ends_with(' ') && s[i + 1..].starts_with(' ') => Token::Op(Op::Mul),
            '(' => Token::Open,
            ')' => Token::Close,
            '=' => Token::Eq,
            'x' => Token::Other,
            _ => Op::from_symbol(c.encode_utf8(&mut [0; 4])).map_or(Token::Other, Token::Op),
        };
        let end = chars.peek().map_or(s.len(), |&(j, _)| j);
        out.push((token, i..end));
    }
    out
}

/// The value of `tokens` as one whole expression (parentheses first, then × and ÷, then + and
/// −, each from the left); None when they aren't one, or it divides by zero or overflows.
fn evaluate(tokens: &[Token]) -> Option<f64> {
    let mut pos = 0;
    let v = sum(tokens, &mut pos)?;
    (pos == tokens.len() && v.is_finite()).then_some(v)
}

fn sum(t: &[Token], pos: &mut usize) -> Option<f64> {
    let mut v = product(t, pos)?;
    while let Some(&Token::Op(op @ (Op::Add | Op::Sub))) = t.get(*pos) {
        *pos += 1;
        v = op.eval(v, product(t, pos)?)?;
    }
    Some(v)
}

fn product(t: &[Token], pos: &mut usize) -> Option<f64> {
    let mut v = atom(t, pos)?;
    while let Some(&Token::Op(op @ (Op::Mul | Op::Div))) = t.get(*pos) {
        *pos += 1;
        v = op.eval(v, atom(t, pos)?)?;
    }
    Some(v)
}

fn atom(t: &[Token], pos: &mut usize) -> Option<f64> {
    match *t.get(*pos)? {
        Token::Num(n) => {
            *pos += 1;
            Some(n)
        }
        Token::Open => {
            *pos += 1;
            let v = sum(t, pos)?;
            (t.get(*pos) == Some(&Token::Close)).then(|| *pos += 1)?;
            Some(v)
        }
        _ => None,
    }
}

/// The value of `s` as a whole expression with at least one operator.
fn expression(s: &str) -> Option<f64> {
    let t = tokens(s);
    t.iter().any(|t| matches!(t, Token::Op(_))).then_some(())?;
    evaluate(&t)
}

/// When `text` ends with an arithmetic expression of numbers, + - * / × ÷ x and parentheses,
/// then "=" (and maybe spaces), its value: what the calculator writes next, and how GSM8K's
/// equations are checked ("48/2 = 24" is true when `pending_value("48/2 =")` is 24).
pub fn pending_value(text: &str) -> Option<f64> {
    let before = text.trim_end().strip_suffix('=')?;
    // The longest run of expression characters before the "=", then the longest suffix of it
    // that is a whole expression ("… 5. 12 + 3 =" computes 12 + 3).
    let start = before
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_ascii_digit() || " .+-*/×÷x()−$".contains(c))
        .last()
        .map(|(i, _)| i)?;
    let run = &before[start..];
    run.char_indices()
        .filter(|&(i, c)| {
            (c.is_ascii_digit() || c == '(')
                && !run[..i].ends_with(|p: char| p.is_ascii_digit() || p == '.')
        })
        .find_map(|(i, _)| expression(&run[i..]))
}

/// A value as the calculator writes it: whole numbers without decimals, others to 2 places.
pub fn format_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Two numbers are the same when they agree to the calculator's two decimals.
pub fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.005 + 1e-9 * a.abs().max(b.abs())
}

/// The numbers of a sentence, in order ("1,200" is 1200; signs are not read).
pub fn numbers(s: &str) -> Vec<f64> {
    numbers_of(&tokens(s)).collect()
}

fn numbers_of(t: &[Token]) -> impl Iterator<Item = f64> + '_ {
    t.iter().filter_map(|t| {
        if let Token::Num(n) = *t {
            Some(n)
        } else {
            None
        }
    })
}

/// Every "expression = n" of a sentence as the generator's oracle reads it: the expression is
/// the longest run of numbers and operators before the "=" (a lone number is one), n the
/// number right after it. Each as (the expression's value, None when it has none; n).
pub fn equations(s: &str) -> Vec<(Option<f64>, f64)> {
    expressions(&tokens(s), false)
        .into_iter()
        .map(|(expr, claimed)| (evaluate(expr), claimed))
        .collect()
}

/// Every equation of a sentence (as [`equations`] reads them) as the computation it does: the
/// numbers of its expression, in increasing order, and the number claimed. A step told again in
/// other words is the same computation ("4 + 3 = 7" and "3 + 4 = 7 km").
pub fn computations(s: &str) -> Vec<(Vec<f64>, f64)> {
    expressions(&tokens(s), false)
        .into_iter()
        .map(|(expr, claimed)| {
            let mut operands: Vec<f64> = numbers_of(expr).collect();
            operands.sort_by(f64::total_cmp);
            (operands, claimed)
        })
        .collect()
}

/// Whether two computations ([`computations`]) are the same step: the same numbers and the same
/// result.
pub fn same_computation((a, x): &(Vec<f64>, f64), (b, y): &(Vec<f64>, f64)) -> bool {
    same(*x, *y) && a.len() == b.len() && a.iter().zip(b).all(|(&m, &n)| same(m, n))
}

/// The equations of a sentence that do one operation on two numbers ("45 - 4 = 41"; the number
/// claimed may be negative: "18 - 195 = -177"), each as (a, the operation, b, the number
/// claimed), in order.
pub fn operations(s: &str) -> Vec<(f64, Op, f64, f64)> {
    one_operations(&tokens(s))
        .into_iter()
        .map(|(_, o)| o)
        .collect()
}

/// [`operations`], each with the index of its first token in `t`.
fn one_operations(t: &[Token]) -> Vec<(usize, (f64, Op, f64, f64))> {
    let mut out = Vec::new();
    for i in 3..t.len() {
        let claimed = match (t[i], t.get(i + 1), t.get(i + 2)) {
            (Token::Eq, Some(&Token::Num(n)), _) => n,
            (Token::Eq, Some(&Token::Op(Op::Sub)), Some(&Token::Num(n))) => -n,
            _ => continue,
        };
        let alone = i == 3 || !matches!(t[i - 4], Token::Num(_) | Token::Op(_));
        if let [Token::Num(a), Token::Op(op), Token::Num(b)] = t[i - 3..i]
            && alone
        {
            out.push((i - 3, (a, op, b, claimed)));
        }
    }
    out
}

/// `s` with its `k`-th one-operation equation ([`operations`]) done with `op` instead, its two
/// numbers in the other order when `swap`, and the number claimed what that computes, as the
/// calculator writes it: "45 - 4 = 41 boxes" redone as `*` is "45 * 4 = 180 boxes", as `-`
/// swapped "4 - 45 = -41 boxes". The numbers keep their writing ("$1,200"); None when there is
/// no such equation, or a division by zero.
pub fn redo_operation(s: &str, k: usize, op: Op, swap: bool) -> Option<String> {
    rewrite_operation(s, k, |a, _, b| {
        Some(if swap { (b, op, a) } else { (a, op, b) })
    })
}

/// `s` with one number of its `k`-th one-operation equation (`which`: 0 the first, 1 the second)
/// replaced by `value`, and the number claimed what the same operation then computes: "14 * 12
/// = 168 pages" with the second number 6 is "14 * 6 = 84 pages". None when there is no such
/// equation, or a division by zero.
pub fn replace_operand(s: &str, k: usize, which: usize, value: f64) -> Option<String> {
    rewrite_operation(s, k, |a, op, b| {
        let mut pair = [a, b];
        *pair.get_mut(which)? = (format_number(value), value);
        let [x, y] = pair;
        Some((x, op, y))
    })
}

/// Where the `k`-th one-operation equation of `s` ([`operations`]) lies: from its first number
/// (with a currency sign before it) to the number it claims (with its minus sign, "= -177").
/// None when there is no such equation.
pub fn equation_span(s: &str, k: usize) -> Option<std::ops::Range<usize>> {
    let spanned = spanned(s);
    let t: Vec<Token> = spanned.iter().map(|(t, _)| *t).collect();
    let (at, _) = *one_operations(&t).get(k)?;
    let start = spanned[at].1.start;
    let start = s[..start].strip_suffix(['$', '€']).map_or(start, str::len);
    Some(start..claimed(&spanned, at).end)
}

/// The span of the number the one-operation equation at token `at` claims, with its minus sign.
fn claimed(spanned: &[(Token, std::ops::Range<usize>)], at: usize) -> std::ops::Range<usize> {
    if spanned[at + 4].0 == Token::Op(Op::Sub) {
        spanned[at + 4].1.start..spanned[at + 5].1.end
    } else {
        spanned[at + 4].1.clone()
    }
}

/// `s` with its `k`-th one-operation equation ([`equation_span`]) replaced by `text`: "so 150 -
/// 30 = 120 stickers" with "30 * 3 = 90, and 150 - 90 = 60" is "so 30 * 3 = 90, and 150 - 90 =
/// 60 stickers". None when there is no such equation.
pub fn replace_equation(s: &str, k: usize, text: &str) -> Option<String> {
    let span = equation_span(s, k)?;
    Some(format!("{}{text}{}", &s[..span.start], &s[span.end..]))
}

/// A number as a sentence writes it ("$1,200"), and its value.
type Written = (String, f64);

/// `s` with its `k`-th one-operation equation replaced by `x op y` and what that computes: "In 7
/// days he runs 4 + 3 = 7 km" with 7 * 7 is "In 7 days he runs 7 * 7 = 49 km". None when there
/// is no such equation, or a division by zero.
pub fn replace_operation(s: &str, k: usize, x: f64, op: Op, y: f64) -> Option<String> {
    let written = |v: f64| (format_number(v), v);
    rewrite_operation(s, k, |_, _, _| Some((written(x), op, written(y))))
}

/// The `k`-th one-operation equation of `s` rewritten: `make` gets its two numbers (as written,
/// and their values) and its operation, and gives the new ones; the number claimed becomes what
/// they compute, the rest of `s` is kept.
fn rewrite_operation(
    s: &str,
    k: usize,
    make: impl FnOnce(Written, Op, Written) -> Option<(Written, Op, Written)>,
) -> Option<String> {
    let spanned = spanned(s);
    let t: Vec<Token> = spanned.iter().map(|(t, _)| *t).collect();
    let (at, (a, op, b, _)) = *one_operations(&t).get(k)?;
    let span = |i: usize| spanned[i].1.clone();
    let written = |i: usize, v: f64| (s[span(i)].to_string(), v);
    let ((x_text, x), op, (y_text, y)) = make(written(at, a), op, written(at + 2, b))?;
    let value = op.eval(x, y)?;
    let claimed = claimed(&spanned, at);
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..span(at).start]);
    out.push_str(&x_text);
    out.push_str(&s[span(at).end..span(at + 1).start]);
    out.push_str(op.symbol());
    out.push_str(&s[span(at + 1).end..span(at + 2).start]);
    out.push_str(&y_text);
    out.push_str(&s[span(at + 2).end..claimed.start]);
    out.push_str(&format_number(value));
    out.push_str(&s[claimed.end..]);
    Some(out)
}

/// The "expression = n" of a sentence's tokens: the longest run of numbers and operators before
/// each "=" that a number follows, and that number. `grouped` reads them as [`checks_out`]
/// does: parentheses belong to the expression, and a number that starts another expression
/// claims nothing ("= 0.2*50 = 10" claims only the 10).
fn expressions(t: &[Token], grouped: bool) -> Vec<(&[Token], f64)> {
    let part = |x: &Token| match x {
        Token::Num(_) | Token::Op(_) => true,
        Token::Open | Token::Close => grouped,
        _ => false,
    };
    let mut out = Vec::new();
    for (i, token) in t.iter().enumerate() {
        if *token != Token::Eq {
            continue;
        }
        let Some(&Token::Num(claimed)) = t.get(i + 1) else {
            continue;
        };
        if grouped && matches!(t.get(i + 2), Some(Token::Op(_) | Token::Open)) {
            continue;
        }
        let start = t[..i].iter().rposition(|x| !part(x)).map_or(0, |p| p + 1);
        out.push((&t[start..i], claimed));
    }
    out
}

/// Whether a sentence's arithmetic holds up against what came before it: every "... = n" has an
/// expression right before the "=" and it computes n, and every number of an expression is a
/// number of `context` (the question and the answer so far) or a result the sentence itself
/// wrote before it. A sentence with no equation checks out. The aligner's copy margin protects
/// only such a sentence: a false step, or one that computes with a number from nowhere, is left
/// to the aligner to rewrite.
pub fn checks_out(sentence: &str, context: &str) -> bool {
    checks_out_with(sentence, context, &[])
}

/// [`checks_out`], with `also` known besides the numbers of `context` (the numbers a question's
/// words imply, say).
pub fn checks_out_with(sentence: &str, context: &str, also: &[f64]) -> bool {
    let mut known = numbers(context);
    known.extend(also);
    for (expr, claimed) in expressions(&tokens(sentence), true) {
        // False, or no expression to check ("22 * 16 shells = 360").
        let right = evaluate(expr).is_some_and(|v| same(v, claimed));
        let grounded = numbers_of(expr).all(|n| known.iter().any(|&k| same(k, n)));
        if !(right && grounded) {
            return false;
        }
        known.push(claimed);
    }
    true
}

/// The equations of a sentence as the calculator writes them: for each "=" followed by a
/// number, the value of the expression before it ([`pending_value`]: None when there is none
/// the calculator can read) and the number claimed. "= 0.2*50 = 10": a number that starts
/// another expression claims nothing.
pub fn claims(s: &str) -> Vec<(Option<f64>, f64)> {
    let mut out = Vec::new();
    for (i, _) in s.match_indices('=') {
        let after = s[i + 1..].trim_start_matches([' ', '$']);
        let len = after
            .char_indices()
            .take_while(|&(j, c)| {
                c.is_ascii_digit()
                    || (c == ',' || c == '.')
                        && after[j + 1..].starts_with(|d: char| d.is_ascii_digit())
            })
            .last()
            .map_or(0, |(j, c)| j + c.len_utf8());
        let Ok(claimed) = after[..len].replace(',', "").parse::<f64>() else {
            continue;
        };
        let next = after[len..].trim_start();
        if next.starts_with(['+', '-', '*', '/', '×', '÷', '(']) || next.starts_with("x ") {
            continue;
        }
        out.push((pending_value(&s[..=i]), claimed));
    }
    out
}

/// The number words a text may write instead of digits.
const CARDINALS: &[(&str, f64)] = &[
    ("one", 1.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("twenty", 20.0),
    ("thirty", 30.0),
    ("forty", 40.0),
    ("fifty", 50.0),
    ("hundred", 100.0),
    ("thousand", 1000.0),
];

/// The number a number word names ("seven" is 7), if it names one.
pub fn cardinal(word: &str) -> Option<f64> {
    CARDINALS.iter().find(|(w, _)| *w == word).map(|&(_, v)| v)
}

/// Numbers a question's words give without writing them: number words ("seven", "a dozen"),
/// multiples and fractions ("twice" is 2, "half" 2 and 0.5), percentages (100), and the factor
/// between two units the question names both of ("a day" and "a week": 7), and how many share
/// when one shares with others too ([`sharing_group`]: "with 3 friends and herself", 4). A step that
/// computes with one of them does not compute with a number from nowhere.
pub fn implied_numbers(question: &str) -> Vec<f64> {
    const WORDS: &[(&str, &[f64])] = &[
        ("dozen", &[12.0]),
        ("pair", &[2.0]),
        ("twice", &[2.0]),
        ("double", &[2.0]),
        ("doubles", &[2.0]),
        ("triple", &[3.0]),
        ("thrice", &[3.0]),
        ("half", &[2.0, 0.5]),
        ("halves", &[2.0, 0.5]),
        ("third", &[3.0]),
        ("quarter", &[4.0, 0.25]),
        ("percent", &[100.0]),
    ];
    const UNITS: &[(&str, &str, f64)] = &[
        ("week", "day", 7.0),
        ("day", "hour", 24.0),
        ("hour", "minute", 60.0),
        ("minute", "second", 60.0),
        ("year", "month", 12.0),
        ("year", "week", 52.0),
        ("year", "day", 365.0),
        ("dollar", "cent", 100.0),
        ("meter", "centimeter", 100.0),
        ("kilometer", "meter", 1000.0),
        ("kilogram", "gram", 1000.0),
        ("liter", "milliliter", 1000.0),
        ("foot", "inch", 12.0),
        ("feet", "inch", 12.0),
        ("kilogram", "g", 1000.0),
        ("kg", "g", 1000.0),
        ("yard", "feet", 3.0),
    ];
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    // A unit named in the singular or the plural ("days", "inches").
    let names = |unit: &str| {
        words.iter().any(|w| {
            w.strip_prefix(unit)
                .is_some_and(|r| ["", "s", "es"].contains(&r))
        })
    };
    let mut out: Vec<f64> = CARDINALS
        .iter()
        .filter(|(w, _)| words.contains(w))
        .map(|&(_, v)| v)
        .collect();
    out.extend(
        WORDS
            .iter()
            .filter(|(w, _)| words.contains(w))
            .flat_map(|(_, v)| v.iter().copied()),
    );
    // "two and a half", "3 and a half": the number and a half.
    for (at, _) in lower.match_indices(" and a half") {
        let before = lower[..at].split_whitespace().last().unwrap_or("");
        let whole = before.parse::<f64>().ok().or_else(|| cardinal(before));
        out.extend(whole.map(|n| n + 0.5));
    }
    if question.contains('%') {
        out.push(100.0);
    }
    // "with 3 friends and keeps one share": 4 share.
    out.extend(
        super::sentence_splitter::split_sentences(question)
            .into_iter()
            .filter_map(|s| sharing_group(s).map(|(_, group)| group)),
    );
    out.extend(
        UNITS
            .iter()
            .filter(|(big, small, _)| names(big) && names(small))
            .map(|&(_, _, f)| f),
    );
    out
}

/// The words that make a text a sharing.
pub(super) const SHARING: &[&str] = &[
    "share", "shares", "shared", "split", "splits", "divide", "divides", "divided", "equally",
];
const OWN: &[&str] = &["his", "her", "their", "my", "our", "your"];
const SELVES: &[&str] = &[
    "herself",
    "himself",
    "themselves",
    "myself",
    "ourselves",
    "yourself",
];

/// The number of others a sharing names and how many share, when one shares with them too:
/// "splits the money equally with 3 friends and keeps one share", "with her 4 friends and
/// herself", "between him and his 2 brothers" are (3, 4), (4, 5) and (2, 3). None for a text
/// that shares nothing, names no such number, or gives the whole group's number itself.
pub fn sharing_group(text: &str) -> Option<(f64, f64)> {
    let w: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let has = |list: &[&str]| w.iter().any(|x| list.contains(&x.as_str()));
    if !has(SHARING) {
        return None;
    }
    let keeps = has(SELVES)
        || w.windows(2).any(|p| {
            ["keeps", "keep", "keeping"].contains(&p[0].as_str())
                && ["one", "a", "an"].contains(&p[1].as_str())
        });
    let value = |x: &str| x.parse::<f64>().ok().or_else(|| cardinal(x));
    let at = |i: usize| w.get(i).map(String::as_str);
    let found = (0..w.len()).find_map(|i| {
        let n = value(&w[i])?;
        let before = |k: usize| i.checked_sub(k).and_then(at);
        let det = before(1).is_some_and(|x| OWN.contains(&x));
        let with = before(1) == Some("with") || det && before(2) == Some("with");
        // "Tom and his 2 brothers split", "between herself and her 3 friends".
        let and_own = det && before(2) == Some("and");
        ((with && keeps) || and_own).then_some((n, n + 1.0))
    })?;
    let written = numbers(text).into_iter().any(|x| same(x, found.1));
    (!written).then_some(found)
}

/// The final answer a sentence states, if it states one: the first number after its first
/// "answer is" or "answer:" ("the answer is 17").
pub fn stated_answer(s: &str) -> Option<f64> {
    let lower = s.to_lowercase();
    let at = lower.find("answer is").or_else(|| lower.find("answer:"))?;
    numbers(&s[at..]).first().copied()
}

/// The number a whole answer ends on: the first after its last "answer is", else its last
/// number. Numbers are read as words of digits, "." "," and "-" ("12-5=7" is not 12: a word
/// that doesn't parse is skipped, so "answer is 12-5=7." reads 7).
pub fn predicted_answer(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let tail = lower
        .rfind("answer is")
        .map_or(lower.as_str(), |i| &lower[i..]);
    let words = |s: &str| -> Vec<f64> {
        s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
            .filter_map(|w| {
                let w = w.trim_matches(|c| c == '.' || c == ',' || c == '-');
                w.replace(',', "").parse::<f64>().ok()
            })
            .collect()
    };
    let in_tail = words(tail);
    if lower.contains("answer is") && !in_tail.is_empty() {
        return in_tail.first().copied();
    }
    words(&lower).last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_redone_in_place_with_its_result() {
        let s = "She earns $15 a week, so $15 - 8 = 7 dollars, then 7 + 2 = 9.";
        assert_eq!(
            redo_operation(s, 0, Op::Mul, false).as_deref(),
            Some("She earns $15 a week, so $15 * 8 = 120 dollars, then 7 + 2 = 9.")
        );
        assert_eq!(
            redo_operation(s, 1, Op::Sub, true).as_deref(),
            Some("She earns $15 a week, so $15 - 8 = 7 dollars, then 2 - 7 = -5.")
        );
        let s = "So 18 - 195 = -177 seats.";
        assert_eq!(
            redo_operation(s, 0, Op::Sub, true).as_deref(),
            Some("So 195 - 18 = 177 seats."),
            "a negative claim replaced whole"
        );
        assert_eq!(
            redo_operation("1,200 x 3 = 3,600 meters", 0, Op::Div, false).as_deref(),
            Some("1,200 / 3 = 400 meters")
        );
        assert_eq!(
            redo_operation("10 / 4 = 2.5", 0, Op::Sub, false).as_deref(),
            Some("10 - 4 = 6")
        );
        assert_eq!(
            redo_operation("5 - 0 = 5", 0, Op::Div, false),
            None,
            "by zero"
        );
        assert_eq!(
            redo_operation("2 + 3 * 4 = 14", 0, Op::Mul, false),
            None,
            "two operations"
        );
        assert_eq!(
            redo_operation("5 - 3 = 2", 1, Op::Add, false),
            None,
            "no second one"
        );
    }

    #[test]
    fn an_operand_is_replaced_in_place_with_the_result() {
        assert_eq!(
            replace_operand("Tom reads 14 * 12 = 168 pages.", 0, 1, 6.0).as_deref(),
            Some("Tom reads 14 * 6 = 84 pages.")
        );
        assert_eq!(
            replace_operand("She has $1,200 - 300 = $900 left.", 0, 0, 1500.0).as_deref(),
            Some("She has $1500 - 300 = $1200 left.")
        );
        assert_eq!(
            replace_operand("So 8 - 5 = 3 and 3 * 4 = 12.", 1, 1, 0.5).as_deref(),
            Some("So 8 - 5 = 3 and 3 * 0.5 = 1.5.")
        );
        assert_eq!(
            replace_operand("8 - 5 = 3", 0, 2, 1.0),
            None,
            "no third number"
        );
        assert_eq!(replace_operand("8 / 5 = 1.6", 0, 1, 0.0), None, "by zero");
    }

    #[test]
    fn an_operation_is_replaced_in_place_with_its_result() {
        assert_eq!(
            replace_operation("In 7 days he runs 4 + 3 = 7 km.", 0, 7.0, Op::Mul, 7.0).as_deref(),
            Some("In 7 days he runs 7 * 7 = 49 km.")
        );
        assert_eq!(replace_operation("7 - 4 = 3", 0, 7.0, Op::Div, 0.0), None);
    }

    #[test]
    fn an_equation_is_replaced_by_any_text() {
        let s = "She has 150 - 30 = 120 stickers, and 18 - 195 = -177.";
        assert_eq!(
            replace_equation(s, 0, "30 * 3 = 90, and 150 - 90 = 60").as_deref(),
            Some("She has 30 * 3 = 90, and 150 - 90 = 60 stickers, and 18 - 195 = -177.")
        );
        assert_eq!(
            replace_equation(s, 1, "195 - 18 = 177").as_deref(),
            Some("She has 150 - 30 = 120 stickers, and 195 - 18 = 177.")
        );
        assert_eq!(replace_equation(s, 2, "1 + 1 = 2"), None);
        // A comma after the number claimed stays; a currency sign goes with the equation.
        assert_eq!(
            replace_equation("so 150 - 30 = 120, leaving 120.", 0, "150 - 90 = 60").as_deref(),
            Some("so 150 - 90 = 60, leaving 120.")
        );
        assert_eq!(
            replace_equation("He pays $4 * 6 = $24 in all.", 0, "6 * 4 = 24").as_deref(),
            Some("He pays 6 * 4 = 24 in all.")
        );
        assert_eq!(
            numbers("1,200 and 3,4 but 5, 6"),
            vec![1200.0, 34.0, 5.0, 6.0]
        );
    }

    #[test]
    fn expressions_follow_precedence_parentheses_and_decimals() {
        let v = |s: &str| pending_value(s);
        assert_eq!(v("2 + 3 * 4 ="), Some(14.0));
        assert_eq!(v("(2 + 3) * 4 ="), Some(20.0));
        assert_eq!(v("20 - 8 - 2 ="), Some(10.0), "left to right");
        assert_eq!(v("48 / 2 / 4 ="), Some(6.0));
        assert_eq!(v("7 / 2 ="), Some(3.5));
        assert_eq!(v("1.5 * 4 ="), Some(6.0));
        assert_eq!(v("3 − 1 × 2 ÷ 4 ="), Some(2.5), "typeset signs");
        assert_eq!(v("3 x 4 ="), Some(12.0));
        assert_eq!(v("3x4 ="), None, "an x inside a word is no operator");
        assert_eq!(v("4 / 0 ="), None, "division by zero");
        assert_eq!(v("(4 / 0) ="), None);
        assert_eq!(
            v("4 / (2 - 2) ="),
            Some(0.0),
            "the longest suffix with a value"
        );
        assert_eq!(v("18 ="), None, "no operator");
        assert_eq!(v("5 + ="), None);
        assert_eq!(format_number(18.0 / 22.0), "0.82");
        assert_eq!(format_number(-10.0), "-10");
        assert_eq!(format_number(2.5), "2.5");
    }

    #[test]
    fn numbers_read_thousands_separators_and_full_stops() {
        assert_eq!(numbers("$1,200 and 3.5. Then 7."), vec![1200.0, 3.5, 7.0]);
        assert_eq!(numbers("-4 apples"), vec![4.0], "signs are not read");
        assert_eq!(numbers("no numbers"), Vec::<f64>::new());
    }

    #[test]
    fn equations_are_found_and_checked() {
        assert_eq!(
            equations("so 12 + 5 = 17 marbles"),
            vec![(Some(17.0), 17.0)]
        );
        assert_eq!(equations("17 * 23 = 381."), vec![(Some(391.0), 381.0)]);
        assert_eq!(equations("2 + 3 * 4 = 14"), vec![(Some(14.0), 14.0)]);
        assert_eq!(equations("$1,200 / 4 = $300"), vec![(Some(300.0), 300.0)]);
        assert_eq!(equations("She has 17 = 17."), vec![(Some(17.0), 17.0)]);
        assert_eq!(equations("5 + = 5"), vec![(None, 5.0)], "no expression");
        assert_eq!(equations("4 / 0 = 1"), vec![(None, 1.0)]);
        assert_eq!(equations("the total = some"), vec![]);
        assert_eq!(
            computations("In 7 days, 3 + 4 = 7 km, and 7 * 7 = 49."),
            vec![(vec![3.0, 4.0], 7.0), (vec![7.0, 7.0], 49.0)]
        );
        // The calculator's reading: commas are not in its expressions, chains claim once.
        assert_eq!(claims("sold 48/2 = 24 clips"), vec![(Some(24.0), 24.0)]);
        assert_eq!(claims("17 * 23 = 381."), vec![(Some(391.0), 381.0)]);
        assert_eq!(claims("20% of 50 = 0.2*50 = 10"), vec![(Some(10.0), 10.0)]);
        assert_eq!(claims("In all = 1,200 cars"), vec![(None, 1200.0)]);
        assert!(same(18.0 / 22.0, 0.82) && !same(0.81, 0.82));
    }

    #[test]
    fn a_sentence_checks_out_when_its_steps_are_true_and_use_known_numbers() {
        let q = "Mia has 12 apples. She buys 5 more and then gives away 3.";
        assert!(checks_out("Mia has 12 apples.", q), "no equation");
        assert!(checks_out("She buys 5 more, so 12 + 5 = 17 apples.", q));
        assert!(
            checks_out("So 12 + 5 = 17 and 17 - 3 = 14.", q),
            "its own result"
        );
        assert!(checks_out(
            "She gives away 3: 17 - 3 = 14.",
            &format!("{q} 12 + 5 = 17.")
        ));
        assert!(
            !checks_out("She buys 5 more, so 12 + 5 = 18 apples.", q),
            "false"
        );
        assert!(
            !checks_out("So 12 * 2 = 24 apples.", q),
            "2 comes from nowhere"
        );
        assert!(!checks_out("Then 17 - 3 = 14.", q), "17 is not known yet");
        assert!(
            !checks_out("So 12 * 5 apples = 60 apples.", q),
            "nothing to check"
        );
        assert!(
            checks_out("20% of 50 = 0.2*50 = 10", "0.2 of 50"),
            "a chain claims once"
        );
        assert!(
            checks_out("Together (12 + 5) * 3 = 51 apples.", q),
            "parentheses belong to the expression"
        );
        assert!(
            !checks_out("Together (12 + 5) * 3 = 27 apples.", q),
            "and are computed first"
        );
    }

    #[test]
    fn a_question_implies_the_numbers_its_words_and_units_give() {
        let has = |q: &str, n: f64| implied_numbers(q).iter().any(|&m| same(m, n));
        let q = "Eva walks her dog for 25 minutes twice a day. How many minutes in a week?";
        assert!(has(q, 2.0), "twice");
        assert!(has(q, 7.0), "a day and a week");
        assert!(!has(q, 24.0), "no hours named");
        assert!(!has(q, 60.0), "minutes without hours");
        assert!(has("She rides half that distance.", 0.5));
        assert!(has("She rides half that distance.", 2.0));
        assert!(has("He buys a dozen eggs.", 12.0));
        assert!(has("It costs 5 dollars and 20 cents.", 100.0));
        assert!(has("A discount of 20% applies.", 100.0));
        assert!(has("It takes 3 hours. How many minutes?", 60.0));
        assert!(has("Seven friends share it.", 7.0));
        assert!(!has("Someone shares it.", 1.0), "a word inside a word");
        assert!(has("It grows for two and a half years.", 2.5));
        assert!(has("It grows for 3 and a half years.", 3.5));
        assert!(has(
            "A bar weighs 125 g. The box holds 2 kilograms.",
            1000.0
        ));
        assert!(implied_numbers("Tom reads 14 pages every day for 6 days.").is_empty());
    }

    #[test]
    fn the_stated_answer_is_read_after_its_marker() {
        assert_eq!(stated_answer("So the answer is 1,250."), Some(1250.0));
        assert_eq!(stated_answer("Answer: 7"), Some(7.0));
        assert_eq!(stated_answer("She has 12 + 5 = 17 apples."), None);
        assert_eq!(stated_answer("The answer is unclear."), None);
        let p = predicted_answer;
        assert_eq!(p("So 3 + 4 = 7. The answer is 7."), Some(7.0));
        assert_eq!(p("The answer is 1,250 apples, not 3."), Some(1250.0));
        assert_eq!(p("He has 12 - 5 = 7 left"), Some(7.0), "the last number");
        assert_eq!(p("The answer is 4. No, the answer is 5."), Some(5.0));
        assert_eq!(p("The answer is 12-5=7."), Some(7.0));
        assert_eq!(p("no numbers"), None);
    }

    #[test]
    fn ops_apply_to_whole_numbers_only() {
        assert_eq!(Op::Div.apply(12, 4), Some(3));
        assert_eq!(Op::Div.apply(12, 5), None);
        assert_eq!(Op::Div.apply(12, 0), None);
        assert_eq!(Op::Sub.apply(3, 5), Some(-2));
        assert_eq!(Op::Mul.apply(i64::MAX, 2), None);
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Div] {
            assert_eq!(Op::from_symbol(op.symbol()), Some(op));
        }
        assert_eq!(Op::from_symbol("×"), Some(Op::Mul));
        assert_eq!(Op::from_symbol("="), None);
    }
}
