//! `stream-aligner train`: LoRA training of the aligner (the paper's stage 1) on correction
//! records, with a held-out split, checkpoints it resumes from, and a log of the loss.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use futures::executor::block_on;
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::Engine;
use stream_aligner::align::AlignerPrompt;
use stream_aligner::model::{EngineDevice, LoraConfig, Target};
use stream_aligner::train::trainer::read_records;
use stream_aligner::train::{Example, TrainConfig, Trainer};
use web_time::Instant;

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL records: {"question", "prefix", "original", "corrected", "seed"}; several files
    /// separated by commas are read as one data set
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "models/aligner/onpolicy-train.jsonl,models/aligner/onpolicy-natural.jsonl"
    )]
    data: Vec<PathBuf>,
    /// Output folder: adapter.safetensors (f16), config.json, train-log.jsonl, checkpoint/
    #[arg(long, default_value = "models/aligner/lora")]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Matrices to adapt
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    targets: Vec<Target>,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Optimizer steps (the cosine schedule ends here)
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Examples per optimizer step
    #[arg(long, default_value_t = 8)]
    accum: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Problems whose seed % N == N - 1 are held out (their loss is reported, never trained on)
    #[arg(long, default_value_t = 10)]
    holdout_every: u64,
    /// Held-out examples scored at each evaluation
    #[arg(long, default_value_t = 48)]
    eval_examples: usize,
    #[arg(long, default_value_t = 25)]
    eval_every: usize,
    #[arg(long, default_value_t = 5)]
    checkpoint_every: usize,
    /// Continue from out/checkpoint
    #[arg(long)]
    resume: bool,
    /// Start from this trained adapter (same rank, alpha and targets) instead of a fresh one
    #[arg(long)]
    init: Option<std::path::PathBuf>,
    /// Use only the first N training records (tiny runs)
    #[arg(long)]
    limit: Option<usize>,
    /// Skip examples longer than this many tokens
    #[arg(long, default_value_t = 384)]
    max_tokens: usize,
    /// Stop (with a checkpoint) after this many minutes; resume later with --resume
    #[arg(long)]
    minutes: Option<f64>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let engine = Engine::load(&args.model.path()?, &EngineDevice::training())?;
    let mut records = Vec::new();
    for path in &args.data {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        records.extend(read_records(&text).with_context(|| format!("in {}", path.display()))?);
    }
    let prompt = AlignerPrompt::default();
    let (mut train, mut held) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for r in &records {
        let ex = Example::new(&engine, &prompt, r)?;
        if ex.ids.len() > args.max_tokens {
            skipped += 1;
        } else if args.holdout_every > 1 && r.seed % args.holdout_every == args.holdout_every - 1 {
            held.push(ex);
        } else {
            train.push(ex);
        }
    }
    if let Some(n) = args.limit {
        train.truncate(n);
    }
    anyhow::ensure!(!train.is_empty(), "no training examples in {:?}", args.data);
    let held_out = held.len();
    // Evenly spaced through the held-out records, so every data file is scored.
    held = match args.eval_examples {
        0 => Vec::new(),
        n => held
            .into_iter()
            .step_by(held_out.div_ceil(n).max(1))
            .collect(),
    };
    let mean =
        |v: &[Example]| v.iter().map(|e| e.ids.len()).sum::<usize>() as f64 / v.len().max(1) as f64;
    eprintln!(
        "{} records: {} train, {held_out} held out (scored: {}), {skipped} longer than {} tokens skipped; {:.0} tokens per example",
        records.len(),
        train.len(),
        held.len(),
        args.max_tokens,
        mean(&train)
    );
    let config = TrainConfig {
        lora: LoraConfig {
            rank: args.rank,
            alpha: args.alpha,
            targets: args.targets.clone(),
        },
        lr: args.lr,
        warmup: args.warmup,
        steps: args.steps,
        accum: args.accum,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(engine, config.clone())?;
    let ckpt = args.out.join("checkpoint");
    if let Some(p) = &args.init {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        trainer
            .init_from(&bytes)
            .with_context(|| format!("starting from {}", p.display()))?;
    }
    if args.resume && ckpt.join("state.json").exists() {
        trainer.resume(&ckpt)?;
        eprintln!(
            "resumed at step {} (epoch {})",
            trainer.state.step, trainer.state.epoch
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join("train-log.jsonl"))?;
    let eval = |trainer: &Trainer, log: &mut std::fs::File| -> Result<Option<f64>> {
        if held.is_empty() {
            return Ok(None);
        }
        let l = block_on(trainer.eval_loss(&held))?;
        writeln!(
            log,
            "{}",
            serde_json::json!({"step": trainer.state.step, "eval_loss": l})
        )?;
        Ok(Some(l))
    };
    if trainer.state.step == 0 {
        if let Some(l) = eval(&trainer, &mut log)? {
            eprintln!("held-out loss before training: {l:.4}");
        }
    }
    let pb = ProgressBar::new(args.steps as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
            .unwrap(),
    );
    pb.set_position(trainer.state.step as u64);
    let started = Instant::now();
    let (mut last_eval, mut tokens, mut smoothed) = (None, 0usize, None::<f64>);
    while trainer.state.step < args.steps {
        let mut order = trainer.order(trainer.state.epoch, train.len());
        if trainer.state.cursor >= order.len() {
            trainer.state.epoch += 1;
            trainer.state.cursor = 0;
            order = trainer.order(trainer.state.epoch, train.len());
        }
        let end = (trainer.state.cursor + args.accum).min(order.len());
        let batch: Vec<&Example> = order[trainer.state.cursor..end]
            .iter()
            .map(|&i| &train[i])
            .collect();
        trainer.state.cursor = end;
        let stats = block_on(trainer.step(&batch))?;
        tokens += stats.tokens;
        let s = smoothed.map_or(stats.loss, |s| 0.9 * s + 0.1 * stats.loss);
        smoothed = Some(s);
        let tok_s = tokens as f64 / started.elapsed().as_secs_f64();
        writeln!(
            log,
            "{}",
            serde_json::json!({"step": stats.step, "loss": stats.loss, "lr": stats.lr,
                "tokens": stats.tokens, "answer_tokens": stats.answer_tokens, "tok_s": tok_s})
        )?;
        if stats.step % args.eval_every == 0 || stats.step == args.steps {
            last_eval = eval(&trainer, &mut log)?;
        }
        pb.set_position(stats.step as u64);
        pb.set_message(format!(
            "loss {s:.3}{} | {tok_s:.0} tok/s",
            last_eval
                .map(|l| format!(" held-out {l:.3}"))
                .unwrap_or_default()
        ));
        let out_of_time = args
            .minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() > m * 60.0);
        if stats.step % args.checkpoint_every == 0 || stats.step == args.steps || out_of_time {
            block_on(trainer.save(&ckpt))?;
        }
        if out_of_time {
            pb.finish_and_clear();
            // A stopped run still leaves an adapter to use (the checkpoint's, in f16).
            let adapter = block_on(trainer.adapter())?;
            std::fs::write(
                args.out.join("adapter.safetensors"),
                adapter.to_safetensors(true)?,
            )?;
            eprintln!(
                "stopped at step {} after {:.1} min (adapter.safetensors written); continue with --resume",
                stats.step,
                started.elapsed().as_secs_f64() / 60.0
            );
            return Ok(());
        }
    }
    pb.finish_and_clear();
    let adapter = block_on(trainer.adapter())?;
    std::fs::write(
        args.out.join("adapter.safetensors"),
        adapter.to_safetensors(true)?,
    )?;
    let summary = serde_json::json!({
        "config": config,
        "base": adapter.base,
        "data": args.data,
        "init": args.init,
        "train_examples": train.len(),
        "held_out_examples": held.len(),
        "holdout": format!("problems with seed % {} == {}", args.holdout_every, args.holdout_every - 1),
        "steps": trainer.state.step,
        "tokens_seen": trainer.state.tokens_seen,
        "held_out_loss": last_eval,
    });
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!(
        "wrote {} (step {}, held-out loss {})",
        args.out.join("adapter.safetensors").display(),
        trainer.state.step,
        last_eval.map(|l| format!("{l:.4}")).unwrap_or("-".into())
    );
    Ok(())
}
