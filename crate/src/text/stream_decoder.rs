//! Streaming detokenization: turns tokens into text as they come, never emitting half of a
//! multi-byte character (a byte-level BPE token can end in the middle of one).

use super::tokenizer::Tokenizer;
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Tokens before `start` are already emitted and no longer needed for context.
    start: usize,
    /// Length of the text of `ids[start..]` already emitted.
    emitted: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text that is now complete, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tok.decode(&self.ids[self.start..])?;
        // An incomplete UTF-8 sequence decodes as U+FFFD at the end: wait for the next token.
        if text.len() <= self.emitted || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let new = text[self.emitted..].to_string();
        // Keep a few tokens of context so byte-level merges across the boundary stay correct.
        if self.ids.len() - self.start > 8 {
            self.start = self.ids.len() - 4;
            self.emitted = tok.decode(&self.ids[self.start..])?.len();
        } else {
            self.emitted = text.len();
        }
        Ok(Some(new))
    }

    /// Whatever remains undecoded at the end of the stream (lossy if it is invalid UTF-8).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let text = tok.decode(&self.ids[self.start..])?;
        let rest = text.get(self.emitted..).unwrap_or("").to_string();
        *self = Self::default();
        Ok(rest)
    }
}
