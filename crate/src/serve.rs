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
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{Engine, GenerateOptions, StopReason};
use crate::model::{KvCache, SamplerConfig};
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

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(
            json!({ "error": { "message": message.to_string(), "type": "invalid_request_error" } }),
        ),
    )
        .into_response()
}

async fn models(State(s): State<Arc<ServerState>>) -> Json<Value> {
    Json(
        json!({ "object": "list", "data": [{ "id": s.model_name, "object": "model", "owned_by": "stream-aligner" }] }),
    )
}

async fn completions(
    State(s): State<Arc<ServerState>>,
    Json(req): Json<CompletionRequest>,
) -> Response {
    respond(s, req.prompt, req.params, false).await
}

async fn chat_completions(
    State(s): State<Arc<ServerState>>,
    Json(req): Json<ChatRequest>,
) -> Response {
    let mut messages: Vec<Message> = req
        .messages
        .iter()
        .map(|m| Message::new(&m.role, &m.content))
        .collect();
    // A final assistant message is an answer begun: continue it rather than start a new turn.
    let prefix = match messages.last() {
        Some(m) if m.role == "assistant" && req.continue_final_message != Some(false) => {
            messages.pop().map(|m| m.content)
        }
        _ => None,
    };
    let prompt = match s
        .engine
        .template
        .continuation(&messages, prefix.as_deref().unwrap_or(""))
    {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    respond(s, prompt, req.params, true).await
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
    Failed(String),
}

async fn respond(s: Arc<ServerState>, prompt: String, p: Params, chat: bool) -> Response {
    let sampler = SamplerConfig {
        temperature: p.temperature.unwrap_or(1.0),
        top_p: p.top_p.unwrap_or(1.0),
        top_k: p.top_k.unwrap_or(0),
        seed: p.seed.unwrap_or(0),
        ..SamplerConfig::greedy()
    };
    if let Err(e) = sampler.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let ids = match s.engine.tokenizer.encode(&prompt) {
        Ok(ids) if !ids.is_empty() => ids,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "the prompt is empty"),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let max = s.engine.model.config.context;
    if ids.len() >= max {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the prompt has {} tokens; the context holds {max}",
                ids.len()
            ),
        );
    }
    let stops = match p.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let opts = GenerateOptions {
        max_tokens: p.max_tokens.unwrap_or(256).min(max - ids.len()),
        sampler,
        calculator: false,
    };
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let state = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut cache = state
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut filter = StopFilter {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            sent: 0,
        };
        let mut stopped = false;
        let result = futures::executor::block_on(state.engine.generate(
            &ids,
            &opts,
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
        ));
        let last = match result {
            Ok((_, stats)) => {
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
                Chunk::Done {
                    finish,
                    prompt_tokens: stats.prompt_tokens,
                    completion_tokens: stats.generated_tokens,
                }
            }
            Err(e) => Chunk::Failed(e.to_string()),
        };
        let _ = tx.blocking_send(last);
    });
    let created = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (model, id) = (s.model_name.clone(), format!("cmpl-{created}"));
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let choice = move |text: Option<&str>, finish: Option<&str>| {
        if chat {
            json!({ "index": 0, "delta": text.map(|t| json!({ "content": t })).unwrap_or(json!({})), "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish })
        }
    };
    if p.stream {
        let chunk_object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let stream = futures::StreamExt::flat_map(ReceiverStream::new(rx), move |c| {
            let mut events = Vec::new();
            let data = |choice: Value| {
                json!({ "id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice] }).to_string()
            };
            match c {
                Chunk::Text(t) => events.push(data(choice(Some(&t), None))),
                Chunk::Done { finish, .. } => {
                    events.push(data(choice(None, Some(finish))));
                    events.push("[DONE]".to_string());
                }
                Chunk::Failed(m) => events.push(json!({ "error": { "message": m } }).to_string()),
            }
            futures::stream::iter(
                events
                    .into_iter()
                    .map(|d| Ok::<_, Infallible>(Event::default().data(d))),
            )
        });
        return Sse::new(stream).into_response();
    }
    let mut rx = rx;
    let mut text = String::new();
    while let Some(c) = rx.recv().await {
        match c {
            Chunk::Text(t) => text.push_str(&t),
            Chunk::Failed(m) => return error(StatusCode::INTERNAL_SERVER_ERROR, m),
            Chunk::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let choice = if chat {
                    json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish })
                } else {
                    json!({ "index": 0, "text": text, "finish_reason": finish })
                };
                return Json(json!({
                    "id": id, "object": object, "created": created, "model": model, "choices": [choice],
                    "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
                }))
                .into_response();
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without a result",
    )
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

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
