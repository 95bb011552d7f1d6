//! The aligning gateway on 127.0.0.1: our `serve` (engine mode, the real model) as the upstream,
//! the shipped aligner, and real clients (reqwest, curl -N, the official `openai` Python SDK);
//! a deliberately faulty upstream for every fault; a disconnect that must reach the upstream.
//! Every loop here is bounded and stops by itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{engine, runtime, shipped_aligner_engine};
use serde_json::{Value, json};
use stream_aligner::gateway::{self, Gateway, GatewayConfig};
use stream_aligner::serve::{self, ServerState};
use stream_aligner::upstream::{Api, RemoteConfig};

/// The tests of this file run one at a time: the disconnect test times the gateway, and the
/// others run the real model on the same 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const QUERY: &str =
    "Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?";

fn config(base: &str, optimistic: bool) -> GatewayConfig {
    let mut up = RemoteConfig::new(base, "smollm2");
    up.api = Api::Chat;
    up.template = Some(engine().template.clone());
    up.temperature = 0.0;
    up.idle_timeout = Duration::from_secs(20);
    up.backoff = Duration::from_millis(20);
    up.optimistic = optimistic;
    let mut c = GatewayConfig::new(up);
    c.max_sentences = 8;
    c
}

async fn gateway_on(c: GatewayConfig) -> String {
    let addr = gateway::spawn(Gateway::new(shipped_aligner_engine(), c), "127.0.0.1:0")
        .await
        .unwrap();
    format!("http://{addr}/v1")
}

async fn engine_upstream() -> String {
    let addr = serve::spawn(ServerState::new(engine(), "smollm2"), "127.0.0.1:0")
        .await
        .unwrap();
    format!("http://{addr}/v1")
}

async fn send_json(url: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(json!({ "raw": text }));
    (StatusCode::from_u16(status.as_u16()).unwrap(), headers, v)
}

/// Optimistic streaming changes the cost, not the answer: under greedy decoding both gateways
/// give the sequential loop's text, with fewer upstream requests.
#[test]
fn optimistic_streaming_gives_the_sequential_answer_with_fewer_requests() {
    let _serial = serial();
    runtime().block_on(async {
        let upstream = engine_upstream().await;
        let body = json!({
            "model": "smollm2",
            "messages": [{ "role": "user", "content": QUERY }],
            "temperature": 0,
            "max_tokens": 200,
            "stream_aligner": { "details": true },
        });
        let mut answers = Vec::new();
        for optimistic in [false, true] {
            let base = gateway_on(config(&upstream, optimistic)).await;
            let (status, _, v) = send_json(&format!("{base}/chat/completions"), body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            answers.push(v);
        }
        let text = |v: &Value| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let requests = |v: &Value| v["usage"]["upstream_requests"].as_u64().unwrap();
        let (seq, opt) = (&answers[0], &answers[1]);
        assert_eq!(text(opt), text(seq));
        assert!(!text(seq).trim().is_empty());
        let sentences = seq["stream_aligner"]["sentences"].as_array().unwrap();
        let n = sentences.len();
        // Sequentially every sentence is a request (and one more when the last was rewritten:
        // the upstream is asked to go on from the correction); optimistically a copied sentence
        // before the last costs none.
        let last_rewritten = sentences[n - 1]["changed"] == true;
        assert_eq!(requests(seq), (n + last_rewritten as usize) as u64, "{seq}");
        let saved = sentences[..n - 1]
            .iter()
            .filter(|s| s["changed"] == false)
            .count() as u64;
        assert!(saved >= 1, "no copy to save a request: {seq}");
        assert_eq!(requests(opt), requests(seq) - saved, "{opt}");
        assert_eq!(opt["choices"][0]["finish_reason"], "stop");
    });
}

/// `serve --resample N`: a step whose correction does not hold up (the teacher's "5 * 67 = 335"
/// done again, which the repair cannot carry on: no number left fits) is drawn again from the upstream, sampled, one request a draw; the sentence's
/// original stays the upstream's first, its correction is the drawn one's, and the draws count
/// in the answer's upstream requests.
#[test]
fn a_step_that_does_not_hold_up_is_drawn_again_from_the_upstream() {
    let _serial = serial();
    runtime().block_on(async {
        let upstream = engine_upstream().await;
        let body = json!({
            "model": "smollm2",
            "messages": [{ "role": "user", "content": "Each box holds 24 crayons. A teacher has 5 boxes and hands out 67 crayons. How many crayons remain?" }],
            "max_tokens": 200,
            "stream_aligner": { "details": true },
        });
        let mut answers = Vec::new();
        for resample in [0, 3] {
            let mut c = config(&upstream, false);
            c.max_sentences = 2;
            c.resample = resample;
            let base = gateway_on(c).await;
            let (status, _, v) = send_json(&format!("{base}/chat/completions"), body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            answers.push(v);
        }
        let second = |v: &Value| v["stream_aligner"]["sentences"][1].clone();
        let requests = |v: &Value| v["usage"]["upstream_requests"].as_u64().unwrap();
        let (plain, drawn) = (&answers[0], &answers[1]);
        assert_eq!(second(drawn)["original"], second(plain)["original"], "{plain}\n{drawn}");
        assert_ne!(second(drawn)["corrected"], second(plain)["corrected"], "{plain}\n{drawn}");
        assert!(requests(drawn) > requests(plain), "{plain}\n{drawn}");
    });
}

/// Streams through the gateway with curl -N and with the official openai SDK (Python).
#[test]
fn real_clients_stream_the_corrected_answer() {
    let _serial = serial();
    let rt = runtime();
    let (base, _guard) = rt.block_on(async {
        let upstream = engine_upstream().await;
        (gateway_on(config(&upstream, true)).await, ())
    });
    let body = json!({
        "model": "smollm2",
        "messages": [{ "role": "user", "content": QUERY }],
        "temperature": 0, "max_tokens": 200, "stream": true,
    });
    // Run the clients on their own threads: the servers live on the runtime.
    let out = rt.block_on(async {
        let base = base.clone();
        let body = body.to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sN",
                    "--max-time",
                    "120",
                    "-H",
                    "content-type: application/json",
                    "-d",
                ])
                .arg(body)
                .arg(format!("{base}/chat/completions"))
                .output()
                .expect("curl runs")
        })
        .await
        .unwrap()
    });
    let sse = String::from_utf8_lossy(&out.stdout);
    let data: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{sse}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{sse}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // Strict clients see no extension fields unless they ask.
    assert!(chunks.iter().all(|c| c.get("stream_aligner").is_none()));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{sse}");
    assert!(
        last["usage"]["aligner_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    let curl_text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(chunks.len() >= 3, "one chunk a sentence: {sse}");

    let python = std::env::var("STREAM_ALIGNER_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/stream-aligner/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/gateway/openai_client.py"
    );
    let out = rt.block_on(async {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(&python)
                .arg(script)
                .arg(&base)
                .arg(QUERY)
                .output()
                .unwrap_or_else(|e| {
                    panic!("{python}: {e} (tests/gateway/setup.sh installs the openai SDK)")
                })
        })
        .await
        .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The SDK's stream and its non-streamed call give curl's text, and it sees our errors as
    // its own exception types.
    assert_eq!(v["streamed"], curl_text.as_str(), "{v}");
    assert_eq!(v["whole"], curl_text.as_str(), "{v}");
    assert_eq!(v["finish_reason"], "stop");
    assert!(v["chunks"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["bad_request"], "BadRequestError", "{v}");
}

/// A misbehaving upstream, one route per fault; it records the Authorization it was sent.
async fn faulty(seen_key: Arc<Mutex<Vec<String>>>, seen_body: Arc<Mutex<Vec<String>>>) -> String {
    let sse = |body: String| ([("content-type", "text/event-stream")], body);
    let key = |h: &HeaderMap| {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let k1 = seen_key.clone();
    let bodies = seen_body.clone();
    let app = Router::new()
        // Records the request and answers two sentences, a word a chunk.
        .route(
            "/record/chat/completions",
            post(move |body: String| {
                bodies.lock().unwrap().push(body);
                async move {
                    let words = ["Two", " plus", " two", " is", " 4.", " The", " answer", " is", " 4."];
                    let mut out = String::new();
                    for (i, w) in words.iter().enumerate() {
                        let finish = if i + 1 == words.len() { "\"stop\"" } else { "null" };
                        out += &format!(
                            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":{finish}}}]}}\n\n"
                        );
                    }
                    sse(out + "data: [DONE]\n\n")
                }
            }),
        )
        // 500 that echoes the key it was sent (a careless upstream).
        .route(
            "/echo500/chat/completions",
            post(move |h: HeaderMap| {
                let k = key(&h);
                k1.lock().unwrap().push(k.clone());
                async move { (StatusCode::INTERNAL_SERVER_ERROR, format!("bad key {k}")).into_response() }
            }),
        )
        .route(
            "/garbage/chat/completions",
            post(move || async move { sse("data: {not json\n\n".into()) }),
        )
        .route(
            "/cut/chat/completions",
            post(move || async move {
                sse("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Half a sen\"}}]}\n\n".into())
            }),
        )
        .route(
            "/silent/chat/completions",
            post(move || async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    common::spawn_app(app).await
}

fn error_of(v: &Value) -> (&str, &str) {
    (
        v["error"]["type"].as_str().unwrap_or("?"),
        v["error"]["code"].as_str().unwrap_or("?"),
    )
}

#[test]
fn upstream_faults_and_bad_requests_get_openai_shaped_errors() {
    let _serial = serial();
    let secret = "sk-upstream-secret-1234";
    runtime().block_on(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let fake = faulty(seen.clone(), bodies.clone()).await;
        let chat = |messages: Value| json!({ "model": "m", "messages": messages });
        let ask = chat(json!([{ "role": "user", "content": "What is 2 + 2?" }]));
        let mut faults = Vec::new();
        for route in ["echo500", "garbage", "cut", "silent"] {
            let mut c = config(&format!("{fake}/{route}"), true);
            c.upstream.api_key = Some(secret.into());
            c.upstream.idle_timeout = Duration::from_millis(400);
            c.upstream.retries = 1;
            let base = gateway_on(c).await;
            let t = Instant::now();
            let (status, _, v) = send_json(&format!("{base}/chat/completions"), ask.clone()).await;
            assert!(t.elapsed() < Duration::from_secs(10), "{route} took {:?}", t.elapsed());
            assert!(!v.to_string().contains(secret), "{route} leaked the key: {v}");
            faults.push((route, status, error_of(&v).1.to_string()));
            // Streamed: an error event, then [DONE]; never a hang.
            let mut s = ask.clone();
            s["stream"] = json!(true);
            let (status, _, v) = send_json(&format!("{base}/chat/completions"), s).await;
            assert_eq!(status, StatusCode::OK);
            let raw = v["raw"].as_str().unwrap();
            assert!(raw.contains("\"error\"") && raw.trim_end().ends_with("data: [DONE]"), "{raw}");
            assert!(!raw.contains(secret), "{raw}");
        }
        assert_eq!(
            faults,
            [
                ("echo500", StatusCode::BAD_GATEWAY, "upstream_error".to_string()),
                ("garbage", StatusCode::BAD_GATEWAY, "upstream_error".to_string()),
                ("cut", StatusCode::BAD_GATEWAY, "upstream_error".to_string()),
                ("silent", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout".to_string()),
            ]
        );
        // The key went to the upstream, as a bearer token, on every attempt.
        assert!(seen.lock().unwrap().iter().all(|k| k == &format!("Bearer {secret}")));
        assert_eq!(seen.lock().unwrap().len(), 4, "two requests, each retried once");

        // What passes through: the system message, sampling parameters, stop; not our
        // extension or unknown fields. max_tokens bounds the whole answer.
        let base = gateway_on(config(&format!("{fake}/record"), true)).await;
        let (status, _, v) = send_json(
            &format!("{base}/chat/completions"),
            json!({
                "model": "m",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": "What is 2 + 2?" },
                ],
                "temperature": 0.3, "top_p": 0.9, "seed": 7, "stop": ["\n\n"],
                "max_tokens": 3, "stream_aligner": { "details": true }, "x_unknown": 1,
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["stream_aligner"]["sentences"].as_array().unwrap().len(), 1, "{v}");
        let sent: Value = serde_json::from_str(&bodies.lock().unwrap()[0]).unwrap();
        assert_eq!(sent["messages"][0], json!({ "role": "system", "content": "Be brief." }));
        assert_eq!(sent["messages"][1]["content"], "What is 2 + 2?");
        for (k, want) in [("temperature", json!(0.3)), ("top_p", json!(0.9)), ("seed", json!(7)), ("stop", json!(["\n\n"])), ("max_tokens", json!(3)), ("stream", json!(true))] {
            assert_eq!(sent[k], want, "{k}: {sent}");
        }
        assert!(sent.get("x_unknown").is_none() && sent.get("stream_aligner").is_none(), "{sent}");

        // Bad requests, with gateway keys on.
        let dir = std::env::temp_dir().join(format!("sa-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = config(&format!("{fake}/silent"), true);
        c.upstream.idle_timeout = Duration::from_millis(300);
        c.upstream.retries = 0;
        c.api_keys = vec!["gw-key".into()];
        c.max_body_bytes = 4096;
        c.max_chars = 500;
        let base = gateway_on(c).await;
        let client = reqwest::Client::new();
        let send = |body: String, key: Option<&str>| {
            let mut r = client
                .post(format!("{base}/chat/completions"))
                .header("content-type", "application/json")
                .body(body);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            async move {
                let r = r.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        };
        let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
            ("no key", ask.to_string(), None, 401, "invalid_api_key"),
            ("wrong key", ask.to_string(), Some("gw-kez"), 401, "invalid_api_key"),
            ("malformed", "{\"messages\": [".into(), Some("gw-key"), 400, "invalid_request"),
            ("wrong shape", json!({ "messages": "hi" }).to_string(), Some("gw-key"), 400, "invalid_request"),
            ("empty", chat(json!([])).to_string(), Some("gw-key"), 400, "invalid_request"),
            ("blank", chat(json!([{ "role": "user", "content": "  " }])).to_string(), Some("gw-key"), 400, "invalid_request"),
            ("ends with assistant", chat(json!([{ "role": "user", "content": "hi" }, { "role": "assistant", "content": "yo" }])).to_string(), Some("gw-key"), 400, "invalid_request"),
            ("too long", chat(json!([{ "role": "user", "content": "x".repeat(600) }])).to_string(), Some("gw-key"), 400, "context_length_exceeded"),
            ("too big", chat(json!([{ "role": "user", "content": "x".repeat(5000) }])).to_string(), Some("gw-key"), 413, "request_too_large"),
        ];
        for (name, body, key, want, code) in cases {
            let (status, v) = send(body, key).await;
            assert_eq!((status, error_of(&v).1), (want, code), "{name}: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
        }
        // Unknown fields are tolerated: this one reaches the (silent) upstream and times out.
        let mut extra = ask.clone();
        extra["some_future_field"] = json!({ "a": 1 });
        let (status, v) = send(extra.to_string(), Some("gw-key")).await;
        assert_eq!(status, 504, "{v}");
        // CORS is off unless an origin is named; then only that origin is allowed.
        let preflight = |base: String, origin: &'static str| {
            let client = client.clone();
            async move {
                let r = client
                    .request(reqwest::Method::OPTIONS, format!("{base}/chat/completions"))
                    .header("origin", origin)
                    .header("access-control-request-method", "POST")
                    .send()
                    .await
                    .unwrap();
                r.headers()
                    .get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap().to_string())
            }
        };
        assert_eq!(preflight(base.clone(), "https://app.example").await, None);
        let mut c = config(&format!("{fake}/silent"), true);
        c.cors_origins = vec!["https://app.example".into()];
        let open = gateway_on(c).await;
        assert_eq!(
            preflight(open.clone(), "https://app.example").await.as_deref(),
            Some("https://app.example")
        );
        assert_eq!(preflight(open, "https://evil.example").await, None);
        // Health is open; metrics need the key.
        let h = client.get(format!("{}/health", base.trim_end_matches("/v1"))).send().await.unwrap();
        assert_eq!(h.status().as_u16(), 200);
        let m = client.get(format!("{}/metrics", base.trim_end_matches("/v1"))).send().await.unwrap();
        assert_eq!(m.status().as_u16(), 401);
        let m = client
            .get(format!("{}/metrics", base.trim_end_matches("/v1")))
            .bearer_auth("gw-key")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("stream_aligner_requests_total{status=\"401\"} 2"), "{m}");
        assert!(m.contains("stream_aligner_first_sentence_seconds_bucket"), "{m}");
    });
}

/// An upstream that streams a never-ending sentence slowly and notes when its stream is dropped.
async fn slow(dropped: Arc<Mutex<Option<Instant>>>, requests: Arc<AtomicUsize>) -> String {
    struct Watch(Arc<Mutex<Option<Instant>>>);
    impl Drop for Watch {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(Instant::now());
        }
    }
    let app = Router::new().route(
        "/chat/completions",
        post(move || {
            requests.fetch_add(1, Ordering::SeqCst);
            let watch = Watch(dropped.clone());
            async move {
                let words = futures::stream::unfold((0, watch), |(i, w)| async move {
                    if i >= 600 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let chunk = format!(
                        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"
                    );
                    Some((Ok::<_, std::convert::Infallible>(chunk), (i + 1, w)))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(words),
                )
            }
        }),
    );
    common::spawn_app(app).await
}

#[test]
fn a_client_that_leaves_closes_the_upstream_request_and_a_full_gateway_says_429() {
    let _serial = serial();
    runtime().block_on(async {
        let dropped = Arc::new(Mutex::new(None));
        let requests = Arc::new(AtomicUsize::new(0));
        let fake = slow(dropped.clone(), requests.clone()).await;
        let mut c = config(&fake, true);
        c.max_active = 1;
        let base = gateway_on(c).await;
        let client = reqwest::Client::new();
        let body = json!({ "messages": [{ "role": "user", "content": "Tell me a story." }], "stream": true });
        let resp = client
            .post(format!("{base}/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        // The upstream is streaming to the gateway now.
        for _ in 0..100 {
            if requests.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        // Full: the next request is turned away with Retry-After.
        let (status, headers, v) = send_json(&format!("{base}/chat/completions"), body.clone()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(headers.get("retry-after").unwrap(), "1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(dropped.lock().unwrap().is_none(), "still streaming");
        let left = Instant::now();
        drop(resp);
        for _ in 0..100 {
            if dropped.lock().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = dropped.lock().unwrap().expect("the upstream's stream was closed");
        let after = at.saturating_duration_since(left);
        assert!(after < Duration::from_secs(1), "closed {after:?} after the client left");
        // And the slot is free again.
        for _ in 0..50 {
            let h: Value = client
                .get(format!("{}/health", base.trim_end_matches("/v1")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if h["active"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the answer's slot was never freed");
    });
}
