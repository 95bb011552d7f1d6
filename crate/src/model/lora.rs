//! LoRA adapters: a trainable low-rank update on the frozen, quantized base.
//!
//! For a target matrix `W` [out, in] the layer computes `x·Wᵀ + (alpha/rank)·(x·A)·B` with
//! `A` [in, rank] and `B` [rank, out]. `B` starts at zero, so a fresh adapter is the base model.
//! The adapter is stored as safetensors (`blk.{i}.{target}.lora_a` / `.lora_b`) with its
//! configuration and the fingerprint of the base it was trained on; loading it onto another base,
//! or with shapes that do not fit, is an error rather than garbage output.

use std::collections::HashMap;

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::device::read_f32;
use crate::error::{Error, Result};

/// A matrix of a transformer layer an adapter can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// (inputs, outputs) of this matrix in the base `b`.
    pub fn dims(self, b: &BaseShape) -> (usize, usize) {
        match self {
            Target::Q | Target::O => (b.d_model, b.d_model),
            Target::K | Target::V => (b.d_model, b.kv_width),
            Target::Gate | Target::Up => (b.d_model, b.ffn),
            Target::Down => (b.ffn, b.d_model),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown LoRA target '{s}' (q, k, v, o, gate, up, down)"))
    }
}

/// What an adapter knows of its base model: the layers, the widths of the matrices it can
/// target, and the fingerprint of the weights (`LlamaConfig` converts into it).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseShape {
    pub n_layer: usize,
    pub d_model: usize,
    /// Width of the keys and values (`kv_heads · head_dim`).
    pub kv_width: usize,
    pub ffn: usize,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: Target::ALL.to_vec(),
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    fn validate(&self) -> Result<()> {
        let mut seen = [false; 7];
        for t in &self.targets {
            if std::mem::replace(&mut seen[t.index()], true) {
                return Err(Error::Adapter(format!(
                    "target '{}' listed twice",
                    t.name()
                )));
            }
        }
        if self.rank == 0 || self.rank > 4096 || self.targets.is_empty() {
            return Err(Error::Adapter(format!(
                "rank {} with {} targets",
                self.rank,
                self.targets.len()
            )));
        }
        if !self.alpha.is_finite() {
            return Err(Error::Adapter(format!("alpha {}", self.alpha)));
        }
        Ok(())
    }
}

/// One target's pair: `a` [in, rank], `b` [rank, out].
#[derive(Module, Debug)]
pub struct LoraPair {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
}

/// The trainable part: pairs in layer-major order (`layer * targets.len() + j`).
#[derive(Module, Debug)]
pub struct LoraWeights {
    pub pairs: Vec<LoraPair>,
}

/// An adapter for one base model: configuration, weights on a device, and (for the CPU kernels'
/// path) the same weights on the host.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub config: LoraConfig,
    /// [`BaseShape::fingerprint`] of the base it belongs to.
    pub base: String,
    pub weights: LoraWeights,
    n_layer: usize,
    host: Vec<(Vec<f32>, Vec<f32>)>,
    slot: [Option<usize>; 7],
}

fn slots(config: &LoraConfig) -> [Option<usize>; 7] {
    let mut slot = [None; 7];
    for (j, t) in config.targets.iter().enumerate() {
        slot[t.index()] = Some(j);
    }
    slot
}

fn param(k: usize, data: Vec<f32>, shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    let t = Tensor::<2>::from_data(TensorData::new(data, shape), device);
    // Trainable where there is autodiff; a plain tensor for inference.
    let t = if device.is_autodiff() {
        t.require_grad()
    } else {
        t
    };
    Param::initialized(ParamId::from(k as u64), t)
}

impl Adapter {
    /// A fresh adapter: `A` uniform in ±1/√in (seeded), `B` zero; the model is unchanged.
    pub fn init(
        model: impl Into<BaseShape>,
        config: LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let model = &model.into();
        config.validate()?;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut mats = Vec::new();
        for _ in 0..model.n_layer {
            for t in &config.targets {
                let (i, o) = t.dims(model);
                let bound = 1.0 / (i as f32).sqrt();
                let a = (0..i * config.rank)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                mats.push((a, vec![0.0; config.rank * o]));
            }
        }
        Self::from_host(model, config, mats, device)
    }

    fn from_host(
        model: &BaseShape,
        config: LoraConfig,
        host: Vec<(Vec<f32>, Vec<f32>)>,
        device: &Device,
    ) -> Result<Self> {
        let r = config.rank;
        let mut pairs = Vec::with_capacity(host.len());
        for (k, (a, b)) in host.iter().enumerate() {
            let (i, o) = config.targets[k % config.targets.len()].dims(model);
            pairs.push(LoraPair {
                a: param(2 * k, a.clone(), [i, r], device),
                b: param(2 * k + 1, b.clone(), [r, o], device),
            });
        }
        Ok(Self {
            slot: slots(&config),
            base: model.fingerprint.clone(),
            weights: LoraWeights { pairs },
            n_layer: model.n_layer,
            config,
            host,
        })
    }

    /// The adapter with trained weights (after an optimizer step), host copies refreshed.
    pub async fn with_weights(&self, weights: LoraWeights) -> Result<Self> {
        let mut host = Vec::with_capacity(weights.pairs.len());
        for p in &weights.pairs {
            host.push((read_f32(p.a.val()).await?, read_f32(p.b.val()).await?));
        }
        Ok(Self {
            weights,
            host,
            ..self.clone()
        })
    }

    /// Moves the weights to `device` (plain, not tracking gradients).
    pub fn to_device(&self, model: impl Into<BaseShape>, device: &Device) -> Result<Self> {
        Self::from_host(
            &model.into(),
            self.config.clone(),
            self.host.clone(),
            device,
        )
    }

    /// Which pair serves `target` in `layer`, if the adapter targets it.
    pub fn pair(&self, layer: usize, target: Target) -> Option<usize> {
        self.slot[target.index()].map(|j| layer * self.config.targets.len() + j)
    }

    /// The host copies of pair `pair`: `A` [in, rank] and `B` [rank, out], row-major.
    pub fn host_pair(&self, pair: usize) -> (&[f32], &[f32]) {
        let (a, b) = &self.host[pair];
        (a, b)
    }

    /// Safetensors bytes: f32, or f16 (half the size) for shipping.
    pub fn to_safetensors(&self, half: bool) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        let r = self.config.rank;
        let n_t = self.config.targets.len();
        for (k, (a, b)) in self.host.iter().enumerate() {
            let (layer, t) = (k / n_t, self.config.targets[k % n_t]);
            for (part, v, shape) in [
                ("lora_a", a, [a.len() / r, r]),
                ("lora_b", b, [r, b.len() / r]),
            ] {
                let bytes = if half {
                    v.iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect()
                } else {
                    v.iter().flat_map(|x| x.to_le_bytes()).collect()
                };
                tensors.push((
                    format!("blk.{layer}.{}.{part}", t.name()),
                    bytes,
                    shape.to_vec(),
                ));
            }
        }
        let dtype = if half {
            safetensors::Dtype::F16
        } else {
            safetensors::Dtype::F32
        };
        let views = tensors
            .iter()
            .map(|(name, bytes, shape)| {
                safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Adapter(e.to_string()))?;
        let meta = HashMap::from([
            ("format".to_string(), "stream-aligner-lora".to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.config).expect("config serializes"),
            ),
            ("base".to_string(), self.base.clone()),
            ("layers".to_string(), self.n_layer.to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Adapter(e.to_string()))
    }

    /// Reads an adapter for the base `model`, checking that it was made for it.
    pub fn from_safetensors(
        bytes: &[u8],
        model: impl Into<BaseShape>,
        device: &Device,
    ) -> Result<Self> {
        let model = &model.into();
        let bad = |m: String| Error::Adapter(m);
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some("stream-aligner-lora") {
            return Err(bad(
                "not a stream-aligner LoRA adapter (no format tag)".into()
            ));
        }
        let config: LoraConfig = serde_json::from_str(meta.get("config").map_or("", |s| s))
            .map_err(|e| bad(format!("adapter configuration: {e}")))?;
        config.validate()?;
        let base = meta.get("base").cloned().unwrap_or_default();
        if base != model.fingerprint.clone() {
            return Err(bad(format!(
                "this adapter was trained for another base model ({base}); the loaded base is {}",
                model.fingerprint.clone()
            )));
        }
        let r = config.rank;
        let mut host = Vec::with_capacity(model.n_layer * config.targets.len());
        for layer in 0..model.n_layer {
            for t in &config.targets {
                let (i, o) = t.dims(model);
                let read = |part: &str, shape: [usize; 2]| -> Result<Vec<f32>> {
                    let name = format!("blk.{layer}.{}.{part}", t.name());
                    let v = st
                        .tensor(&name)
                        .map_err(|_| bad(format!("missing tensor {name}")))?;
                    if v.shape() != shape {
                        return Err(bad(format!(
                            "{name} has shape {:?}, expected {shape:?} (rank {r})",
                            v.shape()
                        )));
                    }
                    let vals: Vec<f32> = match v.dtype() {
                        safetensors::Dtype::F32 => v
                            .data()
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                        safetensors::Dtype::F16 => v
                            .data()
                            .chunks_exact(2)
                            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                            .collect(),
                        other => return Err(bad(format!("{name} has dtype {other:?}"))),
                    };
                    if vals.iter().any(|x| !x.is_finite()) {
                        return Err(bad(format!("{name} holds NaN or infinity")));
                    }
                    Ok(vals)
                };
                host.push((read("lora_a", [i, r])?, read("lora_b", [r, o])?));
            }
        }
        if st.len() != 2 * host.len() {
            return Err(bad(format!(
                "{} tensors, expected {} for {} layers (another model's adapter?)",
                st.len(),
                2 * host.len(),
                model.n_layer
            )));
        }
        Self::from_host(model, config, host, device)
    }
}

/// The low-rank update a forward pass applies: the adapter's layout with live weights (the
/// adapter's own, or the trainer's). The host path reads the adapter's host copies, which are
/// its own weights: the host runs only the adapter's own weights, never a trainer's.
#[derive(Clone, Copy)]
pub struct Lora<'a> {
    pub adapter: &'a Adapter,
    pub weights: &'a LoraWeights,
}

impl<'a> Lora<'a> {
    /// The adapter with its own weights.
    pub fn own(adapter: &'a Adapter) -> Self {
        Self {
            adapter,
            weights: &adapter.weights,
        }
    }
}
