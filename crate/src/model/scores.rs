//! What a forward pass hands back of a row's logits: all of them, or only what decides the next
//! token. The GPU reduces a row on the device ([`Readback::Top`]: its best tokens and the logit
//! of the one token the caller compares with, the draft's), so a decoded token reads back a few
//! bytes instead of the whole vocabulary's logits (196 KB for SmolLM2's 49,152).

/// The most candidates a [`Readback::Top`] row may ask for (the GPU kernel keeps them in
/// registers and its workgroup memory).
pub const MAX_TOP: usize = 16;

/// What to read back of each row of logits.
#[derive(Debug, Clone, PartialEq)]
pub enum Readback {
    /// Every logit.
    Full,
    /// The `k` best tokens of each row (1 ..= [`MAX_TOP`]), and the logit of `gather[i]` in row
    /// `i` (the draft's token there, for the copy margin), where there is one.
    Top { k: usize, gather: Vec<Option<u32>> },
}

impl Readback {
    /// `Top` when `k` is within [`MAX_TOP`], else `Full`.
    pub fn top(k: Option<usize>, gather: Vec<Option<u32>>) -> Self {
        match k {
            Some(k) if (1..=MAX_TOP).contains(&k) => Readback::Top { k, gather },
            _ => Readback::Full,
        }
    }
}

/// One row's scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Scores {
    /// Every logit of the row.
    Full(Vec<f32>),
    /// The best tokens, best first (ties: the lower id first, as [`super::sampler::argmax`]),
    /// and the gathered token's logit.
    Top {
        best: Vec<(u32, f32)>,
        gathered: Option<(u32, f32)>,
    },
}

impl Scores {
    /// `rows` rows of `vocab` logits, row-major, one `Full` each (one row, as decoding has, is
    /// moved, not copied).
    pub fn split(logits: Vec<f32>, vocab: usize) -> Vec<Scores> {
        if logits.len() == vocab {
            return vec![Scores::Full(logits)];
        }
        logits
            .chunks_exact(vocab.max(1))
            .map(|r| Scores::Full(r.to_vec()))
            .collect()
    }

    /// What a `Top` readback of `logits` is: the host's statement of what the GPU kernel
    /// computes (and what the tests hold it to).
    pub fn top_of(logits: &[f32], k: usize, gather: Option<u32>) -> Scores {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        Scores::Top {
            best: idx
                .into_iter()
                .take(k)
                .map(|i| (i, logits[i as usize]))
                .collect(),
            gathered: gather.and_then(|g| logits.get(g as usize).map(|&v| (g, v))),
        }
    }

    /// The token with the highest logit.
    pub fn argmax(&self) -> u32 {
        match self {
            Scores::Full(l) => super::sampler::argmax(l),
            Scores::Top { best, .. } => best.first().map_or(0, |b| b.0),
        }
    }

    /// The logit of `id`, if this row holds it.
    pub fn logit(&self, id: u32) -> Option<f32> {
        match self {
            Scores::Full(l) => l.get(id as usize).copied(),
            Scores::Top { best, gathered } => {
                best.iter().chain(gathered).find(|b| b.0 == id).map(|b| b.1)
            }
        }
    }

    /// Bytes this row took to read back from the device (for the bench): a `Top` row is its
    /// candidates' ids and logits and the gathered logit's word (read even when none was asked).
    pub fn readback_bytes(&self) -> usize {
        match self {
            Scores::Full(l) => 4 * l.len(),
            Scores::Top { best, .. } => 8 * best.len() + 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_of_orders_by_logit_then_id_and_gathers() {
        let l = [0.5, 2.0, -1.0, 2.0, 1.5];
        let s = Scores::top_of(&l, 3, Some(2));
        assert_eq!(
            s,
            Scores::Top {
                best: vec![(1, 2.0), (3, 2.0), (4, 1.5)],
                gathered: Some((2, -1.0)),
            }
        );
        assert_eq!(s.argmax(), Scores::Full(l.to_vec()).argmax());
        assert_eq!(s.logit(2), Some(-1.0));
        assert_eq!(s.logit(0), None);
        assert_eq!(s.readback_bytes(), 28);
        assert_eq!(Scores::top_of(&l, 1, None).readback_bytes(), 12);
        assert_eq!(Readback::top(Some(MAX_TOP + 1), vec![]), Readback::Full);
        assert_eq!(Scores::top_of(&l, 1, Some(9)).logit(9), None);
    }
}
