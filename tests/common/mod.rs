//! What the end-to-end tests share: the real model, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use stream_aligner::Engine;
use stream_aligner::model::EngineDevice;

/// The fetched SmolLM2 GGUF, or STREAM_ALIGNER_MODEL.
pub fn model_path() -> PathBuf {
    std::env::var_os("STREAM_ALIGNER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// The engine on the CPU kernels, shared by every test of the binary.
#[allow(dead_code)]
pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(
            Engine::load(&model_path(), &EngineDevice::cpu()).unwrap_or_else(|e| {
                panic!("{e}: run `stream-aligner fetch` first (or set STREAM_ALIGNER_MODEL)")
            }),
        )
    })
    .clone()
}
