//! The remote upstream: any OpenAI-compatible server (a hosted 70B in real use, our `serve` in
//! tests), streamed over SSE. The request is dropped, which aborts it, the moment the splitter
//! sees a sentence end. Timeouts bound every wait; 429, 5xx, connection errors and cut streams
//! are retried with exponential backoff. The same code runs in the browser over fetch.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Upstream, UpstreamSentence};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::platform;
use crate::text::{ChatTemplate, Message, SentenceSplitter};

/// Which endpoint the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/completions` with the chat template applied by us: the prefix continues the
    /// assistant turn exactly.
    Completions,
    /// `/v1/chat/completions` with the prefix as a final assistant message to continue.
    Chat,
}

#[derive(Clone)]
pub struct RemoteConfig {
    /// E.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub api: Api,
    /// The upstream model's chat template, for the completions API.
    pub template: Option<ChatTemplate>,
    pub connect_timeout: Duration,
    /// Longest wait for the response headers or for the next streamed event.
    pub idle_timeout: Duration,
    /// Attempts after the first, for retryable failures.
    pub retries: u32,
    pub backoff: Duration,
    pub max_tokens: usize,
    pub temperature: f32,
    pub seed: Option<u64>,
    /// A "sentence" longer than this is cut here: a stream that never ends one can't hang us.
    pub max_sentence_chars: usize,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl RemoteConfig {
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: None,
            api: Api::Completions,
            template: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(250),
            max_tokens: 256,
            temperature: 0.0,
            seed: None,
            max_sentence_chars: 2000,
        }
    }
}

pub struct RemoteUpstream {
    client: reqwest::Client,
    pub config: RemoteConfig,
    pub cancel: CancelToken,
}

/// A failed attempt, and whether another may succeed.
struct Failure {
    error: Error,
    retry: bool,
}

fn timed_out(message: String) -> Failure {
    Failure {
        error: Error::Timeout(message),
        retry: true,
    }
}

fn fail(retry: bool, status: Option<u16>, message: impl Into<String>) -> Failure {
    Failure {
        error: Error::Remote {
            status,
            message: message.into(),
        },
        retry,
    }
}

impl RemoteUpstream {
    pub fn new(config: RemoteConfig) -> Result<Self> {
        if config.api == Api::Completions && config.template.is_none() {
            return Err(Error::Config(
                "the completions API needs the upstream's chat template".into(),
            ));
        }
        let client = platform::http_client(config.connect_timeout).map_err(|e| Error::Remote {
            status: None,
            message: e.to_string(),
        })?;
        Ok(Self {
            client,
            config,
            cancel: CancelToken::default(),
        })
    }

    fn request(&self, query: &str, prefix: &str) -> Result<(String, Value)> {
        let c = &self.config;
        let mut body = json!({
            "model": c.model,
            "max_tokens": c.max_tokens,
            "temperature": c.temperature,
            "stream": true,
        });
        if let Some(seed) = c.seed {
            body["seed"] = json!(seed);
        }
        let url = match c.api {
            Api::Completions => {
                let template = c.template.as_ref().expect("checked in new");
                body["prompt"] = json!(template.continuation(&[Message::user(query)], prefix)?);
                format!("{}/completions", c.base_url)
            }
            Api::Chat => {
                let mut messages = vec![json!({ "role": "user", "content": query })];
                if !prefix.is_empty() {
                    messages.push(json!({ "role": "assistant", "content": prefix }));
                    body["continue_final_message"] = json!(true);
                    body["add_generation_prompt"] = json!(false);
                }
                body["messages"] = json!(messages);
                format!("{}/chat/completions", c.base_url)
            }
        };
        Ok((url, body))
    }

    /// One streamed request. With `sentence`, stops at the first sentence end.
    async fn attempt(
        &self,
        query: &str,
        prefix: &str,
        sentence: bool,
    ) -> std::result::Result<UpstreamSentence, Failure> {
        let c = &self.config;
        let (url, body) = self.request(query, prefix).map_err(|e| Failure {
            error: e,
            retry: false,
        })?;
        let mut req = self.client.post(&url).json(&body);
        if let Some(key) = &c.api_key {
            req = req.bearer_auth(key);
        }
        let resp = match platform::timeout(c.idle_timeout, req.send()).await {
            None => {
                return Err(timed_out(format!(
                    "no response from {url} within {:?}",
                    c.idle_timeout
                )));
            }
            Some(Err(e)) => {
                return Err(fail(platform::transient(&e), None, format!("{url}: {e}")));
            }
            Some(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let retry = status.as_u16() == 429 || status.is_server_error();
            return Err(fail(
                retry,
                Some(status.as_u16()),
                format!(
                    "{url} answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            ));
        }
        let mut events = resp.bytes_stream().eventsource();
        let mut splitter = SentenceSplitter::new();
        let mut chunks = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(Failure {
                    error: Error::Cancelled,
                    retry: false,
                });
            }
            let event = match platform::timeout(c.idle_timeout, events.next()).await {
                None => {
                    return Err(timed_out(format!(
                        "{url} sent nothing for {:?}",
                        c.idle_timeout
                    )));
                }
                // The body ended without [DONE] or a finish reason: the stream was cut.
                Some(None) => {
                    return Err(fail(
                        true,
                        None,
                        format!("{url}: the stream ended before the answer did"),
                    ));
                }
                Some(Some(Err(e))) => {
                    return Err(fail(true, None, format!("{url}: the stream broke: {e}")));
                }
                Some(Some(Ok(ev))) => ev,
            };
            if event.data.trim() == "[DONE]" {
                return Ok(UpstreamSentence {
                    text: splitter.text().to_string(),
                    last: true,
                    tokens: chunks,
                });
            }
            let v: Value = serde_json::from_str(&event.data).map_err(|e| {
                fail(
                    false,
                    None,
                    format!(
                        "{url} sent an event that is not JSON ({e}): {}",
                        event.data.chars().take(120).collect::<String>()
                    ),
                )
            })?;
            if let Some(err) = v.get("error") {
                return Err(fail(
                    true,
                    None,
                    format!("{url} reported an error mid-stream: {err}"),
                ));
            }
            let choice = &v["choices"][0];
            let piece = choice["text"]
                .as_str()
                .or_else(|| choice["delta"]["content"].as_str())
                .unwrap_or("");
            chunks += 1;
            let end = splitter.push(piece);
            if sentence {
                if let Some(end) = end {
                    // Dropping `events` closes the connection: the server stops generating.
                    return Ok(UpstreamSentence {
                        text: splitter.text()[..end].to_string(),
                        last: false,
                        tokens: chunks,
                    });
                }
                if splitter.text().len() > c.max_sentence_chars {
                    return Ok(UpstreamSentence {
                        text: splitter.text().to_string(),
                        last: false,
                        tokens: chunks,
                    });
                }
            }
            if choice["finish_reason"].is_string() {
                // The answer ended: all that is left is its last sentence.
                return Ok(UpstreamSentence {
                    text: splitter.text().to_string(),
                    last: true,
                    tokens: chunks,
                });
            }
        }
    }

    async fn with_retries(
        &self,
        query: &str,
        prefix: &str,
        sentence: bool,
    ) -> Result<UpstreamSentence> {
        if query.trim().is_empty() {
            return Err(Error::EmptyInput("the query is empty"));
        }
        let mut wait = self.config.backoff;
        for attempt in 0..=self.config.retries {
            match self.attempt(query, prefix, sentence).await {
                Ok(s) => return Ok(s),
                Err(f) if f.retry && attempt < self.config.retries => {
                    platform::sleep(wait).await;
                    wait *= 2;
                }
                Err(f) => return Err(f.error),
            }
        }
        unreachable!("the last attempt returns")
    }
}

impl Upstream for RemoteUpstream {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        self.with_retries(query, prefix, true).await
    }

    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        Ok(self.with_retries(query, prefix, false).await?.text)
    }
}
