//! The decode kernels of the GPU path, in CubeCL (WGSL in the browser, SPIR-V on Vulkan).
//!
//! A layer is twelve launches with an adapter, eight without: RMSNorm, the adapter's `x·A` for
//! the matrices that share an input, one quantized product for Q, K and V together, RoPE with
//! the write of K and V into the preallocated cache, grouped-query attention, the output product
//! with the residual in its epilogue, RMSNorm, gate and up together with SwiGLU in the epilogue,
//! and the down product with the residual (llama.cpp's Vulkan backend runs 14 a layer).
//!
//! Weights stay in their GGML blocks as `u32` words ([`super::GpuMatrix`]): Q4_1 as GGUF stores
//! it (`d`, `m` as f16, 16 bytes of nibbles: 0.625 bytes a weight), Q8_0 with its scale widened
//! to a word (1.125 bytes a weight), anything else as f32 words. Every product accumulates in
//! f32 from f32 activations, as the CPU's exact path (`cpu-f32`) does.

use cubecl::prelude::*;

/// How a matrix's words hold its weights (a comptime parameter: one shader each).
pub const Q4_1: u32 = 0;
pub const Q8_0: u32 = 1;
pub const F32: u32 = 2;

/// What the product kernel writes.
pub const PLAIN: u32 = 0;
/// `out = residual + x·Wᵀ`.
pub const RESIDUAL: u32 = 1;
/// Rows `0..n` are the gate, `n..2n` the up projection: `out = silu(gate) · up`, n wide.
pub const SWIGLU: u32 = 2;

/// Units a cube of the row kernels (RMSNorm, `x·A`, attention: one head's width).
pub const ROW_UNITS: u32 = 64;
/// Lanes that share one output row of a product, and rows a cube.
pub const LANES: u32 = 16;
pub const ROWS: u32 = 16;
/// Tokens a cube of the product kernel multiplies with each block of weights it reads (prefill;
/// decode has one).
pub const TOKEN_TILE: usize = 8;
/// Keys scored at a time by the attention kernel (its shared memory).
pub const KEY_CHUNK: u32 = 256;

/// An IEEE half (the low 16 bits of `h`) widened to f32, with integer operations only: WebGPU
/// adapters without `shader-f16` (SwiftShader) have no f16 type.
#[cube]
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u32) << 16u32;
    let e = (h >> 10u32) & 0x1fu32;
    let m = h & 0x3ffu32;
    let mut bits = sign | ((e + 112u32) << 23u32) | (m << 13u32);
    if e == 0u32 {
        // Zero and subnormals: m · 2⁻²⁴, exact in f32.
        bits = sign | u32::reinterpret(f32::cast_from(m) * 5.9604645e-8f32);
    } else if e == 31u32 {
        bits = sign | 0x7f80_0000u32 | (m << 13u32);
    }
    f32::reinterpret(bits)
}

/// The sum of `partial[0..n]` (every unit reads it; called after a `sync_cube`).
#[cube]
fn total(partial: &Shared<[f32]>, #[comptime] n: usize) -> f32 {
    let mut s = 0.0f32;
    for j in 0..n {
        s += partial[j];
    }
    s
}

/// RMSNorm of each row (one cube a row): `x / sqrt(mean(x²) + eps) · w`.
#[cube(launch)]
pub fn rms_norm(x: &[f32], w: &[f32], out: &mut [f32], width: u32, eps: f32) {
    let width = width as usize;
    let base = CUBE_POS_X as usize * width;
    let u = UNIT_POS_X as usize;
    let units = ROW_UNITS as usize;
    let mut partial = Shared::<[f32]>::new_slice(ROW_UNITS as usize);
    let mut s = 0.0f32;
    let mut i = u;
    while i < width {
        let v = x[base + i];
        s += v * v;
        i += units;
    }
    partial[u] = s;
    sync_cube();
    let ms = total(&partial, ROW_UNITS as usize) / f32::cast_from(width as u32);
    let inv = 1.0f32 / (ms + eps).sqrt();
    let mut i = u;
    while i < width {
        out[base + i] = x[base + i] * inv * w[i];
        i += units;
    }
}

/// The adapter's first factor for every matrix that reads `h`: `xa[t, c] = h[t]·A[:, c]` with
/// the matrices' `A` side by side ([cols, rank_total]). One cube an output (c, t).
#[cube(launch)]
pub fn lora_xa(h: &[f32], a: &[f32], xa: &mut [f32], cols: u32, rank_total: u32) {
    let (cols, rt) = (cols as usize, rank_total as usize);
    let (c, t) = (CUBE_POS_X as usize, CUBE_POS_Y as usize);
    let u = UNIT_POS_X as usize;
    let units = ROW_UNITS as usize;
    let mut partial = Shared::<[f32]>::new_slice(ROW_UNITS as usize);
    let mut s = 0.0f32;
    let mut i = u;
    while i < cols {
        s += h[t * cols + i] * a[i * rt + c];
        i += units;
    }
    partial[u] = s;
    sync_cube();
    if u == 0 {
        xa[t * rt + c] = total(&partial, ROW_UNITS as usize);
    }
}

/// Adds `x[t] · W[row]` for the tokens `t = t0 .. t0 + tile` (clamped to the last, `last`) to
/// `acc[t - t0]`, over blocks `lane, lane + LANES, …` of the row (a lane's share): each block
/// of weights is read once for the whole tile of tokens.
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_dot(
    w: &[u32],
    x: &[f32],
    row: usize,
    t0: usize,
    last: usize,
    cols: usize,
    lane: usize,
    acc: &mut Array<f32>,
    #[comptime] format: u32,
    #[comptime] tile: usize,
) {
    let nb = cols / 32;
    let mut dot = Array::<f32>::new(tile);
    let mut sum = Array::<f32>::new(tile);
    let mut b = lane;
    while b < nb {
        #[unroll]
        for i in 0..tile {
            dot[i] = 0.0f32;
            sum[i] = 0.0f32;
        }
        if comptime![format == Q4_1] {
            let base = (row * nb + b) * 5;
            let dm = w[base];
            for j in 0..4usize {
                let q = w[base + 1 + j];
                #[unroll]
                for k in 0..4usize {
                    let byte = (q >> (8 * k as u32)) & 0xffu32;
                    let lo = f32::cast_from(byte & 0xfu32);
                    let hi = f32::cast_from(byte >> 4u32);
                    #[unroll]
                    for i in 0..tile {
                        let xb = clamp_token(t0 + i, last) * cols + b * 32 + j * 4 + k;
                        let (xl, xh) = (x[xb], x[xb + 16]);
                        dot[i] += lo * xl + hi * xh;
                        sum[i] += xl + xh;
                    }
                }
            }
            let d = f16_to_f32(dm & 0xffffu32);
            let m = f16_to_f32(dm >> 16u32);
            #[unroll]
            for i in 0..tile {
                acc[i] += d * dot[i] + m * sum[i];
            }
        } else if comptime![format == Q8_0] {
            let base = (row * nb + b) * 9;
            for j in 0..8usize {
                let q = w[base + 1 + j];
                #[unroll]
                for k in 0..4usize {
                    let byte = (q >> (8 * k as u32)) & 0xffu32;
                    let mut v = f32::cast_from(byte);
                    if byte > 127u32 {
                        v -= 256.0f32;
                    }
                    #[unroll]
                    for i in 0..tile {
                        dot[i] += v * x[clamp_token(t0 + i, last) * cols + b * 32 + j * 4 + k];
                    }
                }
            }
            let d = f32::reinterpret(w[base]);
            #[unroll]
            for i in 0..tile {
                acc[i] += d * dot[i];
            }
        } else {
            let base = row * cols + b * 32;
            for k in 0..32usize {
                let v = f32::reinterpret(w[base + k]);
                #[unroll]
                for i in 0..tile {
                    acc[i] += v * x[clamp_token(t0 + i, last) * cols + b * 32 + k];
                }
            }
        }
        b += LANES as usize;
    }
}

/// Token `t`, or `last` past it (a tile's spare rows compute a copy nobody writes).
#[cube]
fn clamp_token(t: usize, last: usize) -> usize {
    if t < last { t } else { last }
}

/// The adapter's update of output `row`: `xa[t] · Bt[row]` (`Bt` [rows, rank_total], scaled
/// by alpha/rank and zero outside the row's own matrix).
#[cube]
fn lora_row(xa: &[f32], bt: &[f32], row: usize, t: usize, #[comptime] rank_total: usize) -> f32 {
    let mut s = 0.0f32;
    #[unroll]
    for c in 0..rank_total {
        s += xa[t * rank_total + c] * bt[row * rank_total + c];
    }
    s
}

/// `x·Wᵀ` for the matrices stacked in `w` (rows `0..rows`) and `tokens` tokens, `tile` of them a
/// cube (`CUBE_POS_Y`), token `t` reading input row `x_row0 + t`; `LANES` lanes a row, `ROWS`
/// rows a cube. With `rank_total > 0` it adds the adapter's update; `mode` says what is written
/// ([`PLAIN`], [`RESIDUAL`], [`SWIGLU`]).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn qmatvec(
    w: &[u32],
    x: &[f32],
    xa: &[f32],
    bt: &[f32],
    residual: &[f32],
    out: &mut [f32],
    rows: u32,
    cols: u32,
    tokens: u32,
    x_row0: u32,
    #[comptime] format: u32,
    #[comptime] mode: u32,
    #[comptime] rank_total: usize,
    #[comptime] tile: usize,
) {
    let (rows, cols, tokens) = (rows as usize, cols as usize, tokens as usize);
    let lane = UNIT_POS_X as usize;
    let r_local = UNIT_POS_Y as usize;
    let row = CUBE_POS_X as usize * ROWS as usize + r_local;
    let t0 = CUBE_POS_Y as usize * tile;
    let x0 = x_row0 as usize;
    // With SwiGLU a unit computes gate row `row` and up row `row + n`.
    let n = if comptime![mode == SWIGLU] {
        rows / 2
    } else {
        rows
    };
    let mut a = Array::<f32>::new(tile);
    let mut b = Array::<f32>::new(tile);
    #[unroll]
    for i in 0..tile {
        a[i] = 0.0f32;
        b[i] = 0.0f32;
    }
    if row < n {
        row_dot(
            w,
            x,
            row,
            x0 + t0,
            x0 + tokens - 1,
            cols,
            lane,
            &mut a,
            format,
            tile,
        );
        if comptime![mode == SWIGLU] {
            row_dot(
                w,
                x,
                row + n,
                x0 + t0,
                x0 + tokens - 1,
                cols,
                lane,
                &mut b,
                format,
                tile,
            );
        }
    }
    let mut partial = Shared::<[f32]>::new_slice((LANES * ROWS * 2) as usize);
    let slot = (r_local * LANES as usize + lane) * 2;
    #[unroll]
    for i in 0..tile {
        partial[slot] = a[i];
        partial[slot + 1] = b[i];
        sync_cube();
        let t = t0 + i;
        if lane == 0 && row < n && t < tokens {
            let mut ya = 0.0f32;
            let mut yb = 0.0f32;
            for j in 0..LANES as usize {
                ya += partial[(r_local * LANES as usize + j) * 2];
                yb += partial[(r_local * LANES as usize + j) * 2 + 1];
            }
            if comptime![rank_total > 0] {
                ya += lora_row(xa, bt, row, t, rank_total);
                if comptime![mode == SWIGLU] {
                    yb += lora_row(xa, bt, row + n, t, rank_total);
                }
            }
            if comptime![mode == SWIGLU] {
                out[t * n + row] = ya / (1.0f32 + (-ya).exp()) * yb;
            } else if comptime![mode == RESIDUAL] {
                out[t * n + row] = residual[t * n + row] + ya;
            } else {
                out[t * n + row] = ya;
            }
        }
        sync_cube();
    }
}

/// RoPE on the queries (in place) and keys of token `t` = `CUBE_POS_Y`, at position `pos + t`,
/// and the write of its keys and values into the cache rows `pos + t` (adjacent pairs rotate,
/// as GGUF's llama layout wants). `qkv` rows are `[q | k | v]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    qkv: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    pos: u32,
    q_width: u32,
    kv_width: u32,
    head_dim: u32,
) {
    let (qw, kvw, hd) = (q_width as usize, kv_width as usize, head_dim as usize);
    let t = CUBE_POS_Y as usize;
    let p = pos as usize + t;
    let half = hd / 2;
    let row = t * (qw + 2 * kvw);
    let units = CUBE_DIM_X as usize;
    // Pairs of the queries then of the keys.
    let pairs = (qw + kvw) / 2;
    let mut i = UNIT_POS_X as usize;
    while i < pairs {
        let e = i * 2;
        let f = (e % hd) / 2;
        let (c, s) = (cos[p * half + f], sin[p * half + f]);
        let x0 = qkv[row + e];
        let x1 = qkv[row + e + 1];
        let r0 = x0 * c - x1 * s;
        let r1 = x0 * s + x1 * c;
        if e < qw {
            qkv[row + e] = r0;
            qkv[row + e + 1] = r1;
        } else {
            let kc = p * kvw + e - qw;
            k_cache[kc] = r0;
            k_cache[kc + 1] = r1;
        }
        i += units;
    }
    let mut j = UNIT_POS_X as usize;
    while j < kvw {
        v_cache[p * kvw + j] = qkv[row + qw + kvw + j];
        j += units;
    }
}

/// Causal grouped-query attention of head `h` = `CUBE_POS_X` of token `t` = `CUBE_POS_Y` (at
/// position `pos + t`) over the cache, one unit a dimension of the head (`head_dim` units): keys are scored
/// `KEY_CHUNK` at a time into shared memory, with a running maximum and sum (online softmax).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    pos: u32,
    n_head: u32,
    group: u32,
    kv_width: u32,
    scale: f32,
    #[comptime] head_dim: usize,
) {
    let hd = head_dim;
    let (h, t) = (CUBE_POS_X as usize, CUBE_POS_Y as usize);
    let u = UNIT_POS_X as usize;
    let (nh, kvw) = (n_head as usize, kv_width as usize);
    let qw = nh * hd;
    let kv_off = (h / group as usize) * hd;
    let len = pos as usize + t + 1;
    let mut q = Shared::<[f32]>::new_slice(head_dim);
    let mut scores = Shared::<[f32]>::new_slice(KEY_CHUNK as usize);
    q[u] = qkv[t * (qw + 2 * kvw) + h * hd + u] * scale;
    sync_cube();
    let mut m = f32::new(-1.0e30);
    let mut l = 0.0f32;
    let mut acc = 0.0f32;
    let mut c0 = 0usize;
    while c0 < len {
        let n = if len - c0 < KEY_CHUNK as usize {
            len - c0
        } else {
            KEY_CHUNK as usize
        };
        let mut j = u;
        while j < n {
            let kb = (c0 + j) * kvw + kv_off;
            let mut s = 0.0f32;
            for d in 0..head_dim {
                s += q[d] * k_cache[kb + d];
            }
            scores[j] = s;
            j += hd;
        }
        sync_cube();
        let mut cm = m;
        for j in 0..n {
            let s = scores[j];
            if s > cm {
                cm = s;
            }
        }
        let alpha = (m - cm).exp();
        acc *= alpha;
        l *= alpha;
        for j in 0..n {
            let p = (scores[j] - cm).exp();
            l += p;
            acc += p * v_cache[(c0 + j) * kvw + kv_off + u];
        }
        m = cm;
        sync_cube();
        c0 += KEY_CHUNK as usize;
    }
    out[t * qw + h * hd + u] = acc / l;
}

/// `dst[i] = src[i]` for `i < n`: a cache grown to a larger buffer.
#[cube(launch)]
pub fn copy(src: &[f32], dst: &mut [f32], n: u32) {
    let i = ABSOLUTE_POS;
    if i < n as usize {
        dst[i] = src[i];
    }
}

/// Whether candidate `(av, ai)` ranks before `(bv, bi)`: the higher logit, then the lower id
/// (the host's `argmax` keeps the first maximum).
#[cube]
fn ranks_before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    av > bv || (av == bv && ai < bi)
}

/// The `k` best tokens of each row of `logits` (one cube a row, `ROW_UNITS` units), best first,
/// and the logit of `gather[row]`: what decoding reads back instead of the row, as `2k + 1`
/// words a row in `out` (the ids, then the logits' bits, then the gathered logit's bits). Each
/// unit keeps the best `k` of its strided share in registers; the units' lists are then merged
/// pairwise in workgroup memory (`ROW_UNITS · k` candidates, 8 KB at k = 16).
#[cube(launch)]
pub fn top_k(logits: &[f32], gather: &[u32], out: &mut [u32], vocab: u32, #[comptime] k: usize) {
    let row = CUBE_POS_X as usize;
    let u = UNIT_POS_X as usize;
    let units = ROW_UNITS as usize;
    let n = vocab as usize;
    let base = row * n;
    let mut vals = Array::<f32>::new(k);
    let mut ids = Array::<u32>::new(k);
    for j in 0..k {
        vals[j] = f32::new(-3.0e38);
        ids[j] = 0xffff_ffffu32;
    }
    // A unit's share, in increasing id: a tie never displaces the earlier id.
    let mut i = u;
    while i < n {
        let v = logits[base + i];
        if v > vals[k - 1] {
            let mut j = (k - 1).runtime();
            let mut moving = true;
            while moving {
                if j == 0 {
                    moving = false;
                } else if v > vals[j - 1] {
                    let pv = vals[j - 1];
                    let pi = ids[j - 1];
                    vals[j] = pv;
                    ids[j] = pi;
                    j -= 1;
                } else {
                    moving = false;
                }
            }
            vals[j] = v;
            ids[j] = i as u32;
        }
        i += units;
    }
    let mut sv = Shared::<[f32]>::new_slice(ROW_UNITS as usize * k);
    let mut si = Shared::<[u32]>::new_slice(ROW_UNITS as usize * k);
    for j in 0..k {
        let v = vals[j];
        let id = ids[j];
        sv[u * k + j] = v;
        si[u * k + j] = id;
    }
    sync_cube();
    // Unit u < stride merges its list with list u + stride, keeping the best k.
    let mut stride = (units / 2).runtime();
    while stride > 0 {
        if u < stride {
            let a = u * k;
            let b = (u + stride) * k;
            let mut ia = 0usize;
            let mut ib = 0usize;
            for j in 0..k {
                let av = sv[a + ia];
                let ai = si[a + ia];
                let bv = sv[b + ib];
                let bi = si[b + ib];
                if ranks_before(av, ai, bv, bi) {
                    vals[j] = av;
                    ids[j] = ai;
                    ia += 1;
                } else {
                    vals[j] = bv;
                    ids[j] = bi;
                    ib += 1;
                }
            }
            for j in 0..k {
                let v = vals[j];
                let id = ids[j];
                sv[a + j] = v;
                si[a + j] = id;
            }
        }
        sync_cube();
        stride /= 2;
    }
    if u == 0 {
        let o = row * (2 * k + 1);
        for j in 0..k {
            let v = sv[j];
            let id = si[j];
            out[o + j] = id;
            out[o + k + j] = u32::reinterpret(v);
        }
        let g = gather[row] as usize;
        out[o + 2 * k] = u32::reinterpret(logits[base + g]);
    }
}
