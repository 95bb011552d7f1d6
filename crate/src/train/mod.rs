//! The aligner's training data (the paper's stage 1): word problems with canonical solutions,
//! GSM8K's human-written reference solutions, oracles that annotate the upstream's sentences
//! on-policy (one for generated problems, one grounded in a reference), and records made from
//! references without the upstream.

pub mod evaluate;
pub mod grounded;
pub mod gsm8k;
mod natural;
pub mod oracle;
pub mod problems;
mod story;
pub mod synthetic;
pub mod trainer;

pub use grounded::GroundedOracle;
pub use gsm8k::Reference;
pub use oracle::Oracle;
pub use problems::{Problem, generate};
pub use trainer::{Example, Record, RunEnd, Schedule, Split, SplitConfig, TrainConfig, Trainer};
