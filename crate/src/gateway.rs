//! The aligning gateway: an OpenAI-compatible endpoint in front of any hosted LLM. Each request
//! runs the sentence loop against the upstream (with optimistic streaming, see
//! `upstream::remote`) and streams the corrected answer as ordinary `chat.completion.chunk`s,
//! one per corrected sentence the moment it is decided.
//!
//! One copy of the aligner's weights serves every request; each answer has its own KV cache,
//! and aligner passes run one at a time on a blocking thread (the cores are few; queueing them
//! is what a batch of one costs). At most `max_active` answers are in flight; past that a
//! request gets 429 with `Retry-After`. A client that leaves cancels its upstream request and
//! its aligner work.
//!
//! Gateway keys (`api_keys`) are the clients'; the upstream key is only ever sent to the
//! upstream: never logged, echoed or put in an error (errors are scrubbed of it).

// A request's checks return the response that rejects it (an axum `Response`, large): it is
// answered at once, never carried further, so boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use web_time::Instant;

use crate::align::pipeline::{self, PipelineConfig, SentenceEvent, Stop};
use crate::align::{Aligner, Correction, Corrector, Resampled};
use crate::cancel::CancelToken;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::openai::{self, error_response as error};
use crate::text::Message;
use crate::upstream::{RemoteConfig, RemoteUpstream, UpstreamStats};

/// Request fields passed through to the upstream as they are.
const PASSED: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "user",
];

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The upstream: its URL, model, key, API, timeouts, and `optimistic`.
    pub upstream: RemoteConfig,
    /// The model name responses carry and `/v1/models` lists.
    pub model_name: String,
    /// Bearer keys clients must present; empty: no key needed.
    pub api_keys: Vec<String>,
    /// Origins allowed by CORS; empty: CORS off; `*`: any.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_messages: usize,
    /// Characters of the whole conversation.
    pub max_chars: usize,
    /// Answers in flight at once; more get 429.
    pub max_active: usize,
    /// The answer's token budget when the request names none.
    pub default_max_tokens: usize,
    pub max_rounds: usize,
    pub max_sentences: usize,
    pub calculator: bool,
    /// Sentences drawn again from the upstream (one request each, sampled at
    /// `sample_temperature`) for a step whose correction does not hold up; 0: none.
    pub resample: usize,
    pub sample_temperature: f32,
}

impl GatewayConfig {
    pub fn new(upstream: RemoteConfig) -> Self {
        Self {
            model_name: upstream.model.clone(),
            upstream,
            api_keys: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 1 << 20,
            max_messages: 256,
            max_chars: 200_000,
            max_active: 32,
            default_max_tokens: 1024,
            max_rounds: usize::MAX,
            max_sentences: 64,
            calculator: true,
            resample: 0,
            sample_temperature: 0.4,
        }
    }
}

/// A Prometheus histogram (seconds).
struct Histogram {
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

impl Histogram {
    fn new() -> Self {
        Self {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, seconds: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        let n = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {n}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {n}\n",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

struct Metrics {
    requests: Mutex<Vec<(u16, u64)>>,
    sentences: AtomicU64,
    rewrites: AtomicU64,
    upstream_requests: AtomicU64,
    waiting: AtomicUsize,
    first_sentence: Histogram,
    answer: Histogram,
    correction: Histogram,
}

impl Metrics {
    fn count_request(&self, status: StatusCode) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(s, _)| *s == status.as_u16()) {
            Some((_, n)) => *n += 1,
            None => r.push((status.as_u16(), 1)),
        }
    }
}

pub struct Gateway {
    /// The aligner: base weights with the adapter.
    engine: Arc<Engine>,
    config: GatewayConfig,
    /// One aligner pass at a time.
    compute: Arc<Semaphore>,
    active: AtomicUsize,
    metrics: Metrics,
}

impl Gateway {
    pub fn new(engine: Arc<Engine>, config: GatewayConfig) -> Arc<Self> {
        Arc::new(Self {
            engine,
            config,
            compute: Arc::new(Semaphore::new(1)),
            active: AtomicUsize::new(0),
            metrics: Metrics {
                requests: Mutex::new(Vec::new()),
                sentences: AtomicU64::new(0),
                rewrites: AtomicU64::new(0),
                upstream_requests: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                first_sentence: Histogram::new(),
                answer: Histogram::new(),
                correction: Histogram::new(),
            },
        })
    }

    /// `message` without the upstream key in it, should an upstream have echoed it.
    fn scrub(&self, message: String) -> String {
        match &self.config.upstream.api_key {
            Some(k) if !k.is_empty() => message.replace(k.as_str(), "<redacted>"),
            _ => message,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.config.api_keys.is_empty() {
            return true;
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        // Every key is compared in full: the time taken says nothing of which matched how far.
        self.config.api_keys.iter().fold(false, |hit, k| {
            let same = k.len() == given.len()
                && k.bytes()
                    .zip(given.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0;
            hit | same
        })
    }
}

pub fn router(g: Arc<Gateway>) -> Router {
    let mut r = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(g), headers, body| answer(g, headers, body, true)),
        )
        .route(
            "/v1/completions",
            post(|State(g), headers, body| answer(g, headers, body, false)),
        )
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(g.config.max_body_bytes));
    let origins = &g.config.cors_origins;
    if !origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        r = r.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    r.with_state(g)
}

/// Binds `addr` (port 0 picks one) and serves in the background; returns the bound address.
pub async fn spawn(g: Arc<Gateway>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router(g)).await });
    Ok(local)
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        "a valid gateway key is required (Authorization: Bearer KEY)",
    )
}

fn invalid(message: impl std::fmt::Display) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message,
    )
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

impl Content {
    fn text(&self) -> Result<String, String> {
        match self {
            Self::Text(t) => Ok(t.clone()),
            Self::Parts(parts) => parts
                .iter()
                .map(|p| match p.kind.as_str() {
                    "text" => Ok(p.text.as_str()),
                    k => Err(format!("content parts of type '{k}' are not supported")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// Both endpoints' requests: unknown fields are tolerated.
#[derive(Debug, Deserialize)]
struct Request {
    messages: Option<Vec<ChatMessage>>,
    prompt: Option<Prompt>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    n: Option<usize>,
    /// Our extension: `{"details": true}` adds each sentence's detail to the chunks.
    stream_aligner: Option<Extension>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Extension {
    #[serde(default)]
    details: bool,
}

/// A request made ready to run: the conversation before the query, the query, the budget.
struct Job {
    context: Vec<Message>,
    query: String,
    stream: bool,
    details: bool,
    max_tokens: usize,
    params: Map<String, Value>,
}

impl Gateway {
    fn job(&self, body: Result<Bytes, BytesRejection>, chat: bool) -> Result<Job, Response> {
        let mut req = request(body)?;
        if req.n.is_some_and(|n| n != 1) {
            return Err(invalid("only n = 1 is supported"));
        }
        let (mut context, query) = if chat {
            self.conversation(req.messages.as_deref())?
        } else {
            (Vec::new(), single_prompt(req.prompt.take())?)
        };
        self.check_size(&context, &query)?;
        context.retain(|m| !m.content.is_empty() || m.role != "system");
        let max_tokens = req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(self.config.default_max_tokens);
        if max_tokens == 0 {
            return Err(invalid("max_tokens must be at least 1"));
        }
        Ok(Job {
            context,
            query,
            stream: req.stream,
            details: req.stream_aligner.unwrap_or_default().details,
            max_tokens,
            params: req
                .rest
                .into_iter()
                .filter(|(k, _)| PASSED.contains(&k.as_str()))
                .collect(),
        })
    }

    /// The chat messages as the conversation before the query, and the query (the last
    /// message, the user's).
    fn conversation(
        &self,
        messages: Option<&[ChatMessage]>,
    ) -> Result<(Vec<Message>, String), Response> {
        let messages = messages.ok_or_else(|| invalid("'messages' is required"))?;
        if messages.len() > self.config.max_messages {
            return Err(invalid(format!(
                "the conversation has {} messages; at most {} are accepted",
                messages.len(),
                self.config.max_messages
            )));
        }
        let mut all = Vec::with_capacity(messages.len());
        for m in messages {
            if !["system", "developer", "user", "assistant"].contains(&m.role.as_str()) {
                return Err(invalid(format!("unsupported message role '{}'", m.role)));
            }
            let text = match &m.content {
                Some(c) => c.text().map_err(invalid)?,
                None => String::new(),
            };
            let role = if m.role == "developer" {
                "system"
            } else {
                &m.role
            };
            all.push(Message::new(role, &text));
        }
        match all.pop() {
            Some(last) if last.role == "user" => Ok((all, last.content)),
            Some(_) => Err(invalid("the last message must be the user's")),
            None => Err(invalid("'messages' is empty")),
        }
    }

    /// A blank query, or a conversation longer than `max_chars`, is refused.
    fn check_size(&self, context: &[Message], query: &str) -> Result<(), Response> {
        if query.trim().is_empty() {
            return Err(invalid("the query (the last user message) is empty"));
        }
        let chars = context
            .iter()
            .map(|m| m.content.chars().count())
            .sum::<usize>()
            + query.chars().count();
        if chars > self.config.max_chars {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                format!(
                    "the conversation has {chars} characters; at most {} are accepted",
                    self.config.max_chars
                ),
            ));
        }
        Ok(())
    }
}

/// The body as a request of this endpoint's shape (413 past the size limit, 400 otherwise).
fn request(body: Result<Bytes, BytesRejection>) -> Result<Request, Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_request"
        };
        error(status, "invalid_request_error", code, e.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "the request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// The completions endpoint's one prompt.
fn single_prompt(prompt: Option<Prompt>) -> Result<String, Response> {
    match prompt {
        Some(Prompt::One(p)) => Ok(p),
        Some(Prompt::Many(v)) if v.len() == 1 => Ok(v.into_iter().next().unwrap_or_default()),
        Some(Prompt::Many(_)) => Err(invalid("exactly one prompt is supported")),
        None => Err(invalid("'prompt' is required")),
    }
}

/// The aligner's seat in the loop: waits its turn for the cores, runs on a blocking thread.
struct Seat {
    gateway: Arc<Gateway>,
    aligner: Option<Aligner>,
}

impl Corrector for Seat {
    async fn correct(&mut self, query: &str, prefix: &str, original: &str) -> Result<Correction> {
        let g = self.gateway.clone();
        let t = Instant::now();
        let permit = {
            // Counted while waiting, however the wait ends (a client that leaves drops it).
            let _waiting = Waiting::new(&g);
            g.compute.clone().acquire_owned().await
        };
        let permit = permit.map_err(|_| Error::Cancelled)?;
        let mut aligner = self.aligner.take().ok_or(Error::Cancelled)?;
        let (q, p, o) = (query.to_string(), prefix.to_string(), original.to_string());
        // The permit goes with the pass: a client that leaves mid-pass can't start another
        // beside it.
        let (aligner, out) = tokio::task::spawn_blocking(move || {
            let out = futures::executor::block_on(aligner.correct(&q, &p, &o));
            drop(permit);
            (aligner, out)
        })
        .await
        .map_err(|e| Error::Device(format!("the aligner's thread failed: {e}")))?;
        g.metrics.correction.observe(t.elapsed().as_secs_f64());
        self.aligner = Some(aligner);
        out
    }
}

/// Counts a correction waiting for the aligner while it lives.
struct Waiting<'a>(&'a Gateway);

impl<'a> Waiting<'a> {
    fn new(g: &'a Gateway) -> Self {
        g.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one answer cost, for its `usage`.
struct Counts {
    upstream: UpstreamStats,
    tally: Tally,
}

/// What the loop's task tells the response.
enum Chunk {
    Sentence(SentenceEvent),
    Done {
        finish: &'static str,
        counts: Counts,
    },
    Failed(Error),
}

/// Counts an answer in flight; the count drops when the answer's task ends, however it ends.
struct Active(Arc<Gateway>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the loop's sentences added up to so far.
#[derive(Default)]
struct Tally {
    sentences: usize,
    upstream_tokens: usize,
    aligner_tokens: usize,
    /// The answer reached the request's `max_tokens`.
    length: bool,
}

impl Gateway {
    /// Starts the loop for `job` on its own task; its chunks come through the receiver. The
    /// task ends (cancelling the upstream request and the aligner) when the receiver is dropped.
    fn start(self: &Arc<Self>, job: &Job, active: Active) -> mpsc::UnboundedReceiver<Chunk> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut upstream = self.config.upstream.clone();
        upstream.context = job.context.clone();
        upstream.params = job.params.clone();
        upstream.max_tokens = job.max_tokens;
        let (g, query, budget) = (self.clone(), job.query.clone(), job.max_tokens);
        tokio::spawn(async move {
            let _active = active;
            let last = match RemoteUpstream::new(upstream) {
                Ok(upstream) => g.answer_with(upstream, &query, budget, &tx).await,
                Err(e) => Some(Chunk::Failed(e)),
            };
            if let Some(chunk) = last {
                let _ = tx.send(chunk);
            }
        });
        rx
    }

    /// Runs the loop for one answer, sending each sentence; returns the last chunk, or nothing
    /// when the client left.
    async fn answer_with(
        self: &Arc<Self>,
        mut upstream: RemoteUpstream,
        query: &str,
        budget: usize,
        tx: &mpsc::UnboundedSender<Chunk>,
    ) -> Option<Chunk> {
        let cancel = CancelToken::default();
        upstream.cancel = cancel.clone();
        let mut aligner = Aligner::new(self.engine.clone());
        aligner.calculator = self.config.calculator;
        aligner.cancel = cancel.clone();
        let mut seat = Seat {
            gateway: self.clone(),
            aligner: Some(aligner),
        };
        let mut sampler = upstream.sampling(self.config.sample_temperature);
        let mut seat = Resampled::new(&mut seat, &mut sampler, self.config.resample);
        let config = PipelineConfig {
            max_rounds: self.config.max_rounds,
            max_sentences: self.config.max_sentences,
        };
        let (started, mut tally) = (Instant::now(), Tally::default());
        let work = pipeline::run(&mut upstream, &mut seat, query, &config, &cancel, |ev| {
            self.sentence(ev, &mut tally, budget, started, tx)
        });
        let outcome = tokio::select! {
            r = work => r,
            _ = tx.closed() => Err(Error::Cancelled),
        };
        // Whatever ended the loop, nothing more of this answer is computed.
        cancel.cancel();
        // The draws count as the upstream's work for this answer.
        let stats = UpstreamStats {
            requests: upstream.stats.requests + sampler.stats.requests,
            chunks: upstream.stats.chunks + sampler.stats.chunks,
        };
        upstream.close();
        sampler.close();
        let m = &self.metrics;
        m.upstream_requests
            .fetch_add(stats.requests as u64, Ordering::Relaxed);
        match outcome {
            Err(_) if tx.is_closed() => None,
            Err(e) => Some(Chunk::Failed(e)),
            Ok(answer) => {
                m.answer.observe(started.elapsed().as_secs_f64());
                // Cut by the token budget, or by the sentence limit.
                let cut = tally.length || answer.stop == Stop::MaxSentences;
                Some(Chunk::Done {
                    finish: if cut { "length" } else { "stop" },
                    counts: Counts {
                        upstream: stats,
                        tally,
                    },
                })
            }
        }
    }

    /// One corrected sentence: counted, sent on; `Break` once the client left or the budget
    /// is spent.
    fn sentence(
        &self,
        ev: &SentenceEvent,
        tally: &mut Tally,
        budget: usize,
        started: Instant,
        tx: &mpsc::UnboundedSender<Chunk>,
    ) -> ControlFlow<()> {
        let m = &self.metrics;
        if tally.sentences == 0 {
            m.first_sentence.observe(started.elapsed().as_secs_f64());
        }
        tally.sentences += 1;
        tally.upstream_tokens += ev.upstream_tokens;
        tally.aligner_tokens += ev.aligner_tokens;
        m.sentences.fetch_add(1, Ordering::Relaxed);
        m.rewrites.fetch_add(ev.changed as u64, Ordering::Relaxed);
        if tx.send(Chunk::Sentence(ev.clone())).is_err() {
            return ControlFlow::Break(());
        }
        tally.length = tally.upstream_tokens >= budget;
        match tally.length {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    }
}

/// Either endpoint: the answer, counted by its status.
async fn answer(
    g: Arc<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Response {
    let r = respond(&g, &headers, body, chat).await;
    g.metrics.count_request(r.status());
    r
}

async fn respond(
    g: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Response {
    if !g.authorized(headers) {
        return unauthorized();
    }
    let job = match g.job(body, chat) {
        Ok(j) => j,
        Err(r) => return r,
    };
    // Admission: at most max_active answers in flight.
    let admitted = g
        .active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < g.config.max_active).then_some(n + 1)
        })
        .is_ok();
    if !admitted {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "server_busy",
            format!(
                "{} answers are being aligned; try again shortly",
                g.config.max_active
            ),
        );
    }
    let rx = g.start(&job, Active(g.clone()));
    let (id, created) = (openai::response_id(chat), openai::created());
    let prompt_tokens = g
        .engine
        .tokenizer
        .encode(
            &job.context
                .iter()
                .map(|m| m.content.as_str())
                .chain([job.query.as_str()])
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .map_or(0, |ids| ids.len());
    let shape = Shape {
        chat,
        details: job.details,
        id,
        created,
        model: g.config.model_name.clone(),
        prompt_tokens,
    };
    if job.stream {
        stream(g.clone(), shape, rx)
    } else {
        whole(g, shape, rx).await
    }
}

/// What every chunk of one response shares.
struct Shape {
    chat: bool,
    details: bool,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl Shape {
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = if self.chat {
            let mut delta = Map::new();
            if first {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
        };
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn usage(&self, g: &Gateway, text: &str, counts: &Counts) -> Value {
        let completion = g.engine.tokenizer.encode(text).map_or(0, |ids| ids.len());
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "upstream_tokens": counts.tally.upstream_tokens,
            "upstream_requests": counts.upstream.requests,
            "aligner_tokens": counts.tally.aligner_tokens,
        })
    }
}

fn detail(ev: &SentenceEvent) -> Value {
    json!({
        "index": ev.index,
        "original": ev.original,
        "corrected": ev.corrected,
        "changed": ev.changed,
        "aligned": ev.aligned,
        "upstream_ms": ev.upstream_ms,
        "aligner_ms": ev.aligner_ms,
        "upstream_tokens": ev.upstream_tokens,
        "aligner_tokens": ev.aligner_tokens,
    })
}

fn stream(g: Arc<Gateway>, shape: Shape, rx: mpsc::UnboundedReceiver<Chunk>) -> Response {
    let mut text = String::new();
    let mut first = true;
    let events = futures::StreamExt::flat_map(UnboundedReceiverStream::new(rx), move |c| {
        let mut out: Vec<String> = Vec::new();
        match c {
            Chunk::Sentence(ev) => {
                let mut v = shape.chunk(Some(&ev.corrected), first, None);
                if shape.details {
                    v["stream_aligner"] = detail(&ev);
                }
                first = false;
                text.push_str(&ev.corrected);
                out.push(v.to_string());
            }
            Chunk::Done { finish, counts } => {
                let mut v = shape.chunk(None, first, Some(finish));
                v["usage"] = shape.usage(&g, &text, &counts);
                out.push(v.to_string());
                out.push("[DONE]".into());
            }
            Chunk::Failed(e) => {
                let (_, kind, code) = openai::status_and_type(&e);
                out.push(
                    json!({ "error": { "message": g.scrub(e.to_string()), "type": kind, "code": code } })
                        .to_string(),
                );
                out.push("[DONE]".into());
            }
        }
        futures::stream::iter(
            out.into_iter()
                .map(|d| Ok::<_, Infallible>(Event::default().data(d))),
        )
    });
    // Comments every quarter second: a client that left is noticed by the failed write even
    // while the aligner is thinking, and its work is cancelled.
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(250)))
        .into_response()
}

async fn whole(g: &Gateway, shape: Shape, mut rx: mpsc::UnboundedReceiver<Chunk>) -> Response {
    let mut text = String::new();
    let mut sentences = Vec::new();
    while let Some(c) = rx.recv().await {
        match c {
            Chunk::Sentence(ev) => {
                text.push_str(&ev.corrected);
                if shape.details {
                    sentences.push(detail(&ev));
                }
            }
            Chunk::Failed(e) => {
                let (status, kind, code) = openai::status_and_type(&e);
                return error(status, kind, code, g.scrub(e.to_string()));
            }
            Chunk::Done { finish, counts } => {
                let choice = if shape.chat {
                    json!({ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": null, "finish_reason": finish })
                } else {
                    json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish })
                };
                let mut v = json!({
                    "id": shape.id,
                    "object": if shape.chat { "chat.completion" } else { "text_completion" },
                    "created": shape.created,
                    "model": shape.model,
                    "choices": [choice],
                    "usage": shape.usage(g, &text, &counts),
                });
                if shape.details {
                    v["stream_aligner"] = json!({ "sentences": sentences });
                }
                return Json(v).into_response();
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "server_error",
        "the answer ended without a result",
    )
}

async fn models(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !g.authorized(&headers) {
        return unauthorized();
    }
    Json(json!({ "object": "list", "data": [{ "id": g.config.model_name, "object": "model", "owned_by": "stream-aligner" }] })).into_response()
}

async fn health(State(g): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "active": g.active.load(Ordering::Relaxed),
        "max_active": g.config.max_active,
    }))
}

async fn metrics(State(g): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !g.authorized(&headers) {
        return unauthorized();
    }
    let m = &g.metrics;
    let mut out = String::new();
    out.push_str("# HELP stream_aligner_requests_total Requests answered, by HTTP status.\n# TYPE stream_aligner_requests_total counter\n");
    for (status, n) in m.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!(
            "stream_aligner_requests_total{{status=\"{status}\"}} {n}\n"
        ));
    }
    let sentences = m.sentences.load(Ordering::Relaxed);
    let rewrites = m.rewrites.load(Ordering::Relaxed);
    let copy_rate = if sentences == 0 {
        0.0
    } else {
        (sentences - rewrites) as f64 / sentences as f64
    };
    for (name, kind, help, value) in [
        (
            "stream_aligner_sentences_total",
            "counter",
            "Sentences decided by the aligner.",
            sentences as f64,
        ),
        (
            "stream_aligner_rewrites_total",
            "counter",
            "Sentences the aligner rewrote.",
            rewrites as f64,
        ),
        (
            "stream_aligner_copy_rate",
            "gauge",
            "Share of sentences copied unchanged.",
            copy_rate,
        ),
        (
            "stream_aligner_upstream_requests_total",
            "counter",
            "Requests sent to the upstream.",
            m.upstream_requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "stream_aligner_active_answers",
            "gauge",
            "Answers being aligned now.",
            g.active.load(Ordering::Relaxed) as f64,
        ),
        (
            "stream_aligner_queue_depth",
            "gauge",
            "Corrections waiting for the aligner.",
            m.waiting.load(Ordering::Relaxed) as f64,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    m.first_sentence.render(
        "stream_aligner_first_sentence_seconds",
        "Time from request to the first corrected sentence.",
        &mut out,
    );
    m.answer.render(
        "stream_aligner_answer_seconds",
        "Time from request to the answer's end.",
        &mut out,
    );
    m.correction.render(
        "stream_aligner_correction_seconds",
        "Time to correct one sentence, waiting included.",
        &mut out,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
