//! Stage 1: LoRA training of the aligner on correction records, with burn's autodiff on the
//! same model code as inference.
//!
//! Each record becomes the aligner's prompt (query, corrected prefix, the upstream's sentence)
//! followed by the corrected sentence and the end-of-turn token. The loss is the cross-entropy
//! of the corrected tokens only: the paper's residual correction loss
//! `-log p(corrected | query, prefix, original)`. AdamW with linear warmup and cosine decay,
//! gradient accumulation, and checkpoints a run resumes from.
//!
//! [`Split`] turns records into training and held-out examples; [`Trainer::run`] walks seeded
//! epochs of the training examples batch by batch, evaluating and checkpointing on a
//! [`Schedule`]. The epoch and the cursor in its order are part of the checkpoint, so a run
//! stopped and resumed takes exactly the steps an uninterrupted one would.

use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor, TensorData, activation};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::align::AlignerPrompt;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::device::read_f32;
use crate::model::{Adapter, LoraConfig, LoraWeights};

/// One round of the stream loop, annotated: what the aligner saw and what it should write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub question: String,
    pub prefix: String,
    pub original: String,
    pub corrected: String,
    #[serde(default)]
    pub copy: bool,
    #[serde(default)]
    pub family: usize,
    #[serde(default)]
    pub seed: u64,
    /// What the record teaches (`reference_step`, `wrong_result`, ...: synthetic records name it;
    /// datagen's rounds leave it empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// Reads JSONL records; a bad line is an error naming it.
pub fn read_records(text: &str) -> Result<Vec<Record>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Data(format!("training data line {}: {e}", i + 1)))
        })
        .collect()
}

/// A tokenized record: the prompt's tokens, then the answer's (corrected sentence + end of turn).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Where the answer starts in `ids`.
    pub answer_from: usize,
}

impl Example {
    pub fn new(engine: &Engine, prompt: &AlignerPrompt, r: &Record) -> Result<Self> {
        let p = prompt.render(&engine.template, &r.question, &r.prefix, &r.original)?;
        let mut ids = engine.tokenizer.encode(&p)?;
        let answer_from = ids.len();
        ids.extend(engine.tokenizer.encode(&r.corrected)?);
        ids.push(engine.tokenizer.eos);
        Ok(Self { ids, answer_from })
    }

    pub fn answer_tokens(&self) -> usize {
        self.ids.len() - self.answer_from
    }
}

/// How records become examples: which are held out, which are too long, how many are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitConfig {
    /// Examples longer than this many tokens are skipped.
    pub max_tokens: usize,
    /// Records whose seed % N == N - 1 are held out (scored, never trained on); 0 or 1: none.
    pub holdout_every: u64,
    /// Keep only the first N training examples (tiny runs).
    pub limit: Option<usize>,
    /// Held-out examples scored at each evaluation, evenly spaced through the held-out ones.
    pub eval_examples: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            max_tokens: 384,
            holdout_every: 10,
            limit: None,
            eval_examples: 48,
        }
    }
}

impl SplitConfig {
    fn holds_out(&self, r: &Record) -> bool {
        self.holdout_every > 1 && r.seed % self.holdout_every == self.holdout_every - 1
    }
}

/// Records tokenized and split into training and held-out examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<Example>,
    /// The held-out examples scored at each evaluation.
    pub held: Vec<Example>,
    /// Records held out (before choosing the scored ones).
    pub held_out: usize,
    /// Records skipped as longer than `max_tokens`.
    pub skipped: usize,
}

impl Split {
    pub fn new(
        engine: &Engine,
        prompt: &AlignerPrompt,
        records: &[Record],
        config: &SplitConfig,
    ) -> Result<Self> {
        let (mut train, mut held, mut skipped) = (Vec::new(), Vec::new(), 0);
        for r in records {
            let ex = Example::new(engine, prompt, r)?;
            if ex.ids.len() > config.max_tokens {
                skipped += 1;
            } else if config.holds_out(r) {
                held.push(ex);
            } else {
                train.push(ex);
            }
        }
        if let Some(n) = config.limit {
            train.truncate(n);
        }
        let held_out = held.len();
        // Evenly spaced through the held-out records, so every data file is scored.
        let held = match config.eval_examples {
            0 => Vec::new(),
            n => held
                .into_iter()
                .step_by(held_out.div_ceil(n).max(1))
                .collect(),
        };
        Ok(Self {
            train,
            held,
            held_out,
            skipped,
        })
    }

    /// Mean tokens per training example.
    pub fn mean_tokens(&self) -> f64 {
        let total: usize = self.train.iter().map(|e| e.ids.len()).sum();
        total as f64 / self.train.len().max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    /// Peak learning rate.
    pub lr: f64,
    /// Optimizer steps of linear warmup; then cosine decay to `lr * min_lr_ratio` at `steps`.
    pub warmup: usize,
    pub steps: usize,
    pub min_lr_ratio: f64,
    /// Examples per optimizer step (gradient accumulation: one example per forward pass).
    pub accum: usize,
    pub weight_decay: f32,
    /// Gradients are clipped to this global norm.
    pub clip_norm: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            lr: 1e-3,
            warmup: 20,
            steps: 400,
            min_lr_ratio: 0.1,
            accum: 8,
            weight_decay: 0.0,
            clip_norm: 1.0,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

/// Where a run is: enough to resume it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    pub epoch: usize,
    /// Examples of this epoch's order already consumed.
    pub cursor: usize,
    pub tokens_seen: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    /// Answer tokens (the ones the loss covers) and all tokens run.
    pub answer_tokens: usize,
    pub tokens: usize,
}

/// When a run evaluates the held-out loss and writes checkpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    /// The held-out loss every this many steps (0: only after the last).
    pub eval_every: usize,
    /// A checkpoint every this many steps (0: only after the last, or when stopped).
    pub checkpoint_every: usize,
    /// Where checkpoints go; none are written without it.
    pub checkpoint: Option<PathBuf>,
}

/// How [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// `config.steps` steps taken.
    Finished,
    /// The callback stopped it (after a checkpoint, when the schedule writes them).
    Stopped,
}

fn every(step: usize, n: usize) -> bool {
    n > 0 && step.is_multiple_of(n)
}

fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.clip_norm)))
        .init()
}

pub struct Trainer {
    engine: Engine,
    pub config: TrainConfig,
    adapter: Adapter,
    weights: LoraWeights,
    optim: ModuleOptimizer,
    pub state: TrainState,
}

impl Trainer {
    /// `engine` must run on an autodiff device (`EngineDevice::training`).
    pub fn new(engine: Engine, config: TrainConfig) -> Result<Self> {
        if !engine.model.device.device.is_autodiff() {
            return Err(Error::Device("training needs an autodiff device".into()));
        }
        if config.accum == 0 || config.steps == 0 {
            return Err(Error::Config("accum and steps must be positive".into()));
        }
        let adapter = Adapter::init(
            &engine.model.config,
            config.lora.clone(),
            config.seed,
            &engine.model.device.device,
        )?;
        let optim = optimizer(&config);
        Ok(Self {
            weights: adapter.weights.clone(),
            adapter,
            engine,
            config,
            optim,
            state: TrainState::default(),
        })
    }

    /// Starts from a trained adapter (same base, rank, alpha and targets) instead of a fresh one:
    /// a second run continues the training of the first with a schedule of its own.
    pub fn init_from(&mut self, safetensors: &[u8]) -> Result<()> {
        let device = &self.engine.model.device.device;
        let adapter = Adapter::from_safetensors(safetensors, &self.engine.model.config, device)?;
        if adapter.config != self.config.lora {
            return Err(Error::Adapter(format!(
                "the initial adapter is {:?}, this run trains {:?}",
                adapter.config, self.config.lora
            )));
        }
        self.weights = adapter.weights.clone();
        self.adapter = adapter;
        Ok(())
    }

    /// The order of epoch `epoch`'s examples (a seeded shuffle).
    pub fn order(&self, epoch: usize, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut SmallRng::seed_from_u64(
            self.config.seed.wrapping_mul(1_000_003) ^ epoch as u64,
        ));
        order
    }

    /// The next optimizer step's examples (indices into the training examples, `n` of them):
    /// `accum` of this epoch's order from the cursor, fewer at the end of an epoch. Moves the
    /// cursor, and to the next epoch when this one's order is used up.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        let mut order = self.order(self.state.epoch, n);
        if self.state.cursor >= order.len() {
            self.state.epoch += 1;
            self.state.cursor = 0;
            order = self.order(self.state.epoch, n);
        }
        let end = (self.state.cursor + self.config.accum).min(order.len());
        let batch = order[self.state.cursor..end].to_vec();
        self.state.cursor = end;
        batch
    }

    /// The held-out loss, when there are held-out examples.
    pub async fn held_out_loss(&self, held: &[Example]) -> Result<Option<f64>> {
        if held.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.eval_loss(held).await?))
    }

    /// Trains on `split` from where the state is up to `config.steps`: batch by batch through
    /// seeded epochs, with the held-out loss and checkpoints as `schedule` says. After each
    /// step `on_step` gets the step's statistics and the held-out loss if it was evaluated;
    /// `Break` stops the run after a checkpoint (resume it with [`Self::resume`]).
    pub async fn run(
        &mut self,
        split: &Split,
        schedule: &Schedule,
        mut on_step: impl FnMut(&StepStats, Option<f64>) -> ControlFlow<()>,
    ) -> Result<RunEnd> {
        if split.train.is_empty() {
            return Err(Error::EmptyInput("no training examples"));
        }
        while self.state.step < self.config.steps {
            let batch: Vec<&Example> = self
                .next_batch(split.train.len())
                .into_iter()
                .map(|i| &split.train[i])
                .collect();
            let stats = self.step(&batch).await?;
            let last = stats.step == self.config.steps;
            let eval = match every(stats.step, schedule.eval_every) || last {
                true => self.held_out_loss(&split.held).await?,
                false => None,
            };
            let stop = on_step(&stats, eval).is_break();
            if let Some(dir) = &schedule.checkpoint
                && (every(stats.step, schedule.checkpoint_every) || last || stop)
            {
                self.save(dir).await?;
            }
            if stop {
                return Ok(RunEnd::Stopped);
            }
        }
        Ok(RunEnd::Finished)
    }

    /// Mean cross-entropy of `ex`'s answer tokens under `weights` (on the autodiff device: a
    /// graph to differentiate where the weights require gradients).
    async fn loss(&self, ex: &Example, weights: &LoraWeights) -> Result<Tensor<1>> {
        let n = ex.answer_tokens();
        if n == 0 || ex.answer_from == 0 {
            return Err(Error::EmptyInput("an example with no prompt or no answer"));
        }
        // Position p predicts token p + 1: run all but the last token, score from the prompt's end.
        let input = &ex.ids[..ex.ids.len() - 1];
        let logits = self
            .engine
            .model
            .forward_train(input, &self.adapter, weights, ex.answer_from - 1)
            .await?;
        let device = logits.device();
        let targets: Vec<i64> = ex.ids[ex.answer_from..].iter().map(|&t| t as i64).collect();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let picked = activation::log_softmax(logits, 1).gather(1, targets);
        Ok(picked.mean().neg())
    }

    /// One optimizer step over `batch` (gradients accumulated example by example).
    pub async fn step(&mut self, batch: &[&Example]) -> Result<StepStats> {
        let mut accum = GradientsAccumulator::<LoraWeights>::new();
        let (mut losses, mut answer_tokens, mut tokens) = (Vec::new(), 0, 0);
        for ex in batch {
            let loss = self.loss(ex, &self.weights).await? / batch.len() as f32;
            // The value is read once for the whole batch: a read per example would make the
            // host wait for each pass on a GPU before queueing the next one.
            losses.push(loss.clone().inner());
            let grads = loss.backward();
            accum.accumulate(
                &self.weights,
                GradientsParams::from_grads(grads, &self.weights),
            );
            answer_tokens += ex.answer_tokens();
            tokens += ex.ids.len() - 1;
        }
        let values = read_f32(Tensor::cat(losses, 0)).await?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Diverged(format!(
                "loss is {v} at step {}",
                self.state.step
            )));
        }
        let loss_sum = values.iter().map(|&v| v as f64).sum();
        let lr = self.config.lr_at(self.state.step);
        self.weights = self.optim.step(lr, self.weights.clone(), accum.grads());
        self.state.step += 1;
        self.state.tokens_seen += tokens;
        Ok(StepStats {
            step: self.state.step,
            loss: loss_sum,
            lr,
            answer_tokens,
            tokens,
        })
    }

    /// Token-weighted mean cross-entropy of the answers of `examples` (no update).
    pub async fn eval_loss(&self, examples: &[Example]) -> Result<f64> {
        // Weights that require no gradient: the autodiff device tracks nothing. With the live
        // weights every example's graph and activations stayed alive until the next backward
        // pass: 48 held-out examples took the trainer from 1.3 to 20 GB.
        let weights = self.weights.clone().no_grad();
        let (mut total, mut count) = (0.0, 0usize);
        for ex in examples {
            let loss = self.loss(ex, &weights).await?;
            total += read_f32(loss.inner()).await?[0] as f64 * ex.answer_tokens() as f64;
            count += ex.answer_tokens();
        }
        Ok(total / count.max(1) as f64)
    }

    /// The adapter as trained so far.
    pub async fn adapter(&self) -> Result<Adapter> {
        self.adapter.with_weights(self.weights.clone()).await
    }

    /// Writes a checkpoint into `dir`: the adapter (f32), the optimizer's state and the run's.
    pub async fn save(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let tmp = dir.join("adapter.safetensors.tmp");
        std::fs::write(&tmp, self.adapter().await?.to_safetensors(false)?)
            .map_err(Error::io(dir))?;
        std::fs::rename(&tmp, dir.join("adapter.safetensors")).map_err(Error::io(dir))?;
        self.optim
            .save(dir.join("optimizer.bin"))
            .map_err(|e| Error::Data(format!("saving the optimizer state: {e:?}")))?;
        let state = serde_json::json!({ "config": self.config, "state": self.state });
        std::fs::write(dir.join("state.json"), state.to_string()).map_err(Error::io(dir))
    }

    /// Resumes from a checkpoint written by [`Self::save`] with the same configuration.
    pub fn resume(&mut self, dir: &std::path::Path) -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("state.json")).map_err(Error::io(dir))?,
        )
        .map_err(|e| Error::Data(format!("checkpoint state: {e}")))?;
        let config: TrainConfig = serde_json::from_value(v["config"].clone())
            .map_err(|e| Error::Data(format!("checkpoint config: {e}")))?;
        if config.lora != self.config.lora || config.seed != self.config.seed {
            return Err(Error::Data(format!(
                "the checkpoint in {} was made with another LoRA configuration or seed",
                dir.display()
            )));
        }
        let state: TrainState = serde_json::from_value(v["state"].clone())
            .map_err(|e| Error::Data(format!("checkpoint state: {e}")))?;
        let bytes = std::fs::read(dir.join("adapter.safetensors")).map_err(Error::io(dir))?;
        let device = &self.engine.model.device.device;
        let adapter = Adapter::from_safetensors(&bytes, &self.engine.model.config, device)?;
        let optim = optimizer(&self.config)
            .load(dir.join("optimizer.bin"))
            .map_err(|e| Error::Data(format!("loading the optimizer state: {e:?}")))?;
        self.weights = adapter.weights.clone();
        self.adapter = adapter;
        self.optim = optim;
        self.state = state;
        Ok(())
    }
}
