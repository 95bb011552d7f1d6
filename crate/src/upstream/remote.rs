//! The remote upstream: any OpenAI-compatible server (a hosted 70B in real use, our `serve` in
//! tests), streamed over SSE. Timeouts bound every wait; 429, 5xx, connection errors and cut
//! streams are retried with exponential backoff. The same code runs in the browser over fetch.
//!
//! Optimistic streaming (the default): after a sentence the stream stays open while the aligner
//! judges it. If the next round's prefix is the old one plus that sentence (it was copied), the
//! next sentence is read from the same stream: no new request, no new time to first token, no
//! prompt billed again. A rewrite changes the prefix: the stream is dropped, which aborts it,
//! and a new request continues from the corrected prefix. Under greedy decoding this gives the
//! sequential loop's text (one request per sentence), which `optimistic: false` still does.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Upstream, UpstreamSentence};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::platform::{self, BoxStream};
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

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "completions" => Ok(Self::Completions),
            "chat" => Ok(Self::Chat),
            other => Err(format!(
                "the upstream API is completions or chat, not '{other}'"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Api {
    /// From the same names as [`std::str::FromStr`] (a page's options, as the CLI's flags).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a user names to reach a remote upstream: the CLI's flags, a page's options (JSON,
/// camelCase). [`RemoteConfig::from_options`] makes the configuration from it, the same way for
/// both; the rest keeps [`RemoteConfig::new`]'s defaults.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteOptions {
    /// E.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name sent to the upstream (default: "default").
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Default: completions.
    #[serde(default)]
    pub api: Option<Api>,
    /// The longest wait for the response headers or the next streamed event, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The conversation before the query (system prompt, earlier turns), sent as it is.
    #[serde(default)]
    pub context: Vec<Message>,
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api", &self.api)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
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
    /// The conversation before the query (a system prompt, earlier turns), sent as it is.
    pub context: Vec<Message>,
    /// Other request fields passed to the upstream as they are (`top_p`, `stop`, `seed`,
    /// penalties, ...); they may override `max_tokens` and `temperature`, never the model, the
    /// prompt or streaming.
    pub params: serde_json::Map<String, Value>,
    /// Keep the stream open across a copied sentence (see the module's documentation).
    pub optimistic: bool,
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
            context: Vec::new(),
            params: serde_json::Map::new(),
            optimistic: true,
        }
    }

    /// The configuration `options` name; `template` is the upstream model's chat template
    /// (the completions API applies it).
    pub fn from_options(options: RemoteOptions, template: ChatTemplate) -> Self {
        let model = options.model.as_deref().unwrap_or("default");
        let mut config = Self::new(&options.base_url, model);
        config.api = options.api.unwrap_or(Api::Completions);
        config.api_key = options.api_key.filter(|k| !k.is_empty());
        config.template = Some(template);
        config.context = options.context;
        if let Some(ms) = options.timeout_ms {
            config.idle_timeout = Duration::from_millis(ms);
        }
        config
    }
}

/// What the upstream was asked for and gave, over one answer or many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamStats {
    /// HTTP requests sent (retries included).
    pub requests: usize,
    /// Streamed chunks received (about one token each).
    pub chunks: usize,
}

type Events = BoxStream<
    std::result::Result<
        eventsource_stream::Event,
        eventsource_stream::EventStreamError<reqwest::Error>,
    >,
>;

/// A response still streaming: the sentences after `prefix`.
struct Open {
    /// What the stream continues: the prefix it was asked for plus the sentences it gave.
    prefix: String,
    events: Events,
    /// Text received past the sentences given.
    splitter: SentenceSplitter,
    url: String,
    /// Sentences given from this stream.
    served: usize,
    /// The stream has ended, with this finish reason (null for a bare `[DONE]`).
    ended: Option<Value>,
}

impl Open {
    /// What an ended stream gives: the next sentence (with `sentence`) or the rest, the
    /// answer's last when nothing follows. `None` when a reused stream ran out of tokens
    /// before a sentence: its end is not the answer's.
    fn finish(&mut self, sentence: bool, chunks: usize) -> Option<UpstreamSentence> {
        // A reused stream out of tokens is not the answer's end: the sequential loop would
        // have asked again, with a budget of its own (the next read says so).
        let cut = self.served > 0 && self.ended.as_ref().is_some_and(|r| r == "length");
        if cut && !(sentence && self.splitter.pending().is_some()) {
            return None;
        }
        let all = self.splitter.text().len();
        let end = match sentence {
            true => self.splitter.finish().unwrap_or(all),
            false => all,
        };
        let text = self.splitter.take(end);
        Some(UpstreamSentence {
            last: self.splitter.text().trim().is_empty() && !cut,
            text,
            tokens: chunks,
        })
    }

    /// A sentence received complete, or a run-on one cut at `max_chars`.
    fn ready(&mut self, max_chars: usize, chunks: usize) -> Option<UpstreamSentence> {
        let len = self.splitter.text().len();
        let end = self
            .splitter
            .pending()
            .or_else(|| (len > max_chars).then_some(len))?;
        Some(UpstreamSentence {
            text: self.splitter.take(end),
            last: false,
            tokens: chunks,
        })
    }

    /// The stream's next event as JSON (`None` for `[DONE]`), within the idle timeout.
    async fn next_event(&mut self, idle: Duration) -> std::result::Result<Option<Value>, Failure> {
        let url = &self.url;
        let event = match platform::timeout(idle, self.events.next()).await {
            None => return Err(timed_out(format!("{url} sent nothing for {idle:?}"))),
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
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&event.data).map_err(|e| {
            let data: String = event.data.chars().take(120).collect();
            fail(
                false,
                None,
                format!("{url} sent an event that is not JSON ({e}): {data}"),
            )
        })?;
        if let Some(err) = v.get("error") {
            return Err(fail(
                true,
                None,
                format!("{url} reported an error mid-stream: {err}"),
            ));
        }
        Ok(Some(v))
    }

    /// Takes an event's text (completions' `text` or chat's `delta.content`) and its finish
    /// reason.
    fn push(&mut self, v: &Value) {
        let choice = &v["choices"][0];
        let piece = choice["text"]
            .as_str()
            .or_else(|| choice["delta"]["content"].as_str())
            .unwrap_or("");
        self.splitter.push(piece);
        if choice["finish_reason"].is_string() {
            self.ended = Some(choice["finish_reason"].clone());
        }
    }
}

pub struct RemoteUpstream {
    client: reqwest::Client,
    pub config: RemoteConfig,
    pub cancel: CancelToken,
    pub stats: UpstreamStats,
    open: Option<Open>,
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
            stats: UpstreamStats::default(),
            open: None,
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
        for (k, v) in &c.params {
            if !["model", "prompt", "messages", "stream", "stream_options"].contains(&k.as_str()) {
                body[k] = v.clone();
            }
        }
        let mut conversation = c.context.clone();
        conversation.push(Message::user(query));
        let url = match c.api {
            Api::Completions => {
                let template = c.template.as_ref().expect("checked in new");
                body["prompt"] = json!(template.continuation(&conversation, prefix)?);
                format!("{}/completions", c.base_url)
            }
            Api::Chat => {
                let mut messages: Vec<Value> = conversation
                    .iter()
                    .map(|m| json!({ "role": m.role, "content": m.content }))
                    .collect();
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

    /// Sends one streamed request for the answer after `prefix`.
    async fn open(&mut self, query: &str, prefix: &str) -> std::result::Result<Open, Failure> {
        let c = &self.config;
        let (url, body) = self.request(query, prefix).map_err(|e| Failure {
            error: e,
            retry: false,
        })?;
        let mut req = self.client.post(&url).json(&body);
        if let Some(key) = &c.api_key {
            req = req.bearer_auth(key);
        }
        self.stats.requests += 1;
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
            let text = platform::timeout(c.idle_timeout, resp.text())
                .await
                .and_then(|t| t.ok())
                .unwrap_or_default();
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
        Ok(Open {
            prefix: prefix.to_string(),
            events: Box::pin(resp.bytes_stream().eventsource()),
            splitter: SentenceSplitter::new(),
            url,
            served: 0,
            ended: None,
        })
    }

    /// Reads `open` up to its next sentence end (with `sentence`) or to the answer's end.
    /// `None`: the stream ran out of tokens after giving sentences, so its end is not the
    /// answer's: ask again from its prefix (as the sequential loop would have).
    async fn read(
        &mut self,
        open: &mut Open,
        sentence: bool,
    ) -> std::result::Result<Option<UpstreamSentence>, Failure> {
        let mut chunks = 0;
        loop {
            if open.ended.is_some() {
                return Ok(open.finish(sentence, chunks));
            }
            if sentence && let Some(s) = open.ready(self.config.max_sentence_chars, chunks) {
                return Ok(Some(s));
            }
            if self.cancel.is_cancelled() {
                return Err(Failure {
                    error: Error::Cancelled,
                    retry: false,
                });
            }
            match open.next_event(self.config.idle_timeout).await? {
                None => open.ended = Some(Value::Null),
                Some(v) => {
                    chunks += 1;
                    self.stats.chunks += 1;
                    open.push(&v);
                }
            }
        }
    }

    /// The next sentence (or, without `sentence`, the rest) after `prefix`: from the open
    /// stream when it continues this prefix, else from a new request; retried with backoff.
    async fn with_retries(
        &mut self,
        query: &str,
        prefix: &str,
        sentence: bool,
    ) -> Result<UpstreamSentence> {
        if query.trim().is_empty() {
            return Err(Error::EmptyInput("the query is empty"));
        }
        let mut wait = self.config.backoff;
        let mut failures = 0;
        loop {
            // A stream that continues another prefix is dropped here, which aborts it.
            let open = self.open.take().filter(|o| o.prefix == prefix);
            let reused = open.is_some();
            let outcome = match open {
                Some(o) => Ok(o),
                None => self.open(query, prefix).await,
            };
            let outcome = match outcome {
                Ok(mut o) => self.read(&mut o, sentence).await.map(|s| (o, s)),
                Err(f) => Err(f),
            };
            match outcome {
                Ok((mut o, Some(s))) => {
                    if !s.last && self.config.optimistic {
                        o.prefix.push_str(&s.text);
                        o.served += 1;
                        self.open = Some(o);
                    }
                    return Ok(s);
                }
                Ok((_, None)) => {}
                // A stream kept open while the aligner judged may have been closed by then (a
                // proxy's idle timeout): that costs a fresh request, not a retry.
                Err(f) if reused && f.retry => {}
                Err(f) if f.retry && failures < self.config.retries => {
                    failures += 1;
                    platform::sleep(wait).await;
                    wait *= 2;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    /// A twin of this upstream that samples at `temperature`, what `align::Resampled` draws
    /// from: the same server, model, key and cancel token, one request a sentence (a draw keeps
    /// no stream open), its own tally, the HTTP client (and its connections) shared.
    pub fn sampling(&self, temperature: f32) -> Self {
        let mut config = self.config.clone();
        config.temperature = temperature;
        config.optimistic = false;
        Self {
            client: self.client.clone(),
            config,
            cancel: self.cancel.clone(),
            stats: UpstreamStats::default(),
            open: None,
        }
    }

    /// Drops the open stream, if any (the server stops generating).
    pub fn close(&mut self) {
        self.open = None;
    }
}

impl Upstream for RemoteUpstream {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        self.with_retries(query, prefix, true).await
    }

    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        Ok(self.with_retries(query, prefix, false).await?.text)
    }

    /// The request's `seed` (servers that honour it sample reproducibly).
    fn reseed(&mut self, seed: u64) {
        self.config.seed = Some(seed);
    }
}
