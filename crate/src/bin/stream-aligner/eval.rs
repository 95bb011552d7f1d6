//! `stream-aligner eval`: accuracy by rounds and preservation of correct answers on word
//! problem sets (see `train::evaluate`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures::executor::block_on;
use indicatif::{ProgressBar, ProgressStyle};
use stream_aligner::Engine;
use stream_aligner::train::evaluate::{
    CheckSummary, Checked, Evaluator, ModeSummary, PreservationSummary, Preserved, ProblemResult,
    Sampled, SampledSummary, Summary,
};
use stream_aligner::train::gsm8k::{self, Reference};
use stream_aligner::train::problems::read_gsm8k;

use crate::{AdapterArgs, MarginArgs, ModelArgs};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// GSM8K-format JSONL files, {"question": ..., "answer": "... #### N"}, each evaluated with
    /// the same settings and reported on its own
    #[arg(long, value_delimiter = ',', required = true)]
    problems: Vec<PathBuf>,
    /// What to measure: accuracy (by rounds, beside the baselines), preservation (the
    /// reference solution corrected post hoc: does it stay correct?) and/or operations (one
    /// reference step done with the wrong operation: is it rewritten to the step's value, and
    /// the step done right left at it?) and/or best-of (--samples runs of the loop, the first
    /// greedy, the others with the upstream sampled at --sample-temperature: the answer kept,
    /// one run, the plain vote, some run right)
    #[arg(long, value_delimiter = ',', default_value = "accuracy")]
    measure: Vec<Measure>,
    /// Runs of the loop for best-of
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64))]
    samples: u16,
    /// The upstream's temperature in best-of's sampled runs and in --resample's draws
    #[arg(long, default_value_t = 0.4)]
    sample_temperature: f32,
    /// For a step whose correction does not hold up (false, a number from nowhere, done
    /// again, an operation its quantities rule out, an answer nobody computed), draw up to N
    /// more sentences from the upstream sampled at --sample-temperature and keep the first
    /// whose correction does (accuracy's and best-of's runs of the loop)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=16))]
    resample: u16,
    /// Evaluate the first N problems of each set only
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
    /// Print the tables as one JSON object, keyed by problem file
    #[arg(long)]
    json: bool,
    /// Write every problem's answers here (JSONL); with several sets, one file per set
    /// (F.<set name>.jsonl)
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
    #[command(flatten)]
    margin: MarginArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Measure {
    Accuracy,
    Preservation,
    Operations,
    BestOf,
}

/// One problem of a set: its question, its answer and, when its solution can be read as one,
/// the reference solution.
struct Problem {
    question: String,
    answer: f64,
    reference: Option<Reference>,
}

fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let answers = read_gsm8k(&text)?;
    let (refs, _) = gsm8k::read(&text)?;
    let mut refs = refs.into_iter().peekable();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    Ok(lines
        .zip(answers)
        .map(|((i, _), (question, answer))| Problem {
            question,
            answer,
            reference: refs.next_if(|r| r.index == i),
        })
        .collect())
}

/// What was measured on one problem (a line of the details file).
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Measured {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ProblemResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preserved: Option<Preserved>,
    /// The operation check; `Some(None)` (`null` in the file): the reference has no step it
    /// applies to.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    checked: Option<Option<Checked>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    best_of: Option<Sampled>,
}

/// A field that is there, `null` included, is `Some`: an absent one is left to `default`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One set's tables.
#[derive(serde::Serialize)]
struct SetSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preservation: Option<PreservationSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operations: Option<CheckSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    best_of: Option<SampledSummary>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let base = Arc::new(args.model.load()?);
    let aligner = Arc::new(args.adapter.apply(&base)?);
    let mut all = serde_json::Map::new();
    for set in &args.problems {
        let details = args.details.as_ref().map(|d| match args.problems.len() {
            1 => d.clone(),
            _ => d.with_extension(format!(
                "{}.jsonl",
                set.file_stem().unwrap_or_default().to_string_lossy()
            )),
        });
        let s = evaluate_set(&args, set, details.as_deref(), &base, &aligner)?;
        if !args.json {
            print_set(set, &s);
        }
        all.insert(set.display().to_string(), serde_json::to_value(&s)?);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(all));
    }
    Ok(())
}

/// Which measures a run takes.
#[derive(Clone, Copy)]
struct Measures {
    accuracy: bool,
    preservation: bool,
    operations: bool,
    best_of: bool,
}

impl Measures {
    fn new(args: &EvalArgs) -> Self {
        Self {
            accuracy: args.measure.contains(&Measure::Accuracy),
            preservation: args.measure.contains(&Measure::Preservation),
            operations: args.measure.contains(&Measure::Operations),
            best_of: args.measure.contains(&Measure::BestOf),
        }
    }

    /// Everything asked for is measured on `p` (preservation and the operation check need a
    /// reference solution).
    fn complete(&self, m: &Measured, p: &Problem) -> bool {
        let solved = p.reference.is_none();
        (!self.accuracy || m.result.is_some())
            && (!self.preservation || solved || m.preserved.is_some())
            && (!self.operations || solved || m.checked.is_some())
            && (!self.best_of || m.best_of.is_some())
    }
}

fn evaluate_set(
    args: &EvalArgs,
    set: &Path,
    details_path: Option<&Path>,
    base: &Arc<Engine>,
    aligner: &Arc<Engine>,
) -> Result<SetSummary> {
    let mut problems = read_problems(set)?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    anyhow::ensure!(!problems.is_empty(), "no problems in {}", set.display());
    let measures = Measures::new(args);
    let (done, cut) = match (args.resume, details_path) {
        (true, Some(p)) => resumed(args, p, &problems)?,
        _ => (vec![Measured::default(); problems.len()], false),
    };
    let details = details_path
        .map(|p| open_details(p, args.resume, cut))
        .transpose()?;
    let run = SetRun {
        args,
        problems: &problems,
        measures,
        next: AtomicUsize::new(0),
        pb: progress_bar(&problems, &done, measures),
        done: Mutex::new((done, details)),
        base,
        aligner,
    };
    run.work()?;
    run.pb.finish_and_clear();
    let done = run.done.into_inner().expect("no worker panicked").0;
    let results: Vec<ProblemResult> = done.iter().filter_map(|m| m.result.clone()).collect();
    let preserved: Vec<Preserved> = done.iter().filter_map(|m| m.preserved.clone()).collect();
    let checked: Vec<Checked> = done
        .iter()
        .filter_map(|m| m.checked.clone().flatten())
        .collect();
    let sampled: Vec<Sampled> = done.iter().filter_map(|m| m.best_of.clone()).collect();
    Ok(SetSummary {
        accuracy: measures.accuracy.then(|| Summary::new(&results)),
        preservation: measures
            .preservation
            .then(|| PreservationSummary::new(&preserved)),
        operations: measures.operations.then(|| CheckSummary::new(&checked)),
        best_of: measures.best_of.then(|| SampledSummary::new(&sampled)),
    })
}

/// The results kept from an earlier run's details file, and whether it ends in a cut line;
/// an error if they were measured with other settings.
fn resumed(args: &EvalArgs, path: &Path, problems: &[Problem]) -> Result<(Vec<Measured>, bool)> {
    let mut done = vec![Measured::default(); problems.len()];
    let (kept, cut) = previous_results(path, problems, &mut done)?;
    let same = |r: &ProblemResult| {
        r.stream.len() == args.rounds.max(1) && r.upstream_calculator.is_some() == args.calculator
    };
    anyhow::ensure!(
        done.iter().filter_map(|m| m.result.as_ref()).all(same),
        "{} was written with another --rounds or --calculator: resume with the same settings",
        path.display()
    );
    anyhow::ensure!(
        done.iter()
            .filter_map(|m| m.best_of.as_ref())
            .all(|b| b.samples.len() == usize::from(args.samples)),
        "{} was written with another --samples: resume with the same settings",
        path.display()
    );
    eprintln!("{kept} problems kept from {}", path.display());
    Ok((done, cut))
}

/// The details file: appended to when resuming, else written anew.
fn open_details(path: &Path, resume: bool, cut: bool) -> Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resume)
        .truncate(!resume)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A line cut by a stopped run stays a line of its own.
    if cut {
        writeln!(f)?;
    }
    Ok(f)
}

fn progress_bar(problems: &[Problem], done: &[Measured], measures: Measures) -> ProgressBar {
    let pb = ProgressBar::new(problems.len() as u64);
    pb.set_position(
        done.iter()
            .zip(problems)
            .filter(|(m, p)| measures.complete(m, p))
            .count() as u64,
    );
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} problems {msg} [{elapsed} < {eta}]")
            .unwrap(),
    );
    pb
}

/// One set's evaluation under way: workers take the next problem in turn; results keep the
/// file's order.
struct SetRun<'a> {
    args: &'a EvalArgs,
    problems: &'a [Problem],
    measures: Measures,
    next: AtomicUsize,
    pb: ProgressBar,
    /// What is measured so far, and the details file.
    done: Mutex<(Vec<Measured>, Option<std::fs::File>)>,
    base: &'a Arc<Engine>,
    aligner: &'a Arc<Engine>,
}

impl SetRun<'_> {
    /// Runs `--jobs` workers until every problem is measured.
    fn work(&self) -> Result<()> {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.args.jobs.max(1))
                .map(|_| scope.spawn(|| self.worker()))
                .collect();
            for w in workers {
                w.join().expect("an evaluation worker panicked")?;
            }
            Ok(())
        })
    }

    fn worker(&self) -> Result<()> {
        let args = self.args;
        let mut ev = Evaluator::new(
            self.base.clone(),
            self.aligner.clone(),
            args.rounds,
            args.max_tokens,
        )
        .with_calculator(args.calculator)
        .with_copy_margin(args.margin.copy_margin)
        .with_repair_margin(args.margin.repair())
        .with_best_of(args.samples.into(), args.sample_temperature)
        .with_resample(args.resample.into(), args.sample_temperature);
        ev.max_sentences = args.max_sentences;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = self.problems.get(i) else {
                return Ok(());
            };
            let mut m = self.done.lock().expect("no worker panicked").0[i].clone();
            if self.measures.complete(&m, p) {
                continue;
            }
            if self.measures.accuracy && m.result.is_none() {
                m.result = Some(block_on(ev.problem(&p.question, p.answer))?);
            }
            if let (true, None, Some(r)) = (self.measures.preservation, &m.preserved, &p.reference)
            {
                m.preserved = Some(block_on(ev.preservation(
                    &p.question,
                    &r.solution(),
                    p.answer,
                ))?);
            }
            if let (true, None, Some(r)) = (self.measures.operations, &m.checked, &p.reference) {
                m.checked = Some(block_on(ev.operation_check(r))?);
            }
            if self.measures.best_of && m.best_of.is_none() {
                m.best_of = Some(block_on(ev.best_of(&p.question, p.answer))?);
            }
            self.record(i, m)?;
        }
    }

    /// Keeps problem `i`'s measures, appends them to the details file and moves the bar.
    fn record(&self, i: usize, m: Measured) -> Result<()> {
        let p = &self.problems[i];
        let mut d = self.done.lock().expect("no worker panicked");
        if let Some(f) = d.1.as_mut() {
            let mut line = serde_json::to_value(&m)?;
            line["question"] = p.question.clone().into();
            line["answer"] = p.answer.into();
            writeln!(f, "{line}")?;
        }
        d.0[i] = m;
        self.pb.set_message(progress(&d.0));
        self.pb.inc(1);
        Ok(())
    }
}

/// The progress bar's message: accuracy so far, preservation so far.
fn progress(done: &[Measured]) -> String {
    let share = |xs: Vec<bool>| xs.iter().filter(|&&x| x).count() as f64 / xs.len().max(1) as f64;
    let results: Vec<&ProblemResult> = done.iter().filter_map(|m| m.result.as_ref()).collect();
    let kept: Vec<bool> = done
        .iter()
        .filter_map(|m| m.preserved.as_ref().map(|p| p.correct))
        .collect();
    let fixed: Vec<bool> = done
        .iter()
        .filter_map(|m| m.checked.as_ref()?.as_ref().map(|c| c.fixed))
        .collect();
    let mut msg = String::new();
    if !results.is_empty() {
        let up = share(results.iter().map(|r| r.upstream.correct).collect());
        let last = share(
            results
                .iter()
                .map(|r| r.stream.last().is_some_and(|o| o.correct))
                .collect(),
        );
        msg += &format!("upstream {up:.2} | stream {last:.2} ");
    }
    if !kept.is_empty() {
        msg += &format!("| kept correct {:.2} ", share(kept));
    }
    if !fixed.is_empty() {
        msg += &format!("| wrong operations fixed {:.2} ", share(fixed));
    }
    let chosen: Vec<bool> = done
        .iter()
        .filter_map(|m| m.best_of.as_ref())
        .map(|b| b.samples.get(b.chosen).is_some_and(|o| o.correct))
        .collect();
    if !chosen.is_empty() {
        msg += &format!("| best of K {:.2}", share(chosen));
    }
    msg
}

fn print_set(set: &Path, s: &SetSummary) {
    if let Some(s) = &s.accuracy {
        println!("{} problems from {}", s.problems, set.display());
        println!("| mode | accuracy | ms per answer |\n|---|---:|---:|");
        let row = |name: &str, m: &ModeSummary| {
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
        println!();
    }
    if let Some(p) = &s.preservation {
        println!(
            "preservation on {} reference solutions from {}: {:.1}% stay correct, {:.1}% of sentences changed, {:.1}% untouched ({:.0} ms per answer)\n",
            p.problems,
            set.display(),
            100.0 * p.kept_correct,
            100.0 * p.sentences_changed,
            100.0 * p.untouched,
            p.ms_per_answer
        );
    }
    if let Some(c) = &s.operations {
        println!(
            "operation check on {} reference steps from {}: {:.1}% of the steps done with a wrong operation rewritten to the step's value, {:.1}% of the steps done right left at their value\n",
            c.steps,
            set.display(),
            100.0 * c.fixed,
            100.0 * c.kept
        );
    }
    if let Some(b) = &s.best_of {
        println!(
            "best of {} on {} problems from {}: {:.1}% chosen, {:.1}% by the plain vote, {:.1}% one run ({:.1}% the greedy one), {:.1}% some run right ({:.0} ms per problem)\n",
            b.samples,
            b.problems,
            set.display(),
            100.0 * b.chosen,
            100.0 * b.voted,
            100.0 * b.one_sample,
            100.0 * b.first_sample,
            100.0 * b.any,
            b.ms_per_problem
        );
    }
}

/// Reads a details file of an earlier run into `done` (matching problems by question and
/// answer); returns how many were kept, and whether the file ends in a cut line.
fn previous_results(
    path: &Path,
    problems: &[Problem],
    done: &mut [Measured],
) -> Result<(usize, bool)> {
    #[derive(serde::Deserialize)]
    struct Line {
        question: String,
        answer: f64,
        #[serde(flatten)]
        measured: Measured,
    }
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, false)),
        r => r.with_context(|| format!("reading {}", path.display()))?,
    };
    let mut kept = 0;
    let mut taken = vec![false; problems.len()];
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
            !taken[i] && problems[i].question == line.question && problems[i].answer == line.answer
        });
        if let Some(i) = slot {
            taken[i] = true;
            done[i] = line.measured;
            kept += 1;
        }
    }
    Ok((kept, !text.is_empty() && !text.ends_with('\n')))
}

#[cfg(test)]
mod tests {
    use super::Measured;

    #[test]
    fn a_check_that_found_no_step_is_not_done_again_on_resume() {
        let none = Measured {
            checked: Some(None),
            ..Measured::default()
        };
        let line = serde_json::to_string(&none).unwrap();
        assert_eq!(line, r#"{"checked":null}"#);
        let back: Measured = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.checked, Some(None)), "null is a check done");
        let absent: Measured = serde_json::from_str("{}").unwrap();
        assert!(absent.checked.is_none(), "an absent field is a check to do");
    }
}
