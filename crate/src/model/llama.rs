//! The Llama-family transformer, written once on burn for every device.
//!
//! `embed -> for layer { x += attn(norm(x)); x += mlp(norm(x)) } -> norm -> head`.
//! Weights are fetched by their GGUF names in [`Llama::from_gguf`]. Matrix weights stay in their
//! GGML blocks ([`QLinear`]); on the CPU the hand-written kernels multiply with them directly,
//! elsewhere (wgpu, autodiff, the reference path) they are dequantized once onto the device.
//! On the CPU the steps between attentions also run on the host ([`super::cpu`]): there,
//! burn's per-operation cost would outweigh a decode step's arithmetic.

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{Tensor, TensorData, activation};

use super::cpu;
use super::device::{Backend, EngineDevice};
use super::gguf::Gguf;
use super::kernels;
use super::kv_cache::KvCache;
use super::lora::{self, Adapter, LoraWeights, Target};
use super::quant::{GgmlType, QMatrix, dequantize};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub eps: f32,
    pub context: usize,
    /// Identifies these weights (shapes and the first layer's query matrix, hashed): an adapter
    /// records the base it was trained on and refuses any other.
    pub fingerprint: String,
}

impl LlamaConfig {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::UnsupportedArchitecture(arch.to_string()));
        }
        let u = |k: &str| -> Result<usize> {
            let v = g.get_u64(&format!("llama.{k}"))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v < 1 << 24)
                .ok_or_else(|| Error::Config(format!("llama.{k} = {v}")))
        };
        let (d_model, n_head) = (u("embedding_length")?, u("attention.head_count")?);
        let n_kv_head = g
            .get_u64("llama.attention.head_count_kv")
            .map(|v| v as usize)
            .unwrap_or(n_head);
        if d_model % n_head != 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(Error::Config(format!(
                "{n_head} heads, {n_kv_head} KV heads, width {d_model}"
            )));
        }
        let head_dim = d_model / n_head;
        let rope_dims = g
            .get_u64("llama.rope.dimension_count")
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims != head_dim || head_dim % 2 != 0 {
            return Err(Error::Config(format!(
                "rotary dims {rope_dims} with head dim {head_dim} (partial rotary is not supported)"
            )));
        }
        let token_embd = g.tensor("token_embd.weight")?;
        let vocab = g
            .get_u64("llama.vocab_size")
            .map(|v| v as usize)
            .unwrap_or(token_embd.dims.get(1).copied().unwrap_or(0) as usize);
        Ok(Self {
            n_layer: u("block_count")?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            ffn: u("feed_forward_length")?,
            vocab,
            rope_base: g.get_f64("llama.rope.freq_base").unwrap_or(10_000.0) as f32,
            eps: g
                .get_f64("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f32,
            context: u("context_length")?,
            fingerprint: fingerprint(g),
        })
    }
}

fn fingerprint(g: &Gguf) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // A file missing this weight fails later, naming it; the fingerprint never does.
    if let Ok(q) = g
        .tensor("blk.0.attn_q.weight")
        .or_else(|_| g.tensor("token_embd.weight"))
    {
        let bytes = g.tensor_bytes(q);
        h.update(format!("{:?}{:?}", q.dims, q.ty).as_bytes());
        h.update(&bytes[..bytes.len().min(1 << 16)]);
    }
    let name = g.get_str("general.name").unwrap_or("llama");
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name}:{hex}")
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
    /// Positions from this index of the new tokens on (training scores only the answer).
    From(usize),
}

impl Logits {
    /// The first row of `t` new tokens that gets logits.
    fn first_row(self, t: usize) -> usize {
        match self {
            Logits::Last => t - 1,
            Logits::All => 0,
            Logits::From(i) => i.min(t - 1),
        }
    }
}

/// A linear layer without bias whose weight stays in its GGML blocks.
#[derive(Debug, Clone)]
pub struct QLinear {
    pub weight: QMatrix,
    /// `Wᵀ` dequantized on the device, for every path but the CPU kernels.
    dense_t: Option<Tensor<2>>,
}

impl QLinear {
    fn load(g: &Gguf, name: &str, rows: usize, cols: usize, dev: &EngineDevice) -> Result<Self> {
        Ok(Self::new(load_matrix(g, name, rows, cols)?, dev))
    }

    fn new(weight: QMatrix, dev: &EngineDevice) -> Self {
        let (rows, cols) = (weight.rows, weight.cols);
        let dense_t = (!dev.quantized_kernels()).then(|| {
            let w = Tensor::<2>::from_data(
                TensorData::new(weight.dequantize(), [rows, cols]),
                &dev.device,
            );
            match dev.backend {
                // On the GPU the weights stay quantized: GGML's 4-bit blocks carry an offset that
                // burn's symmetric schemes lack, so each block of 32 inputs is requantized to
                // symmetric 8 bits (an error ~10x below Q4_1's own step), and burn's quantized
                // matmul dequantizes on the fly.
                Backend::Wgpu => w.quantize_dynamic(&gpu_scheme()).transpose(),
                _ => w.transpose(),
            }
        });
        Self { weight, dense_t }
    }

    /// `x` is [n, in]; returns [n, out].
    pub async fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        if let Some(w) = &self.dense_t {
            return Ok(x.matmul(w.clone()));
        }
        let device = x.device();
        let [n, _] = x.dims();
        let x = read_f32(x).await?;
        let y = kernels::matmul_t(&self.weight, &x, n);
        Ok(Tensor::from_data(
            TensorData::new(y, [n, self.weight.rows]),
            &device,
        ))
    }
}

/// The low-rank update a forward pass applies: the adapter's layout with live weights (the
/// adapter's own, or the trainer's).
#[derive(Clone, Copy)]
struct Lora<'a> {
    adapter: &'a Adapter,
    weights: &'a LoraWeights,
}

/// Symmetric int8 with one f32 scale per 32 inputs of `W` ([out, in]): GGUF's block direction.
fn gpu_scheme() -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::PackedU32(0))
        .per_block([1, 32], ScaleDtype::F32)
}

/// Reads a tensor back to the host (asynchronously: WebGPU can only read back that way).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("{e:?}")))
}

fn check_dims(g: &Gguf, name: &str, want: &[u64]) -> Result<()> {
    let info = g.tensor(name)?;
    if info.dims != want {
        return Err(Error::Shape {
            name: name.into(),
            got: info.dims.clone(),
            want: want.to_vec(),
        });
    }
    Ok(())
}

fn load_matrix(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<QMatrix> {
    check_dims(g, name, &[cols as u64, rows as u64])?;
    let info = g.tensor(name)?;
    Ok(QMatrix {
        ty: info.ty,
        rows,
        cols,
        data: g.tensor_bytes(info).into(),
    })
}

/// A norm's weights, on the device and on the host.
#[derive(Debug, Clone)]
struct Norm {
    tensor: Tensor<1>,
    host: Vec<f32>,
}

fn load_norm(g: &Gguf, name: &str, n: usize, dev: &EngineDevice) -> Result<Norm> {
    check_dims(g, name, &[n as u64])?;
    let info = g.tensor(name)?;
    let host = dequantize(info.ty, g.tensor_bytes(info), n);
    Ok(Norm {
        tensor: Tensor::from_data(TensorData::new(host.clone(), [n]), &dev.device),
        host,
    })
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Norm,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    ffn_norm: Norm,
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

/// Rotary position embedding tables: cos and sin of [context, head_dim / 2].
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
}

impl Rope {
    fn new(c: &LlamaConfig, dev: &EngineDevice) -> Self {
        let half = c.head_dim / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(c.context * half),
            Vec::with_capacity(c.context * half),
        );
        for p in 0..c.context {
            for i in 0..half {
                let theta =
                    p as f64 * (c.rope_base as f64).powf(-2.0 * i as f64 / c.head_dim as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let t = |v: &Vec<f32>| {
            Tensor::from_data(TensorData::new(v.clone(), [c.context, half]), &dev.device)
        };
        Self {
            cos: t(&cos),
            sin: t(&sin),
            cos_host: cos,
            sin_host: sin,
        }
    }

    /// Rotates adjacent pairs (x0, x1), (x2, x3), … of `x` [T, heads, head_dim] at positions
    /// `pos..pos+T`: GGUF's llama converter permutes Q and K rows into this order.
    fn apply(&self, x: Tensor<3>, pos: usize) -> Tensor<3> {
        let [t, h, d] = x.dims();
        let x = x.reshape([t, h, d / 2, 2]);
        let cos = self.cos.clone().narrow(0, pos, t).reshape([t, 1, d / 2, 1]);
        let sin = self.sin.clone().narrow(0, pos, t).reshape([t, 1, d / 2, 1]);
        let x0 = x.clone().narrow(3, 0, 1);
        let x1 = x.narrow(3, 1, 1);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin + x1 * cos;
        Tensor::cat(vec![r0, r1], 3).reshape([t, h, d])
    }
}

#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub device: EngineDevice,
    embed: QMatrix,
    layers: Vec<Layer>,
    norm: Norm,
    head: QLinear,
    rope: Rope,
    /// A LoRA adapter applied on every path (the aligner); `None` is the base model.
    adapter: Option<std::sync::Arc<Adapter>>,
}

impl Llama {
    pub fn from_gguf(g: &Gguf, device: &EngineDevice) -> Result<Self> {
        let c = LlamaConfig::from_gguf(g)?;
        let (d, kv) = (c.d_model, c.n_kv_head * c.head_dim);
        let embed = load_matrix(g, "token_embd.weight", c.vocab, d)?;
        if matches!(embed.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) && d % 32 != 0 {
            return Err(Error::Config(format!("width {d} is not a multiple of 32")));
        }
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let lin = |s: &str, rows, cols| QLinear::load(g, &n(s), rows, cols, device);
            layers.push(Layer {
                attn_norm: load_norm(g, &n("attn_norm"), d, device)?,
                q: lin("attn_q", d, d)?,
                k: lin("attn_k", kv, d)?,
                v: lin("attn_v", kv, d)?,
                o: lin("attn_output", d, d)?,
                ffn_norm: load_norm(g, &n("ffn_norm"), d, device)?,
                gate: lin("ffn_gate", c.ffn, d)?,
                up: lin("ffn_up", c.ffn, d)?,
                down: lin("ffn_down", d, c.ffn)?,
            });
        }
        // A tied output head reuses the token embedding.
        let head = match g.tensor("output.weight") {
            Ok(_) => QLinear::load(g, "output.weight", c.vocab, d, device)?,
            Err(_) => QLinear::new(embed.clone(), device),
        };
        Ok(Self {
            norm: load_norm(g, "output_norm.weight", d, device)?,
            rope: Rope::new(&c, device),
            embed,
            layers,
            head,
            adapter: None,
            device: device.clone(),
            config: c,
        })
    }

    /// This model with `adapter` applied (sharing the base weights, which are reference-counted).
    pub fn with_adapter(&self, adapter: Adapter) -> Result<Self> {
        if adapter.base != self.config.fingerprint {
            return Err(Error::Adapter(format!(
                "adapter for base {} applied to {}",
                adapter.base, self.config.fingerprint
            )));
        }
        let adapter = if adapter.weights.pairs.first().map(|p| p.a.val().device())
            == Some(self.device.device.clone())
        {
            adapter
        } else {
            adapter.to_device(&self.config, &self.device.device)?
        };
        Ok(Self {
            adapter: Some(std::sync::Arc::new(adapter)),
            ..self.clone()
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.n_layer)
    }

    fn check(&self, ids: &[u32], cache: &KvCache) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::EmptyInput("no tokens to run"));
        }
        if cache.len() + ids.len() > self.config.context {
            return Err(Error::ContextOverflow {
                needed: cache.len() + ids.len(),
                max: self.config.context,
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.config.vocab
            )));
        }
        Ok(())
    }

    /// Runs `ids` after what `cache` holds, appends them to it, and returns logits on the device
    /// ([1, vocab] for `Logits::Last`, [ids.len(), vocab] for `Logits::All`).
    pub async fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<2>> {
        self.check(ids, cache)?;
        if self.device.quantized_kernels() {
            let v = self.forward_host(ids, cache, logits).await?;
            let rows = v.len() / self.config.vocab;
            return Ok(Tensor::from_data(
                TensorData::new(v, [rows, self.config.vocab]),
                &self.device.device,
            ));
        }
        self.forward_tensor(ids, cache, logits).await
    }

    /// As [`Self::forward`], with the logits read back to the host (row-major).
    pub async fn logits(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        self.check(ids, cache)?;
        crate::platform::yield_now().await;
        if self.device.quantized_kernels() {
            return self.forward_host(ids, cache, logits).await;
        }
        read_f32(self.forward_tensor(ids, cache, logits).await?).await
    }

    /// Every step as burn tensor operations: the reference, GPU and autodiff path.
    async fn forward_tensor(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<2>> {
        let lora = self.adapter.as_deref().map(|a| Lora {
            adapter: a,
            weights: &a.weights,
        });
        self.forward_lora(ids, cache, logits, lora).await
    }

    /// Training: logits of positions `from..` of `ids` (a fresh sequence) with the adapter's
    /// configuration and the live, differentiable `weights`. Runs on an autodiff device.
    pub async fn forward_train(
        &self,
        ids: &[u32],
        adapter: &Adapter,
        weights: &LoraWeights,
        from: usize,
    ) -> Result<Tensor<2>> {
        let mut cache = self.new_cache();
        self.check(ids, &cache)?;
        let lora = Some(Lora { adapter, weights });
        self.forward_lora(ids, &mut cache, Logits::From(from), lora)
            .await
    }

    async fn forward_lora(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        lora: Option<Lora<'_>>,
    ) -> Result<Tensor<2>> {
        let pos = cache.len();
        let x = kernels::embedding_rows(&self.embed, ids);
        let mut x = Tensor::<2>::from_data(
            TensorData::new(x, [ids.len(), self.config.d_model]),
            &self.device.device,
        );
        let lin = |w, h, i, t| Self::linear(w, h, lora, i, t);
        for (i, l) in self.layers.iter().enumerate() {
            let (t, c) = (ids.len(), &self.config);
            let h = self.rms_norm(x.clone(), &l.attn_norm);
            let q = lin(&l.q, h.clone(), i, Target::Q)
                .await?
                .reshape([t, c.n_head, c.head_dim]);
            let k = lin(&l.k, h.clone(), i, Target::K)
                .await?
                .reshape([t, c.n_kv_head, c.head_dim]);
            let v = lin(&l.v, h, i, Target::V)
                .await?
                .reshape([t, c.n_kv_head, c.head_dim]);
            let att = self.attend(
                i,
                self.rope.apply(q, pos),
                self.rope.apply(k, pos),
                v,
                pos,
                cache,
            );
            x = x + lin(&l.o, att, i, Target::O).await?;
            let h = self.rms_norm(x.clone(), &l.ffn_norm);
            let gate = activation::silu(lin(&l.gate, h.clone(), i, Target::Gate).await?);
            let up = lin(&l.up, h, i, Target::Up).await?;
            x = x + lin(&l.down, gate * up, i, Target::Down).await?;
        }
        cache.push_tokens(ids);
        let first = logits.first_row(ids.len());
        if first > 0 {
            x = x.narrow(0, first, ids.len() - first);
        }
        self.head.forward(self.rms_norm(x, &self.norm)).await
    }

    /// `w`'s product plus the adapter's update of `target` in `layer`, when there is one.
    async fn linear(
        w: &QLinear,
        h: Tensor<2>,
        lora: Option<Lora<'_>>,
        layer: usize,
        target: Target,
    ) -> Result<Tensor<2>> {
        let delta = lora
            .and_then(|l| Some((l, l.adapter.pair(layer, target)?)))
            .map(|(l, k)| lora::delta(l.weights, k, l.adapter.config.scale(), h.clone()));
        let y = w.forward(h).await?;
        Ok(match delta {
            Some(d) => y + d,
            None => y,
        })
    }

    /// The CPU fast path: activations stay on the host between attentions, matrix products run
    /// the quantized kernels, attention over the cache runs in burn as on every device.
    async fn forward_host(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let (c, t, pos) = (&self.config, ids.len(), cache.len());
        let (hd, kv_width) = (c.head_dim, c.n_kv_head * c.head_dim);
        let upload = |v: Vec<f32>, heads: usize| {
            Tensor::<3>::from_data(TensorData::new(v, [t, heads, hd]), &self.device.device)
        };
        let mut x = kernels::embedding_rows(&self.embed, ids);
        for (i, l) in self.layers.iter().enumerate() {
            let h = cpu::rms_norm(&x, &l.attn_norm.host, c.eps);
            let [mut q, mut k, mut v]: [Vec<f32>; 3] =
                kernels::matmul_t_many(&[&l.q.weight, &l.k.weight, &l.v.weight], &h, t)
                    .try_into()
                    .expect("three results");
            self.lora_host(i, Target::Q, &h, t, &mut q);
            self.lora_host(i, Target::K, &h, t, &mut k);
            self.lora_host(i, Target::V, &h, t, &mut v);
            cpu::rope(
                &mut q,
                hd,
                pos,
                c.d_model,
                &self.rope.cos_host,
                &self.rope.sin_host,
            );
            cpu::rope(
                &mut k,
                hd,
                pos,
                kv_width,
                &self.rope.cos_host,
                &self.rope.sin_host,
            );
            let att = self.attend(
                i,
                upload(q, c.n_head),
                upload(k, c.n_kv_head),
                upload(v, c.n_kv_head),
                pos,
                cache,
            );
            let att = read_f32(att).await?;
            let mut o = kernels::matmul_t(&l.o.weight, &att, t);
            self.lora_host(i, Target::O, &att, t, &mut o);
            cpu::add_assign(&mut x, &o);
            let h = cpu::rms_norm(&x, &l.ffn_norm.host, c.eps);
            let [mut gate, mut up]: [Vec<f32>; 2] =
                kernels::matmul_t_many(&[&l.gate.weight, &l.up.weight], &h, t)
                    .try_into()
                    .expect("two results");
            self.lora_host(i, Target::Gate, &h, t, &mut gate);
            self.lora_host(i, Target::Up, &h, t, &mut up);
            cpu::silu_mul(&mut gate, &up);
            let mut down = kernels::matmul_t(&l.down.weight, &gate, t);
            self.lora_host(i, Target::Down, &gate, t, &mut down);
            cpu::add_assign(&mut x, &down);
        }
        cache.push_tokens(ids);
        let rows = t - logits.first_row(t);
        let h = cpu::rms_norm(&x[(t - rows) * c.d_model..], &self.norm.host, c.eps);
        Ok(kernels::matmul_t(&self.head.weight, &h, rows))
    }

    /// The adapter's update of `target` in `layer` on the host path, if it has one.
    fn lora_host(&self, layer: usize, target: Target, x: &[f32], t: usize, y: &mut [f32]) {
        if let Some(a) = self.adapter.as_deref()
            && let Some(k) = a.pair(layer, target)
        {
            a.add_host(k, x, t, y);
        }
    }

    fn rms_norm(&self, x: Tensor<2>, w: &Norm) -> Tensor<2> {
        let rms = (x.clone().square().mean_dim(1) + self.config.eps).sqrt();
        x / rms * w.tensor.clone().unsqueeze::<2>()
    }

    /// Grouped-query attention of roped `q` [T, heads, hd] over the cache plus the new `k`, `v`
    /// [T, kv_heads, hd] at positions `pos..pos+T`; returns [T, width] (before the output projection).
    fn attend(
        &self,
        i: usize,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        pos: usize,
        cache: &mut KvCache,
    ) -> Tensor<2> {
        let c = &self.config;
        let t = q.dims()[0];
        let group = c.n_head / c.n_kv_head;
        let (k, v) = cache.append(i, k.swap_dims(0, 1), v.swap_dims(0, 1)); // [kv_heads, total, hd]
        let total = pos + t;
        // Query heads h*group..(h+1)*group share KV head h: fold them into the rows.
        let q = q
            .swap_dims(0, 1)
            .reshape([c.n_kv_head, group * t, c.head_dim]);
        let mut scores = q.matmul(k.swap_dims(1, 2)) * (1.0 / (c.head_dim as f32).sqrt());
        if t > 1 {
            scores = scores + self.causal_mask(group, t, pos, total).unsqueeze::<3>();
        }
        let att = activation::softmax(scores, 2).matmul(v); // [kv_heads, group*T, hd]
        att.reshape([c.n_head, t, c.head_dim])
            .swap_dims(0, 1)
            .reshape([t, c.d_model])
    }

    /// Additive mask [group*T, total]: row r is position pos + r % T and sees keys up to it.
    fn causal_mask(&self, group: usize, t: usize, pos: usize, total: usize) -> Tensor<2> {
        let mut m = vec![0.0f32; group * t * total];
        for r in 0..group * t {
            let p = pos + r % t;
            for col in p + 1..total {
                m[r * total + col] = f32::NEG_INFINITY;
            }
        }
        Tensor::from_data(TensorData::new(m, [group * t, total]), &self.device.device)
    }

    /// Runs `ids` reusing the longest cached prefix: rolls the cache back to where `ids` and the
    /// cache diverge and prefills only the rest. Returns the last position's logits.
    pub async fn prefill(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::EmptyInput("no tokens to run"));
        }
        // Keep at least one token to run so there are logits to return.
        let keep = cache.common_prefix(ids).min(ids.len() - 1);
        cache.truncate(keep);
        self.logits(&ids[keep..], cache, Logits::Last).await
    }
}
