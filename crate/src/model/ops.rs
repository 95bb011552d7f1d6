//! The steps of a layer, each defined once: [`Activations`] names them, and the layer
//! ([`super::llama`]) is written once against that name.
//!
//! Two kinds of activations implement the steps. [`Host`] rows are the CPU fast path: plain loops
//! around the quantized kernels, because on the CPU burn's per-operation cost (a few µs) times the
//! ~70 small operations of a layer outweighs the arithmetic of a decode step. `Tensor<2>` is burn:
//! the reference, GPU and autodiff path. As candle's `QMatMul` hides its kernels, the layer never
//! says which one runs; the tests hold the two together.

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{Device, Tensor, TensorData, activation};

use super::device::{Backend, EngineDevice};
use super::kernels::{self, Precision};
use super::kv_cache::KvCache;
use super::lora::Lora;
use super::quant::QMatrix;
use crate::error::Result;

/// A layer's activations, `rows` tokens of one width, and the steps a layer applies to them.
pub trait Activations: Sized {
    /// `data` (`rows` tokens, row-major) where this kind of activations lives.
    fn from_host(data: Vec<f32>, rows: usize, device: &Device) -> Self;
    /// Rows `first..`.
    fn rows_from(self, first: usize) -> Self;
    /// RMSNorm of each row, scaled by `w`: `x / sqrt(mean(x²) + eps) · w`.
    fn rms_norm(&self, w: &Norm, eps: f32) -> Self;
    /// Rotary position embedding of heads `head_dim` wide at positions `pos..`: adjacent pairs
    /// (x0, x1), (x2, x3), … rotate (GGUF's llama converter permutes Q and K rows into this order).
    fn rope(self, r: &Rope, head_dim: usize, pos: usize) -> Self;
    /// The SwiGLU gate: `silu(self) · up`.
    fn swiglu(self, up: Self) -> Self;
    /// The residual sum `self + y`.
    fn add(self, y: Self) -> Self;
    /// `self · Wᵀ` for each of `ws` (matrices of the same input width, in one pass on the host).
    fn matmul(&self, ws: &[&QLinear]) -> Vec<Self>;
    /// The LoRA update of pair `pair` of `lora`: `scale · (self·A)·B`.
    fn lora_delta(&self, lora: &Lora<'_>, pair: usize) -> Self;
    /// Causal grouped-query attention of these roped queries (token `t` at position `pos + t`)
    /// over the layer's cache, after appending the new roped keys `k` and values `v` to it.
    fn attention(
        self,
        k: Self,
        v: Self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        heads: Heads,
    ) -> Result<Self>;
}

/// The attention heads' shape: query heads `n_head`, sharing `n_kv_head` key/value heads in
/// equal groups, each `head_dim` wide.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// Activations on the host: `rows` tokens, row-major.
#[derive(Debug, Clone)]
pub struct Host {
    pub data: Vec<f32>,
    pub rows: usize,
}

impl Host {
    fn width(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }
}

impl Activations for Host {
    fn from_host(data: Vec<f32>, rows: usize, _: &Device) -> Self {
        Self { data, rows }
    }

    fn rows_from(mut self, first: usize) -> Self {
        let w = self.width();
        self.data.drain(..first * w);
        self.rows -= first;
        self
    }

    fn rms_norm(&self, w: &Norm, eps: f32) -> Self {
        let d = w.host.len();
        let mut out = vec![0.0f32; self.data.len()];
        for (o, r) in out.chunks_exact_mut(d).zip(self.data.chunks_exact(d)) {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, v), g) in o.iter_mut().zip(r).zip(&w.host) {
                *o = v * inv * g;
            }
        }
        Self {
            data: out,
            rows: self.rows,
        }
    }

    fn rope(mut self, r: &Rope, head_dim: usize, pos: usize) -> Self {
        let (half, width) = (head_dim / 2, self.width());
        for (t, row) in self.data.chunks_exact_mut(width).enumerate() {
            let (c, s) = (
                &r.cos_host[(pos + t) * half..][..half],
                &r.sin_host[(pos + t) * half..][..half],
            );
            for head in row.chunks_exact_mut(head_dim) {
                for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                    let (x0, x1) = (pair[0], pair[1]);
                    pair[0] = x0 * c[i] - x1 * s[i];
                    pair[1] = x0 * s[i] + x1 * c[i];
                }
            }
        }
        self
    }

    fn swiglu(mut self, up: Self) -> Self {
        for (g, u) in self.data.iter_mut().zip(&up.data) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        self
    }

    fn add(mut self, y: Self) -> Self {
        for (a, b) in self.data.iter_mut().zip(&y.data) {
            *a += b;
        }
        self
    }

    fn matmul(&self, ws: &[&QLinear]) -> Vec<Self> {
        let precision = ws[0].precision;
        let ws: Vec<&QMatrix> = ws.iter().map(|w| &w.weight).collect();
        kernels::matmul_t_many(&ws, &self.data, self.rows, precision)
            .into_iter()
            .map(|data| Self {
                data,
                rows: self.rows,
            })
            .collect()
    }

    /// Row by row in a fixed order, so a token's update does not depend on the batch it is in.
    fn lora_delta(&self, lora: &Lora<'_>, pair: usize) -> Self {
        let (a, b) = lora.adapter.host_pair(pair);
        let r = lora.adapter.config.rank;
        let out = b.len() / r;
        let s = lora.adapter.config.scale();
        let mut d = vec![0.0f32; self.rows * out];
        let mut xa = vec![0.0f32; r];
        for (x, d) in self
            .data
            .chunks_exact(self.width())
            .zip(d.chunks_exact_mut(out))
        {
            xa.fill(0.0);
            for (&xc, a) in x.iter().zip(a.chunks_exact(r)) {
                for (o, &w) in xa.iter_mut().zip(a) {
                    *o += xc * w;
                }
            }
            for (&xj, b) in xa.iter().zip(b.chunks_exact(out)) {
                for (o, &w) in d.iter_mut().zip(b) {
                    *o += s * xj * w;
                }
            }
        }
        Self {
            data: d,
            rows: self.rows,
        }
    }

    /// One query row and head at a time, over the host cache, each in a fixed order: a token's
    /// result does not depend on how many tokens came in its batch.
    fn attention(
        self,
        k: Self,
        v: Self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        heads: Heads,
    ) -> Result<Self> {
        let Heads {
            n_head,
            n_kv_head,
            head_dim: hd,
        } = heads;
        let kw = n_kv_head * hd;
        let (ks, vs) = cache.append_host(layer, &k.data, &v.data, kw)?;
        let (group, scale, width) = (n_head / n_kv_head, 1.0 / (hd as f32).sqrt(), n_head * hd);
        let q = &self.data;
        let mut out = vec![0.0f32; self.rows * width];
        kernels::par_rows(&mut out, hd, self.rows * n_head, |r0, o| {
            let mut scores = Vec::new();
            for (i, o) in o.chunks_exact_mut(hd).enumerate() {
                let (t, h) = ((r0 + i) / n_head, (r0 + i) % n_head);
                let qh = &q[t * width + h * hd..][..hd];
                let g = (h / group) * hd;
                let keys = pos + t + 1;
                scores.clear();
                scores.extend((0..keys).map(|j| dot(qh, &ks[j * kw + g..][..hd]) * scale));
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0.0;
                for s in &mut scores {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                o.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let p = p / sum;
                    for (o, &x) in o.iter_mut().zip(&vs[j * kw + g..][..hd]) {
                        *o += p * x;
                    }
                }
            }
        });
        Ok(Self {
            data: out,
            rows: self.rows,
        })
    }
}

/// `a · b` in eight independent lanes (which the compiler vectorizes), then their sum.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

impl Activations for Tensor<2> {
    fn from_host(data: Vec<f32>, rows: usize, device: &Device) -> Self {
        let width = data.len() / rows.max(1);
        Tensor::from_data(TensorData::new(data, [rows, width]), device)
    }

    fn rows_from(self, first: usize) -> Self {
        let rows = self.dims()[0];
        if first > 0 {
            self.narrow(0, first, rows - first)
        } else {
            self
        }
    }

    fn rms_norm(&self, w: &Norm, eps: f32) -> Self {
        let rms = (self.clone().square().mean_dim(1) + eps).sqrt();
        self.clone() / rms * w.tensor.clone().unsqueeze::<2>()
    }

    fn rope(self, r: &Rope, head_dim: usize, pos: usize) -> Self {
        let [t, w] = self.dims();
        let (h, half) = (w / head_dim, head_dim / 2);
        let x = self.reshape([t, h, half, 2]);
        let cos = r.cos.clone().narrow(0, pos, t).reshape([t, 1, half, 1]);
        let sin = r.sin.clone().narrow(0, pos, t).reshape([t, 1, half, 1]);
        let x0 = x.clone().narrow(3, 0, 1);
        let x1 = x.narrow(3, 1, 1);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin + x1 * cos;
        Tensor::cat(vec![r0, r1], 3).reshape([t, w])
    }

    fn swiglu(self, up: Self) -> Self {
        activation::silu(self) * up
    }

    fn add(self, y: Self) -> Self {
        self + y
    }

    fn matmul(&self, ws: &[&QLinear]) -> Vec<Self> {
        ws.iter()
            .map(|w| {
                let dense = w.dense_t.clone().unwrap_or_else(|| w.dense(&self.device()));
                self.clone().matmul(dense)
            })
            .collect()
    }

    fn lora_delta(&self, lora: &Lora<'_>, pair: usize) -> Self {
        let p = &lora.weights.pairs[pair];
        self.clone().matmul(p.a.val()).matmul(p.b.val()) * lora.adapter.config.scale()
    }

    fn attention(
        self,
        k: Self,
        v: Self,
        cache: &mut KvCache,
        layer: usize,
        pos: usize,
        heads: Heads,
    ) -> Result<Self> {
        let Heads {
            n_head,
            n_kv_head,
            head_dim,
        } = heads;
        let t = self.dims()[0];
        let group = n_head / n_kv_head;
        let split = |x: Self, h: usize| x.reshape([t, h, head_dim]).swap_dims(0, 1);
        let (k, v) = cache.append(layer, split(k, n_kv_head), split(v, n_kv_head))?; // [kv_heads, total, hd]
        let total = pos + t;
        let device = self.device();
        // Query heads h*group..(h+1)*group share KV head h: fold them into the rows.
        let q = split(self, n_head).reshape([n_kv_head, group * t, head_dim]);
        let mut scores = q.matmul(k.swap_dims(1, 2)) * (1.0 / (head_dim as f32).sqrt());
        if t > 1 {
            scores = scores + causal_mask(group, t, pos, total, &device).unsqueeze::<3>();
        }
        let att = activation::softmax(scores, 2).matmul(v); // [kv_heads, group*T, hd]
        Ok(att
            .reshape([n_head, t, head_dim])
            .swap_dims(0, 1)
            .reshape([t, n_head * head_dim]))
    }
}

/// Additive mask [group*T, total]: row r is position pos + r % T and sees keys up to it.
fn causal_mask(group: usize, t: usize, pos: usize, total: usize, device: &Device) -> Tensor<2> {
    let mut m = vec![0.0f32; group * t * total];
    for r in 0..group * t {
        let p = pos + r % t;
        for col in p + 1..total {
            m[r * total + col] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_data(TensorData::new(m, [group * t, total]), device)
}

/// A linear layer without bias whose weight stays in its GGML blocks: the host multiplies with
/// the blocks ([`kernels`]), every other path with `Wᵀ` made once on the device.
#[derive(Debug, Clone)]
pub struct QLinear {
    pub weight: QMatrix,
    /// `Wᵀ` on the device, for every path but the CPU kernels.
    dense_t: Option<Tensor<2>>,
    /// The activations the CPU kernels multiply with.
    precision: Precision,
}

impl QLinear {
    pub fn new(weight: QMatrix, dev: &EngineDevice) -> Self {
        // The CPU kernels and the GPU kernels multiply with the blocks themselves.
        let dense_t = (!dev.quantized_kernels() && !dev.gpu_kernels()).then(|| match dev.backend {
            // On the GPU the weights stay quantized: GGML's 4-bit blocks carry an offset that
            // burn's symmetric schemes lack, so each block of 32 inputs is requantized to
            // symmetric 8 bits (an error ~10x below Q4_1's own step), and burn's quantized
            // matmul dequantizes on the fly. Training (autodiff) keeps them in f32, as on the
            // CPU: the same weights the CPU trains on.
            Backend::Wgpu | Backend::WgpuBurn if !dev.device.is_autodiff() => {
                dense_matrix(&weight, &dev.device)
                    .quantize_dynamic(&gpu_scheme())
                    .transpose()
            }
            _ => dense_matrix(&weight, &dev.device).transpose(),
        });
        Self {
            weight,
            dense_t,
            precision: dev.precision(),
        }
    }

    /// `Wᵀ` in f32 on `device` (what [`Self::new`] keeps for the tensor path).
    fn dense(&self, device: &Device) -> Tensor<2> {
        dense_matrix(&self.weight, device).transpose()
    }
}

fn dense_matrix(w: &QMatrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(w.dequantize(), [w.rows, w.cols]), device)
}

/// Symmetric int8 with one f32 scale per 32 inputs of `W` ([out, in]): GGUF's block direction.
fn gpu_scheme() -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::PackedU32(0))
        .per_block([1, 32], ScaleDtype::F32)
}

/// A norm's weights, on the device and on the host.
#[derive(Debug, Clone)]
pub struct Norm {
    tensor: Tensor<1>,
    host: Vec<f32>,
}

impl Norm {
    /// The weights on the host.
    pub fn host(&self) -> &[f32] {
        &self.host
    }

    pub fn new(host: Vec<f32>, device: &Device) -> Self {
        let n = host.len();
        Self {
            tensor: Tensor::from_data(TensorData::new(host.clone(), [n]), device),
            host,
        }
    }
}

/// Rotary position embedding tables: cos and sin of [context, head_dim / 2], on the device and
/// on the host.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
}

impl Rope {
    /// cos θ of position p and pair i at `p * head_dim / 2 + i`, on the host.
    pub fn cos_host(&self) -> &[f32] {
        &self.cos_host
    }

    /// sin θ, as [`Self::cos_host`].
    pub fn sin_host(&self) -> &[f32] {
        &self.sin_host
    }

    pub fn new(head_dim: usize, context: usize, base: f32, device: &Device) -> Self {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(context * half),
            Vec::with_capacity(context * half),
        );
        for p in 0..context {
            for i in 0..half {
                let theta = p as f64 * (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        let t =
            |v: &Vec<f32>| Tensor::from_data(TensorData::new(v.clone(), [context, half]), device);
        Self {
            cos: t(&cos),
            sin: t(&sin),
            cos_host: cos,
            sin_host: sin,
        }
    }
}
