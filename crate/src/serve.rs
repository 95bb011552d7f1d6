//! `serve`: our engine as an OpenAI-compatible server (`/v1/completions`,
//! `/v1/chat/completions`, SSE streaming, stop sequences). It is what the remote upstream is
//! tested against, and an edge deployment's local model.
//!
//! One engine on a few cores: requests are served one at a time, and the KV cache is kept
//! between them, so a client continuing the same prompt (the sentence loop does, every round)
//! only pays for what changed.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::decoder::{GenerateOptions, StopReason};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{KvCache, SamplerConfig};
use crate::openai::{
    created, error_body, error_response, failure_response, response_id, status_and_type,
};
use crate::text::Message;

pub struct ServerState {
    pub engine: Arc<Engine>,
    pub model_name: String,
    cache: Mutex<KvCache>,
}

impl ServerState {
    pub fn new(engine: Arc<Engine>, model_name: &str) -> Arc<Self> {
        let cache = Mutex::new(engine.model.new_cache());
        Arc::new(Self {
            engine,
            model_name: model_name.to_string(),
            cache,
        })
    }
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        // Browsers call it from other origins (the demo page, an extension): allow them.
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(state)
}

/// Binds `addr` (port 0 picks one) and serves in the background; returns the bound address.
pub async fn spawn(state: Arc<ServerState>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Ok(local)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Params {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    stop: Option<Stop>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: String,
    #[serde(flatten)]
    params: Params,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    /// vLLM's name for continuing a final assistant message (the default when it is one).
    continue_final_message: Option<bool>,
    #[serde(flatten)]
    params: Params,
}

async fn models(State(s): State<Arc<ServerState>>) -> Json<Value> {
    Json(
        json!({ "object": "list", "data": [{ "id": s.model_name, "object": "model", "owned_by": "stream-aligner" }] }),
    )
}

/// A body that is not the request's JSON: the client's error, OpenAI-shaped.
fn rejected(r: JsonRejection) -> Response {
    error_response(
        r.status(),
        "invalid_request_error",
        "invalid_request",
        r.body_text(),
    )
}

async fn completions(
    State(s): State<Arc<ServerState>>,
    req: Result<Json<CompletionRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(req) => req,
        Err(r) => return rejected(r),
    };
    match parse(&s, &req.prompt, req.params) {
        Ok(job) => respond(s, job, false).await,
        Err(e) => failure_response(&e),
    }
}

async fn chat_completions(
    State(s): State<Arc<ServerState>>,
    req: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(req) => req,
        Err(r) => return rejected(r),
    };
    match chat_prompt(&s, &req).and_then(|prompt| parse(&s, &prompt, req.params)) {
        Ok(job) => respond(s, job, true).await,
        Err(e) => failure_response(&e),
    }
}

/// The chat's prompt: the template applied to the messages; a final assistant message is an
/// answer begun, continued rather than followed by a new turn.
fn chat_prompt(s: &ServerState, req: &ChatRequest) -> Result<String> {
    let mut messages: Vec<Message> = req
        .messages
        .iter()
        .map(|m| Message::new(&m.role, &m.content))
        .collect();
    let prefix = match messages.last() {
        Some(m) if m.role == "assistant" && req.continue_final_message != Some(false) => {
            messages.pop().map(|m| m.content)
        }
        _ => None,
    };
    s.engine
        .template
        .continuation(&messages, prefix.as_deref().unwrap_or(""))
}

/// Holds back text that could be the start of a stop sequence; cuts at the first full one.
struct StopFilter {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

impl StopFilter {
    /// Text now safe to send, and whether a stop sequence was reached.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[self.sent..]
                    .find(s.as_str())
                    .map(|i| self.sent + i)
            })
            .min()
        {
            let out = self.text[self.sent..at].to_string();
            self.sent = at;
            return (out, true);
        }
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len()).filter(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let until = (self.text.len() - hold).max(self.sent);
        let out = self.text[self.sent..until].to_string();
        self.sent = until;
        (out, false)
    }

    fn rest(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

enum Chunk {
    Text(String),
    Done {
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(Error),
}

/// A request checked and ready to run.
struct Job {
    ids: Vec<u32>,
    opts: GenerateOptions,
    stops: Vec<String>,
    stream: bool,
}

/// Parses a request's prompt and parameters into what to run, or the client's error.
fn parse(s: &ServerState, prompt: &str, p: Params) -> Result<Job> {
    let sampler = SamplerConfig {
        temperature: p.temperature.unwrap_or(1.0),
        top_p: p.top_p.unwrap_or(1.0),
        top_k: p.top_k.unwrap_or(0),
        seed: p.seed.unwrap_or(0),
        ..SamplerConfig::greedy()
    };
    sampler.validate()?;
    let ids = s.engine.tokenizer.encode(prompt)?;
    if ids.is_empty() {
        return Err(Error::EmptyInput("the prompt is empty"));
    }
    let max = s.engine.model.config.context;
    if ids.len() >= max {
        return Err(Error::ContextOverflow {
            needed: ids.len() + 1,
            max,
        });
    }
    let stops = match p.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    Ok(Job {
        opts: GenerateOptions {
            max_tokens: p.max_tokens.unwrap_or(256).min(max - ids.len()),
            sampler,
            ..GenerateOptions::default()
        },
        ids,
        stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        stream: p.stream,
    })
}

/// Runs `job` on a blocking thread (one at a time, on the kept KV cache); its text, then how
/// it ended, come on the channel.
fn run(state: Arc<ServerState>, job: Job) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    tokio::task::spawn_blocking(move || {
        let last = generate(&state, job, &tx).unwrap_or_else(Chunk::Failed);
        let _ = tx.blocking_send(last);
    });
    rx
}

/// Generates `job`, sending text as the stop filter releases it; returns the final chunk.
fn generate(state: &ServerState, job: Job, tx: &mpsc::Sender<Chunk>) -> Result<Chunk> {
    let mut cache = state
        .cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut filter = StopFilter {
        stops: job.stops,
        text: String::new(),
        sent: 0,
    };
    let mut stopped = false;
    let (_, stats) = futures::executor::block_on(state.engine.generate(
        &job.ids,
        &job.opts,
        &mut cache,
        |_, piece| {
            let (out, stop) = filter.push(piece);
            // A client that went away stops the work.
            if (!out.is_empty() && tx.blocking_send(Chunk::Text(out)).is_err()) || stop {
                stopped = stop;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    ))?;
    let rest = if stopped {
        String::new()
    } else {
        filter.rest()
    };
    if !rest.is_empty() {
        let _ = tx.blocking_send(Chunk::Text(rest));
    }
    let finish = if stopped || stats.stop == StopReason::EndOfText {
        "stop"
    } else {
        "length"
    };
    Ok(Chunk::Done {
        finish,
        prompt_tokens: stats.prompt_tokens,
        completion_tokens: stats.generated_tokens,
    })
}

/// What every chunk of one response shares.
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
}

impl Shape {
    fn new(s: &ServerState, chat: bool) -> Self {
        Self {
            chat,
            id: response_id(chat),
            created: created(),
            model: s.model_name.clone(),
        }
    }

    /// A streamed chunk: a piece of text, or the finish reason.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>) -> String {
        let choice = if self.chat {
            let delta = text.map_or(json!({}), |t| json!({ "content": t }));
            json!({ "index": 0, "delta": delta, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish })
        };
        let object = match self.chat {
            true => "chat.completion.chunk",
            false => "text_completion",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice] })
            .to_string()
    }

    /// The whole response.
    fn whole(
        &self,
        text: String,
        finish: &str,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) -> Value {
        let (object, choice) = if self.chat {
            let message = json!({ "role": "assistant", "content": text });
            (
                "chat.completion",
                json!({ "index": 0, "message": message, "finish_reason": finish }),
            )
        } else {
            (
                "text_completion",
                json!({ "index": 0, "text": text, "finish_reason": finish }),
            )
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
        })
    }
}

/// Runs a parsed request and formats its answer: SSE chunks, or one JSON body.
async fn respond(s: Arc<ServerState>, job: Job, chat: bool) -> Response {
    let shape = Shape::new(&s, chat);
    let stream = job.stream;
    let rx = run(s, job);
    if stream {
        sse(shape, rx)
    } else {
        whole(shape, rx).await
    }
}

fn sse(shape: Shape, rx: mpsc::Receiver<Chunk>) -> Response {
    let stream = futures::StreamExt::flat_map(ReceiverStream::new(rx), move |c| {
        let events = match c {
            Chunk::Text(t) => vec![shape.chunk(Some(&t), None)],
            Chunk::Done { finish, .. } => vec![shape.chunk(None, Some(finish)), "[DONE]".into()],
            Chunk::Failed(e) => {
                let (_, kind, code) = status_and_type(&e);
                vec![error_body(kind, code, &e).to_string()]
            }
        };
        futures::stream::iter(
            events
                .into_iter()
                .map(|d| Ok::<_, Infallible>(Event::default().data(d))),
        )
    });
    Sse::new(stream).into_response()
}

async fn whole(shape: Shape, mut rx: mpsc::Receiver<Chunk>) -> Response {
    let mut text = String::new();
    while let Some(c) = rx.recv().await {
        match c {
            Chunk::Text(t) => text.push_str(&t),
            Chunk::Failed(e) => return failure_response(&e),
            Chunk::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                return Json(shape.whole(text, finish, prompt_tokens, completion_tokens))
                    .into_response();
            }
        }
    }
    failure_response(&Error::Device("generation ended without a result".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            chat: true,
            id: response_id(true),
            created: 0,
            model: "m".into(),
        }
    }

    fn failed(e: Error) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Chunk::Text("half an ans".into())).unwrap();
        tx.try_send(Chunk::Failed(e)).unwrap();
        rx
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A failure of the server is a 500 `server_error`, not the client's `invalid_request_error`,
    /// in a whole response and mid-stream.
    #[tokio::test]
    async fn a_server_failure_is_a_server_error() {
        let r = whole(shape(), failed(Error::Device("the device was lost".into()))).await;
        assert_eq!(r.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let v: Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["error"]["type"], "server_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("lost"),
            "{v}"
        );

        let r = sse(shape(), failed(Error::Device("the device was lost".into())));
        let text = body(r).await;
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap();
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["error"]["type"], "server_error", "{text}");

        let r = whole(shape(), failed(Error::EmptyInput("the prompt is empty"))).await;
        assert_eq!(r.status(), axum::http::StatusCode::BAD_REQUEST);
        let v: Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }

    #[test]
    fn stop_sequences_cut_the_text_and_partial_matches_wait() {
        let mut f = StopFilter {
            stops: vec!["\n\n".into(), "END".into()],
            text: String::new(),
            sent: 0,
        };
        assert_eq!(f.push("Hello E"), ("Hello ".into(), false));
        assert_eq!(f.push("N"), ("".into(), false));
        assert_eq!(f.push("ough\n"), ("ENough".into(), false));
        assert_eq!(f.push("\nmore"), ("".into(), true));
    }
}
