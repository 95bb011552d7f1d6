//! `stream-aligner eval`: accuracy by rounds on word problems (see `train::evaluate`), and
//! `stream-aligner problems`: a GSM8K-format problem file from the generator.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::train::evaluate::{Evaluator, ProblemResult, Summary};
use stream_aligner::train::problems::read_gsm8k;

use crate::{AdapterArgs, ModelArgs};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// GSM8K-format JSONL: {"question": ..., "answer": "... #### N"}
    #[arg(long)]
    problems: PathBuf,
    /// Evaluate the first N problems only
    #[arg(long)]
    limit: Option<usize>,
    /// Correction rounds to report (1..=N)
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long, default_value_t = 8)]
    max_sentences: usize,
    /// Tokens per uncorrected answer, per sentence and per revision
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Problems evaluated at once (they share the weights and the cores)
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Print the table as one JSON object
    #[arg(long)]
    json: bool,
    /// Write every problem's answers here (JSONL)
    #[arg(long)]
    details: Option<PathBuf>,
    /// Keep the problems already in --details and evaluate only the rest (a long evaluation
    /// goes on where a stopped one ended); the table covers them all
    #[arg(long, requires = "details")]
    resume: bool,
    /// The aligner decodes with a calculator (after "expression =" it writes the value); the
    /// upstream alone is then measured with and without one
    #[arg(long)]
    calculator: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.problems)
        .with_context(|| format!("reading {}", args.problems.display()))?;
    let mut problems = read_gsm8k(&text)?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    anyhow::ensure!(
        !problems.is_empty(),
        "no problems in {}",
        args.problems.display()
    );
    let base = Arc::new(args.model.load()?);
    let aligner = Arc::new(args.adapter.apply(&base)?);
    let mut done = vec![None::<ProblemResult>; problems.len()];
    let mut cut = false;
    if let (true, Some(p)) = (args.resume, &args.details) {
        let kept;
        (kept, cut) = previous_results(p, &problems, &mut done)?;
        let same = |r: &ProblemResult| {
            r.stream.len() == args.rounds.max(1)
                && r.upstream_calculator.is_some() == args.calculator
        };
        anyhow::ensure!(
            done.iter().flatten().all(same),
            "{} was written with another --rounds or --calculator: resume with the same settings",
            p.display()
        );
        eprintln!("{kept} problems kept from {}", p.display());
    }
    let details = match &args.details {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(args.resume)
                .truncate(!args.resume)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))
                .and_then(|mut f| {
                    // A line cut by a stopped run stays a line of its own.
                    if cut {
                        writeln!(f)?;
                    }
                    Ok(f)
                })?,
        ),
        None => None,
    };
    let pb = ProgressBar::new(problems.len() as u64);
    pb.set_position(done.iter().flatten().count() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} problems {msg} [{elapsed} < {eta}]")
            .unwrap(),
    );
    // Workers take the next problem in turn; results keep the file's order.
    let next = AtomicUsize::new(0);
    let done = Mutex::new((done, details));
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut ev =
                        Evaluator::new(base.clone(), aligner.clone(), args.rounds, args.max_tokens)
                            .with_calculator(args.calculator);
                    ev.max_sentences = args.max_sentences;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((q, a)) = problems.get(i) else {
                            return Ok(());
                        };
                        if done.lock().expect("no worker panicked").0[i].is_some() {
                            continue;
                        }
                        let r = futures::executor::block_on(ev.problem(q, *a))?;
                        let mut d = done.lock().expect("no worker panicked");
                        if let Some(f) = d.1.as_mut() {
                            writeln!(
                                f,
                                "{}",
                                serde_json::json!({"question": q, "answer": a, "result": r})
                            )?;
                        }
                        d.0[i] = Some(r);
                        let done: Vec<&ProblemResult> = d.0.iter().flatten().collect();
                        let share = |ok: &dyn Fn(&ProblemResult) -> bool| {
                            done.iter().filter(|r| ok(r)).count() as f64 / done.len() as f64
                        };
                        let up = share(&|r| r.upstream.correct);
                        let last = share(&|r| r.stream.last().is_some_and(|o| o.correct));
                        pb.set_message(format!("upstream {up:.2} | stream {last:.2}"));
                        pb.inc(1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("an evaluation worker panicked")?;
        }
        Ok(())
    })?;
    let results: Vec<ProblemResult> = done
        .into_inner()
        .expect("no worker panicked")
        .0
        .into_iter()
        .flatten()
        .collect();
    pb.finish_and_clear();
    let s = Summary::new(&results);
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("{} problems from {}", s.problems, args.problems.display());
    println!("| mode | accuracy | ms per answer |\n|---|---:|---:|");
    let row = |name: &str, m: &stream_aligner::train::evaluate::ModeSummary| {
        println!(
            "| {name} | {:.1}% | {:.0} |",
            100.0 * m.accuracy,
            m.ms_per_answer
        )
    };
    row("upstream alone", &s.upstream);
    if let Some(m) = &s.upstream_calculator {
        row("upstream alone, with the calculator", m);
    }
    row("aligner alone", &s.aligner_alone);
    row("Aligner (whole answer)", &s.aligner_whole);
    for (k, m) in &s.stream {
        row(&format!("stream aligner, {k} round(s)"), m);
    }
    println!("\n| round | sentences | copy | rewrite |\n|---:|---:|---:|---:|");
    for (k, r) in &s.rounds {
        println!(
            "| {k} | {} | {:.1}% | {:.1}% |",
            r.sentences,
            100.0 * r.copy_rate,
            100.0 * r.rewrite_rate
        );
    }
    Ok(())
}

/// Reads a details file of an earlier run into `done` (matching problems by question and
/// answer); returns how many were kept, and whether the file ends in a cut line.
fn previous_results(
    path: &std::path::Path,
    problems: &[(String, f64)],
    done: &mut [Option<ProblemResult>],
) -> Result<(usize, bool)> {
    #[derive(serde::Deserialize)]
    struct Line {
        question: String,
        answer: f64,
        result: ProblemResult,
    }
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, false)),
        r => r.with_context(|| format!("reading {}", path.display()))?,
    };
    let mut kept = 0;
    for (n, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let Ok(line) = serde_json::from_str::<Line>(l) else {
            // A line cut by a stopped run: that problem is evaluated again.
            eprintln!(
                "{}:{}: not a complete result, evaluated again",
                path.display(),
                n + 1
            );
            continue;
        };
        let slot = (0..problems.len()).find(|&i| {
            done[i].is_none() && problems[i].0 == line.question && problems[i].1 == line.answer
        });
        if let Some(i) = slot {
            done[i] = Some(line.result);
            kept += 1;
        }
    }
    Ok((kept, !text.is_empty() && !text.ends_with('\n')))
}

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

pub fn problems(args: ProblemsArgs) -> Result<()> {
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
