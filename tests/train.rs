//! Training the aligner: batches walk seeded epochs, the loss falls on a tiny run, a stopped run
//! resumed from its checkpoint ends with the uninterrupted run's adapter bit for bit, a step on
//! the GPU is the CPU's, adapters round-trip through safetensors and agree on every path, and a
//! mismatched adapter is refused.

mod common;

use std::ops::ControlFlow;

use futures::executor::block_on;
use stream_aligner::Engine;
use stream_aligner::align::AlignerPrompt;
use stream_aligner::error::Error;
use stream_aligner::model::{Adapter, Backend, EngineDevice, Logits, LoraConfig, Target};
use stream_aligner::train::trainer::read_records;
use stream_aligner::train::{RunEnd, Schedule, Split, SplitConfig, TrainConfig, Trainer};

fn tiny() -> TrainConfig {
    TrainConfig {
        lora: LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec![Target::Q, Target::V, Target::Down],
        },
        lr: 1e-2,
        warmup: 1,
        steps: 4,
        // Batches of 2 over 3 examples: epochs end mid-batch, so the cursor matters.
        accum: 2,
        seed: 7,
        ..TrainConfig::default()
    }
}

/// The first records of the shipped training data, split as `train --limit 3` would.
fn split(engine: &Engine) -> Split {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/aligner/onpolicy-train.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let head: String = text.lines().take(12).map(|l| format!("{l}\n")).collect();
    let config = SplitConfig {
        holdout_every: 2,
        limit: Some(3),
        eval_examples: 1,
        ..SplitConfig::default()
    };
    let split = Split::new(
        engine,
        &AlignerPrompt::default(),
        &read_records(&head).unwrap(),
        &config,
    )
    .unwrap();
    assert_eq!(split.train.len(), 3, "--limit keeps the first 3");
    assert_eq!(split.held.len(), 1, "one held-out example is scored");
    split
}

fn trainer(config: TrainConfig) -> (Trainer, Split) {
    let engine = Engine::load(
        &common::model_path(),
        &block_on(EngineDevice::training(Backend::CpuReference)).unwrap(),
    )
    .unwrap();
    let split = split(&engine);
    (Trainer::new(engine, config).unwrap(), split)
}

/// An adapter file's tensors (f32 bytes), by name (its metadata's order varies).
fn tensors(safetensors: &[u8]) -> Vec<(String, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(safetensors).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// The trained adapter's tensors.
fn weights(t: &Trainer) -> Vec<(String, Vec<u8>)> {
    tensors(
        &block_on(t.adapter())
            .unwrap()
            .to_safetensors(false)
            .unwrap(),
    )
}

#[test]
fn batches_walk_seeded_epochs_from_the_cursor() {
    let (mut t, _) = trainer(tiny());
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(t.next_batch(3));
    }
    let (e0, e1) = (t.order(0, 3), t.order(1, 3));
    assert_eq!(
        seen,
        [
            e0[..2].to_vec(),
            e0[2..].to_vec(),
            e1[..2].to_vec(),
            e1[2..].to_vec()
        ]
    );
    assert_eq!((t.state.epoch, t.state.cursor), (1, 3));
}

#[test]
fn a_tiny_run_lowers_the_loss_and_resumes_exactly() {
    let schedule = |dir: &std::path::Path| Schedule {
        eval_every: 0,
        checkpoint_every: 0,
        checkpoint: Some(dir.to_path_buf()),
    };
    // Uninterrupted: four steps, the held-out loss after the last.
    let (mut u, split) = trainer(tiny());
    let before = block_on(u.eval_loss(&split.train)).unwrap();
    let mut evals = Vec::new();
    let end = block_on(u.run(&split, &schedule(&tempdir("whole")), |s, e| {
        evals.push((s.step, e.is_some()));
        ControlFlow::Continue(())
    }))
    .unwrap();
    assert_eq!(end, RunEnd::Finished);
    assert_eq!(evals, [(1, false), (2, false), (3, false), (4, true)]);
    let after = block_on(u.eval_loss(&split.train)).unwrap();
    assert!(
        after < 0.8 * before,
        "the loss on the corrected tokens falls: {before:.4} -> {after:.4}"
    );

    // Stopped after the first step (mid-epoch), then resumed by a new trainer: the same weights.
    let dir = tempdir("resume");
    let (mut s, _) = trainer(tiny());
    let end = block_on(s.run(&split, &schedule(&dir), |_, _| ControlFlow::Break(()))).unwrap();
    assert_eq!(end, RunEnd::Stopped);
    assert_eq!((s.state.step, s.state.epoch, s.state.cursor), (1, 0, 2));
    let (mut r, _) = trainer(tiny());
    r.resume(&dir).unwrap();
    assert_eq!(r.state, s.state);
    let end = block_on(r.run(&split, &schedule(&dir), |_, _| ControlFlow::Continue(()))).unwrap();
    assert_eq!(end, RunEnd::Finished);
    assert_eq!(r.state, u.state);
    assert!(
        weights(&r) == weights(&u),
        "the resumed run's adapter is the uninterrupted run's, bit for bit"
    );

    // A new run can start from a trained adapter (with a schedule of its own).
    let adapter = std::fs::read(dir.join("adapter.safetensors")).unwrap();
    let (mut i, _) = trainer(tiny());
    i.init_from(&adapter).unwrap();
    assert_eq!(i.state.step, 0);
    assert!(weights(&i) == tensors(&adapter), "started from the adapter");

    // Another configuration can't resume this checkpoint, nor start from its adapter.
    let mut other = tiny();
    other.lora.rank = 4;
    let (mut o, _) = trainer(other);
    assert!(o.resume(&dir).is_err());
    assert!(matches!(o.init_from(&adapter), Err(Error::Adapter(_))));
}

/// Training on the GPU: burn's autodiff on the wgpu device (Vulkan natively; lavapipe, a CPU
/// Vulkan device, where there is no GPU), the same model code as on the CPU. The held-out loss,
/// one optimizer step's loss and the held-out loss after it agree with the CPU's to 1e-3 (f32
/// sums in another order), and the step lowers the loss. STREAM_ALIGNER_SKIP_WGPU=1 skips it.
#[cfg(feature = "wgpu")]
#[test]
fn training_on_the_gpu_takes_the_steps_the_cpu_takes() {
    let Some(device) = common::wgpu_device(EngineDevice::training(Backend::Wgpu)) else {
        return;
    };
    assert!(device.device.is_autodiff());
    let gpu_engine = Engine::load(&common::model_path(), &device).unwrap();
    let (mut cpu, split) = trainer(tiny());
    let mut gpu = Trainer::new(gpu_engine, tiny()).unwrap();
    let batch: Vec<_> = split.train[..2].iter().collect();
    let mut losses = Vec::new();
    for t in [&mut cpu, &mut gpu] {
        let before = block_on(t.eval_loss(&split.held)).unwrap();
        let step = block_on(t.step(&batch)).unwrap();
        let after = block_on(t.eval_loss(&split.held)).unwrap();
        losses.push([before, step.loss, after]);
    }
    eprintln!(
        "held-out before, step, held-out after: cpu {:?}, wgpu {:?}",
        losses[0], losses[1]
    );
    for (c, g) in losses[0].iter().zip(&losses[1]) {
        assert!(
            (c - g).abs() <= 1e-3,
            "cpu {:?} against wgpu {:?}",
            losses[0],
            losses[1]
        );
    }
    assert!(
        losses[1][2] < losses[1][0],
        "the step lowers the held-out loss on wgpu"
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("stream-aligner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// An adapter with every B nonzero (a fresh one is the identity update).
fn random_adapter(engine: &Engine, rank: usize) -> Adapter {
    let config = LoraConfig {
        rank,
        alpha: 2.0 * rank as f32,
        targets: Target::ALL.to_vec(),
    };
    let fresh = Adapter::init(
        &engine.model.config,
        config.clone(),
        1,
        &engine.model.device.device,
    )
    .unwrap();
    // Round-trip through bytes with B filled in: A's values serve as B's.
    let st = safetensors_fill_b(&fresh.to_safetensors(false).unwrap());
    Adapter::from_safetensors(&st, &engine.model.config, &engine.model.device.device).unwrap()
}

/// Rewrites every lora_b tensor of an f32 adapter file with small deterministic values.
fn safetensors_fill_b(bytes: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut out = bytes.to_vec();
    for (name, info) in header.as_object().unwrap() {
        if !name.ends_with("lora_b") {
            continue;
        }
        let off = info["data_offsets"].as_array().unwrap();
        let (s, e) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        for (i, c) in out[8 + n + s..8 + n + e].chunks_exact_mut(4).enumerate() {
            let v = 0.02 * (((i * 7919) % 13) as f32 - 6.0) / 6.0;
            c.copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[test]
fn an_adapter_changes_the_model_the_same_way_on_every_path() {
    let prompt =
        common::engine().chat_prompt(&[stream_aligner::text::Message::user("What is 12 + 5?")]);
    let ids = prompt.unwrap();
    let logits = |e: &Engine| {
        let mut cache = e.model.new_cache();
        block_on(e.model.logits(&ids, &mut cache, Logits::Last)).unwrap()
    };
    // The exact host path (f32 activations) against the tensor path; the 8-bit path (the
    // default `cpu`) within the error its rounding of the activations brings.
    let cpu = Engine::load(&common::model_path(), &EngineDevice::cpu_f32()).unwrap();
    let reference = Engine::load(&common::model_path(), &EngineDevice::cpu_reference()).unwrap();
    let adapter = random_adapter(&cpu, 4);
    let bytes = adapter.to_safetensors(false).unwrap();
    let on_cpu = cpu.with_adapter_bytes(&bytes).unwrap();
    let on_ref = reference.with_adapter_bytes(&bytes).unwrap();
    let on_int8 = common::engine().with_adapter_bytes(&bytes).unwrap();
    let (base, a_cpu, a_ref) = (logits(&cpu), logits(&on_cpu), logits(&on_ref));
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        max_diff(&base, &a_cpu) > 0.05,
        "the adapter changes the logits"
    );
    assert!(
        max_diff(&a_cpu, &a_ref) < 0.05,
        "CPU kernels + host LoRA agree with the tensor path: {}",
        max_diff(&a_cpu, &a_ref)
    );
    let int8 = max_diff(&logits(&on_int8), &a_ref);
    assert!(int8 < 1.0, "8-bit activations + host LoRA: {int8}");
    // Shipped in f16: the same model within f16 rounding.
    let half = cpu
        .with_adapter_bytes(&adapter.to_safetensors(true).unwrap())
        .unwrap();
    assert!(max_diff(&a_cpu, &logits(&half)) < 0.05);
}

#[test]
fn a_mismatched_adapter_is_refused_with_a_clear_error() {
    let engine = common::engine();
    let c = &engine.model.config;
    let dev = &engine.model.device.device;
    let good = Adapter::init(c, LoraConfig::default(), 0, dev)
        .unwrap()
        .to_safetensors(true)
        .unwrap();
    assert!(engine.with_adapter_bytes(&good).is_ok());

    let expect = |bytes: &[u8], needle: &str| match engine.with_adapter_bytes(bytes) {
        Err(e @ Error::Adapter(_)) => {
            assert!(e.to_string().contains(needle), "'{e}' mentions '{needle}'")
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("accepted a bad adapter (wanted '{needle}')"),
    };
    // Another base: same shapes, other fingerprint.
    let mut other = c.clone();
    other.fingerprint = "SmolLM2-360M:0123456789abcdef".into();
    let foreign = Adapter::init(&other, LoraConfig::default(), 0, dev).unwrap();
    expect(&foreign.to_safetensors(true).unwrap(), "another base model");
    // The config says rank 9, the tensors are rank 8 (same header length, so it still parses).
    let mut wrong_rank = good.clone();
    let at = find(&wrong_rank, br#"\"rank\":8"#).expect("the rank is in the header");
    wrong_rank[at + 9] = b'9';
    expect(&wrong_rank, "expected");
    // Not an adapter at all, and a truncated one.
    expect(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "format");
    expect(&good[..good.len() / 2], "safetensors");
    expect(b"", "safetensors");
    // A model with fewer layers than the adapter was made for.
    let mut shallow = c.clone();
    shallow.n_layer = 2;
    let err = Adapter::from_safetensors(&good, &shallow, dev).unwrap_err();
    assert!(err.to_string().contains("tensors"), "{err}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
