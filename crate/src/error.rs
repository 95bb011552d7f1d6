//! The library's typed errors.

use crate::model::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported model architecture '{0}' (this engine runs the llama family)")]
    UnsupportedArchitecture(String),
    #[error("model weight '{name}' has shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        got: Vec<u64>,
        want: Vec<u64>,
    },
    #[error("model configuration is invalid: {0}")]
    Config(String),
    /// A file could not be read or written (the path and the OS error).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Input data (JSONL records, a checkpoint, a reference) is malformed or missing a part.
    #[error("data: {0}")]
    Data(String),
    /// A request names something the callee does not have (an oracle's unknown question).
    #[error("not found: {0}")]
    NotFound(String),
    /// Training produced a non-finite loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    #[error("the prompt and answer need {needed} tokens but the model's context holds {max}")]
    ContextOverflow { needed: usize, max: usize },
    #[error("empty input: {0}")]
    EmptyInput(&'static str),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("device: {0}")]
    Device(String),
    #[error("sampling: {0}")]
    Sampling(String),
    #[error("cancelled")]
    Cancelled,
    #[error("remote upstream{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Remote {
        status: Option<u16>,
        message: String,
    },
    #[error("LoRA adapter: {0}")]
    Adapter(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        move |source| Self::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
