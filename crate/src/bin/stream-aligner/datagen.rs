//! `stream-aligner datagen`: on-policy data for the aligner. The real upstream, sampled, runs
//! through the stream loop with the oracle as the aligner, so the data holds the states the loop
//! will meet; every round becomes one (question, prefix, original, corrected) record. The
//! problems are the generator's (with its oracle) or GSM8K's training references (`--source
//! gsm8k`, with the oracle grounded in the reference; the validation split is left out).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::align::Corrector;
use stream_aligner::align::{self, PipelineConfig};
use stream_aligner::model::SamplerConfig;
use stream_aligner::train::gsm8k::{self, Reference};
use stream_aligner::train::{GroundedOracle, Oracle, generate};
use stream_aligner::upstream::LocalUpstream;
use stream_aligner::{Engine, GenerateOptions};

use crate::ModelArgs;
use crate::references::SplitArgs;

#[derive(clap::Args)]
pub struct DatagenArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// generator (word problems, `--families`) or gsm8k (GSM8K's training references)
    #[arg(long, default_value = "generator")]
    source: String,
    #[command(flatten)]
    split: SplitArgs,
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Problem i uses seed + i (its problem and its sampling; with gsm8k, the training
    /// reference at that position)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Story families to draw from (default: all); hold some out for evaluation
    #[arg(long, value_delimiter = ',')]
    families: Vec<usize>,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 8)]
    max_sentences: usize,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: DatagenArgs) -> Result<()> {
    let engine = Arc::new(args.model.load()?);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let pb = ProgressBar::new(args.count as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} problems {msg} [{elapsed} < {eta}]")
            .unwrap(),
    );
    let (mut copies, mut rewrites) = (0usize, 0usize);
    let references = match args.source.as_str() {
        "generator" => Vec::new(),
        "gsm8k" => args.split.split()?.0,
        other => anyhow::bail!("unknown --source {other} (generator, gsm8k)"),
    };
    for i in 0..args.count {
        let seed = args.seed + i as u64;
        for record in records(&engine, &args, &references, seed)? {
            match record["copy"].as_bool() {
                Some(true) => copies += 1,
                _ => rewrites += 1,
            }
            writeln!(out, "{record}")?;
        }
        pb.set_message(format!("{copies} copies, {rewrites} rewrites"));
        pb.inc(1);
    }
    pb.finish();
    let total = (copies + rewrites).max(1);
    println!(
        "{} records from {} problems: {copies} copies ({:.1}%), {rewrites} rewrites ({:.1}%) -> {}",
        copies + rewrites,
        args.count,
        100.0 * copies as f64 / total as f64,
        100.0 * rewrites as f64 / total as f64,
        args.out.display()
    );
    Ok(())
}

/// One problem's records: the upstream samples an answer, the oracle in the aligner's seat
/// copies or rewrites each sentence.
fn records(
    engine: &Arc<Engine>,
    args: &DatagenArgs,
    references: &[Reference],
    seed: u64,
) -> Result<Vec<serde_json::Value>> {
    let (question, family, mut oracle) = if references.is_empty() {
        let p = generate(seed, &args.families);
        let q = p.question.clone();
        (q, p.family, Labeler::Generated(Oracle::new([p])))
    } else {
        let r = references[seed as usize % references.len()].clone();
        let q = r.question.clone();
        (
            q,
            gsm8k::FAMILY,
            Labeler::Grounded(GroundedOracle::new([r])),
        )
    };
    let options = GenerateOptions {
        max_tokens: 96,
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_p: 0.95,
            seed,
            ..SamplerConfig::greedy()
        },
        ..GenerateOptions::default()
    };
    let mut upstream = LocalUpstream::new(engine.clone(), options);
    let config = PipelineConfig {
        max_sentences: args.max_sentences,
        ..Default::default()
    };
    let cancel = stream_aligner::CancelToken::default();
    let answer = futures::executor::block_on(align::run(
        &mut upstream,
        &mut oracle,
        &question,
        &config,
        &cancel,
        |_| ControlFlow::Continue(()),
    ))?;
    let record = |ev: &align::SentenceEvent| {
        serde_json::json!({
            "question": question,
            "prefix": ev.prefix,
            "original": ev.original.trim(),
            "corrected": ev.corrected.trim(),
            "copy": !ev.changed,
            "family": family,
            "seed": seed,
        })
    };
    Ok(answer.events.iter().map(record).collect())
}

/// The oracle in the aligner's seat: the generator's, or one grounded in a reference.
enum Labeler {
    Generated(Oracle),
    Grounded(GroundedOracle),
}

impl Corrector for Labeler {
    async fn correct(
        &mut self,
        query: &str,
        prefix: &str,
        original: &str,
    ) -> stream_aligner::Result<stream_aligner::align::Correction> {
        match self {
            Labeler::Generated(o) => o.correct(query, prefix, original).await,
            Labeler::Grounded(o) => o.correct(query, prefix, original).await,
        }
    }
}
