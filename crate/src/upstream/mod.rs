//! The upstream: the model whose answer is aligned. Given the query and the committed (corrected)
//! prefix, it writes the next sentence and stops there.

pub mod local;
pub mod posthoc;
pub mod remote;

pub use local::LocalUpstream;
pub use posthoc::Posthoc;
pub use remote::{Api, RemoteConfig, RemoteOptions, RemoteUpstream, UpstreamStats};

use crate::error::Result;

/// What the upstream produced in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSentence {
    /// The sentence, with its leading whitespace; empty when the answer ended without one.
    pub text: String,
    /// The answer ends after this sentence.
    pub last: bool,
    /// What the upstream spent on it: tokens generated locally (including a lookahead token it
    /// needed to decide), streamed chunks remotely (one token a chunk on llama.cpp, vLLM and
    /// OpenAI, which is what the gateway's `max_tokens` budget counts).
    pub tokens: usize,
}

/// A model that continues an answer one sentence at a time.
#[allow(async_fn_in_trait)]
pub trait Upstream {
    /// The next sentence of the answer to `query` after `prefix`.
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence>;

    /// The rest of the answer after `prefix`, uncorrected (after the last correction round).
    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String>;

    /// Whether the sentences are generated (a model's), so that one repeating a recent one is a
    /// loop to stop; a given text's are not.
    fn generates(&self) -> bool {
        true
    }

    /// Seeds the upstream's sampling anew (best of K: each run its own seed). A greedy
    /// upstream, or a given text, is the same whatever the seed.
    fn reseed(&mut self, _seed: u64) {}
}

/// Either upstream, chosen at run time (a CLI flag, a page's setting).
// One per answer: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyUpstream {
    Local(LocalUpstream),
    Remote(RemoteUpstream),
}

impl AnyUpstream {
    /// Its twin that samples at `temperature` (`LocalUpstream::sampling`,
    /// `RemoteUpstream::sampling`): what `align::Resampled` draws from.
    pub fn sampling(&self, temperature: f32) -> Self {
        match self {
            Self::Local(u) => Self::Local(u.sampling(temperature)),
            Self::Remote(u) => Self::Remote(u.sampling(temperature)),
        }
    }
}

impl Upstream for AnyUpstream {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        match self {
            Self::Local(u) => u.next_sentence(query, prefix).await,
            Self::Remote(u) => u.next_sentence(query, prefix).await,
        }
    }

    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        match self {
            Self::Local(u) => u.rest(query, prefix).await,
            Self::Remote(u) => u.rest(query, prefix).await,
        }
    }

    fn reseed(&mut self, seed: u64) {
        match self {
            Self::Local(u) => u.reseed(seed),
            Self::Remote(u) => u.reseed(seed),
        }
    }
}
