//! Stream Aligner's inference: the aligner prompt, correction with copy-speculation, and the
//! sentence loop with its events.

pub mod aligner;
pub mod pipeline;
pub mod prompt;

pub use aligner::{Aligner, Correction, Corrector, DEFAULT_COPY_MARGIN, Uncorrected};
pub use pipeline::{Answer, Mode, PipelineConfig, SentenceEvent, Stop, run, run_mode, whole};
pub use prompt::AlignerPrompt;
