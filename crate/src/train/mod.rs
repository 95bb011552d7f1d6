//! The aligner's training data (the paper's stage 1): word problems with canonical solutions,
//! and an oracle that annotates the upstream's sentences on-policy.

pub mod evaluate;
mod natural;
pub mod oracle;
pub mod problems;
pub mod trainer;

pub use oracle::Oracle;
pub use problems::{Problem, generate};
pub use trainer::{Example, Record, TrainConfig, Trainer};
