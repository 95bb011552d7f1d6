//! Another sentence when a correction does not hold up: a corrector around the aligner that,
//! when the aligner's version of the upstream's sentence fails the step checks ([`holds_up`]: a
//! false step, a number from nowhere, a step done again, an answer nobody computed), asks a
//! sampling upstream for another sentence after the same prefix, corrects that one, and keeps
//! the first correction that holds up (the aligner's own first one when none does).
//!
//! It is the sentence loop's idea carried one step further: an error is caught where it
//! happens, and where the aligner's rewrite does not repair it, the step is drawn again, not the
//! whole answer (as best of K does). A step that holds up costs nothing more; a failing one
//! costs up to `tries` more rounds. The loop itself is unchanged: the event's original is still
//! the upstream's first sentence, and its corrected text is the one kept; its aligner tokens and
//! passes count every correction made for the step, and none of a drawn sentence's tokens came
//! from the original as a draft.

use super::aligner::{Correction, Corrector, holds_up};
use crate::error::Result;
use crate::upstream::Upstream;

pub struct Resampled<'a, C, S> {
    pub aligner: &'a mut C,
    /// The upstream that samples (reseeded `seed`, `seed + 1`, ... at each sentence's tries).
    pub sampler: &'a mut S,
    /// Sentences drawn at most for one step whose correction does not hold up.
    pub tries: usize,
    pub seed: u64,
}

impl<'a, C, S> Resampled<'a, C, S> {
    /// Up to `tries` sentences drawn from `sampler` (seeds 0, 1, ...) for a failing step.
    pub fn new(aligner: &'a mut C, sampler: &'a mut S, tries: usize) -> Self {
        Self {
            aligner,
            sampler,
            tries,
            seed: 0,
        }
    }
}

impl<C: Corrector, S: Upstream> Corrector for Resampled<'_, C, S> {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        let first = self.aligner.correct(query, prefix, original).await?;
        if self.tries == 0 || holds_up(query, prefix, &first.text) {
            return Ok(first);
        }
        let (mut tokens, mut passes) = (first.tokens, first.passes);
        for i in 0..self.tries {
            self.sampler.reseed(self.seed.wrapping_add(i as u64));
            let drawn = self.sampler.next_sentence(query, prefix).await?;
            if drawn.text.trim().is_empty() {
                continue;
            }
            let c = self
                .aligner
                .correct(query, prefix, drawn.text.trim())
                .await?;
            tokens += c.tokens;
            passes += c.passes;
            if holds_up(query, prefix, &c.text) {
                return Ok(Correction {
                    tokens,
                    passes,
                    accepted: 0,
                    ..c
                });
            }
        }
        Ok(Correction {
            tokens,
            passes,
            ..first
        })
    }
}
