//! The Llama-family transformer, written once on burn for every device.
//!
//! `embed -> for layer { x += attn(norm(x)); x += mlp(norm(x)) } -> norm -> head`.
//! Weights are fetched by their GGUF names in [`Llama::from_gguf`]. Matrix weights stay in their
//! GGML blocks ([`QLinear`]); on the CPU the hand-written kernels multiply with them directly,
//! elsewhere (wgpu, autodiff, the reference path) they are dequantized once onto the device.
//! The layer is written once against the named steps of [`Activations`]: on the CPU they run on
//! host rows around the kernels ([`Host`]), elsewhere as burn tensor operations.

use burn::tensor::Tensor;

use super::device::{EngineDevice, read_f32};
use super::gguf::Gguf;
use super::kernels;
use super::kv_cache::KvCache;
use super::lora::{Adapter, BaseShape, Lora, LoraWeights, Target};
use super::ops::{Activations, Heads, Host, Norm, QLinear, Rope};
use super::quant::{GgmlType, QMatrix, dequantize};
use super::scores::{Readback, Scores};
use crate::error::{Error, Result};
use crate::platform::on_kernel_threads;

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

impl From<&LlamaConfig> for BaseShape {
    fn from(c: &LlamaConfig) -> Self {
        Self {
            n_layer: c.n_layer,
            d_model: c.d_model,
            kv_width: c.n_kv_head * c.head_dim,
            ffn: c.ffn,
            fingerprint: c.fingerprint.clone(),
        }
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
    pub(crate) fn first_row(self, t: usize) -> usize {
        match self {
            Logits::Last => t - 1,
            Logits::All => 0,
            Logits::From(i) => i.min(t - 1),
        }
    }
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

fn load_linear(
    g: &Gguf,
    name: &str,
    rows: usize,
    cols: usize,
    dev: &EngineDevice,
) -> Result<QLinear> {
    Ok(QLinear::new(load_matrix(g, name, rows, cols)?, dev))
}

fn load_norm(g: &Gguf, name: &str, n: usize, dev: &EngineDevice) -> Result<Norm> {
    check_dims(g, name, &[n as u64])?;
    let info = g.tensor(name)?;
    Ok(Norm::new(
        dequantize(info.ty, g.tensor_bytes(info), n),
        &dev.device,
    ))
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
    /// The weights (and the adapter) for the GPU kernels, on a wgpu device.
    #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
    gpu: Option<std::sync::Arc<(super::gpu::Weights, Option<super::gpu::GpuLora>)>>,
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
            let lin = |s: &str, rows, cols| load_linear(g, &n(s), rows, cols, device);
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
            Ok(_) => load_linear(g, "output.weight", c.vocab, d, device)?,
            Err(_) => QLinear::new(embed.clone(), device),
        };
        let norm = load_norm(g, "output_norm.weight", d, device)?;
        let rope = Rope::new(c.head_dim, c.context, c.rope_base, &device.device);
        #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
        let gpu = match device.gpu_kernels() {
            true => {
                let sources: Vec<_> = layers
                    .iter()
                    .map(|l| super::gpu::LayerSource {
                        attn_norm: l.attn_norm.host(),
                        ffn_norm: l.ffn_norm.host(),
                        matrices: [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                            .map(|m| &m.weight),
                    })
                    .collect();
                let w = super::gpu::Weights::upload(
                    &device.device,
                    &sources,
                    norm.host(),
                    &head.weight,
                    &rope,
                )?;
                Some(std::sync::Arc::new((w, None)))
            }
            false => None,
        };
        Ok(Self {
            norm,
            rope,
            embed,
            layers,
            head,
            adapter: None,
            #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
            gpu,
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
        #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
        let gpu = self.gpu.as_ref().map(|g| {
            let lora = g.0.upload_lora(&adapter, &self.config);
            std::sync::Arc::new((g.0.clone(), Some(lora)))
        });
        Ok(Self {
            adapter: Some(std::sync::Arc::new(adapter)),
            #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
            gpu,
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
        #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
        if let Some(g) = &self.gpu {
            let rows = ids.len() - logits.first_row(ids.len());
            let data = self.run_gpu(g, ids, cache, logits).await?;
            return Ok(Tensor::from_host(data, rows, &self.device.device));
        }
        let lora = self.adapter.as_deref().map(Lora::own);
        if self.device.quantized_kernels() {
            let y: Host = on_kernel_threads(self.run(ids, cache, logits, lora)).await?;
            return Ok(Tensor::from_host(y.data, y.rows, &self.device.device));
        }
        self.run(ids, cache, logits, lora).await
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
        #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
        if let Some(g) = &self.gpu {
            return self.run_gpu(g, ids, cache, logits).await;
        }
        let lora = self.adapter.as_deref().map(Lora::own);
        if self.device.quantized_kernels() {
            let y: Host = on_kernel_threads(self.run(ids, cache, logits, lora)).await?;
            return Ok(y.data);
        }
        let y: Tensor<2> = self.run(ids, cache, logits, lora).await?;
        read_f32(y).await
    }

    /// As [`Self::logits`], a [`Scores`] a row, with only what `readback` asks for read back
    /// from the GPU: a `Top` request is reduced on the device. The CPU's rows are whole.
    pub async fn scores(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        readback: &Readback,
    ) -> Result<Vec<Scores>> {
        #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
        if let (Some(g), Readback::Top { k, gather }) = (&self.gpu, readback) {
            self.check(ids, cache)?;
            crate::platform::yield_now().await;
            let out =
                g.0.forward(&self.config, &self.embed, ids, cache, logits, g.1.as_ref())?;
            let rows = g.0.top(&out, *k, gather).await?;
            cache.push_tokens(ids);
            return Ok(rows);
        }
        let _ = readback;
        let rows = self.logits(ids, cache, logits).await?;
        Ok(Scores::split(rows, self.config.vocab))
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
        self.run(ids, &mut cache, Logits::From(from), lora).await
    }

    /// The layers in the GPU kernels (`gpu`), the tokens' keys and values appended to `cache`.
    #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
    async fn run_gpu(
        &self,
        g: &(super::gpu::Weights, Option<super::gpu::GpuLora>),
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let out =
            g.0.forward(&self.config, &self.embed, ids, cache, logits, g.1.as_ref())?;
        let out = g.0.read(&out).await?;
        cache.push_tokens(ids);
        Ok(out)
    }

    /// `embed -> layers -> norm -> head` on activations of kind `A`: host rows around the
    /// quantized kernels (the CPU), or burn tensors (the reference, GPU and autodiff path).
    async fn run<A: Activations>(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        lora: Option<Lora<'_>>,
    ) -> Result<A> {
        let pos = cache.len();
        let embedded = kernels::embedding_rows(&self.embed, ids);
        let mut x = A::from_host(embedded, ids.len(), &self.device.device);
        for (i, l) in self.layers.iter().enumerate() {
            x = self.layer(i, l, x, pos, cache, lora)?;
        }
        cache.push_tokens(ids);
        let h = x
            .rows_from(logits.first_row(ids.len()))
            .rms_norm(&self.norm, self.config.eps);
        Ok(h.matmul(&[&self.head]).pop().expect("one result"))
    }

    /// One transformer layer: `x += attn(norm(x)); x += mlp(norm(x))`.
    fn layer<A: Activations>(
        &self,
        i: usize,
        l: &Layer,
        x: A,
        pos: usize,
        cache: &mut KvCache,
        lora: Option<Lora<'_>>,
    ) -> Result<A> {
        let c = &self.config;
        let linear =
            |ws: &[&QLinear], targets: &[Target], h: &A| Self::linear(ws, targets, h, lora, i);
        let h = x.rms_norm(&l.attn_norm, c.eps);
        let [q, k, v] = take(linear(
            &[&l.q, &l.k, &l.v],
            &[Target::Q, Target::K, Target::V],
            &h,
        ));
        let heads = Heads {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
        };
        let att = q.rope(&self.rope, c.head_dim, pos).attention(
            k.rope(&self.rope, c.head_dim, pos),
            v,
            cache,
            i,
            pos,
            heads,
        )?;
        let [o] = take(linear(&[&l.o], &[Target::O], &att));
        let x = x.add(o);
        let h = x.rms_norm(&l.ffn_norm, c.eps);
        let [gate, up] = take(linear(&[&l.gate, &l.up], &[Target::Gate, Target::Up], &h));
        let mlp = gate.swiglu(up);
        let [down] = take(linear(&[&l.down], &[Target::Down], &mlp));
        Ok(x.add(down))
    }

    /// `h·Wᵀ` for each of `ws` plus the adapter's update of its target in `layer`, if any.
    fn linear<A: Activations>(
        ws: &[&QLinear],
        targets: &[Target],
        h: &A,
        lora: Option<Lora<'_>>,
        layer: usize,
    ) -> Vec<A> {
        let ys = h.matmul(ws);
        ys.into_iter()
            .zip(targets)
            .map(|(y, &target)| {
                match lora.and_then(|l| Some((l, l.adapter.pair(layer, target)?))) {
                    Some((l, k)) => y.add(h.lora_delta(&l, k)),
                    None => y,
                }
            })
            .collect()
    }

    /// Runs `ids` reusing the longest cached prefix: rolls the cache back to where `ids` and the
    /// cache diverge and prefills only the rest. Returns the last position's logits.
    pub async fn prefill(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let keep = reuse(ids, cache)?;
        self.logits(&ids[keep..], cache, Logits::Last).await
    }

    /// As [`Self::prefill`], the last position's [`Scores`] as `readback` asks (its `gather`:
    /// one token).
    pub async fn prefill_scores(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        readback: &Readback,
    ) -> Result<Scores> {
        let keep = reuse(ids, cache)?;
        self.scores(&ids[keep..], cache, Logits::Last, readback)
            .await?
            .pop()
            .ok_or(Error::EmptyInput("no tokens to run"))
    }
}

/// Rolls `cache` back to where it and `ids` diverge, keeping at least one token of `ids` to run
/// so there are logits to return; the number of tokens kept.
fn reuse(ids: &[u32], cache: &mut KvCache) -> Result<usize> {
    if ids.is_empty() {
        return Err(Error::EmptyInput("no tokens to run"));
    }
    let keep = cache.common_prefix(ids).min(ids.len() - 1);
    cache.truncate(keep);
    Ok(keep)
}

/// The `N` results of a [`Llama::linear`] of `N` matrices.
fn take<A, const N: usize>(v: Vec<A>) -> [A; N] {
    v.try_into().ok().expect("one result per matrix")
}
