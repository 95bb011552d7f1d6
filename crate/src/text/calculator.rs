//! Calculator-assisted decoding, as in GSM8K's calculator annotations (Cobbe et al., 2021): when
//! the text being generated ends with an arithmetic expression and "=", the calculator writes
//! the value instead of the model. The model still chooses what to compute; only the arithmetic
//! itself, where a 135M model errs most ("18 + 22 = 30"), is taken out of its hands.
//!
//! The decoding loops ask [`Calculator::forced`] for the next token before sampling, and tell
//! [`Calculator::advance`] each token they emit.

use std::collections::VecDeque;

use super::Tokenizer;
use crate::error::Result;

/// Tokens of decoded text the calculator looks back over for an expression.
const LOOKBACK: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct Calculator {
    enabled: bool,
    forced: VecDeque<u32>,
}

impl Calculator {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            forced: VecDeque::new(),
        }
    }

    /// The token the calculator writes next, if it is writing a result.
    pub fn forced(&self) -> Option<u32> {
        self.forced.front().copied()
    }

    /// Records that `out`'s last token was emitted (the forced one, when there was one), and
    /// starts writing a result when `out` now ends with "expression =".
    pub fn advance(&mut self, tokenizer: &Tokenizer, out: &[u32]) -> Result<()> {
        if !self.enabled || self.forced.pop_front().is_some() {
            return Ok(());
        }
        let tail = tokenizer.decode(&out[out.len().saturating_sub(LOOKBACK)..])?;
        if let Some(value) = pending_result(&tail) {
            let text = if tail.ends_with(char::is_whitespace) {
                value
            } else {
                format!(" {value}")
            };
            self.forced = tokenizer.encode(&text)?.into();
        }
        Ok(())
    }
}

/// When `text` ends with an arithmetic expression of numbers, + - * / × ÷ x and parentheses,
/// then "=" (and maybe spaces), its value as it should be written.
pub fn pending_result(text: &str) -> Option<String> {
    pending_value(text).map(format_number)
}

/// The value [`pending_result`] writes, unformatted: also how the training oracles check an
/// equation ("48/2 = 24" is true when `pending_value("48/2 =")` is 24).
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
        .find_map(|(i, _)| evaluate(&run[i..]))
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Op(char),
    Open,
    Close,
}

fn lex(s: &str) -> Option<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            // Currency signs are part of how people write amounts: "2 × $3 =".
            ' ' | '$' => {}
            '0'..='9' => {
                let mut end = i + 1;
                while let Some(&(j, d)) = chars.peek() {
                    // A "." belongs to the number only when a digit follows it.
                    let decimal = d == '.' && s[j + 1..].starts_with(|n: char| n.is_ascii_digit());
                    if !(d.is_ascii_digit() || decimal) {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                toks.push(Tok::Num(s[i..end].parse().ok()?));
            }
            '+' => toks.push(Tok::Op('+')),
            '-' | '−' => toks.push(Tok::Op('-')),
            '*' | '×' => toks.push(Tok::Op('*')),
            // "x" multiplies only as a word of its own: "3 x 4".
            'x' if s[..i].ends_with(' ') && s[i + 1..].starts_with(' ') => toks.push(Tok::Op('*')),
            '/' | '÷' => toks.push(Tok::Op('/')),
            '(' => toks.push(Tok::Open),
            ')' => toks.push(Tok::Close),
            _ => return None,
        }
    }
    Some(toks)
}

/// The value of a whole expression with at least one operator, or None.
fn evaluate(s: &str) -> Option<f64> {
    let toks = lex(s)?;
    if !toks.iter().any(|t| matches!(t, Tok::Op(_))) {
        return None;
    }
    let mut pos = 0;
    let v = sum(&toks, &mut pos)?;
    (pos == toks.len() && v.is_finite()).then_some(v)
}

fn sum(t: &[Tok], pos: &mut usize) -> Option<f64> {
    let mut v = product(t, pos)?;
    while let Some(&Tok::Op(op @ ('+' | '-'))) = t.get(*pos) {
        *pos += 1;
        let r = product(t, pos)?;
        v = if op == '+' { v + r } else { v - r };
    }
    Some(v)
}

fn product(t: &[Tok], pos: &mut usize) -> Option<f64> {
    let mut v = atom(t, pos)?;
    while let Some(&Tok::Op(op @ ('*' | '/'))) = t.get(*pos) {
        *pos += 1;
        let r = atom(t, pos)?;
        v = if op == '*' {
            v * r
        } else if r != 0.0 {
            v / r
        } else {
            return None;
        };
    }
    Some(v)
}

fn atom(t: &[Tok], pos: &mut usize) -> Option<f64> {
    match *t.get(*pos)? {
        Tok::Num(n) => {
            *pos += 1;
            Some(n)
        }
        Tok::Open => {
            *pos += 1;
            let v = sum(t, pos)?;
            (t.get(*pos) == Some(&Tok::Close)).then(|| *pos += 1)?;
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::pending_result;

    #[test]
    fn computes_the_expression_before_the_equals_sign() {
        let r = |s: &str| pending_result(s);
        assert_eq!(r("there are 18 + 22 ="), Some("40".into()));
        assert_eq!(r("so 18 + 22 = "), Some("40".into()));
        assert_eq!(r("there are 40 * 4 ="), Some("160".into()));
        assert_eq!(r("(18 + 22) × 4 ="), Some("160".into()));
        assert_eq!(r("2 + 3 * 4 ="), Some("14".into()), "precedence");
        assert_eq!(r("3 x 4 ="), Some("12".into()));
        assert_eq!(r("63 / 3 ="), Some("21".into()));
        assert_eq!(r("18 / 22 ="), Some("0.82".into()));
        assert_eq!(r("16 - 26 ="), Some("-10".into()));
        assert_eq!(r("2 + 3 = 5 + 1 ="), Some("6".into()), "the last equation");
        assert_eq!(
            r("It has 5. 12 + 3 ="),
            Some("15".into()),
            "a sentence's full stop"
        );
        assert_eq!(r("1.5 * 4 ="), Some("6".into()));
        assert_eq!(r("2 × $3 ="), Some("6".into()), "currency");
        assert_eq!(
            r("(3 + 4 ="),
            Some("7".into()),
            "the longest whole expression"
        );
    }

    #[test]
    fn leaves_everything_else_to_the_model() {
        for s in [
            "there are 18 + 22 = 40",
            "x =",
            "the total =",
            "18 =",
            "box 3 =",
            "4 / 0 =",
            "5 + =",
            "",
        ] {
            assert_eq!(pending_result(s), None, "{s:?}");
        }
    }
}
