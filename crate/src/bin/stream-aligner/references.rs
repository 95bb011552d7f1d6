//! `stream-aligner references`: GSM8K's training file split into a seeded validation set
//! (written in GSM8K format for `eval`, never trained on) and training references, from which
//! it writes records made without the upstream (`train::synthetic`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stream_aligner::train::gsm8k::{self, Reference};
use stream_aligner::train::{generate, synthetic};

#[derive(clap::Args, Clone)]
pub struct SplitArgs {
    /// GSM8K's training file (one {"question", "answer"} object a line)
    #[arg(long, default_value = "../shared/data/gsm8k/train.jsonl")]
    pub gsm8k: PathBuf,
    /// Problems held out for validation
    #[arg(long, default_value_t = 300)]
    pub val_count: usize,
    /// Seed of the validation split
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

impl SplitArgs {
    /// The training references (the validation lines left out) and the validation lines as
    /// they are in the file.
    pub fn split(&self) -> Result<(Vec<Reference>, Vec<String>, usize)> {
        let text = std::fs::read_to_string(&self.gsm8k)
            .with_context(|| format!("reading {}", self.gsm8k.display()))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let val = gsm8k::validation_indices(lines.len(), self.val_count, self.split_seed);
        let (refs, dropped) = gsm8k::read(&lines.join("\n"))?;
        let train = refs
            .into_iter()
            .filter(|r| val.binary_search(&r.index).is_err())
            .collect();
        Ok((
            train,
            val.iter().map(|&i| lines[i].to_string()).collect(),
            dropped,
        ))
    }
}

#[derive(clap::Args)]
pub struct ReferencesArgs {
    #[command(flatten)]
    split: SplitArgs,
    /// Where the validation problems go (GSM8K format)
    #[arg(long, default_value = "models/eval/gsm8k-val.jsonl")]
    val_out: PathBuf,
    /// Where the training records go (JSONL, as datagen writes them)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Records per training problem
    #[arg(long, default_value_t = 1)]
    per_problem: usize,
    /// Use only the first N training problems
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write records from N of the generator's problems instead (their canonical solutions as
    /// the references; no GSM8K split is written)
    #[arg(long)]
    generated: Option<usize>,
    /// With --generated: problem i has seed `generated_seed + i`
    #[arg(long, default_value_t = 70_000)]
    generated_seed: u64,
    /// With --generated: the story families (default: all)
    #[arg(long, value_delimiter = ',')]
    families: Vec<usize>,
    /// With --generated: write only the records about what follows two events told in one
    /// sentence, with one event computed (`after_merged`) or both (`after_combined`), seeded
    /// by --seed
    #[arg(long, requires = "generated")]
    after_merged: bool,
    /// Write only records of steps done with the wrong operation (rewritten into the step),
    /// each beside the step itself (kept), seeded by --seed
    #[arg(long, conflicts_with = "after_merged")]
    wrong_operators: bool,
}

fn create(p: &Path) -> Result<std::fs::File> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))
}

pub fn run(args: ReferencesArgs) -> Result<()> {
    if let Some(n) = args.generated {
        let out = args.out.as_ref().context("--generated needs --out")?;
        let refs: Vec<Reference> = (0..n as u64)
            .map(|i| Reference::from_problem(&generate(args.generated_seed + i, &args.families)))
            .collect();
        return write_records(&refs, &args, out);
    }
    let (mut train, val, dropped) = args.split.split()?;
    let mut f = create(&args.val_out)?;
    for l in &val {
        writeln!(f, "{l}")?;
    }
    println!(
        "{} validation problems -> {}; {} training references ({dropped} solutions could not be put in calculator form)",
        val.len(),
        args.val_out.display(),
        train.len()
    );
    let Some(out) = &args.out else {
        return Ok(());
    };
    if let Some(n) = args.limit {
        train.truncate(n);
    }
    write_records(&train, &args, out)
}

/// `per_problem` records about each of `train` into `out`, with a count by kind.
fn write_records(train: &[Reference], args: &ReferencesArgs, out: &Path) -> Result<()> {
    let mut records = if args.after_merged {
        synthetic::after_merged_records(train, args.seed)
    } else if args.wrong_operators {
        synthetic::wrong_operator_records(train, args.seed)
    } else {
        synthetic::records(train, args.per_problem, args.seed)
    };
    if args.generated.is_some() && !args.after_merged && !args.wrong_operators {
        records.extend(synthetic::merged_records(train));
    }
    let mut f = create(out)?;
    let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &records {
        // Through a JSON value, whose keys are sorted, as the committed files are.
        writeln!(f, "{}", serde_json::to_value(r)?)?;
        let e = by_kind.entry(r.kind.clone()).or_default();
        e.0 += 1;
        e.1 += r.copy as usize;
    }
    let copies = records.iter().filter(|r| r.copy).count();
    println!(
        "{} records from {} problems, {copies} copies ({:.1}%) -> {}",
        records.len(),
        train.len(),
        100.0 * copies as f64 / records.len().max(1) as f64,
        out.display()
    );
    for (k, (n, c)) in by_kind {
        println!("  {k:<20} {n:>6} records, {c:>6} kept");
    }
    Ok(())
}
