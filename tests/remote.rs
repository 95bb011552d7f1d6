//! The remote upstream against real HTTP servers on 127.0.0.1: our own `serve` with the real
//! model, and a deliberately misbehaving one. Every loop here is bounded and stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use common::{engine, runtime};
use stream_aligner::serve::{self, ServerState};
use stream_aligner::upstream::{Api, LocalUpstream, RemoteConfig, RemoteUpstream, Upstream};
use stream_aligner::{Error, GenerateOptions};

fn remote(base: &str, api: Api) -> RemoteUpstream {
    let mut c = RemoteConfig::new(base, "smollm2");
    c.api = api;
    c.template = Some(engine().template.clone());
    c.max_tokens = 96;
    c.temperature = 0.0;
    c.idle_timeout = Duration::from_secs(5);
    c.backoff = Duration::from_millis(20);
    RemoteUpstream::new(c).unwrap()
}

#[test]
fn remote_upstream_on_serve_gives_the_local_sentences_at_temperature_0() {
    let rt = runtime();
    rt.block_on(async {
        let addr = serve::spawn(ServerState::new(engine(), "smollm2"), "127.0.0.1:0")
            .await
            .unwrap();
        let base = format!("http://{addr}/v1");
        let query = "What is 17 * 23? Answer step by step.";
        let mut local = LocalUpstream::new(
            engine(),
            GenerateOptions {
                max_tokens: 96,
                ..Default::default()
            },
        );
        for api in [Api::Completions, Api::Chat] {
            let mut far = remote(&base, api);
            let mut prefix = String::new();
            for round in 0..3 {
                let want = local.next_sentence(query, &prefix).await.unwrap();
                let got = far.next_sentence(query, &prefix).await.unwrap();
                assert_eq!(got.text, want.text, "{api:?}, round {round}");
                if want.last {
                    break;
                }
                prefix.push_str(&want.text);
            }
        }
    });
}

/// A server that misbehaves in the ways real ones do, one route per fault.
async fn faulty() -> String {
    let calls = Arc::new(AtomicUsize::new(0));
    let sse = |body: String| ([("content-type", "text/event-stream")], body);
    let chunk = |t: &str| {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"text\":{}}}]}}\n\n",
            serde_json::to_string(t).unwrap()
        )
    };
    let ok_body = chunk("Fine.") + &chunk(" Next one.") + "data: [DONE]\n\n";
    let app = Router::new()
        .route(
            "/slow/v1/completions",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/flaky/v1/completions", {
            let calls = calls.clone();
            let ok_body = ok_body.clone();
            post(move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let ok_body = ok_body.clone();
                async move {
                    if n == 0 {
                        (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
                    } else {
                        sse(ok_body).into_response()
                    }
                }
            })
        })
        .route(
            "/unauthorized/v1/completions",
            post(|| async { (StatusCode::UNAUTHORIZED, "bad key") }),
        )
        .route(
            "/cut/v1/completions",
            post(move || async move {
                sse("data: {\"choices\":[{\"index\":0,\"text\":\"Hello wor".to_string())
            }),
        )
        .route(
            "/garbage/v1/completions",
            post(move || async move { sse("data: this is not json\n\n".to_string()) }),
        )
        .route(
            "/endless/v1/completions",
            post(move || async move {
                // Words without end; bounded so the test server stops by itself too.
                let words = futures::stream::iter((0..100_000).map(|_| {
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(
                        "data: {\"choices\":[{\"index\":0,\"text\":\" word\"}]}\n\n",
                    ))
                }));
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(words),
                )
            }),
        );
    common::spawn_app(app).await
}

/// Accepts connections and drops them at once: a connection reset.
async fn resetting() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..20 {
            let Ok((sock, _)) = listener.accept().await else {
                break;
            };
            drop(sock);
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn remote_faults_are_retried_or_reported_and_nothing_hangs() {
    let rt = runtime();
    rt.block_on(async {
        let base = faulty().await;
        let q = "Say something.";

        // 500, then success: retried.
        let s = remote(&format!("{base}/flaky/v1"), Api::Completions)
            .next_sentence(q, "")
            .await
            .unwrap();
        assert_eq!(s.text, "Fine.");

        // Timeout: bounded by idle_timeout × attempts.
        let mut slow = remote(&format!("{base}/slow/v1"), Api::Completions);
        slow.config.idle_timeout = Duration::from_millis(300);
        slow.config.retries = 1;
        let t = Instant::now();
        let e = slow.next_sentence(q, "").await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));

        // 401: not retried, reported with its status.
        let e = remote(&format!("{base}/unauthorized/v1"), Api::Completions)
            .next_sentence(q, "")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Remote {
                    status: Some(401),
                    ..
                }
            ),
            "{e}"
        );

        // SSE cut mid-event: retried, then a clear error.
        let e = remote(&format!("{base}/cut/v1"), Api::Completions)
            .next_sentence(q, "")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("stream ended"), "{e}");

        // Invalid JSON: a clear error naming it.
        let e = remote(&format!("{base}/garbage/v1"), Api::Completions)
            .next_sentence(q, "")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");

        // Connection reset: retried, then a clear error.
        let e = remote(&resetting().await, Api::Completions)
            .next_sentence(q, "")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Remote { status: None, .. }), "{e}");

        // A stream that never ends a sentence: cut at max_sentence_chars, the request dropped.
        let mut endless = remote(&format!("{base}/endless/v1"), Api::Completions);
        endless.config.max_sentence_chars = 500;
        let s = endless.next_sentence(q, "").await.unwrap();
        assert!(
            s.text.len() > 500 && s.text.len() < 600 && !s.last,
            "{}",
            s.text.len()
        );
    });
}

#[test]
fn serve_applies_stop_sequences_and_reports_usage() {
    let rt = runtime();
    rt.block_on(async {
        let addr = serve::spawn(ServerState::new(engine(), "smollm2"), "127.0.0.1:0").await.unwrap();
        let client = reqwest::Client::new();
        let body = serde_json::json!({ "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 24, "temperature": 0, "stop": [" 8"] });
        let v: serde_json::Value = client.post(format!("http://{addr}/v1/completions")).json(&body).send().await.unwrap().json().await.unwrap();
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert!(text.starts_with(" 7,") && !text.contains('8'), "{text:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

        let bad = client.post(format!("http://{addr}/v1/completions")).json(&serde_json::json!({ "prompt": "" })).send().await.unwrap();
        assert_eq!(bad.status(), 400);
    });
}

/// Every response has an id of its own (its streamed chunks share it), and errors say whose
/// they are: a prompt longer than the context is the client's, typed as OpenAI types it.
#[test]
fn serve_gives_each_response_its_own_id_and_typed_errors() {
    let rt = runtime();
    rt.block_on(async {
        let addr = serve::spawn(ServerState::new(engine(), "smollm2"), "127.0.0.1:0").await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/v1/completions");
        let post = |body: serde_json::Value| client.post(&url).json(&body).send();
        let one = serde_json::json!({ "prompt": "1, 2, 3,", "max_tokens": 1, "temperature": 0 });
        let a: serde_json::Value = post(one.clone()).await.unwrap().json().await.unwrap();
        let b: serde_json::Value = post(one).await.unwrap().json().await.unwrap();
        let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        assert!(a.starts_with("cmpl-") && a != b, "{a} vs {b}");
        let sse = post(serde_json::json!({ "prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0, "stream": true }))
            .await.unwrap().text().await.unwrap();
        let ids: std::collections::BTreeSet<String> = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        assert!(ids.len() == 1 && !ids.contains(a) && !ids.contains(b), "{ids:?}");

        let context = engine().model.config.context;
        let long = post(serde_json::json!({ "prompt": "one ".repeat(context + 8) })).await.unwrap();
        assert_eq!(long.status(), 400);
        let v: serde_json::Value = long.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
        let malformed = client.post(&url).header("content-type", "application/json").body("{\"prompt\": ").send().await.unwrap();
        assert_eq!(malformed.status(), 400);
        let v: serde_json::Value = malformed.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    });
}

/// A budget-bound upstream: each request gives at most two sentences of a three-sentence
/// answer after the prefix (a final assistant message), ending by "length" while more remain.
/// Optimistically, a reused stream that runs out of tokens is not the answer's end: the text
/// and where it ends are the sequential loop's.
#[test]
fn a_reused_stream_cut_by_its_token_budget_does_not_end_the_answer() {
    runtime().block_on(async {
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |body: String| {
                n.fetch_add(1, Ordering::SeqCst);
                async move {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let msgs = v["messages"].as_array().unwrap();
                    let prefix = msgs
                        .last()
                        .filter(|m| m["role"] == "assistant")
                        .and_then(|m| m["content"].as_str())
                        .unwrap_or("");
                    let all = ["A is 1.", "\nB is 2.", "\nC is 3."];
                    let done = stream_aligner::text::split_sentences(prefix).len();
                    let mut give: Vec<&str> = all[done..(done + 2).min(all.len())].to_vec();
                    // Cut mid-line: the line break makes the last sentence's end certain.
                    if done + give.len() < all.len() {
                        give.push("\n");
                    }
                    let finish = if give.last() == Some(&"\n") { "length" } else { "stop" };
                    let mut out = String::new();
                    for (i, s) in give.iter().enumerate() {
                        let f = if i + 1 == give.len() { format!("\"{finish}\"") } else { "null".into() };
                        let piece = serde_json::to_string(s).unwrap();
                        out += &format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{piece}}},\"finish_reason\":{f}}}]}}\n\n");
                    }
                    ([("content-type", "text/event-stream")], out + "data: [DONE]\n\n")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        for optimistic in [false, true] {
            let mut c = RemoteConfig::new(&base, "m");
            c.api = Api::Chat;
            c.optimistic = optimistic;
            let mut up = RemoteUpstream::new(c).unwrap();
            let mut prefix = String::new();
            let mut got = Vec::new();
            for _ in 0..5 {
                let s = up.next_sentence("q", &prefix).await.unwrap();
                got.push((s.text.clone(), s.last));
                prefix.push_str(&s.text);
                if s.last {
                    break;
                }
            }
            assert_eq!(
                got,
                [
                    ("A is 1.".to_string(), false),
                    ("\nB is 2.".to_string(), false),
                    ("\nC is 3.".to_string(), true)
                ],
                "optimistic: {optimistic}"
            );
        }
        // Sequentially three requests; optimistically the first stream gives two sentences.
        assert_eq!(requests.load(Ordering::SeqCst), 3 + 2);
    });
}
