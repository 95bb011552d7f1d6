//! Token sampling: greedy, temperature, top-k, top-p and repetition penalty, seeded.

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::scores::{MAX_TOP, Scores};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    /// 1.0 means none; >1 discourages tokens already in the context (as in CTRL / transformers).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Sampling(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    pub config: SamplerConfig,
    rng: SmallRng,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        let rng = SmallRng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// Picks the next token from `logits`, given the tokens so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        if c.temperature == 0.0 && c.repetition_penalty == 1.0 {
            return argmax(logits);
        }
        let mut l = logits.to_vec();
        if c.repetition_penalty != 1.0 {
            let mut seen = vec![false; l.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let v = &mut l[t as usize];
                    *v = if *v > 0.0 {
                        *v / c.repetition_penalty
                    } else {
                        *v * c.repetition_penalty
                    };
                }
            }
        }
        if c.temperature == 0.0 {
            return argmax(&l);
        }
        let mut idx: Vec<u32> = (0..l.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| l[*b as usize].total_cmp(&l[*a as usize]);
        if c.top_k > 0 && c.top_k < idx.len() {
            idx.select_nth_unstable_by(c.top_k - 1, by_logit);
            idx.truncate(c.top_k);
        }
        idx.sort_unstable_by(by_logit);
        let candidates: Vec<(u32, f32)> = idx.iter().map(|&i| (i, l[i as usize])).collect();
        self.draw(&candidates)
    }

    /// How many of a row's best tokens decide what [`Self::pick`] takes: 1 for greedy, `top_k`
    /// for top-k sampling up to [`MAX_TOP`]. None: it needs every logit (a repetition penalty
    /// reorders the row; an unbounded top-k samples from all of it).
    pub fn needs(&self) -> Option<usize> {
        let c = &self.config;
        if c.repetition_penalty != 1.0 {
            return None;
        }
        if c.temperature == 0.0 {
            return Some(1);
        }
        (c.top_k > 0 && c.top_k <= MAX_TOP).then_some(c.top_k)
    }

    /// [`Self::sample`] on a row's scores: a `Top` row (as [`Self::needs`] asked for) picks
    /// among its best tokens exactly as the whole row would.
    pub fn pick(&mut self, scores: &Scores, history: &[u32]) -> u32 {
        match scores {
            Scores::Full(l) => self.sample(l, history),
            Scores::Top { .. } if self.config.temperature == 0.0 => scores.argmax(),
            Scores::Top { best, .. } => {
                let k = match self.config.top_k {
                    0 => best.len(),
                    k => k.min(best.len()),
                };
                self.draw(&best[..k])
            }
        }
    }

    /// Draws from `candidates` (best first) at the temperature, within the nucleus `top_p`.
    fn draw(&mut self, candidates: &[(u32, f32)]) -> u32 {
        let c = &self.config;
        let Some(&(first, max)) = candidates.first() else {
            return 0;
        };
        let mut probs: Vec<f32> = candidates
            .iter()
            .map(|&(_, v)| ((v - max) / c.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if c.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs.iter().position(|p| {
                cum += p;
                cum >= c.top_p
            });
            let keep = keep.map_or(probs.len(), |k| k + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (p, &(i, _)) in probs.iter().zip(candidates) {
            r -= p;
            if r <= 0.0 {
                return i;
            }
        }
        candidates.get(probs.len() - 1).map_or(first, |c| c.0)
    }
}

pub fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&logits(), &[]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 1.5,
            ..SamplerConfig::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&logits(), &[1]), 4);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg).unwrap();
        assert!((0..50).all(|_| s.sample(&logits(), &[]) == 1));
        let cfg = SamplerConfig {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let run = |c: SamplerConfig| {
            let mut s = Sampler::new(c).unwrap();
            (0..64)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        let a = run(cfg.clone());
        assert_eq!(a, run(cfg.clone()));
        assert_ne!(a, run(SamplerConfig { seed: 8, ..cfg }));
        assert!(
            a.iter().collect::<std::collections::HashSet<_>>().len() > 1,
            "temperature 1 samples more than one token"
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // p(1) ≈ 0.42, p(4) ≈ 0.38: top_p 0.5 keeps tokens 1 and 4 only.
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        assert!((0..200).all(|_| matches!(s.sample(&logits(), &[]), 1 | 4)));
    }

    #[test]
    fn a_top_row_picks_as_the_whole_row() {
        let l = logits();
        for (config, k) in [
            (SamplerConfig::greedy(), 1),
            (
                SamplerConfig {
                    temperature: 0.8,
                    top_k: 3,
                    top_p: 0.9,
                    seed: 5,
                    ..Default::default()
                },
                3,
            ),
        ] {
            let (mut whole, mut top) = (
                Sampler::new(config.clone()).unwrap(),
                Sampler::new(config).unwrap(),
            );
            assert_eq!(top.needs(), Some(k));
            let row = Scores::top_of(&l, k, None);
            for _ in 0..100 {
                assert_eq!(top.pick(&row, &[]), whole.sample(&l, &[]));
            }
        }
        let penalized = Sampler::new(SamplerConfig {
            repetition_penalty: 1.2,
            ..SamplerConfig::greedy()
        })
        .unwrap();
        assert_eq!(
            penalized.needs(),
            None,
            "a penalty reorders the row: it needs all of it"
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(
            Sampler::new(SamplerConfig {
                temperature: -1.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplerConfig {
                top_p: 0.0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
