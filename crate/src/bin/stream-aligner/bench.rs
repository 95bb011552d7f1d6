//! `stream-aligner bench`: prefill and decode speed, with baselines measured in the same run
//! (burn's own f32 matmul on the same model, and llama.cpp's llama-bench when given).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use stream_aligner::model::{Backend, KvCache, Logits, Readback, Scores};
use web_time::Instant;

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Backends to measure, the first is the one the ratios are about
    #[arg(long, value_delimiter = ',', default_value = "cpu,cpu-reference")]
    backends: Vec<Backend>,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// llama.cpp's llama-bench binary, run on the same GGUF with the same token counts
    #[arg(long)]
    llama_bench: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// Measure the sentence loop instead (stream vs upstream-only vs naive; copy cost)
    #[arg(long = "loop")]
    sentence_loop: bool,
    /// Sentences per answer in --loop
    #[arg(long, default_value_t = 5)]
    sentences: usize,
    /// Measure the aligner: the base with this LoRA adapter (safetensors)
    #[arg(long)]
    adapter: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    name: String,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    /// GPU kernels launched per decoded token (wgpu rows): counted by cubecl's profiling log.
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatches_per_token: Option<f64>,
    /// Bytes read back from the device per decoded token (wgpu rows): the greedy pick's
    /// candidate and logit with our kernels, every logit with burn's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    readback_bytes_per_token: Option<f64>,
}

/// Set in the child runs that count launches, so they do not count again.
const COUNTING: &str = "STREAM_ALIGNER_COUNTING_LAUNCHES";

/// Kernel launches per decoded token on wgpu, counted, not estimated: two child runs of this
/// bench (a warm-up and a measured round each) decode `a` and `b` tokens, with cubecl logging
/// every launch (a `cubecl.toml` in their working folder); the logs differ by the launches of
/// 2 (b - a) decoded tokens.
fn dispatches_per_token(args: &BenchArgs, backend: Backend) -> Result<f64> {
    let model = std::fs::canonicalize(args.model.path()?)?;
    let exe = std::env::current_exe()?;
    let (a, b) = (3, 6);
    let mut launches = Vec::new();
    for tokens in [a, b] {
        let dir = std::env::temp_dir().join(format!(
            "stream-aligner-launches-{}-{tokens}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("cubecl.toml"),
            "[profiling.logger]\nlevel = \"minimal\"\nfile = \"kernels.log\"\nappend = true\n",
        )?;
        let out = Command::new(&exe)
            .current_dir(&dir)
            .env(COUNTING, "1")
            .args([
                "bench",
                "--backends",
                backend.name(),
                "--reps",
                "1",
                "--json",
                "--model",
            ])
            .arg(&model)
            .args(["--prompt-tokens", &args.prompt_tokens.to_string()])
            .args(["--gen-tokens", &tokens.to_string()])
            .args(args.adapter.iter().flat_map(|a| {
                [
                    "--adapter".into(),
                    std::fs::canonicalize(a)
                        .unwrap_or(a.clone())
                        .into_os_string(),
                ]
            }))
            .output()
            .context("running the launch-counting bench")?;
        anyhow::ensure!(
            out.status.success(),
            "the launch-counting bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(dir.join("kernels.log"))
            .context("cubecl wrote no kernels.log")?;
        launches.push(log.lines().filter(|l| !l.trim().is_empty()).count());
        std::fs::remove_dir_all(&dir)?;
    }
    Ok((launches[1] as f64 - launches[0] as f64) / (2 * (b - a)) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(args: &BenchArgs, backend: Backend) -> Result<Row> {
    let mut margs = args.model.clone();
    margs.backend = backend;
    let mut engine = margs.load()?;
    if let Some(a) = &args.adapter {
        let bytes = std::fs::read(a).with_context(|| format!("reading {}", a.display()))?;
        engine = engine.with_adapter_bytes(&bytes)?;
    }
    let text = "The quick brown fox jumps over the lazy dog while the sea keeps its slow rhythm against the harbour wall. ";
    let mut ids = Vec::new();
    while ids.len() < args.prompt_tokens {
        ids.extend(engine.tokenizer.encode(text)?);
    }
    ids.truncate(args.prompt_tokens);
    let m = &engine.model;
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    // Greedy decoding, as `generate` reads it back: the best token of each row.
    let greedy = Readback::top(Some(1), vec![None]);
    let step = |ids: &[u32], cache: &mut KvCache| -> Result<Scores> {
        futures::executor::block_on(m.scores(ids, cache, Logits::Last, &greedy))?
            .pop()
            .context("no logits")
    };
    let mut read_bytes = 0;
    // One unmeasured round first: shader compilation, allocator warm-up.
    for rep in 0..=args.reps {
        let mut cache = m.new_cache();
        let t = Instant::now();
        let mut next = step(&ids, &mut cache)?.argmax();
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        read_bytes = 0;
        for _ in 0..args.gen_tokens {
            let row = step(&[next], &mut cache)?;
            read_bytes += row.readback_bytes();
            next = row.argmax();
        }
        let decode = t.elapsed().as_secs_f64();
        if rep > 0 {
            pre.push(args.prompt_tokens as f64 / prefill);
            dec.push(args.gen_tokens as f64 / decode);
        }
    }
    let counted = matches!(backend, Backend::Wgpu | Backend::WgpuBurn)
        && std::env::var_os(COUNTING).is_none();
    Ok(Row {
        name: format!("stream-aligner {backend:?}"),
        prefill_tok_s: median(pre),
        decode_tok_s: median(dec),
        dispatches_per_token: if counted {
            Some(dispatches_per_token(args, backend)?)
        } else {
            None
        },
        readback_bytes_per_token: matches!(backend, Backend::Wgpu | Backend::WgpuBurn)
            .then(|| read_bytes as f64 / args.gen_tokens.max(1) as f64),
    })
}

fn llama_bench(args: &BenchArgs, bin: &PathBuf) -> Result<Row> {
    let model = args.model.path()?;
    let out = Command::new(bin)
        .arg("-m")
        .arg(&model)
        .args([
            "-p",
            &args.prompt_tokens.to_string(),
            "-n",
            &args.gen_tokens.to_string(),
            "-t",
            &args.threads.to_string(),
        ])
        .args(["-r", &args.reps.to_string(), "-o", "json"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing llama-bench's JSON")?;
    let ts = |prompt: bool| -> Result<f64> {
        v.as_array()
            .context("llama-bench JSON is not an array")?
            .iter()
            .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt)
            .and_then(|r| r["avg_ts"].as_f64())
            .context("llama-bench JSON lacks avg_ts")
    };
    Ok(Row {
        name: format!("llama.cpp ({} threads)", args.threads),
        prefill_tok_s: ts(true)?,
        decode_tok_s: ts(false)?,
        dispatches_per_token: None,
        readback_bytes_per_token: None,
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.sentence_loop {
        return sentence_loop::run(std::sync::Arc::new(args.model.load()?), args.sentences);
    }
    let mut rows = Vec::new();
    for &b in &args.backends {
        rows.push(measure(&args, b)?);
    }
    if let Some(bin) = &args.llama_bench {
        rows.push(llama_bench(&args, bin)?);
    }
    let first = rows[0].clone();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt_tokens": args.prompt_tokens,
                "gen_tokens": args.gen_tokens,
                "rows": rows,
                "ratios_vs_first": rows.iter().map(|r| serde_json::json!({
                    "name": r.name,
                    "prefill": first.prefill_tok_s / r.prefill_tok_s,
                    "decode": first.decode_tok_s / r.decode_tok_s,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    println!(
        "pp{} / tg{}, median of {} runs",
        args.prompt_tokens, args.gen_tokens, args.reps
    );
    println!(
        "{:32} {:>12} {:>12} {:>16} {:>16}",
        "", "prefill t/s", "decode t/s", "prefill (ratio)", "decode (ratio)"
    );
    for r in &rows {
        println!(
            "{:32} {:>12.1} {:>12.1} {:>16.2} {:>16.2}{}",
            r.name,
            r.prefill_tok_s,
            r.decode_tok_s,
            first.prefill_tok_s / r.prefill_tok_s,
            first.decode_tok_s / r.decode_tok_s,
            r.dispatches_per_token
                .map_or(String::new(), |d| format!("  {d:.0} kernel launches/token")),
        );
        if let Some(b) = r.readback_bytes_per_token {
            println!("{:32} {b:.0} bytes read back/token", "");
        }
    }
    println!(
        "(ratio = {} / row: above 1.0 means {} is faster)",
        first.name, first.name
    );
    Ok(())
}

/// `bench --loop`: the sentence loop's costs, as ratios measured in one run.
pub mod sentence_loop {
    use std::ops::ControlFlow;
    use std::sync::Arc;

    use anyhow::Result;
    use stream_aligner::align::{self, Aligner, Mode, PipelineConfig};
    use stream_aligner::upstream::LocalUpstream;
    use stream_aligner::{Engine, GenerateOptions};
    use web_time::Instant;

    const QUERIES: &[&str] = &[
        "What is 17 * 23? Answer step by step.",
        "Tom has 5 apples and buys 7 more. How many apples does he have now? Explain.",
        "Name three fruits and say one thing about each.",
        "Explain why the sky is blue in a few sentences.",
    ];

    /// Milliseconds per answer token for one mode over all queries; also the events.
    fn run_mode(
        engine: &Arc<Engine>,
        mode: Mode,
        naive: bool,
        sentences: usize,
    ) -> Result<(f64, Vec<align::SentenceEvent>)> {
        let (mut ms, mut tokens, mut events) = (0.0, 0, Vec::new());
        for q in QUERIES {
            let mut up = LocalUpstream::new(
                engine.clone(),
                GenerateOptions {
                    max_tokens: 96,
                    ..Default::default()
                },
            );
            let mut aligner = Aligner::new(engine.clone());
            up.reuse_cache = !naive;
            aligner.reuse_cache = !naive;
            aligner.speculate = !naive;
            let config = PipelineConfig {
                max_sentences: sentences,
                ..Default::default()
            };
            let t = Instant::now();
            let cancel = aligner.cancel.clone();
            let a = futures::executor::block_on(align::run_mode(
                mode,
                &mut up,
                &mut aligner,
                q,
                None,
                &config,
                &cancel,
                |_| ControlFlow::Continue(()),
            ))?;
            ms += t.elapsed().as_secs_f64() * 1e3;
            tokens += engine.tokenizer.encode(&a.text)?.len();
            events.extend(a.events);
        }
        Ok((ms / tokens.max(1) as f64, events))
    }

    pub fn run(engine: Arc<Engine>, sentences: usize) -> Result<()> {
        // Warm-up (allocator, caches), not measured.
        run_mode(&engine, Mode::Upstream, false, 1)?;
        let (up, _) = run_mode(&engine, Mode::Upstream, false, sentences)?;
        let (stream, events) = run_mode(&engine, Mode::Stream, false, sentences)?;
        let (naive, _) = run_mode(&engine, Mode::Stream, true, sentences)?;
        // A copied sentence: the aligner with the draft vs decoding the same tokens one by one.
        let (mut spec_ms, mut plain_ms, mut copies) = (0.0, 0.0, 0);
        for ev in events.iter().filter(|e| e.aligned) {
            let original = ev.corrected.trim();
            let q = QUERIES[0];
            let mut a = Aligner::new(engine.clone());
            let mut b = Aligner::new(engine.clone());
            b.speculate = false;
            // Prime both caches with the prompt so only the sentence itself is timed.
            futures::executor::block_on(a.correct(q, "", original))?;
            futures::executor::block_on(b.correct(q, "", original))?;
            let t = std::time::Instant::now();
            let ca = futures::executor::block_on(a.correct(q, "", original))?;
            let ta = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            futures::executor::block_on(b.correct(q, "", original))?;
            let tb = t.elapsed().as_secs_f64();
            if ca.accepted == ca.tokens && ca.tokens > 0 {
                spec_ms += ta * 1e3;
                plain_ms += tb * 1e3;
                copies += 1;
            }
        }
        println!(
            "sentence loop, {} queries, up to {sentences} sentences each (ms per answer token)",
            QUERIES.len()
        );
        println!("{:44} {:>10} {:>8}", "", "ms/token", "ratio");
        println!("{:44} {:>10.2} {:>8.2}", "upstream only", up, 1.0);
        println!(
            "{:44} {:>10.2} {:>8.2}",
            "stream (KV reuse + copy-speculation)",
            stream,
            stream / up
        );
        println!(
            "{:44} {:>10.2} {:>8.2}",
            "naive stream (re-prefill every round)",
            naive,
            naive / up
        );
        println!("stream vs naive: {:.2}x", stream / naive);
        if copies > 0 {
            println!(
                "copied sentence, aligner with the draft vs decoding it: {:.1} ms vs {:.1} ms = {:.2}x ({copies} copies)",
                spec_ms / copies as f64,
                plain_ms / copies as f64,
                spec_ms / plain_ms
            );
        } else {
            println!("copied sentence: the aligner copied none of the sentences");
        }
        Ok(())
    }
}
