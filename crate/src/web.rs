//! The browser binding (wasm-bindgen): the Rust half of the JavaScript API.
//!
//! `www/stream-aligner.js` is the other half: it downloads the weights with progress and keeps
//! them in Cache Storage, wires an `AbortSignal` to [`Cancel`], and turns the JSON events passed
//! to its callback into an async iterator and DOM events. Errors reach JavaScript as rejected
//! promises carrying the library's message; nothing here panics on bad input.

use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::align::{self, Aligner, Mode, PipelineConfig};
use crate::cancel::CancelToken;
use crate::decoder::GenerateOptions;
use crate::engine::Engine;
use crate::model::EngineDevice;
use crate::upstream::{AnyUpstream, LocalUpstream, RemoteConfig, RemoteOptions, RemoteUpstream};

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Stops a running answer at the next token (JavaScript calls it from an `AbortSignal`).
#[wasm_bindgen]
#[derive(Clone, Default)]
pub struct Cancel(CancelToken);

#[wasm_bindgen]
impl Cancel {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.cancel();
    }
}

/// Options of one answer, from JavaScript as JSON (camelCase).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RunOptions {
    mode: Mode,
    max_rounds: Option<usize>,
    max_sentences: usize,
    max_tokens: usize,
    /// The complete answer, for post-hoc correction.
    answer: Option<String>,
    /// An OpenAI-compatible upstream reached with fetch, instead of the local model.
    remote: Option<RemoteOptions>,
    /// The aligner decodes with the calculator (after "expression =" it writes the value).
    calculator: bool,
    /// Nats by which a rewrite must beat the original's token (default: the shipped margin).
    copy_margin: Option<f32>,
    /// The step repair (default: on, at the shipped margins).
    repair: bool,
    /// Sentences the upstream draws again (sampled) for a step whose correction does not hold
    /// up (`align --resample`); 0: none.
    resample: usize,
    /// The upstream's temperature in those draws.
    sample_temperature: f32,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Stream,
            max_rounds: None,
            max_sentences: 12,
            max_tokens: 96,
            answer: None,
            remote: None,
            calculator: false,
            copy_margin: None,
            repair: true,
            resample: 0,
            sample_temperature: 0.4,
        }
    }
}

struct Inner {
    upstream: Arc<Engine>,
    aligner: Arc<Engine>,
    backend: &'static str,
}

/// The loaded models: the upstream (the base) and the aligner (the base with its adapter,
/// sharing the base's weights).
#[wasm_bindgen]
pub struct Session {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Session {
    /// Builds the models from the GGUF's bytes and the adapter's (safetensors), on WebGPU when
    /// `webgpu` is true and an adapter exists, else on the CPU.
    pub async fn create(
        base: Vec<u8>,
        adapter: Option<Vec<u8>>,
        webgpu: bool,
    ) -> Result<Session, JsError> {
        let (device, backend) = match webgpu {
            true => match EngineDevice::wgpu().await {
                Ok(d) => (d, "webgpu"),
                Err(_) => (EngineDevice::cpu(), "cpu"),
            },
            false => (EngineDevice::cpu(), "cpu"),
        };
        let upstream = Engine::from_bytes(base, &device).map_err(js_err)?;
        let aligner = match adapter {
            Some(bytes) => upstream.with_adapter_bytes(&bytes).map_err(js_err)?,
            None => upstream.clone(),
        };
        Ok(Session {
            inner: Rc::new(Inner {
                upstream: Arc::new(upstream),
                aligner: Arc::new(aligner),
                backend,
            }),
        })
    }

    /// "webgpu" or "cpu" (WebGPU was unavailable or not asked for).
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.inner.backend.to_string()
    }

    /// Answers `query` through the sentence loop. `on_event` receives each sentence event as
    /// JSON; the promise resolves to the whole answer as JSON.
    pub fn run(
        &self,
        query: String,
        options: &str,
        on_event: js_sys::Function,
        cancel: &Cancel,
    ) -> Result<js_sys::Promise, JsError> {
        let opts: RunOptions =
            serde_json::from_str(options).map_err(|e| js_err(format!("options: {e}")))?;
        if opts.resample > 0 && opts.mode != Mode::Stream {
            return Err(js_err(
                "resample is for mode 'stream' (it draws from the upstream)",
            ));
        }
        let t = opts.sample_temperature;
        if !(t.is_finite() && t > 0.0 && t <= 2.0) {
            return Err(js_err(format!(
                "sampleTemperature {t}: between 0 (excluded) and 2"
            )));
        }
        let inner = self.inner.clone();
        let cancel = cancel.0.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut upstream =
                upstream(&inner, &opts, &cancel).map_err(|e| JsValue::from(js_err(e)))?;
            let mut sampler = upstream.sampling(opts.sample_temperature);
            let mut aligner = Aligner::new(inner.aligner.clone());
            aligner.cancel = cancel.clone();
            aligner.calculator = opts.calculator;
            if let Some(m) = opts.copy_margin {
                aligner.copy_margin = m;
            }
            if !opts.repair {
                aligner.repair_margin = None;
            }
            let config = PipelineConfig {
                max_rounds: opts.max_rounds.unwrap_or(usize::MAX),
                max_sentences: opts.max_sentences,
            };
            let mut aligner = align::Resampled::new(&mut aligner, &mut sampler, opts.resample);
            let answer = align::run_mode(
                opts.mode,
                &mut upstream,
                &mut aligner,
                &query,
                opts.answer.as_deref(),
                &config,
                &cancel,
                |ev| {
                    let json = serde_json::to_string(ev).unwrap_or_default();
                    match on_event.call1(&JsValue::NULL, &JsValue::from_str(&json)) {
                        Ok(_) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    }
                },
            )
            .await
            .map_err(|e| JsValue::from(js_err(e)))?;
            let mut json = serde_json::to_value(&answer).map_err(|e| JsValue::from(js_err(e)))?;
            if let AnyUpstream::Remote(r) = &upstream {
                json["upstream_requests"] = r.stats.requests.into();
            }
            let conversation: Vec<&str> = opts
                .remote
                .iter()
                .flat_map(|r| r.context.iter().map(|m| m.content.as_str()))
                .chain([query.as_str()])
                .collect();
            json["prompt_tokens"] = inner
                .aligner
                .tokenizer
                .encode(&conversation.join("\n"))
                .map_or(0, |ids| ids.len())
                .into();
            Ok(JsValue::from_str(&json.to_string()))
        }))
    }
}

#[wasm_bindgen]
impl Session {
    /// Corrects one sentence given the query and the corrected prefix before it (an extension
    /// rewriting a message as it streams into a page). Resolves to JSON: `{text, changed,
    /// tokens}`.
    #[wasm_bindgen(js_name = correctSentence)]
    pub fn correct_sentence(
        &self,
        query: String,
        prefix: String,
        sentence: String,
        calculator: bool,
        cancel: &Cancel,
    ) -> js_sys::Promise {
        let inner = self.inner.clone();
        let cancel = cancel.0.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut aligner = Aligner::new(inner.aligner.clone());
            aligner.cancel = cancel;
            aligner.calculator = calculator;
            let original = sentence.trim();
            let c = aligner
                .correct(&query, &prefix, original)
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            let json = serde_json::json!({
                "text": c.text,
                "changed": c.text.trim() != original,
                "tokens": c.tokens,
            });
            Ok(JsValue::from_str(&json.to_string()))
        })
    }

    /// The upstream model's greedy continuation of `prompt` as it is (no chat template), up to
    /// `max_tokens`: the local model on its own, and what the browser benchmark times. Resolves
    /// to JSON: `{text, stats: {prompt_tokens, generated_tokens, prefill_ms, decode_ms, …}}`.
    pub fn generate(&self, prompt: String, max_tokens: usize, cancel: &Cancel) -> js_sys::Promise {
        let inner = self.inner.clone();
        let cancel = cancel.0.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let e = &inner.upstream;
            let ids = e
                .tokenizer
                .encode(&prompt)
                .map_err(|e| JsValue::from(js_err(e)))?;
            let opts = GenerateOptions {
                max_tokens,
                ..GenerateOptions::default()
            };
            let mut text = String::new();
            let (_, stats) = e
                .generate(&ids, &opts, &mut e.model.new_cache(), |_, piece| {
                    text.push_str(piece);
                    cancel.flow()
                })
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            cancel.check().map_err(|e| JsValue::from(js_err(e)))?;
            let json = serde_json::json!({ "text": text, "stats": stats });
            Ok(JsValue::from_str(&json.to_string()))
        })
    }
}

/// The largest gap between the SIMD128 matrix kernels and their scalar definition, relative to
/// each product's scale (about 1e-7 when they agree): the unit tests cannot run in wasm.
#[wasm_bindgen(js_name = kernelSelfCheck)]
pub fn kernel_self_check() -> f32 {
    crate::model::int8::simd_disagreement()
}

/// Starts `n` Web Workers as rayon's pool for the CPU kernels (the `threads` build only; the
/// page must be cross-origin isolated). Resolves when they are ready.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// How many threads run the CPU kernels: rayon's pool in the `threads` build, else 1.
#[wasm_bindgen(js_name = kernelThreads)]
pub fn kernel_threads() -> usize {
    #[cfg(feature = "threads")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "threads"))]
    1
}

/// The complete sentences of `text` (each with its leading whitespace; they concatenate back to
/// the text they cover). Unless `finished`, a last sentence whose end is not yet certain is
/// left out: more text may still come.
#[wasm_bindgen(js_name = splitSentences)]
pub fn split_sentences(text: &str, finished: bool) -> Vec<String> {
    crate::text::complete_sentences(text, finished)
        .into_iter()
        .map(String::from)
        .collect()
}

/// The local model, or the remote server the options name.
fn upstream(inner: &Inner, opts: &RunOptions, cancel: &CancelToken) -> crate::Result<AnyUpstream> {
    let Some(r) = &opts.remote else {
        let mut local = LocalUpstream::new(
            inner.upstream.clone(),
            GenerateOptions {
                max_tokens: opts.max_tokens,
                ..GenerateOptions::default()
            },
        );
        local.cancel = cancel.clone();
        return Ok(AnyUpstream::Local(local));
    };
    let mut config = RemoteConfig::from_options(r.clone(), inner.upstream.template.clone());
    config.max_tokens = opts.max_tokens;
    let mut remote = RemoteUpstream::new(config)?;
    remote.cancel = cancel.clone();
    Ok(AnyUpstream::Remote(remote))
}

/// Panics become console errors with their message (a panic is a bug; this makes it visible).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys_console_error(&info.to_string());
    }));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn web_sys_console_error(s: &str);
}
