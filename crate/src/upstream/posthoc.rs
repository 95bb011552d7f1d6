//! A complete answer as the upstream: its sentences, one a round, whatever the prefix (post-hoc
//! correction of text written elsewhere, such as an assistant's reply on a page).

use super::{Upstream, UpstreamSentence};
use crate::error::Result;
use crate::text::split_sentences;

pub struct Posthoc {
    sentences: Vec<String>,
    next: usize,
}

impl Posthoc {
    pub fn new(answer: &str) -> Self {
        Self {
            sentences: split_sentences(answer)
                .into_iter()
                .map(String::from)
                .collect(),
            next: 0,
        }
    }
}

impl Upstream for Posthoc {
    async fn next_sentence(&mut self, _: &str, _: &str) -> Result<UpstreamSentence> {
        let text = self.sentences.get(self.next).cloned().unwrap_or_default();
        self.next += 1;
        Ok(UpstreamSentence {
            text,
            last: self.next >= self.sentences.len(),
            tokens: 0,
        })
    }

    async fn rest(&mut self, _: &str, _: &str) -> Result<String> {
        let rest = self.sentences.get(self.next..).unwrap_or_default().concat();
        self.next = self.sentences.len();
        Ok(rest)
    }

    /// Written text may say the same thing twice; only a model's repeat is a loop.
    fn generates(&self) -> bool {
        false
    }
}
