//! The GPU path (wgpu: WebGPU in the browser, Vulkan/Metal natively): the layer in hand-written
//! CubeCL kernels ([`kernels`]), twelve launches a layer with an adapter, with the weights in
//! their GGML blocks and the KV cache preallocated on the device.
//!
//! The layer is the one of [`super::llama`], fused: what the burn tensor path runs as ~60
//! operations a layer, this runs as [`Weights::forward`] lists it. The burn path stays the
//! differentiable reference (training, `cpu-reference`), and the tests hold this one to the
//! CPU's exact path (`cpu-f32`).

mod kernels;

use burn::tensor::{Device, Tensor};
use cubecl::client::Client;
use cubecl::prelude::*;
use cubecl::server::Handle;

use super::kernels::embedding_rows;
use super::kv_cache::KvCache;
use super::llama::{LlamaConfig, Logits};
use super::lora::{Adapter, BaseShape, Target};
use super::ops::Rope;
use super::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, F16Le, GgmlType, QMatrix, blocks, dequantize};
use super::scores::Scores;
use crate::error::{Error, Result};

/// The matrices of a layer that read the same input, multiplied in one launch (rows stacked).
pub const GROUPS: [&[Target]; 4] = [
    &[Target::Q, Target::K, Target::V],
    &[Target::O],
    &[Target::Gate, Target::Up],
    &[Target::Down],
];

/// What a device buffer holds: 4-byte little-endian values (f32 activations, u32 token ids).
trait Word: Copy {
    fn to_le(self) -> [u8; 4];
    fn from_le(b: [u8; 4]) -> Self;
}

impl Word for f32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        f32::from_le_bytes(b)
    }
}

impl Word for u32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
    fn from_le(b: [u8; 4]) -> Self {
        u32::from_le_bytes(b)
    }
}

/// A buffer of `len` values of `T` (f32 unless said) on the device.
#[derive(Debug, Clone)]
struct Buf<T = f32> {
    handle: Handle,
    len: usize,
    of: std::marker::PhantomData<T>,
}

impl<T: Word> Buf<T> {
    fn from_slice(client: &Client, data: &[T]) -> Self {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le()).collect();
        Self {
            handle: client.create_from_slice(&bytes),
            len: data.len(),
            of: std::marker::PhantomData,
        }
    }

    fn empty(client: &Client, len: usize) -> Self {
        Self {
            handle: client.empty(len.max(1) * 4),
            len: len.max(1),
            of: std::marker::PhantomData,
        }
    }

    fn arg(&self) -> BufferArg {
        // SAFETY: the handle holds `len` 4-byte values (it was made for them).
        unsafe { BufferArg::from_raw_parts(self.handle.clone(), self.len) }
    }

    async fn read(&self, client: &Client) -> Result<Vec<T>> {
        let bytes = client
            .read_async(vec![self.handle.clone()])
            .await
            .map_err(|e| Error::Device(format!("reading a GPU buffer: {e:?}")))?;
        let b: &[u8] = &bytes[0];
        Ok(b.chunks_exact(4)
            .take(self.len)
            .map(|c| T::from_le([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// The logits of a forward pass, still on the device: `rows` rows of `vocab`.
pub struct DeviceLogits {
    out: Buf,
    rows: usize,
    vocab: usize,
}

/// A matrix (or matrices stacked by rows) in its GGML blocks, as `u32` words.
#[derive(Debug, Clone)]
struct Matrix {
    words: Handle,
    len: usize,
    rows: usize,
    cols: usize,
    format: u32,
}

impl Matrix {
    /// `parts` stacked by rows; they share one type and width. Q4_1 keeps GGUF's bytes, Q4_0
    /// becomes Q4_1 (`m = -8d`, exact), Q8_0 gets its scale widened to a word, anything else
    /// is dequantized to f32.
    fn upload(client: &Client, parts: &[&QMatrix]) -> Result<Self> {
        let (ty, cols) = (parts[0].ty, parts[0].cols);
        if parts.iter().any(|p| p.ty != ty || p.cols != cols) || cols % 32 != 0 {
            return Err(Error::Config(format!(
                "GPU matrices must share a type and a width that is a multiple of 32 ({cols})"
            )));
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut words: Vec<u32> = Vec::new();
        let format = match ty {
            GgmlType::Q4_1 | GgmlType::Q4_0 => {
                // A Q4_1 block: `d` and `m` as f16 in one word, then the 16 bytes of nibbles.
                let mut push = |d: half::f16, m: half::f16, qs: &[u8]| {
                    words.push(d.to_bits() as u32 | (m.to_bits() as u32) << 16);
                    words.extend(
                        qs.chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                };
                let f16 = |b: F16Le| half::f16::from_le_bytes(b.0);
                for p in parts {
                    if ty == GgmlType::Q4_1 {
                        for b in blocks::<BlockQ4_1>(&p.data) {
                            push(f16(b.d), f16(b.m), &b.qs);
                        }
                    } else {
                        for b in blocks::<BlockQ4_0>(&p.data) {
                            push(f16(b.d), half::f16::from_f32(-8.0 * b.d.to_f32()), &b.qs);
                        }
                    }
                }
                kernels::Q4_1
            }
            GgmlType::Q8_0 => {
                for p in parts {
                    for b in blocks::<BlockQ8_0>(&p.data) {
                        words.push(b.d.to_f32().to_bits());
                        words.extend(b.qs.chunks_exact(4).map(|c| {
                            u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8])
                        }));
                    }
                }
                kernels::Q8_0
            }
            _ => {
                for p in parts {
                    words.extend(
                        dequantize(p.ty, &p.data, p.rows * p.cols)
                            .iter()
                            .map(|v| v.to_bits()),
                    );
                }
                kernels::F32
            }
        };
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        Ok(Self {
            words: client.create_from_slice(&bytes),
            len: words.len(),
            rows,
            cols,
            format,
        })
    }

    fn arg(&self) -> BufferArg {
        // SAFETY: the handle holds `len` words.
        unsafe { BufferArg::from_raw_parts(self.words.clone(), self.len) }
    }
}

/// One layer's weights on the device.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Buf,
    /// Q, K, V stacked, then O, gate and up stacked, then down: [`GROUPS`]' order.
    groups: [Matrix; 4],
    ffn_norm: Buf,
}

/// The adapter's update of one group: `A`s side by side ([cols, rank_total]) and `B`s
/// transposed, scaled and stacked ([rows, rank_total], zero outside each matrix's own block).
#[derive(Debug, Clone)]
struct LoraGroup {
    a: Buf,
    bt: Buf,
    rank_total: usize,
}

/// An adapter on the device, by layer and group (`None` where it targets none of a group).
#[derive(Debug, Clone)]
pub struct GpuLora {
    layers: Vec<[Option<LoraGroup>; 4]>,
    /// The widest group's ranks together (the size of `x·A` a token).
    rank_total: usize,
}

/// The model's weights on the device and the client that runs the kernels.
#[derive(Clone)]
pub struct Weights {
    k: Launcher,
    layers: Vec<Layer>,
    norm: Buf,
    head: Matrix,
    cos: Buf,
    sin: Buf,
}

/// Launches the kernels that need more than their arguments: RMSNorm and the product.
#[derive(Clone)]
struct Launcher {
    client: Client,
    /// Bound where a kernel's argument is unused (WebGPU forbids binding one buffer twice
    /// when a binding is writable).
    unused: [Buf; 3],
}

/// The compute client of a wgpu `device` (the one burn's tensors on it use).
fn client(device: &Device) -> Result<Client> {
    let t = Tensor::<1>::zeros([1], device);
    t.try_into_primitive::<burn::backend::Wgpu>()
        .map(|p| p.client)
        .map_err(|e| Error::Device(format!("not a wgpu device: {e:?}")))
}

/// What the layer's loader hands over: per layer the norms and the matrices by GGUF name.
pub struct LayerSource<'a> {
    pub attn_norm: &'a [f32],
    pub ffn_norm: &'a [f32],
    /// q, k, v, o, gate, up, down.
    pub matrices: [&'a QMatrix; 7],
}

impl Weights {
    pub fn upload(
        device: &Device,
        layers: &[LayerSource<'_>],
        norm: &[f32],
        head: &QMatrix,
        rope: &Rope,
    ) -> Result<Self> {
        let client = client(device)?;
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let [q, k, v, o, gate, up, down] = l.matrices;
            out.push(Layer {
                attn_norm: Buf::from_slice(&client, l.attn_norm),
                groups: [
                    Matrix::upload(&client, &[q, k, v])?,
                    Matrix::upload(&client, &[o])?,
                    Matrix::upload(&client, &[gate, up])?,
                    Matrix::upload(&client, &[down])?,
                ],
                ffn_norm: Buf::from_slice(&client, l.ffn_norm),
            });
        }
        Ok(Self {
            norm: Buf::from_slice(&client, norm),
            head: Matrix::upload(&client, &[head])?,
            cos: Buf::from_slice(&client, rope.cos_host()),
            sin: Buf::from_slice(&client, rope.sin_host()),
            layers: out,
            k: Launcher {
                unused: [0; 3].map(|_| Buf::empty(&client, 1)),
                client,
            },
        })
    }

    /// `adapter` on the device, for [`Self::logits`].
    pub fn upload_lora(&self, adapter: &Adapter, c: &LlamaConfig) -> GpuLora {
        let scale = adapter.config.scale();
        let r = adapter.config.rank;
        let layers = (0..c.n_layer)
            .map(|i| {
                GROUPS.map(|targets| {
                    let pairs: Vec<Option<usize>> =
                        targets.iter().map(|&t| adapter.pair(i, t)).collect();
                    if pairs.iter().all(Option::is_none) {
                        return None;
                    }
                    let rt = r * targets.len();
                    let shape = BaseShape::from(c);
                    let cols = targets[0].dims(&shape).0;
                    let rows: Vec<usize> = targets.iter().map(|t| t.dims(&shape).1).collect();
                    let total_rows: usize = rows.iter().sum();
                    let mut a = vec![0.0f32; cols * rt];
                    let mut bt = vec![0.0f32; total_rows * rt];
                    let mut row0 = 0;
                    for (m, (pair, &n)) in pairs.iter().zip(&rows).enumerate() {
                        if let Some(p) = *pair {
                            let (pa, pb) = adapter.host_pair(p);
                            for i in 0..cols {
                                for k in 0..r {
                                    a[i * rt + m * r + k] = pa[i * r + k];
                                }
                            }
                            for k in 0..r {
                                for j in 0..n {
                                    bt[(row0 + j) * rt + m * r + k] = scale * pb[k * n + j];
                                }
                            }
                        }
                        row0 += n;
                    }
                    Some(LoraGroup {
                        a: Buf::from_slice(&self.k.client, &a),
                        bt: Buf::from_slice(&self.k.client, &bt),
                        rank_total: rt,
                    })
                })
            })
            .collect();
        GpuLora {
            layers,
            rank_total: r * GROUPS.iter().map(|g| g.len()).max().unwrap_or(1),
        }
    }

    /// The logits, read back whole (row-major).
    pub async fn read(&self, l: &DeviceLogits) -> Result<Vec<f32>> {
        l.out.read(&self.k.client).await
    }

    /// Each row of `l` reduced on the device to its `k` best tokens (best first, ties to the
    /// lower id) and the logit of `gather[row]`: `8k + 4` bytes a row read back in one transfer
    /// instead of the vocabulary's logits.
    pub async fn top(
        &self,
        l: &DeviceLogits,
        k: usize,
        gather: &[Option<u32>],
    ) -> Result<Vec<Scores>> {
        let client = &self.k.client;
        let (rows, vocab) = (l.rows, l.vocab);
        let wanted: Vec<Option<u32>> = (0..rows)
            .map(|r| {
                gather
                    .get(r)
                    .copied()
                    .flatten()
                    .filter(|&g| (g as usize) < vocab)
            })
            .collect();
        let gather_words: Vec<u32> = wanted.iter().map(|g| g.unwrap_or(0)).collect();
        let gather_buf = Buf::<u32>::from_slice(client, &gather_words);
        // A row: its k ids, their logits' bits, the gathered logit's bits.
        let words = 2 * k + 1;
        let reduced = Buf::<u32>::empty(client, rows * words);
        kernels::top_k::launch(
            client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(kernels::ROW_UNITS),
            l.out.arg(),
            gather_buf.arg(),
            reduced.arg(),
            vocab as u32,
            k,
        );
        let reduced = reduced.read(client).await?;
        Ok(reduced
            .chunks_exact(words)
            .zip(wanted)
            .map(|(w, g)| Scores::Top {
                best: (0..k).map(|j| (w[j], f32::from_bits(w[k + j]))).collect(),
                gathered: g.map(|g| (g, f32::from_bits(w[2 * k]))),
            })
            .collect())
    }

    /// Runs `ids` after what `cache` holds and appends their keys and values to it: the
    /// logits of the rows `logits` asks for, launched and left on the device.
    pub fn forward(
        &self,
        c: &LlamaConfig,
        embed: &QMatrix,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        lora: Option<&GpuLora>,
    ) -> Result<DeviceLogits> {
        let client = &self.k.client;
        let (t, d) = (ids.len(), c.d_model);
        let pos = cache.len();
        let (qw, kvw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let mut x = Buf::from_slice(client, &embedding_rows(embed, ids));
        let h = Buf::empty(client, t * d);
        let qkv = Buf::empty(client, t * (qw + 2 * kvw));
        let att = Buf::empty(client, t * qw);
        let mlp = Buf::empty(client, t * c.ffn);
        let rank_total = lora.map_or(1, |g| g.rank_total);
        let xa = Buf::empty(client, t * rank_total);
        for (i, l) in self.layers.iter().enumerate() {
            let lora = lora.map(|g| &g.layers[i]);
            let (kc, vc) = cache.reserve_gpu(i, client, pos + t, kvw)?;
            self.k.rms_norm(&x, &l.attn_norm, &h, t, d, c.eps);
            let group = |j: usize| lora.and_then(|g| g[j].as_ref());
            self.k.matvec(
                &l.groups[0],
                &h,
                group(0),
                &xa,
                None,
                &qkv,
                t,
                0,
                kernels::PLAIN,
            );
            kernels::rope_kv::launch(
                client,
                CubeCount::Static(1, t as u32, 1),
                CubeDim::new_1d(256),
                qkv.arg(),
                self.cos.arg(),
                self.sin.arg(),
                kc.arg(),
                vc.arg(),
                pos as u32,
                qw as u32,
                kvw as u32,
                c.head_dim as u32,
            );
            kernels::attention::launch(
                client,
                CubeCount::Static(c.n_head as u32, t as u32, 1),
                CubeDim::new_1d(c.head_dim as u32),
                qkv.arg(),
                kc.arg(),
                vc.arg(),
                att.arg(),
                pos as u32,
                c.n_head as u32,
                (c.n_head / c.n_kv_head) as u32,
                kvw as u32,
                1.0 / (c.head_dim as f32).sqrt(),
                c.head_dim,
            );
            let x2 = Buf::empty(client, t * d);
            self.k.matvec(
                &l.groups[1],
                &att,
                group(1),
                &xa,
                Some(&x),
                &x2,
                t,
                0,
                kernels::RESIDUAL,
            );
            self.k.rms_norm(&x2, &l.ffn_norm, &h, t, d, c.eps);
            self.k.matvec(
                &l.groups[2],
                &h,
                group(2),
                &xa,
                None,
                &mlp,
                t,
                0,
                kernels::SWIGLU,
            );
            x = Buf::empty(client, t * d);
            self.k.matvec(
                &l.groups[3],
                &mlp,
                group(3),
                &xa,
                Some(&x2),
                &x,
                t,
                0,
                kernels::RESIDUAL,
            );
        }
        let first = logits.first_row(t);
        self.k.rms_norm(&x, &self.norm, &h, t, d, c.eps);
        let out = Buf::empty(client, (t - first) * c.vocab);
        self.k.matvec(
            &self.head,
            &h,
            None,
            &xa,
            None,
            &out,
            t - first,
            first,
            kernels::PLAIN,
        );
        Ok(DeviceLogits {
            out,
            rows: t - first,
            vocab: c.vocab,
        })
    }
}

impl Launcher {
    fn rms_norm(&self, x: &Buf, w: &Buf, out: &Buf, rows: usize, width: usize, eps: f32) {
        kernels::rms_norm::launch(
            &self.client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(kernels::ROW_UNITS),
            x.arg(),
            w.arg(),
            out.arg(),
            width as u32,
            eps,
        );
    }

    /// `out = x·Wᵀ` (+ the adapter's update) for `tokens` rows of `x` from `x_row0` on, written
    /// as `mode` says.
    #[allow(clippy::too_many_arguments)]
    fn matvec(
        &self,
        w: &Matrix,
        x: &Buf,
        lora: Option<&LoraGroup>,
        xa: &Buf,
        residual: Option<&Buf>,
        out: &Buf,
        tokens: usize,
        x_row0: usize,
        mode: u32,
    ) {
        let client = &self.client;
        let rank_total = lora.map_or(0, |g| g.rank_total);
        if let Some(g) = lora {
            kernels::lora_xa::launch(
                client,
                CubeCount::Static(rank_total as u32, tokens as u32, 1),
                CubeDim::new_1d(kernels::ROW_UNITS),
                x.arg(),
                g.a.arg(),
                xa.arg(),
                w.cols as u32,
                rank_total as u32,
            );
        }
        let n = if mode == kernels::SWIGLU {
            w.rows / 2
        } else {
            w.rows
        };
        let cubes = n.div_ceil(kernels::ROWS as usize) as u32;
        // Two shaders: one token (decode) or a tile of them (prefill, verification).
        let tile = if tokens == 1 { 1 } else { kernels::TOKEN_TILE };
        let [no_xa, no_bt, no_residual] = &self.unused;
        let (xa, bt) = match lora {
            Some(g) => (xa, &g.bt),
            None => (no_xa, no_bt),
        };
        kernels::qmatvec::launch(
            client,
            CubeCount::Static(cubes, tokens.div_ceil(tile) as u32, 1),
            CubeDim::new_2d(kernels::LANES, kernels::ROWS),
            w.arg(),
            x.arg(),
            xa.arg(),
            bt.arg(),
            residual.unwrap_or(no_residual).arg(),
            out.arg(),
            w.rows as u32,
            w.cols as u32,
            tokens as u32,
            x_row0 as u32,
            w.format,
            mode,
            rank_total,
            tile,
        );
    }
}

/// One layer's keys and values on the device: rows of `width` for up to `capacity` tokens.
pub struct GpuKv {
    client: Client,
    k: Buf,
    v: Buf,
    capacity: usize,
    width: usize,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpu::Weights({} layers)", self.layers.len())
    }
}

impl std::fmt::Debug for GpuKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuKv({} tokens of {})", self.capacity, self.width)
    }
}

impl GpuKv {
    pub fn new(client: &Client, capacity: usize, width: usize) -> Self {
        Self {
            client: client.clone(),
            k: Buf::empty(client, capacity * width),
            v: Buf::empty(client, capacity * width),
            capacity,
            width,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Room for `tokens` tokens, keeping the first `keep`: a full cache moves to a buffer twice
    /// as large.
    pub fn reserve(&mut self, tokens: usize, keep: usize) {
        if tokens <= self.capacity {
            return;
        }
        let capacity = tokens.max(2 * self.capacity);
        let grown = Self::new(&self.client, capacity, self.width);
        let n = keep * self.width;
        for (src, dst) in [(&self.k, &grown.k), (&self.v, &grown.v)] {
            copy(&self.client, src, dst, n);
        }
        *self = grown;
    }
}

fn copy(client: &Client, src: &Buf, dst: &Buf, n: usize) {
    if n == 0 {
        return;
    }
    kernels::copy::launch(
        client,
        CubeCount::Static((n as u32).div_ceil(256), 1, 1),
        CubeDim::new_1d(256),
        src.arg(),
        dst.arg(),
        n as u32,
    );
}

impl Clone for GpuKv {
    /// A copy of its own: the kernels write into a cache in place.
    fn clone(&self) -> Self {
        let c = Self::new(&self.client, self.capacity, self.width);
        copy(&self.client, &self.k, &c.k, self.capacity * self.width);
        copy(&self.client, &self.v, &c.v, self.capacity * self.width);
        c
    }
}

impl GpuKv {
    pub(crate) fn bufs(&self) -> (KvArg, KvArg) {
        (KvArg(self.k.clone()), KvArg(self.v.clone()))
    }
}

/// One of a cache's buffers, as a kernel argument.
pub struct KvArg(Buf);

impl KvArg {
    fn arg(&self) -> BufferArg {
        self.0.arg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EngineDevice;

    /// The kernels on the machine's wgpu adapter (lavapipe where there is no GPU).
    fn launcher() -> Option<Launcher> {
        if std::env::var("STREAM_ALIGNER_SKIP_WGPU").as_deref() == Ok("1") {
            return None;
        }
        let d = futures::executor::block_on(EngineDevice::wgpu()).expect(
            "a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers), or \
             STREAM_ALIGNER_SKIP_WGPU=1",
        );
        let client = client(&d.device).unwrap();
        Some(Launcher {
            unused: [0; 3].map(|_| Buf::empty(&client, 1)),
            client,
        })
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 40.0)
            .collect()
    }

    /// The product kernel against the dequantized product on the host (f64), for every weight
    /// format, one token and more than a tile of them, each epilogue, with and without an
    /// adapter's update.
    #[test]
    fn the_product_kernel_matches_the_dequantized_product() {
        let Some(k) = launcher() else { return };
        let (rows, cols, rt) = (40, 96, 4);
        let f32_bytes: Vec<u8> = values(rows * cols, 9)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16_bytes: Vec<u8> = values(rows * cols, 8)
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let dense = |ty, data: Vec<u8>| QMatrix {
            ty,
            rows,
            cols,
            data: data.into(),
        };
        for w in [
            QMatrix::random(GgmlType::Q4_1, rows, cols, 3),
            QMatrix::random(GgmlType::Q4_0, rows, cols, 4),
            QMatrix::random(GgmlType::Q8_0, rows, cols, 5),
            dense(GgmlType::F32, f32_bytes),
            dense(GgmlType::F16, f16_bytes),
        ] {
            let wf = w.dequantize();
            let gw = Matrix::upload(&k.client, &[&w]).unwrap();
            for tokens in [1, 11] {
                let (x, a, bt) = (
                    values(tokens * cols, 1),
                    values(cols * rt, 2),
                    values(rows * rt, 3),
                );
                let xa = |t: usize, j: usize| -> f64 {
                    (0..cols)
                        .map(|c| x[t * cols + c] as f64 * a[c * rt + j] as f64)
                        .sum()
                };
                let group = LoraGroup {
                    a: Buf::from_slice(&k.client, &a),
                    bt: Buf::from_slice(&k.client, &bt),
                    rank_total: rt,
                };
                for mode in [kernels::PLAIN, kernels::RESIDUAL, kernels::SWIGLU] {
                    for lora in [false, true] {
                        let n = if mode == kernels::SWIGLU {
                            rows / 2
                        } else {
                            rows
                        };
                        let residual = values(tokens * n, 4);
                        let dot = |t: usize, r: usize| -> f64 {
                            let base: f64 = (0..cols)
                                .map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64)
                                .sum();
                            let delta: f64 =
                                (0..rt).map(|j| xa(t, j) * bt[r * rt + j] as f64).sum();
                            base + if lora { delta } else { 0.0 }
                        };
                        let out = Buf::empty(&k.client, tokens * n);
                        let (xb, rb) = (
                            Buf::from_slice(&k.client, &x),
                            Buf::from_slice(&k.client, &residual),
                        );
                        let xab = Buf::empty(&k.client, tokens * rt);
                        let res = (mode == kernels::RESIDUAL).then_some(&rb);
                        let g = lora.then_some(&group);
                        k.matvec(&gw, &xb, g, &xab, res, &out, tokens, 0, mode);
                        let got = futures::executor::block_on(out.read(&k.client)).unwrap();
                        for t in 0..tokens {
                            for r in 0..n {
                                let want = match mode {
                                    kernels::PLAIN => dot(t, r),
                                    kernels::RESIDUAL => residual[t * n + r] as f64 + dot(t, r),
                                    _ => {
                                        let g = dot(t, r);
                                        g / (1.0 + (-g).exp()) * dot(t, r + n)
                                    }
                                };
                                let err = (got[t * n + r] as f64 - want).abs();
                                assert!(
                                    err <= 1e-4 * (1.0 + want.abs()),
                                    "{:?}, {tokens} tokens, mode {mode}, lora {lora}, ({t}, {r}): \
                                     {} against {want}",
                                    w.ty,
                                    got[t * n + r]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
