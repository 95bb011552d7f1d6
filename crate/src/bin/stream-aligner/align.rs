//! `stream-aligner align`: the sentence loop, shown live (original vs corrected, with a word
//! diff when the aligner changed something), or as JSON lines.

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Result;
use similar::{ChangeTag, TextDiff};
use stream_aligner::GenerateOptions;
use stream_aligner::align::{self, Aligner, Mode, PipelineConfig, SentenceEvent};
use stream_aligner::model::SamplerConfig;
use stream_aligner::upstream::LocalUpstream;

use crate::ModelArgs;

#[derive(clap::Args)]
pub struct AlignArgs {
    #[arg(long)]
    query: String,
    #[command(flatten)]
    model: ModelArgs,
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
    let tag = if !ev.aligned { "upstream" } else if ev.changed { "REWRITE" } else { "copy" };
    println!("[{}] {tag:8} {}", ev.index, ev.corrected.trim());
    if ev.changed {
        println!("    original: {}", ev.original.trim());
        println!("    diff:     {}", word_diff(ev.original.trim(), ev.corrected.trim()));
    }
    println!(
        "    upstream {:.0} ms ({} tok) | aligner {:.0} ms ({} tok, {} from the draft)",
        ev.upstream_ms, ev.upstream_tokens, ev.aligner_ms, ev.aligner_tokens, ev.accepted_tokens
    );
}

pub fn run(args: AlignArgs) -> Result<()> {
    let engine = Arc::new(args.model.load()?);
    let options = GenerateOptions {
        max_tokens: 128,
        sampler: SamplerConfig { temperature: args.temperature, seed: args.seed, ..SamplerConfig::greedy() },
    };
    let mut upstream = LocalUpstream::new(engine.clone(), options);
    let mut aligner = Aligner::new(engine);
    let config = PipelineConfig { mode: args.mode, max_rounds: args.max_rounds.unwrap_or(usize::MAX), max_sentences: args.max_sentences };
    let answer = futures::executor::block_on(align::run(&mut upstream, &mut aligner, &args.query, args.answer.as_deref(), &config, |ev| {
        if args.json {
            println!("{}", serde_json::to_string(ev).expect("events serialize"));
        } else {
            show(ev);
        }
        ControlFlow::Continue(())
    }))?;
    if !args.json {
        println!("\n{}", answer.text.trim());
    }
    Ok(())
}
