//! Stream Aligner's inference: the aligner prompt, correction with copy-speculation, the
//! sentence loop with its events, another sentence drawn for a step that does not hold up, and
//! best of K runs of the loop.

pub mod aligner;
pub mod best_of;
pub mod pipeline;
pub mod prompt;
pub mod resample;

pub use aligner::{
    Aligner, Correction, Corrector, DEFAULT_COPY_MARGIN, DEFAULT_REPAIR_MARGIN, Uncorrected,
    holds_up,
};
pub use best_of::{BestOf, best_of, choose, majority};
pub use pipeline::{Answer, Mode, PipelineConfig, SentenceEvent, Stop, run, run_mode, whole};
pub use prompt::AlignerPrompt;
pub use resample::Resampled;
