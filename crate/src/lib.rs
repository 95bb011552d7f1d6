//! Stream Aligner (arXiv 2501.05336): a small aligner model corrects each sentence of a larger
//! upstream model's answer as it streams, and the corrected sentence becomes the prefix of the
//! upstream's next sentence.
//!
//! This crate holds the engine (GGUF, a Llama-family transformer on burn, tokenizer, sampling)
//! and, on top of it, the sentence loop.

pub mod align;
pub mod cancel;
pub mod decoder;
pub mod engine;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod gateway;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod openai;
pub mod platform;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod text;
pub mod train;
pub mod upstream;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use cancel::CancelToken;
pub use decoder::{GenerateOptions, GenerationStats};
pub use engine::Engine;
pub use error::{Error, Result};
