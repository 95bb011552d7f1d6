//! The Stream Aligner loop on the real SmolLM2 model, as upstream and (until a trained adapter
//! exists) as aligner.

use std::ops::ControlFlow;

mod common;

use common::{engine, equations};
use futures::executor::block_on;
use stream_aligner::CancelToken;
use stream_aligner::align::{self, Aligner, Mode, PipelineConfig, Stop, Uncorrected};
use stream_aligner::text::split_sentences;
use stream_aligner::upstream::{LocalUpstream, Upstream, UpstreamSentence};
use stream_aligner::{Error, GenerateOptions, Result};

fn upstream() -> LocalUpstream {
    LocalUpstream::new(
        engine(),
        GenerateOptions {
            max_tokens: 96,
            ..Default::default()
        },
    )
}

/// One answer in `mode` from the real upstream and a fresh base-model aligner, ignoring the
/// events.
fn answer_in(mode: Mode, query: &str, config: &PipelineConfig) -> Result<align::Answer> {
    block_on(align::run_mode(
        mode,
        &mut upstream(),
        &mut Aligner::new(engine()),
        query,
        None,
        config,
        &CancelToken::default(),
        |_| ControlFlow::Continue(()),
    ))
}

fn answer(query: &str, config: &PipelineConfig) -> Result<align::Answer> {
    answer_in(Mode::Stream, query, config)
}

/// Records the prefix of every round, to check what the upstream continued from.
struct Recording<U> {
    inner: U,
    prefixes: Vec<String>,
}

impl<U: Upstream> Upstream for Recording<U> {
    async fn next_sentence(&mut self, query: &str, prefix: &str) -> Result<UpstreamSentence> {
        self.prefixes.push(prefix.to_string());
        self.inner.next_sentence(query, prefix).await
    }
    async fn rest(&mut self, query: &str, prefix: &str) -> Result<String> {
        self.prefixes.push(prefix.to_string());
        self.inner.rest(query, prefix).await
    }
}

const QUERIES: &[&str] = &[
    "What is 17 * 23? Answer step by step.",
    "Name three fruits and say one thing about each.",
    "Tom has 5 apples and buys 7 more. How many does he have?",
];

#[test]
fn copy_speculation_gives_exactly_plain_greedy_decoding() {
    let cases: &[(&str, &str, &str)] = &[
        ("What is 17 * 23?", "", "17 * 23 = 381."),
        (
            "What is 17 * 23?",
            "17 * 23 = 391.",
            " So the answer is 391.",
        ),
        (
            "What is the capital of France?",
            "",
            "The capital of France is Paris.",
        ),
        (
            "What is the capital of France?",
            "",
            "The capital of France is Berlin.",
        ),
        (
            "Name a fruit.",
            "",
            "An apple is a fruit that grows on trees.",
        ),
        (
            "Tom has 5 apples and buys 7 more.",
            "Tom starts with 5 apples.",
            " He buys 7 more, so he has 5 + 7 = 13 apples.",
        ),
        (
            "Explain rain.",
            "Rain falls from clouds.",
            " It happens when water droplets grow heavy.",
        ),
        (
            "Write one sentence about the sea.",
            "",
            "The sea is vast, deep and full of life.",
        ),
        (
            "How many legs does a spider have?",
            "",
            "A spider has six legs.",
        ),
        ("What is 9 - 4?", "", "9 - 4 = 5"),
    ];
    let mut fast = Aligner::new(engine());
    let mut plain = Aligner::new(engine());
    plain.speculate = false;
    let mut accepted = 0;
    for (q, p, o) in cases {
        let a = block_on(fast.correct(q, p, o.trim())).unwrap();
        let b = block_on(plain.correct(q, p, o.trim())).unwrap();
        assert_eq!(a.text, b.text, "query {q:?}, original {o:?}");
        assert_eq!(a.tokens, b.tokens);
        // At worst one extra pass (a draft rejected at once); a copied sentence costs one pass.
        assert!(
            a.passes <= b.passes + 1,
            "{} passes vs {}",
            a.passes,
            b.passes
        );
        if a.accepted == a.tokens {
            assert_eq!(a.passes, 1, "a copy is one pass, not {} ({o:?})", b.passes);
        }
        accepted += a.accepted;
    }
    assert!(accepted > 0, "the draft was accepted somewhere");
}

#[test]
fn a_copy_margin_keeps_the_original_and_stays_lossless_under_speculation() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "What is the capital of France?",
            "",
            "The capital of France is Berlin.",
        ),
        (
            "Name a fruit.",
            "",
            "An apple is a fruit that grows on trees.",
        ),
        (
            "How many legs does a spider have?",
            "",
            "A spider has six legs.",
        ),
        (
            "Tom has 5 apples and buys 7 more.",
            "",
            "He buys 7 more, so he has 5 + 7 = 13 apples.",
        ),
    ];
    let with_margin = |margin: f32, speculate: bool| {
        let mut a = Aligner::new(engine());
        a.copy_margin = margin;
        a.speculate = speculate;
        a
    };
    let (mut greedy, mut fast, mut plain, mut huge) = (
        with_margin(0.0, true),
        with_margin(3.0, true),
        with_margin(3.0, false),
        with_margin(1e6, true),
    );
    let mut rewritten = 0;
    for (q, p, o) in cases {
        let g = block_on(greedy.correct(q, p, o)).unwrap();
        let a = block_on(fast.correct(q, p, o)).unwrap();
        let b = block_on(plain.correct(q, p, o)).unwrap();
        // The margin decides tokens the same way with and without the speculative pass.
        assert_eq!(a.text, b.text, "query {q:?}, original {o:?}");
        // A margin only ever keeps more of the original: its revision follows the original at
        // least as far as greedy decoding's does.
        let common = |x: &str| x.bytes().zip(o.bytes()).take_while(|(c, d)| c == d).count();
        assert!(
            common(&a.text) >= common(&g.text),
            "{:?} vs {:?} ({o:?})",
            a.text,
            g.text
        );
        rewritten += usize::from(g.text.trim() != o.trim());
        let h = block_on(huge.correct(q, p, o)).unwrap();
        if o.contains('=') {
            // A false step gets no margin: it is decoded as greedy decoding decodes it.
            // (Greedy decoding rewrites it here, so a margin would have kept the original.)
            assert_ne!(g.text.trim(), o.trim());
            assert_eq!(
                h.text, g.text,
                "{o:?} is false, the margin must not protect it"
            );
        } else {
            // An overwhelming margin copies a sentence that checks out as it is.
            assert!(
                h.text.trim().starts_with(o.trim()),
                "{:?} from {o:?}",
                h.text
            );
        }
    }
    assert!(
        rewritten > 0,
        "the untrained aligner rewrites some of these without a margin"
    );
}

#[test]
fn with_the_calculator_the_aligner_writes_true_equations_and_speculation_stays_lossless() {
    let q = "Chloe has 18 pencils. She finds 22 more pencils. Then she has 4 times as many. How many pencils does she have?";
    let cases: &[(&str, &str)] = &[
        ("", "She finds 22 more, so she has 18 + 22 = 30 pencils."),
        (
            "She finds 22 more, so she has 18 + 22 = 40 pencils.",
            " Then she has 40 * 4 = 120 pencils.",
        ),
        ("", "17 * 23 = 381."),
        ("", "Chloe has 18 pencils and finds 22 more, 18 + 22 = 40."),
    ];
    let mut fast = Aligner::new(engine());
    fast.calculator = true;
    let mut plain = Aligner::new(engine());
    plain.calculator = true;
    plain.speculate = false;
    let mut seen = 0;
    for (p, o) in cases {
        let a = block_on(fast.correct(q, p, o.trim())).unwrap();
        let b = block_on(plain.correct(q, p, o.trim())).unwrap();
        // Speculation stays lossless with the calculator: a draft token is accepted only where
        // the calculator agrees.
        assert_eq!(a.text, b.text, "original {o:?}");
        for (eq, holds) in equations(&a.text) {
            assert!(holds, "{eq:?} in {:?} (original {o:?})", a.text);
            seen += 1;
        }
    }
    assert!(seen > 0, "the revisions hold equations to check");
    assert_eq!(
        equations("so 18 + 22 = 30 and 40 * 4 = 160."),
        vec![
            ("18 + 22 = 30".to_string(), false),
            ("40 * 4 = 160.".to_string(), true)
        ]
    );
}

#[test]
fn the_prefix_grows_by_exactly_the_corrected_sentence() {
    for q in QUERIES {
        let mut up = Recording {
            inner: upstream(),
            prefixes: vec![],
        };
        let mut aligner = Aligner::new(engine());
        let config = PipelineConfig {
            max_sentences: 4,
            ..Default::default()
        };
        let mut seen = vec![];
        let cancel = CancelToken::default();
        let answer = block_on(align::run(
            &mut up,
            &mut aligner,
            q,
            &config,
            &cancel,
            |ev| {
                seen.push(ev.index);
                ControlFlow::Continue(())
            },
        ))
        .unwrap();
        assert!(!answer.events.is_empty(), "{q}: no sentence");
        assert_eq!(
            seen,
            (0..answer.events.len()).collect::<Vec<_>>(),
            "events arrive in order"
        );
        let mut prefix = String::new();
        for (i, ev) in answer.events.iter().enumerate() {
            assert_eq!(
                up.prefixes[i], prefix,
                "round {i} continued from the corrected prefix"
            );
            assert_eq!(ev.prefix, prefix, "event {i} carries its prefix");
            prefix.push_str(&ev.corrected);
            assert!(ev.aligned);
        }
        assert_eq!(answer.text, prefix);
    }
}

#[test]
fn upstream_mode_leaves_every_sentence_as_written() {
    let config = PipelineConfig {
        max_sentences: 5,
        ..Default::default()
    };
    let a = answer_in(Mode::Upstream, QUERIES[2], &config).unwrap();
    assert!(!a.events.is_empty(), "the upstream wrote something");
    assert!(
        a.events
            .iter()
            .all(|e| !e.changed && !e.aligned && e.aligner_tokens == 0)
    );
    assert_eq!(
        a.text,
        a.events
            .iter()
            .map(|e| e.original.as_str())
            .collect::<String>()
    );
}

#[test]
fn after_max_rounds_the_upstream_continues_uncorrected() {
    let config = PipelineConfig {
        max_rounds: 1,
        max_sentences: 6,
    };
    let a = answer(QUERIES[1], &config).unwrap();
    assert!(
        a.events.len() >= 2,
        "three fruits take more than one sentence"
    );
    assert!(a.events[0].aligned);
    for rest in &a.events[1..] {
        assert!(
            !rest.aligned && !rest.changed && rest.aligner_tokens == 0,
            "the rest is the upstream's own: {rest:?}"
        );
    }
    let text: String = a.events.iter().map(|e| e.corrected.as_str()).collect();
    assert_eq!(a.text, text);
}

#[test]
fn posthoc_mode_corrects_a_given_answer_sentence_by_sentence() {
    let answer = "17 * 23 = 381. So the answer is 381.\nThat is all.";
    let mut aligner = Aligner::new(engine());
    let mut never = upstream();
    let a = block_on(align::run_mode(
        Mode::Posthoc,
        &mut never,
        &mut aligner,
        "What is 17 * 23?",
        Some(answer),
        &PipelineConfig::default(),
        &CancelToken::default(),
        |_| ControlFlow::Continue(()),
    ))
    .unwrap();
    let originals: Vec<&str> = a.events.iter().map(|e| e.original.as_str()).collect();
    assert_eq!(originals, split_sentences(answer));
    assert_eq!(
        never.cached_tokens(),
        0,
        "posthoc mode never runs the upstream"
    );
}

#[test]
fn cancelling_mid_sentence_stops_the_work() {
    let mut up = LocalUpstream::new(
        engine(),
        GenerateOptions {
            max_tokens: 4000,
            ..Default::default()
        },
    );
    let cancel = up.cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        cancel.cancel();
    });
    // Asked for a long answer on one line, the upstream would write far past 200 ms.
    let r = block_on(up.rest(
        "Count from 1 to 3000, separated by commas, on one line.",
        "",
    ));
    t.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(up.cached_tokens() < 4000);
}

#[test]
fn an_empty_query_is_a_clear_error() {
    let r = answer("   ", &PipelineConfig::default());
    assert!(matches!(r, Err(Error::EmptyInput(_))));
}

#[test]
fn evaluation_by_rounds_matches_real_runs_with_max_rounds() {
    use stream_aligner::train::evaluate::{Evaluator, Summary};
    let q = "Tom has 5 apples and buys 7 more. Then he eats 3. How many apples does he have?";
    let mut ev = Evaluator::new(engine(), engine(), 3, 96);
    ev.max_sentences = 6;
    let r = block_on(ev.problem(q, 9.0)).unwrap();
    assert_eq!(r.stream.len(), 3);
    // Each "k rounds" answer is what the loop itself gives with max_rounds = k.
    for k in 1..=3 {
        let config = PipelineConfig {
            max_rounds: k,
            max_sentences: 6,
        };
        let real = answer(q, &config).unwrap();
        assert_eq!(r.stream[k - 1].text, real.text, "after {k} rounds");
    }
    let s = Summary::new(&[r.clone(), r]);
    assert_eq!(s.problems, 2);
    assert_eq!(s.stream.len(), 3);
    let json = serde_json::to_value(&s).unwrap();
    for key in ["upstream", "aligner_alone", "aligner_whole"] {
        let a = json[key]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{key}: {a}");
    }
    assert!(json["stream"]["1"]["accuracy"].is_number());
    assert!(json["rounds"]["1"]["copy_rate"].is_number());
}

/// An upstream that always ends its answer after one sentence, whatever the prefix.
struct OneLiner(&'static str);

impl Upstream for OneLiner {
    async fn next_sentence(&mut self, _: &str, prefix: &str) -> Result<UpstreamSentence> {
        let space = if prefix.is_empty() { "" } else { " " };
        Ok(UpstreamSentence {
            text: format!("{space}{}", self.0),
            last: true,
            tokens: 1,
        })
    }
    async fn rest(&mut self, _: &str, _: &str) -> Result<String> {
        Ok(String::new())
    }
}

#[test]
fn a_rewritten_last_sentence_lets_the_upstream_go_on_and_a_copied_one_ends_the_answer() {
    use stream_aligner::train::{Oracle, generate};
    let p = generate(5, &[]);
    let config = PipelineConfig {
        max_sentences: 10,
        ..Default::default()
    };
    let run = |upstream: &mut OneLiner| {
        block_on(align::run(
            upstream,
            &mut Oracle::new([p.clone()]),
            &p.question,
            &config,
            &CancelToken::default(),
            |_| ControlFlow::Continue(()),
        ))
        .unwrap()
    };
    // Each time the upstream ends on a wrong answer, the oracle rewrites it into the next step,
    // and the upstream is asked again from there: the answer is the whole solution.
    let answer = run(&mut OneLiner("The answer is 0."));
    assert_eq!(
        split_sentences(&answer.text)
            .iter()
            .map(|s| s.trim())
            .collect::<Vec<_>>(),
        p.solution().lines().collect::<Vec<_>>()
    );
    // A last sentence that is right is copied, and the answer ends with it.
    let right = format!("The answer is {}.", p.answer).leak();
    let answer = run(&mut OneLiner(right));
    assert_eq!(answer.events.len(), 1);
    assert_eq!(answer.text, *right);
    assert_eq!(answer.stop, Stop::Finished);
}

/// An upstream that writes the same sentence forever, never ending its answer.
struct Stuck;

impl Upstream for Stuck {
    async fn next_sentence(&mut self, _: &str, _: &str) -> Result<UpstreamSentence> {
        Ok(UpstreamSentence {
            text: " Again.".into(),
            last: false,
            tokens: 1,
        })
    }
    async fn rest(&mut self, _: &str, _: &str) -> Result<String> {
        Ok(" Again.".into())
    }
}

/// The loop on `Stuck` with nothing corrected, and the events it emitted.
fn stuck(
    config: &PipelineConfig,
    cancel: &CancelToken,
    stop_at: usize,
) -> (Result<align::Answer>, Vec<usize>) {
    let mut seen = Vec::new();
    let a = block_on(align::run(
        &mut Stuck,
        &mut Uncorrected,
        "Say it.",
        config,
        cancel,
        |ev| {
            seen.push(ev.index);
            match seen.len() == stop_at {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        },
    ));
    (a, seen)
}

#[test]
fn the_answer_says_why_it_stopped_and_a_repeat_is_left_out() {
    let config = PipelineConfig::default();
    let none = CancelToken::default();
    // The second " Again." repeats the first: the loop stops, without it.
    let (a, seen) = stuck(&config, &none, usize::MAX);
    let a = a.unwrap();
    assert_eq!((a.stop, seen), (Stop::Repeat, vec![0]));
    assert_eq!(a.text, " Again.");
    // The caller's Break stops it after the event it answered.
    let (a, seen) = stuck(&config, &none, 1);
    assert_eq!((a.unwrap().stop, seen), (Stop::Caller, vec![0]));
    // The sentence limit.
    let one = PipelineConfig {
        max_sentences: 1,
        ..Default::default()
    };
    let (a, _) = stuck(&one, &none, usize::MAX);
    assert_eq!(a.unwrap().stop, Stop::MaxSentences);
    // A cancelled answer does no round.
    let cancelled = CancelToken::default();
    cancelled.cancel();
    let (a, seen) = stuck(&config, &cancelled, usize::MAX);
    assert!(matches!(a, Err(Error::Cancelled)), "{a:?}");
    assert!(seen.is_empty());
}

/// The shipped aligner: the base with the trained adapter in models/aligner/lora/.
fn shipped_aligner() -> Aligner {
    let mut a = Aligner::new(common::shipped_aligner_engine());
    a.calculator = true;
    a
}

#[test]
fn the_shipped_aligner_answers_the_demo_example_and_keeps_a_correct_answer() {
    use stream_aligner::train::evaluate::predicted_answer;
    // The demo page's example (www/index.html), answered by the stream loop on the CPU path.
    let q =
        "Mia has 12 apples. She buys 5 more and then gives away 3. How many apples does she have?";
    let config = PipelineConfig {
        max_sentences: 8,
        ..Default::default()
    };
    let mut aligner = shipped_aligner();
    let cancel = CancelToken::default();
    let streamed = block_on(align::run(
        &mut upstream(),
        &mut aligner,
        q,
        &config,
        &cancel,
        |_| ControlFlow::Continue(()),
    ))
    .unwrap();
    assert_eq!(
        predicted_answer(&streamed.text),
        Some(14.0),
        "{}",
        streamed.text
    );
    // A correct answer in someone else's words, corrected post hoc, stays correct.
    let right = "Mia starts with 12 apples. After buying 5 more she has 12 + 5 = 17 apples. \
                 She gives away 3, so 17 - 3 = 14 apples are left. The answer is 14.";
    let kept = block_on(align::run(
        &mut stream_aligner::upstream::Posthoc::new(right),
        &mut aligner,
        q,
        &PipelineConfig::default(),
        &cancel,
        |_| ControlFlow::Continue(()),
    ))
    .unwrap();
    assert_eq!(predicted_answer(&kept.text), Some(14.0), "{}", kept.text);
}

/// An upstream whose one-sentence answer is the `seed`-th of `answers` (the seed its last
/// `reseed` set), remembering the seeds it was given.
struct Seeded {
    answers: &'static [&'static str],
    seed: u64,
    seeds: Vec<u64>,
}

impl Upstream for Seeded {
    async fn next_sentence(&mut self, _: &str, prefix: &str) -> Result<UpstreamSentence> {
        let text = match prefix.is_empty() {
            true => self.answers[self.seed as usize % self.answers.len()].to_string(),
            false => String::new(),
        };
        Ok(UpstreamSentence {
            text,
            last: true,
            tokens: 1,
        })
    }
    async fn rest(&mut self, _: &str, _: &str) -> Result<String> {
        Ok(String::new())
    }
    fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.seeds.push(seed);
    }
}

#[test]
fn best_of_runs_the_upstream_once_then_the_sampler_per_seed_and_sends_the_chosen_answers_events() {
    let q = "Lena buys 7 kilograms at 3 dollars per kilogram and pays with 50 dollars. What is her change?";
    let mut greedy = OneLiner("3 + 7 = 10 kilograms. The answer is 10.");
    let mut sampler = Seeded {
        answers: &[
            "7 * 3 = 21, so 50 - 21 = 29. The answer is 29.",
            "3 * 7 = 21. The answer is 21.",
            "7 * 3 = 21 dollars; 50 - 21 = 29 dollars. The answer is 29.",
        ],
        seed: 0,
        seeds: vec![],
    };
    let mut sent = Vec::new();
    let b = block_on(align::best_of(
        &mut greedy,
        &mut sampler,
        &mut Uncorrected,
        q,
        &PipelineConfig::default(),
        4,
        10,
        &CancelToken::default(),
        |ev| {
            sent.push(ev.corrected.clone());
            ControlFlow::Continue(())
        },
    ))
    .unwrap();
    assert_eq!(sampler.seeds, vec![10, 11, 12], "one seed a sampled run");
    assert_eq!(b.answers.len(), 4);
    assert!(
        b.answers[0].text.contains("3 + 7"),
        "the first run is the upstream's"
    );
    // Runs 2 and 3 use every number and agree on 29: the first of them is kept.
    assert_eq!(b.chosen, 2, "{:?}", b.answers);
    assert_eq!(
        sent,
        vec![b.answer().text.clone()],
        "only the chosen answer's events"
    );
    let none = block_on(align::best_of(
        &mut greedy,
        &mut sampler,
        &mut Uncorrected,
        q,
        &PipelineConfig::default(),
        0,
        0,
        &CancelToken::default(),
        |_| ControlFlow::Continue(()),
    ));
    assert!(matches!(none, Err(Error::EmptyInput(_))));
}

#[test]
fn the_local_upstream_samples_by_its_seed() {
    let mut up = LocalUpstream::new(
        engine(),
        GenerateOptions {
            max_tokens: 24,
            sampler: stream_aligner::model::SamplerConfig {
                temperature: 1.0,
                ..stream_aligner::model::SamplerConfig::greedy()
            },
            ..Default::default()
        },
    );
    let q = "Write one sentence about the sea.";
    let mut at = |seed: u64| {
        up.reseed(seed);
        block_on(up.next_sentence(q, "")).unwrap().text
    };
    let (a, b, a_again) = (at(1), at(2), at(1));
    assert_eq!(a, a_again, "a seed reproduces its sample");
    assert_ne!(a, b, "another seed samples another sentence");
}

#[test]
fn a_step_that_does_not_hold_up_is_drawn_again_until_one_does() {
    let q = "Lena buys 7 kilograms at 3 dollars per kilogram. How much does she pay?";
    let one = PipelineConfig {
        max_sentences: 1,
        ..Default::default()
    };
    let sampler = || Seeded {
        answers: &[
            "She pays 7 * 9 = 63 dollars.",
            "She pays 7 * 3 = 21 dollars.",
            "She pays 3 * 7 = 21 dollars.",
        ],
        seed: 0,
        seeds: vec![],
    };
    let run = |greedy: &'static str, sampler: &mut Seeded, tries: usize| {
        let mut corrector = align::Resampled {
            aligner: &mut Uncorrected,
            sampler,
            tries,
            seed: 3,
        };
        let cancel = CancelToken::default();
        let quiet = |_: &align::SentenceEvent| ControlFlow::Continue(());
        let mut up = OneLiner(greedy);
        block_on(align::run(&mut up, &mut corrector, q, &one, &cancel, quiet)).unwrap()
    };
    // 4 comes from nowhere: seed 3 draws 63 (9 from nowhere), seed 4 draws the true step.
    let mut s = sampler();
    let a = run("She pays 7 * 4 = 28 dollars.", &mut s, 3);
    assert_eq!(s.seeds, vec![3, 4], "draws stop at the first that holds up");
    assert_eq!(a.events[0].original, "She pays 7 * 4 = 28 dollars.");
    assert_eq!(a.events[0].corrected, "She pays 7 * 3 = 21 dollars.");
    assert!(a.events[0].changed);
    let mut s = sampler();
    let a = run("She pays 7 * 4 = 28 dollars.", &mut s, 1);
    assert_eq!(s.seeds, vec![3]);
    assert_eq!(
        a.events[0].corrected, "She pays 7 * 4 = 28 dollars.",
        "none held up: the aligner's own"
    );
    let mut s = sampler();
    let a = run("She pays 3 * 7 = 21 dollars.", &mut s, 3);
    assert!(s.seeds.is_empty(), "a step that holds up draws nothing");
    assert!(!a.events[0].changed);
}

#[test]
fn a_step_its_quantities_rule_out_is_repaired_to_the_operation_the_aligner_finds_likeliest() {
    let q = "Ana saves 15 dollars a week for 8 weeks, then spends 47 dollars on a jacket. How much \
             money does she have left?";
    let p = "To solve this problem, we need to calculate the total amount of money Ana has left \
             after 8 weeks and then subtract the amount she spent on the jacket.";
    // The aligner rewrites the upstream's wrong operation into another wrong one ("15 - 8 =
    // 7"), a rate taken from a count; "15 * 8 = 120" is the one option that fits.
    let upstream = "Ana saves 15 dollars a week for 8 weeks, so she saves 15 + 8 = 23 dollars.";
    let mut aligner = shipped_aligner();
    aligner.repair_margin = None;
    let plain = block_on(aligner.correct(q, p, upstream)).unwrap();
    aligner.repair_margin = Some(align::DEFAULT_REPAIR_MARGIN);
    let repaired = block_on(aligner.correct(q, p, upstream)).unwrap();
    assert!(
        repaired.text.contains("15 * 8 = 120") && !plain.text.contains("15 * 8 = 120"),
        "{:?} (without the repair: {:?})",
        repaired.text,
        plain.text
    );
    assert!(
        repaired.passes > plain.passes,
        "the options were scored: {} passes against {}",
        repaired.passes,
        plain.passes
    );
    // A step that fits is the aligner's own revision, at no extra cost.
    let right = "Ana saves 15 dollars a week, so 15 * 8 = 120 dollars.";
    aligner.repair_margin = None;
    let plain = block_on(aligner.correct(q, p, right)).unwrap();
    aligner.repair_margin = Some(align::DEFAULT_REPAIR_MARGIN);
    assert_eq!(block_on(aligner.correct(q, p, right)).unwrap(), plain);
    // The margin is a prior like the copy margin's: a step the aligner copies with confidence
    // stays unless the option is near it (here "15 * 8" is 8.5 nats below the copy).
    let copied = "Ana saves 15 dollars a week, so 15 - 8 = 7 dollars.";
    let kept = block_on(aligner.correct(q, p, copied)).unwrap();
    assert_eq!(kept.text, copied);
    aligner.repair_margin = Some(10.0);
    let wide = block_on(aligner.correct(q, p, copied)).unwrap();
    assert!(wide.text.contains("15 * 8 = 120"), "{:?}", wide.text);
}

#[test]
fn slips_of_the_thread_are_mended_whatever_the_aligner_thinks_of_them() {
    // Each of these steps the aligner copies; the question's words say what it should have been.
    let mut aligner = shipped_aligner();
    let cases = [
        // Against the event's cue: "left" is a loss (the aligner scored "32 - 9" 10-20 nats
        // below its own sum).
        (
            "There were 64 people at a party. Half of them left at 10 o'clock and 9 more left at \
             11. How many people were still there after 11?",
            "Half of them left at 10 o'clock, so 64 / 2 = 32 people.",
            " 9 more left at 11, so 32 + 9 = 41 people.",
            "32 - 9 = 23",
        ),
        // Shared with 3 friends by one who keeps a share: 4 share.
        (
            "Tara has 84 stickers. She splits them equally with her 3 friends and keeps one \
             share. How many stickers does Tara have?",
            "Tara has 84 stickers.",
            " She splits them equally with her 3 friends and keeps one share, so 84 / 3 = 28 \
             stickers.",
            "84 / 4 = 21",
        ),
        // A gain added to the part a loss took, not to the rest.
        (
            "A farmer has 132 chickens. He sells a third of them at the market and then buys 15 \
             chicks. How many birds does he have now?",
            "He sells a third of them at the market, so 132 / 3 = 44 chickens.",
            " Then buys 15 chicks, so 44 + 15 = 59 birds.",
            "132 - 44 + 15 = 103",
        ),
    ];
    for (q, prefix, step, mended) in cases {
        aligner.repair_margin = None;
        let plain = block_on(aligner.correct(q, prefix, step)).unwrap();
        assert!(!plain.text.contains(mended), "{:?}", plain.text);
        aligner.repair_margin = Some(align::DEFAULT_REPAIR_MARGIN);
        let repaired = block_on(aligner.correct(q, prefix, step)).unwrap();
        assert!(repaired.text.contains(mended), "{:?}", repaired.text);
    }
}
