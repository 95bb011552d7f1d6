//! `stream-aligner train`: LoRA training of the aligner (the paper's stage 1) on correction
//! records, with a held-out split, checkpoints it resumes from, and a log of the loss.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use futures::executor::block_on;
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::Engine;
use stream_aligner::align::AlignerPrompt;
use stream_aligner::model::{EngineDevice, LoraConfig, Target};
use stream_aligner::train::trainer::{StepStats, read_records};
use stream_aligner::train::{Record, RunEnd, Schedule, Split, SplitConfig, TrainConfig, Trainer};
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
    /// Leave out the records of these kinds (their `kind` field, e.g. two_steps_right)
    #[arg(long, value_delimiter = ',')]
    skip_kinds: Vec<String>,
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
    let device = block_on(EngineDevice::training(args.model.backend))?;
    let engine = Engine::load(&args.model.path()?, &device)?;
    let records = read_data(&args.data, &args.skip_kinds)?;
    let split = Split::new(
        &engine,
        &AlignerPrompt::default(),
        &records,
        &args.split_config(),
    )?;
    anyhow::ensure!(
        !split.train.is_empty(),
        "no training examples in {:?}",
        args.data
    );
    eprintln!(
        "{} records: {} train, {} held out (scored: {}), {} longer than {} tokens skipped; {:.0} tokens per example",
        records.len(),
        split.train.len(),
        split.held_out,
        split.held.len(),
        split.skipped,
        args.max_tokens,
        split.mean_tokens()
    );
    let mut trainer = start(&args, engine)?;
    std::fs::create_dir_all(&args.out)?;
    let mut log = Log::open(&args.out.join("train-log.jsonl"))?;
    if trainer.state.step == 0
        && let Some(l) = block_on(trainer.held_out_loss(&split.held))?
    {
        log.eval(0, l)?;
        eprintln!("held-out loss before training: {l:.4}");
    }
    let started = Instant::now();
    let (end, last_eval) = train(&args, &mut trainer, &split, &mut log, started)?;
    let base = write_adapter(&args, &trainer)?;
    write_summary(&args, &trainer, &split, &base, last_eval, end)?;
    if end == RunEnd::Stopped {
        eprintln!(
            "stopped at step {} after {:.1} min (adapter.safetensors written); continue with --resume",
            trainer.state.step,
            started.elapsed().as_secs_f64() / 60.0
        );
        return Ok(());
    }
    eprintln!(
        "wrote {} (step {}, held-out loss {})",
        args.out.join("adapter.safetensors").display(),
        trainer.state.step,
        last_eval.map(|l| format!("{l:.4}")).unwrap_or("-".into())
    );
    Ok(())
}

impl TrainArgs {
    fn split_config(&self) -> SplitConfig {
        SplitConfig {
            max_tokens: self.max_tokens,
            holdout_every: self.holdout_every,
            limit: self.limit,
            eval_examples: self.eval_examples,
        }
    }

    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            lora: LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                targets: self.targets.clone(),
            },
            lr: self.lr,
            warmup: self.warmup,
            steps: self.steps,
            accum: self.accum,
            seed: self.seed,
            ..TrainConfig::default()
        }
    }

    fn checkpoint(&self) -> PathBuf {
        self.out.join("checkpoint")
    }
}

/// The records of every data file, in order, less those of a skipped kind.
fn read_data(paths: &[PathBuf], skip_kinds: &[String]) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let read = read_records(&text).with_context(|| format!("in {}", path.display()))?;
        records.extend(read.into_iter().filter(|r| !skip_kinds.contains(&r.kind)));
    }
    Ok(records)
}

/// The trainer: fresh, from `--init`'s adapter, or resumed from the checkpoint.
fn start(args: &TrainArgs, engine: Engine) -> Result<Trainer> {
    let mut trainer = Trainer::new(engine, args.train_config())?;
    if let Some(p) = &args.init {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        trainer
            .init_from(&bytes)
            .with_context(|| format!("starting from {}", p.display()))?;
    }
    let ckpt = args.checkpoint();
    if args.resume && ckpt.join("state.json").exists() {
        trainer.resume(&ckpt)?;
        eprintln!(
            "resumed at step {} (epoch {})",
            trainer.state.step, trainer.state.epoch
        );
    }
    Ok(trainer)
}

/// train-log.jsonl: a line per step and per evaluation.
struct Log(std::fs::File);

impl Log {
    fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(file))
    }

    fn eval(&mut self, step: usize, loss: f64) -> std::io::Result<()> {
        writeln!(
            self.0,
            "{}",
            serde_json::json!({"step": step, "eval_loss": loss})
        )
    }

    fn step(&mut self, stats: &StepStats, tok_s: f64) -> std::io::Result<()> {
        writeln!(
            self.0,
            "{}",
            serde_json::json!({"step": stats.step, "loss": stats.loss, "lr": stats.lr,
                "tokens": stats.tokens, "answer_tokens": stats.answer_tokens, "tok_s": tok_s})
        )
    }
}

/// Runs the trainer with a progress bar and the log, until the last step or `--minutes`.
/// Returns how it ended and the last held-out loss.
fn train(
    args: &TrainArgs,
    trainer: &mut Trainer,
    split: &Split,
    log: &mut Log,
    started: Instant,
) -> Result<(RunEnd, Option<f64>)> {
    let pb = ProgressBar::new(args.steps as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
            .unwrap(),
    );
    pb.set_position(trainer.state.step as u64);
    let schedule = Schedule {
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        checkpoint: Some(args.checkpoint()),
    };
    let (mut last_eval, mut tokens, mut smoothed) = (None, 0usize, None::<f64>);
    let mut failed = None;
    let end = block_on(trainer.run(split, &schedule, |stats, eval| {
        tokens += stats.tokens;
        let s = smoothed.map_or(stats.loss, |s| 0.9 * s + 0.1 * stats.loss);
        smoothed = Some(s);
        let tok_s = tokens as f64 / started.elapsed().as_secs_f64();
        let logged = log
            .step(stats, tok_s)
            .and_then(|()| eval.map_or(Ok(()), |l| log.eval(stats.step, l)));
        if let Err(e) = logged {
            failed = Some(e);
            return ControlFlow::Break(());
        }
        last_eval = eval.or(last_eval);
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
        if out_of_time {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }))?;
    pb.finish_and_clear();
    if let Some(e) = failed {
        return Err(e).context("writing train-log.jsonl");
    }
    Ok((end, last_eval))
}

/// adapter.safetensors (f16): after the last step, or a stopped run's (the checkpoint's).
/// Returns the fingerprint of the base it belongs to.
fn write_adapter(args: &TrainArgs, trainer: &Trainer) -> Result<String> {
    let adapter = block_on(trainer.adapter())?;
    std::fs::write(
        args.out.join("adapter.safetensors"),
        adapter.to_safetensors(true)?,
    )?;
    Ok(adapter.base)
}

/// config.json: how the adapter was trained (a run stopped by `--minutes` says so).
fn write_summary(
    args: &TrainArgs,
    trainer: &Trainer,
    split: &Split,
    base: &str,
    last_eval: Option<f64>,
    end: RunEnd,
) -> Result<()> {
    let summary = serde_json::json!({
        "config": trainer.config,
        "base": base,
        "data": args.data,
        "skip_kinds": args.skip_kinds,
        "init": args.init,
        "train_examples": split.train.len(),
        "held_out_examples": split.held.len(),
        "holdout": format!("problems with seed % {} == {}", args.holdout_every, args.holdout_every - 1),
        "steps": trainer.state.step,
        "stopped_by_time_limit": end == RunEnd::Stopped,
        "tokens_seen": trainer.state.tokens_seen,
        "held_out_loss": last_eval,
    });
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(())
}
