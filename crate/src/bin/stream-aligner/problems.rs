//! `stream-aligner problems`: a GSM8K-format problem file from the generator.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct ProblemsArgs {
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Problem i uses seed + i (training used 1000-1599: evaluate from 1,000,000 up)
    #[arg(long, default_value_t = 1_000_000)]
    seed: u64,
    /// Story families (default: all)
    #[arg(long, value_delimiter = ',')]
    families: Vec<usize>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ProblemsArgs) -> Result<()> {
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for i in 0..args.count as u64 {
        let p = stream_aligner::train::generate(args.seed + i, &args.families);
        let answer = format!("{}\n#### {}", p.solution(), p.answer);
        writeln!(
            out,
            "{}",
            serde_json::json!({"question": p.question, "answer": answer, "family": p.family, "seed": p.seed})
        )?;
    }
    eprintln!("{} problems -> {}", args.count, args.out.display());
    Ok(())
}
