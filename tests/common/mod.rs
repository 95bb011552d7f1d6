//! What the end-to-end tests share: the real model, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use stream_aligner::Engine;
use stream_aligner::model::EngineDevice;
use stream_aligner::text::arithmetic::Op;

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

/// A two-thread tokio runtime for the tests that run servers on 127.0.0.1.
#[allow(dead_code)]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves `app` on 127.0.0.1 (a port of its own) in the background; returns `http://ADDR`.
#[allow(dead_code)]
pub async fn spawn_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The aligner as shipped: the base model with models/aligner/lora's adapter.
#[allow(dead_code)]
pub fn shipped_aligner_engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models/aligner/lora/adapter.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Arc::new(engine().with_adapter_bytes(&bytes).unwrap())
    })
    .clone()
}

/// Every "a op b = c" of two whole numbers in `text`, and whether it holds.
#[allow(dead_code)]
pub fn equations(text: &str) -> Vec<(String, bool)> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let num = |s: &str| s.trim_end_matches(['.', ',', ';', ':']).parse::<i64>().ok();
    (0..w.len().saturating_sub(4))
        .filter(|&i| w[i + 3] == "=")
        .filter_map(|i| {
            let (a, b, c) = (num(w[i])?, num(w[i + 2])?, num(w[i + 4])?);
            let holds = Op::from_symbol(w[i + 1])?.apply(a, b) == Some(c);
            Some((w[i..=i + 4].join(" "), holds))
        })
        .collect()
}

/// A wgpu device for a test, or None where STREAM_ALIGNER_SKIP_WGPU=1 skips the wgpu tests on
/// purpose. A machine without any Vulkan adapter fails the test with how to get one (lavapipe,
/// from `mesa-vulkan-drivers`, is a CPU Vulkan device).
#[allow(dead_code)]
pub fn wgpu_device<F: std::future::Future<Output = stream_aligner::Result<EngineDevice>>>(
    make: F,
) -> Option<EngineDevice> {
    if std::env::var("STREAM_ALIGNER_SKIP_WGPU").as_deref() == Ok("1") {
        eprintln!("skipping the wgpu backend: STREAM_ALIGNER_SKIP_WGPU=1");
        return None;
    }
    Some(futures::executor::block_on(make).unwrap_or_else(|e| {
        panic!(
            "{e}\nno wgpu adapter: install a Vulkan driver (lavapipe: apt-get install \
             mesa-vulkan-drivers), or set STREAM_ALIGNER_SKIP_WGPU=1 to skip this test"
        )
    }))
}
