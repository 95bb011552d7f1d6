//! Calculator-assisted decoding, as in GSM8K's calculator annotations (Cobbe et al., 2021): when
//! the text being generated ends with an arithmetic expression and "=", the calculator writes
//! the value instead of the model. The model still chooses what to compute; only the arithmetic
//! itself, where a 135M model errs most ("18 + 22 = 30"), is taken out of its hands.
//!
//! The decoding loops ask [`Calculator::forced`] for the next token before sampling, and tell
//! [`Calculator::advance`] each token they emit.

use std::collections::VecDeque;

use super::Tokenizer;
use super::arithmetic::{format_number, pending_value};
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
