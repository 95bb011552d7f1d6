//! Stream Aligner's inference: the aligner prompt, correction with copy-speculation, and the
//! sentence loop with its events.

pub mod aligner;
pub mod pipeline;
pub mod prompt;

pub use aligner::{Aligner, Correction, Corrector};
pub use pipeline::{Answer, Mode, PipelineConfig, SentenceEvent, run};
pub use prompt::AlignerPrompt;
