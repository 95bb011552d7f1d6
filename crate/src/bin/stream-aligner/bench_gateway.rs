//! `stream-aligner bench-gateway`: the aligning gateway against a fake upstream that behaves
//! like a hosted model (a time to first token, then a steady token rate; scripted answers).
//!
//! - `--mode cost`: per answer, upstream requests, upstream prompt tokens (counted by the fake
//!   upstream), time to the first corrected sentence and total time, for the upstream alone, the
//!   gateway with one request per sentence (the paper's loop) and with optimistic streaming.
//! - `--mode load`: `--clients` concurrent streams for `--seconds`: errors, answers, time to
//!   the first corrected sentence (p50/p99), and the process's peak RSS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use stream_aligner::Engine;
use stream_aligner::gateway::{self, Gateway, GatewayConfig};
use stream_aligner::text::split_sentences;
use stream_aligner::upstream::{Api, RemoteConfig};
use web_time::Instant;

use crate::{AdapterArgs, ModelArgs};

#[derive(clap::Args)]
pub struct BenchGatewayArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// cost (requests, prompt tokens, latency by strategy) or load (concurrent streams)
    #[arg(long, default_value = "cost")]
    mode: String,
    /// The fake upstream's time to first token, in ms
    #[arg(long, default_value_t = 300)]
    ttft_ms: u64,
    /// The fake upstream's tokens per second
    #[arg(long, default_value_t = 40.0)]
    tok_s: f64,
    /// Concurrent streams (load)
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long the load runs, in seconds
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Word problems and the answers the fake upstream gives: right steps, with a wrong one
/// here and there for the aligner to catch.
const SCRIPTS: &[(&str, &[&str])] = &[
    (
        "Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?",
        &[
            "Mia starts with 12 apples.",
            " After buying 5 more, she has 12 + 5 = 17 apples.",
            " She gives away 3, so she has 17 - 3 = 15 apples left.",
            " The answer is 14.",
        ],
    ),
    (
        "A baker makes 4 trays of 6 muffins and sells 10 of them. How many muffins are left?",
        &[
            "The baker makes 4 trays of 6 muffins.",
            " That is 4 * 6 = 24 muffins.",
            " He sells 10, so 24 - 10 = 14 muffins are left.",
            " The answer is 14.",
        ],
    ),
    (
        "Tom reads 15 pages a day for 4 days and then 10 more pages. How many pages did he read?",
        &[
            "Tom reads 15 pages a day for 4 days.",
            " In 4 days he reads 15 * 4 = 60 pages.",
            " Then he reads 10 more, so 60 + 10 = 70 pages in all.",
            " The answer is 70.",
        ],
    ),
];

/// The fake hosted upstream: finds the query's script, continues after as many sentences as the
/// prefix (a final assistant message) has, one word a token.
struct Fake {
    ttft: Duration,
    per_token: Duration,
    tokenizer: stream_aligner::text::Tokenizer,
    requests: AtomicUsize,
    prompt_tokens: AtomicUsize,
}

async fn fake_chat(State(f): State<Arc<Fake>>, Json(req): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let content = |m: &Value| m["content"].as_str().unwrap_or("").to_string();
    let prompt: String = messages.iter().map(content).collect::<Vec<_>>().join("\n");
    f.requests.fetch_add(1, Ordering::Relaxed);
    f.prompt_tokens.fetch_add(
        f.tokenizer.encode(&prompt).map_or(0, |ids| ids.len()),
        Ordering::Relaxed,
    );
    let query = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(content)
        .unwrap_or_default();
    let prefix = messages
        .last()
        .filter(|m| m["role"] == "assistant")
        .map(content)
        .unwrap_or_default();
    let script = SCRIPTS
        .iter()
        .find(|(q, _)| *q == query)
        .map_or(&[][..], |s| s.1);
    let done = split_sentences(&prefix).len().min(script.len());
    let rest: String = script[done..].concat();
    let mut words: Vec<String> = Vec::new();
    for (i, w) in rest.split_inclusive(' ').enumerate() {
        // A leading space stays with its word, as tokenizers do.
        if i > 0 && w == " " {
            continue;
        }
        words.push(w.to_string());
    }
    let (ttft, per_token) = (f.ttft, f.per_token);
    let n = words.len();
    let events = futures::stream::iter(words.into_iter().enumerate()).then(move |(i, w)| async move {
        tokio::time::sleep(if i == 0 { ttft } else { per_token }).await;
        let finish = if i + 1 == n { json!("stop") } else { Value::Null };
        let chunk = json!({ "choices": [{ "index": 0, "delta": { "content": w }, "finish_reason": finish }] });
        Ok::<_, std::convert::Infallible>(format!("data: {chunk}\n\n"))
    });
    let done = futures::stream::once(async { Ok("data: [DONE]\n\n".to_string()) });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(events.chain(done)),
    )
        .into_response()
}

async fn spawn_fake(fake: Arc<Fake>) -> Result<String> {
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(fake_chat))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/v1"))
}

/// One streamed answer: time to its first sentence and to the end, and the text. `whole`: the
/// server sends whole sentences (the gateway), so the first chunk is the first sentence.
async fn timed_stream(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    whole: bool,
) -> Result<(f64, f64, String)> {
    let t = Instant::now();
    let resp = client
        .post(url)
        .json(&json!({ "model": "fake", "messages": [{ "role": "user", "content": query }], "stream": true, "temperature": 0 }))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let mut body = resp.bytes_stream();
    let (mut first, mut text, mut buf) = (None, String::new(), String::new());
    let mut splitter = stream_aligner::text::SentenceSplitter::new();
    while let Some(bytes) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            anyhow::ensure!(v.get("error").is_none(), "error event: {v}");
            if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(piece);
                if first.is_none() && (splitter.push(piece).is_some() || whole) {
                    first = Some(t.elapsed().as_secs_f64());
                }
            }
        }
    }
    let total = t.elapsed().as_secs_f64();
    Ok((first.unwrap_or(total), total, text))
}

fn gateway_config(upstream: &str, optimistic: bool, clients: usize) -> GatewayConfig {
    let mut up = RemoteConfig::new(upstream, "fake");
    up.api = Api::Chat;
    up.optimistic = optimistic;
    up.idle_timeout = Duration::from_secs(600);
    let mut c = GatewayConfig::new(up);
    c.max_active = clients.max(1);
    c.max_sentences = 12;
    c
}

async fn spawn_gateway(aligner: Arc<Engine>, config: GatewayConfig) -> Result<String> {
    let addr = gateway::spawn(Gateway::new(aligner, config), "127.0.0.1:0").await?;
    Ok(format!("http://{addr}/v1/chat/completions"))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn run(args: BenchGatewayArgs) -> Result<()> {
    let engine = args.model.load()?;
    let aligner = Arc::new(args.adapter.apply(&engine)?);
    let fake = Arc::new(Fake {
        ttft: Duration::from_millis(args.ttft_ms),
        per_token: Duration::from_secs_f64(1.0 / args.tok_s),
        tokenizer: engine.tokenizer.clone(),
        requests: AtomicUsize::new(0),
        prompt_tokens: AtomicUsize::new(0),
    });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let upstream = spawn_fake(fake.clone()).await?;
        let client = reqwest::Client::new();
        match args.mode.as_str() {
            "cost" => cost(&args, &fake, &upstream, aligner, &client).await,
            "load" => load(&args, &upstream, aligner, &client).await,
            other => anyhow::bail!("--mode is cost or load, not '{other}'"),
        }
    })
}

async fn cost(
    args: &BenchGatewayArgs,
    fake: &Fake,
    upstream: &str,
    aligner: Arc<Engine>,
    client: &reqwest::Client,
) -> Result<()> {
    let sequential = spawn_gateway(aligner.clone(), gateway_config(upstream, false, 4)).await?;
    let optimistic = spawn_gateway(aligner, gateway_config(upstream, true, 4)).await?;
    let alone = format!("{upstream}/chat/completions");
    let mut rows = Vec::new();
    for (name, url) in [
        ("upstream alone", &alone),
        ("gateway, one request per sentence", &sequential),
        ("gateway, optimistic streaming", &optimistic),
    ] {
        let (mut first, mut total, mut texts) = (0.0, 0.0, Vec::new());
        let (r0, p0) = (
            fake.requests.load(Ordering::Relaxed),
            fake.prompt_tokens.load(Ordering::Relaxed),
        );
        for (q, _) in SCRIPTS {
            let (f, t, text) = timed_stream(client, url, q, url != &alone)
                .await
                .with_context(|| format!("{name}: {q}"))?;
            first += f;
            total += t;
            texts.push(text);
        }
        let n = SCRIPTS.len() as f64;
        rows.push(json!({
            "name": name,
            "requests_per_answer": (fake.requests.load(Ordering::Relaxed) - r0) as f64 / n,
            "prompt_tokens_per_answer": (fake.prompt_tokens.load(Ordering::Relaxed) - p0) as f64 / n,
            "first_sentence_s": first / n,
            "total_s": total / n,
            "answers": texts,
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "ttft_ms": args.ttft_ms, "tok_s": args.tok_s, "rows": rows })
            )?
        );
        return Ok(());
    }
    println!(
        "fake upstream: {} ms to first token, {} tok/s; {} answers of 4 sentences, means per answer\n",
        args.ttft_ms,
        args.tok_s,
        SCRIPTS.len()
    );
    println!("| | upstream requests | upstream prompt tokens | first corrected sentence | total |");
    println!("|---|---:|---:|---:|---:|");
    let base = &rows[0];
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.2} s ({:.2}x) | {:.2} s ({:.2}x) |",
            r["name"].as_str().unwrap_or(""),
            r["requests_per_answer"].as_f64().unwrap_or(0.0),
            r["prompt_tokens_per_answer"].as_f64().unwrap_or(0.0),
            r["first_sentence_s"].as_f64().unwrap_or(0.0),
            r["first_sentence_s"].as_f64().unwrap_or(0.0)
                / base["first_sentence_s"].as_f64().unwrap_or(1.0),
            r["total_s"].as_f64().unwrap_or(0.0),
            r["total_s"].as_f64().unwrap_or(0.0) / base["total_s"].as_f64().unwrap_or(1.0),
        );
    }
    for r in &rows[1..] {
        eprintln!("{}:", r["name"].as_str().unwrap_or(""));
        for a in r["answers"].as_array().into_iter().flatten() {
            eprintln!("  {}", a.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

async fn load(
    args: &BenchGatewayArgs,
    upstream: &str,
    aligner: Arc<Engine>,
    client: &reqwest::Client,
) -> Result<()> {
    let url = spawn_gateway(aligner, gateway_config(upstream, true, args.clients)).await?;
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let firsts = Arc::new(Mutex::new(Vec::new()));
    let (answers, errors) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (client, url) = (client.clone(), url.clone());
        let (firsts, answers, errors) = (firsts.clone(), answers.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = i;
            // Each client asks again as soon as its answer ends, until the time is up.
            while Instant::now() < until {
                let q = SCRIPTS[k % SCRIPTS.len()].0;
                k += 1;
                match timed_stream(&client, &url, q, true).await {
                    Ok((f, _, _)) => {
                        firsts.lock().unwrap_or_else(|p| p.into_inner()).push(f);
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.to_string()),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut f = firsts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let out = json!({
        "clients": args.clients,
        "seconds": args.seconds,
        "answers": answers.load(Ordering::Relaxed),
        "errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "first_sentence_p50_s": percentile(&mut f, 0.5),
        "first_sentence_p99_s": percentile(&mut f, 0.99),
        "peak_rss_mib": peak_rss_mib(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    anyhow::ensure!(errors.is_empty(), "{} streams failed", errors.len());
    Ok(())
}
