//! `stream-aligner datagen`: on-policy data for the aligner. The real upstream, sampled, runs
//! through the stream loop with the oracle as the aligner, so the data holds the states the loop
//! will meet; every round becomes one (question, prefix, original, corrected) record. The
//! problems are the generator's (with its oracle) or GSM8K's training references (`--source
//! gsm8k`, with the oracle grounded in the reference; the validation split is left out).
//!
//! With `--aligner-in-loop` the trained aligner (`--adapter`) takes the seat instead, as in use,
//! and the oracle only labels (DAgger): the prefix grows by the aligner's corrections, so the
//! data holds the states the aligner's own slips lead to, each labelled with what the oracle
//! would have written there.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::align::{self, Aligner, Correction, Corrector, PipelineConfig};
use stream_aligner::model::SamplerConfig;
use stream_aligner::train::gsm8k::{self, Reference};
use stream_aligner::train::{GroundedOracle, Oracle, generate};
use stream_aligner::upstream::{LocalUpstream, Upstream};
use stream_aligner::{Engine, GenerateOptions};

use crate::references::SplitArgs;
use crate::{AdapterArgs, MarginArgs, ModelArgs};

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
    /// The trained aligner corrects (the oracle only labels): the prefix grows by its
    /// corrections, decoded as in use (calculator, `--copy-margin`)
    #[arg(long)]
    aligner_in_loop: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
    #[command(flatten)]
    margin: MarginArgs,
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
    let mut aligner = if args.aligner_in_loop {
        let mut a = Aligner::new(Arc::new(args.adapter.apply(&engine)?));
        a.calculator = true;
        a.copy_margin = args.margin.copy_margin;
        a.repair_margin = args.margin.repair();
        Some(a)
    } else {
        None
    };
    let (mut copies, mut rewrites) = (0usize, 0usize);
    let references = match args.source.as_str() {
        "generator" => Vec::new(),
        "gsm8k" => args.split.split()?.0,
        other => anyhow::bail!("unknown --source {other} (generator, gsm8k)"),
    };
    for i in 0..args.count {
        let seed = args.seed + i as u64;
        for record in records(&engine, &args, &references, aligner.as_mut(), seed)? {
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
/// copies or rewrites each sentence (or labels what the aligner, in the seat, corrects).
fn records(
    engine: &Arc<Engine>,
    args: &DatagenArgs,
    references: &[Reference],
    aligner: Option<&mut Aligner>,
    seed: u64,
) -> Result<Vec<serde_json::Value>> {
    let (question, family, oracle) = if references.is_empty() {
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
    let rounds = rounds(&mut upstream, oracle, aligner, &question, &config)?;
    let record = |(prefix, original, corrected): (String, String, String)| {
        let (original, corrected) = (original.trim(), corrected.trim());
        serde_json::json!({
            "question": question,
            "prefix": prefix,
            "original": original,
            "corrected": corrected,
            "copy": original == corrected,
            "family": family,
            "seed": seed,
        })
    };
    Ok(rounds.into_iter().map(record).collect())
}

/// Every round of one answer as (prefix, original, the oracle's correction). With `aligner`,
/// the aligner sits in the loop and the oracle beside it only labels.
fn rounds(
    upstream: &mut impl Upstream,
    mut oracle: impl Corrector,
    aligner: Option<&mut impl Corrector>,
    question: &str,
    config: &PipelineConfig,
) -> stream_aligner::Result<Vec<(String, String, String)>> {
    let cancel = stream_aligner::CancelToken::default();
    Ok(match aligner {
        None => sample(upstream, &mut oracle, question, config, &cancel)?
            .events
            .into_iter()
            .map(|ev| (ev.prefix, ev.original, ev.corrected))
            .collect(),
        Some(aligner) => {
            let mut learner = Learner {
                oracle,
                aligner,
                labels: Vec::new(),
            };
            sample(upstream, &mut learner, question, config, &cancel)?;
            learner.labels
        }
    })
}

fn sample(
    upstream: &mut impl Upstream,
    corrector: &mut impl Corrector,
    question: &str,
    config: &PipelineConfig,
    cancel: &stream_aligner::CancelToken,
) -> stream_aligner::Result<align::Answer> {
    futures::executor::block_on(align::run(
        upstream,
        corrector,
        question,
        config,
        cancel,
        |_| ControlFlow::Continue(()),
    ))
}

/// The trained aligner in the seat and the oracle beside it: the oracle's correction of each
/// sentence is kept as the label, the aligner's is what the loop goes on from.
struct Learner<'a, O, A> {
    oracle: O,
    aligner: &'a mut A,
    labels: Vec<(String, String, String)>,
}

impl<O: Corrector, A: Corrector> Corrector for Learner<'_, O, A> {
    async fn correct(
        &mut self,
        query: &str,
        prefix: &str,
        original: &str,
    ) -> stream_aligner::Result<Correction> {
        let label = self.oracle.correct(query, prefix, original).await?;
        self.labels
            .push((prefix.to_string(), original.to_string(), label.text));
        self.aligner.correct(query, prefix, original).await
    }
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
    ) -> stream_aligner::Result<Correction> {
        match self {
            Labeler::Generated(o) => o.correct(query, prefix, original).await,
            Labeler::Grounded(o) => o.correct(query, prefix, original).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stream_aligner::align::Uncorrected;
    use stream_aligner::upstream::Posthoc;

    /// A GSM8K-format problem, read as the training references are.
    fn mia() -> Reference {
        let line = r#"{"question": "Mia has 12 apples. She buys 5 more and then gives away 3. How many?", "answer": "She buys 5 more, so 12 + 5 = <<12+5=17>>17 apples.\nThen she gives away 3, so 17 - 3 = <<17-3=14>>14 apples.\n#### 14"}"#;
        let (mut refs, dropped) = gsm8k::read(line).unwrap();
        assert_eq!((refs.len(), dropped), (1, 0));
        refs.remove(0)
    }

    #[test]
    fn with_the_aligner_in_the_loop_its_text_is_the_prefix_and_the_oracles_the_label() {
        let r = mia();
        let wrong = "She buys 5 more, so 12 - 5 = 7 apples.";
        let answer = format!("{wrong} Then she gives away 3, so 7 - 3 = 4 apples.");
        let config = PipelineConfig::default();
        let oracle = || Labeler::Grounded(GroundedOracle::new([r.clone()]));

        // The oracle in the seat: its rewrite of the false step is what the loop goes on from.
        let mut upstream = Posthoc::new(&answer);
        let alone = rounds(
            &mut upstream,
            oracle(),
            None::<&mut Uncorrected>,
            &r.question,
            &config,
        )
        .unwrap();
        assert_eq!(alone[0].2, r.steps[0], "{alone:?}");
        assert_eq!(alone[1].0, r.steps[0], "{alone:?}");

        // An aligner that keeps everything in the seat: the same labels for the same sentences,
        // but the next round's prefix holds the aligner's kept false step.
        let mut upstream = Posthoc::new(&answer);
        let learner = rounds(
            &mut upstream,
            oracle(),
            Some(&mut Uncorrected),
            &r.question,
            &config,
        )
        .unwrap();
        assert_eq!(learner[0], alone[0], "{learner:?}");
        assert_eq!(learner[1].0, wrong, "{learner:?}");
        assert_eq!(learner[1].1, "Then she gives away 3, so 7 - 3 = 4 apples.");
        assert_ne!(
            learner[1].2, learner[1].1,
            "the false step is labelled for a rewrite"
        );
    }
}
