//! `stream-aligner align`: the sentence loop, shown live (original vs corrected, with a word
//! diff when the aligner changed something), or as JSON lines.

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::{Context, Result};
use similar::{ChangeTag, TextDiff};
use stream_aligner::align::{self, Aligner, Mode, PipelineConfig, SentenceEvent};
use stream_aligner::model::SamplerConfig;
use stream_aligner::text::arithmetic::{format_number, predicted_answer};
use stream_aligner::upstream::{
    AnyUpstream, Api, LocalUpstream, RemoteConfig, RemoteOptions, RemoteUpstream,
};
use stream_aligner::{Engine, GenerateOptions};

use crate::{AdapterArgs, MarginArgs, ModelArgs};

#[derive(clap::Args)]
pub struct AlignArgs {
    #[arg(long)]
    query: String,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// "local" (our engine), or an OpenAI-compatible base URL such as http://127.0.0.1:8080/v1
    #[arg(long, default_value = "local")]
    upstream: String,
    /// Model name sent to a remote upstream
    #[arg(long, default_value = "default")]
    remote_model: String,
    /// API for a remote upstream: completions (we apply the chat template) or chat
    #[arg(long, default_value = "completions")]
    remote_api: Api,
    /// The remote model's chat template (a Jinja file) for --remote-api completions; default: the local model's
    #[arg(long)]
    remote_template: Option<std::path::PathBuf>,
    /// API key for a remote upstream (or STREAM_ALIGNER_API_KEY); never printed
    #[arg(long, env = "STREAM_ALIGNER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// stream (the method), posthoc (correct --answer), aligner (whole answer at once), upstream (no correction)
    #[arg(long, default_value = "stream")]
    mode: Mode,
    /// The complete answer to correct, for --mode posthoc
    #[arg(long)]
    answer: Option<String>,
    /// Correction rounds; after them the upstream finishes the answer uncorrected
    #[arg(long)]
    max_rounds: Option<usize>,
    #[arg(long, default_value_t = 32)]
    max_sentences: usize,
    /// Upstream sampling temperature (0 is greedy)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Best of K (stream mode): run the loop K times, first with the upstream as set, then
    /// sampled at --sample-temperature (seeds --seed, --seed + 1, ...), and keep the answer
    /// whose steps use the most of the question's numbers, then one whose steps fit their
    /// quantities, then the one most runs agree on; its rounds are shown once all K are done
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    samples: u16,
    /// The upstream's temperature in best of K's sampled runs and in --resample's draws
    #[arg(long, default_value_t = 0.4)]
    sample_temperature: f32,
    /// For a step whose correction does not hold up (false, a number from nowhere, done
    /// again, an operation its quantities rule out, an answer nobody computed), draw up to N
    /// more sentences from the upstream sampled at --sample-temperature (seeds --seed,
    /// --seed + 1, ...) and keep the first whose correction does
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=16))]
    resample: u16,
    /// The aligner decodes with a calculator: after "expression =" it writes the value
    #[arg(long)]
    calculator: bool,
    #[command(flatten)]
    margin: MarginArgs,
    /// Print each event as a JSON line instead
    #[arg(long)]
    json: bool,
}

/// Words removed as [-…-], added as {+…+}.
pub fn word_diff(old: &str, new: &str) -> String {
    TextDiff::from_words(old, new)
        .iter_all_changes()
        .map(|c| match c.tag() {
            ChangeTag::Equal => c.value().to_string(),
            ChangeTag::Delete => format!("[-{}-]", c.value()),
            ChangeTag::Insert => format!("{{+{}+}}", c.value()),
        })
        .collect()
}

fn show(ev: &SentenceEvent) {
    let tag = if !ev.aligned {
        "upstream"
    } else if ev.changed {
        "REWRITE"
    } else {
        "copy"
    };
    println!("[{}] {tag:8} {}", ev.index, ev.corrected.trim());
    if ev.changed {
        println!("    original: {}", ev.original.trim());
        println!(
            "    diff:     {}",
            word_diff(ev.original.trim(), ev.corrected.trim())
        );
    }
    println!(
        "    upstream {:.0} ms ({} tok) | aligner {:.0} ms ({} tok, {} from the draft)",
        ev.upstream_ms, ev.upstream_tokens, ev.aligner_ms, ev.aligner_tokens, ev.accepted_tokens
    );
}

/// The upstream `args` name, sampling at `temperature`.
fn upstream(args: &AlignArgs, engine: &Arc<Engine>, temperature: f32) -> Result<AnyUpstream> {
    if args.upstream == "local" {
        let options = GenerateOptions {
            max_tokens: 128,
            sampler: SamplerConfig {
                temperature,
                seed: args.seed,
                ..SamplerConfig::greedy()
            },
            ..GenerateOptions::default()
        };
        return Ok(AnyUpstream::Local(LocalUpstream::new(
            engine.clone(),
            options,
        )));
    }
    let options = RemoteOptions {
        base_url: args.upstream.clone(),
        model: Some(args.remote_model.clone()),
        api_key: args.api_key.clone(),
        api: Some(args.remote_api),
        ..RemoteOptions::default()
    };
    let template = match &args.remote_template {
        Some(path) => stream_aligner::text::ChatTemplate::new(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading the template {}", path.display()))?,
        )?,
        // The local model's template is the default guess for the remote model's.
        None => engine.template.clone(),
    };
    let mut remote = RemoteConfig::from_options(options, template);
    remote.temperature = temperature;
    remote.seed = Some(args.seed);
    Ok(AnyUpstream::Remote(RemoteUpstream::new(remote)?))
}

pub fn run(args: AlignArgs) -> Result<()> {
    anyhow::ensure!(
        args.samples == 1 || args.mode == Mode::Stream,
        "--samples is for --mode stream"
    );
    anyhow::ensure!(
        args.resample == 0 || args.mode == Mode::Stream,
        "--resample is for --mode stream (it draws from the upstream)"
    );
    let engine = Arc::new(args.model.load()?);
    let mut aligner = Aligner::new(Arc::new(args.adapter.apply(&engine)?));
    aligner.calculator = args.calculator;
    aligner.copy_margin = args.margin.copy_margin;
    aligner.repair_margin = args.margin.repair();
    let aligner_cancel = aligner.cancel.clone();
    let config = PipelineConfig {
        max_rounds: args.max_rounds.unwrap_or(usize::MAX),
        max_sentences: args.max_sentences,
    };
    let on_event = |ev: &SentenceEvent| {
        if args.json {
            println!("{}", serde_json::to_string(ev).expect("events serialize"));
        } else {
            show(ev);
        }
        ControlFlow::Continue(())
    };
    let mut up = upstream(&args, &engine, args.temperature)?;
    let mut resampler = up.sampling(args.sample_temperature);
    let mut aligner = align::Resampled {
        aligner: &mut aligner,
        sampler: &mut resampler,
        tries: args.resample.into(),
        seed: args.seed,
    };
    // The remote upstream's HTTP client needs a tokio runtime; the local one runs under it too.
    let runtime = tokio::runtime::Runtime::new()?;
    let answer = if args.samples > 1 {
        let mut sampler = upstream(&args, &engine, args.sample_temperature)?;
        let b = runtime.block_on(align::best_of(
            &mut up,
            &mut sampler,
            &mut aligner,
            &args.query,
            &config,
            args.samples.into(),
            args.seed,
            &aligner_cancel,
            on_event,
        ))?;
        let finals: Vec<String> = (b.answers.iter())
            .map(|a| predicted_answer(&a.text).map_or("-".into(), format_number))
            .collect();
        eprintln!(
            "best of {}: run {} kept; the runs end on {}",
            args.samples,
            b.chosen + 1,
            finals.join(", ")
        );
        b.answer().clone()
    } else {
        runtime.block_on(align::run_mode(
            args.mode,
            &mut up,
            &mut aligner,
            &args.query,
            args.answer.as_deref(),
            &config,
            &aligner_cancel,
            on_event,
        ))?
    };
    if !args.json {
        println!("\n{}", answer.text.trim());
    }
    Ok(())
}
