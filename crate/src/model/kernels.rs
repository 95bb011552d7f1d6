//! CPU hot path: `y = x · Wᵀ` with W kept in its GGML blocks.
//!
//! Two kinds of activations: 8-bit (the default `cpu` backend, integer dots in [`super::int8`],
//! as llama.cpp multiplies) and f32 (the exact `cpu-f32` backend, below).
//!
//! On the f32 path each 32-weight block is unpacked to f32 once (`d·q + m` for Q4_1) and used against a tile
//! of up to 8 tokens, with one accumulator per token so no FMA waits on the one before. The
//! activations stay f32: the result equals the dequantized f32 product up to summation order,
//! so this path and the reference path give the same greedy tokens. x86-64 uses AVX2+FMA+F16C
//! when present; everything else (wasm included) runs the scalar loop.

use super::int8::{self, Q8Rows};
use super::quant::{GgmlType, QMatrix, dequantize_into};

/// Tokens per tile in the batched kernel.
#[cfg(target_arch = "x86_64")]
const TILE: usize = 8;
/// From this many tokens on (prefill, draft verification), weight panels are dequantized and
/// handed to a GEMM, which blocks for the caches. Measured crossover: at 6 tokens the tile
/// kernel is faster (162 vs 138 tok/s), at 12 the GEMM (245 vs 216).
const GEMM_FROM: usize = 10;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::GgmlType;
    use crate::model::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, F16Le, QK, block_at};
    use std::arch::x86_64::*;

    const _: () = assert!(QK == 32);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The f16 at `p` and the one after it (Q4_1's `d` and `m`) as f32 in lanes 0 and 1.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f16_pair(p: &F16Le) -> __m128 {
        _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
            (p as *const F16Le as *const i32).read_unaligned()
        }))
    }

    /// One f16 as f32 in lane 0.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_one(d: F16Le) -> __m128 {
        _mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(d.0) as i32))
    }

    /// 16 packed bytes at `p` as 32 nibbles in element order: low nibbles are 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles_f32(p: *const u8) -> [__m256; 4] {
        let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let m = _mm_set1_epi8(0x0f);
        let (lo, hi) = (_mm_and_si128(q, m), _mm_and_si128(_mm_srli_epi16(q, 4), m));
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        [
            f(lo),
            f(_mm_srli_si128(lo, 8)),
            f(hi),
            f(_mm_srli_si128(hi, 8)),
        ]
    }

    /// One block of 32 weights as f32 (`p`: a whole block of `ty`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(ty: GgmlType, p: *const u8) -> [__m256; 4] {
        unsafe {
            match ty {
                GgmlType::Q4_1 => {
                    let b = block_at::<BlockQ4_1>(p);
                    let h = f16_pair(&b.d);
                    let d = _mm256_broadcastss_ps(h);
                    let m = _mm256_broadcastss_ps(_mm_movehdup_ps(h));
                    nibbles_f32(b.qs.as_ptr()).map(|q| _mm256_fmadd_ps(q, d, m))
                }
                GgmlType::Q4_0 => {
                    let b = block_at::<BlockQ4_0>(p);
                    let d = _mm256_broadcastss_ps(f16_one(b.d));
                    let off = _mm256_mul_ps(d, _mm256_set1_ps(-8.0));
                    nibbles_f32(b.qs.as_ptr()).map(|q| _mm256_fmadd_ps(q, d, off))
                }
                GgmlType::Q8_0 => {
                    let b = block_at::<BlockQ8_0>(p);
                    let d = _mm256_broadcastss_ps(f16_one(b.d));
                    let f = |i: usize| {
                        let v = _mm_loadl_epi64(b.qs.as_ptr().add(8 * i) as *const __m128i);
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d)
                    };
                    [f(0), f(1), f(2), f(3)]
                }
                _ => unreachable!("float weights take the f32 path"),
            }
        }
    }

    /// Dot products of one weight row with `T` activation rows (`xs[t]` points at `cols` floats).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_tile<const T: usize>(
        ty: GgmlType,
        w: &[u8],
        xs: [*const f32; T],
    ) -> [f32; T] {
        let (_, bb) = ty.block();
        let mut acc = [_mm256_setzero_ps(); T];
        let mut acc2 = [_mm256_setzero_ps(); T];
        for (b, blk) in w.chunks_exact(bb).enumerate() {
            let wv = unsafe { block(ty, blk.as_ptr()) };
            for t in 0..T {
                let x = unsafe { xs[t].add(b * QK) };
                // Two chains per token: enough independent FMAs even when T is 1.
                unsafe {
                    acc[t] = _mm256_fmadd_ps(wv[0], _mm256_loadu_ps(x), acc[t]);
                    acc2[t] = _mm256_fmadd_ps(wv[1], _mm256_loadu_ps(x.add(8)), acc2[t]);
                    acc[t] = _mm256_fmadd_ps(wv[2], _mm256_loadu_ps(x.add(16)), acc[t]);
                    acc2[t] = _mm256_fmadd_ps(wv[3], _mm256_loadu_ps(x.add(24)), acc2[t]);
                }
            }
        }
        std::array::from_fn(|t| hsum(_mm256_add_ps(acc[t], acc2[t])))
    }

    /// The raw quantized values of a block as f32 (not yet scaled) and (d, m): `w = d·q + m`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q(ty: GgmlType, p: *const u8) -> ([__m256; 4], f32, f32) {
        unsafe {
            // 8 bytes widen to 8 lanes; each lane's low nibble is element j, its high one j + 16.
            let nib = |q: *const u8| {
                let f = _mm256_set1_epi32(0x0f);
                let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q as *const __m128i));
                (
                    _mm256_cvtepi32_ps(_mm256_and_si256(b, f)),
                    _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)),
                )
            };
            let nibbles = |qs: &[u8; QK / 2]| {
                let ((a, c), (b, e)) = (nib(qs.as_ptr()), nib(qs.as_ptr().add(8)));
                [a, b, c, e]
            };
            match ty {
                GgmlType::Q4_1 => {
                    let b = block_at::<BlockQ4_1>(p);
                    let h = f16_pair(&b.d);
                    let (d, m) = (_mm_cvtss_f32(h), _mm_cvtss_f32(_mm_movehdup_ps(h)));
                    (nibbles(&b.qs), d, m)
                }
                GgmlType::Q4_0 => {
                    let b = block_at::<BlockQ4_0>(p);
                    let d = _mm_cvtss_f32(f16_one(b.d));
                    (nibbles(&b.qs), d, -8.0 * d)
                }
                GgmlType::Q8_0 => {
                    let b = block_at::<BlockQ8_0>(p);
                    let q8 = |i: usize| {
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            b.qs.as_ptr().add(8 * i) as *const __m128i,
                        )))
                    };
                    (
                        [q8(0), q8(1), q8(2), q8(3)],
                        _mm_cvtss_f32(f16_one(b.d)),
                        0.0,
                    )
                }
                _ => unreachable!("float weights take the f32 path"),
            }
        }
    }

    /// One weight row · one activation row, as `Σ_blocks d·(q·x) + m·Σx` (`sx`: block sums of
    /// x). Two blocks are in flight with their own accumulators, so the FMA latency (5 cycles
    /// on Zen) never stalls the loop.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot1(ty: GgmlType, w: &[u8], x: *const f32, sx: *const f32) -> f32 {
        let (_, bb) = ty.block();
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offs = [0.0f32; 2];
        for (b, blk) in w.chunks_exact(bb).enumerate() {
            unsafe {
                let (q, d, m) = block_q(ty, blk.as_ptr());
                let xb = x.add(b * QK);
                let s0 = _mm256_fmadd_ps(
                    q[2],
                    _mm256_loadu_ps(xb.add(16)),
                    _mm256_mul_ps(q[0], _mm256_loadu_ps(xb)),
                );
                let s1 = _mm256_fmadd_ps(
                    q[3],
                    _mm256_loadu_ps(xb.add(24)),
                    _mm256_mul_ps(q[1], _mm256_loadu_ps(xb.add(8))),
                );
                acc[b & 1] = _mm256_fmadd_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps(d), acc[b & 1]);
                offs[b & 1] += m * *sx.add(b);
            }
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) + offs[0] + offs[1]
    }

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

/// What the CPU kernels multiply the weights with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Activations quantized to 8 bits per block of 32, integer dots ([`super::int8`]).
    Int8,
    /// f32 activations: the dequantized product up to summation order.
    F32,
}

/// The widest SIMD this CPU has, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// wasm's 128-bit SIMD (enabled on the kernels themselves: wasm has no run-time
    /// detection). Only the 8-bit path has kernels for it.
    #[cfg(target_arch = "wasm32")]
    Simd128,
}

pub(crate) fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        static SIMD: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *SIMD.get_or_init(|| {
            let forced = std::env::var("STREAM_ALIGNER_SIMD").ok();
            match forced.as_deref() {
                Some("scalar") => Simd::Scalar,
                _ if avx2::available() => Simd::Avx2,
                _ => Simd::Scalar,
            }
        })
    }
    #[cfg(target_arch = "wasm32")]
    return Simd::Simd128;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "wasm32")))]
    Simd::Scalar
}

/// Sums of each block of 32 activations, per token.
fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(crate::model::quant::QK)
        .map(|b| b.iter().sum())
        .collect()
}

/// Runs `f(first_row, rows_out)` over disjoint chunks of `out` (rows × `n` each): on rayon's
/// threads natively and in wasm built with threads (`threads` feature), else on this thread.
pub(crate) fn par_rows(
    out: &mut [f32],
    n: usize,
    rows: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads().max(1);
        let chunk = rows.div_ceil(threads * 4).max(8);
        out.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(i, o)| f(i * chunk, o));
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
    {
        let _ = (n, rows);
        f(0, out)
    }
}

/// Weight-row-major results for rows `r0..` (`o` holds rows × n): the scalar definition.
fn rows_scalar(w: &QMatrix, x: &[f32], n: usize, r0: usize, o: &mut [f32]) {
    let mut row = vec![0.0f32; w.cols];
    for (i, o_row) in o.chunks_exact_mut(n).enumerate() {
        dequantize_into(w.ty, w.row(r0 + i), &mut row);
        for (t, o) in o_row.iter_mut().enumerate() {
            *o = row
                .iter()
                .zip(&x[t * w.cols..(t + 1) * w.cols])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn rows_avx2(w: &QMatrix, x: &[f32], sx: &[f32], n: usize, r0: usize, o: &mut [f32]) {
    let per_row = w.cols / crate::model::quant::QK;
    let xp = |t: usize| x[t * w.cols..].as_ptr();
    let sp = |t: usize| sx[t * per_row..].as_ptr();
    // SAFETY: called only when the CPU has AVX2+FMA+F16C; every pointer addresses a whole row
    // of `x` (cols floats) or of `sx` (cols / 32 sums).
    let tile = |t: usize, out: &mut [f32], wr: &[u8]| unsafe {
        out.copy_from_slice(&avx2::dot_tile::<TILE>(
            w.ty,
            wr,
            std::array::from_fn(|j| xp(t + j)),
        ))
    };
    let one = |t: usize, wr: &[u8]| unsafe { avx2::dot1(w.ty, wr, xp(t), sp(t)) };
    for (i, o_row) in o.chunks_exact_mut(n).enumerate() {
        let wr = w.row(r0 + i);
        let mut t = 0;
        while t + TILE <= n {
            tile(t, &mut o_row[t..t + TILE], wr);
            t += TILE;
        }
        while t < n {
            o_row[t] = one(t, wr);
            t += 1;
        }
    }
}

/// Rows `r0..` (`o` holds rows × n) by dequantizing them into a panel and multiplying with GEMM.
fn rows_gemm(w: &QMatrix, x: &[f32], n: usize, r0: usize, o: &mut [f32]) {
    let rows = o.len() / n;
    let mut panel = vec![0.0f32; rows * w.cols];
    for (i, p) in panel.chunks_exact_mut(w.cols).enumerate() {
        dequantize_into(w.ty, w.row(r0 + i), p);
    }
    // o[rows × n] = panel[rows × cols] · xᵀ[cols × n]: x's element (p, j) is x[j * cols + p].
    gemm_into(o, &panel, x, [rows, w.cols, n], [1, w.cols]);
}

/// `out` [m, n] = `a` [m, k] · `b`, all row-major but `b`, whose element (p, j) is at
/// `b[p * b_strides[0] + j * b_strides[1]]` (`[n, 1]`: row-major [k, n]; `[1, k]`: the
/// transpose of a row-major [n, k]). One thread.
fn gemm_into(out: &mut [f32], a: &[f32], b: &[f32], [m, k, n]: [usize; 3], b_strides: [usize; 2]) {
    let b_last = (k.max(1) - 1) * b_strides[0] + (n.max(1) - 1) * b_strides[1];
    assert!(
        out.len() >= m * n && a.len() >= m * k && (k == 0 || n == 0 || b.len() > b_last),
        "gemm operand sizes"
    );
    // SAFETY: the strides describe `out`, `a` and `b` within the sizes asserted above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_strides[1] as isize,
            b_strides[0] as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `a` [m, k] · `b` [k, n], dense f32 and row-major (the adapters' low-rank products).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_into(&mut out, a, b, [m, k, n], [n, 1]);
    out
}

/// `x` is `n` rows of `w.cols`; returns `n` rows of `w.rows` (row-major): `x · wᵀ`, with
/// activations at `precision` (float weights always take the f32 path).
pub fn matmul_t(w: &QMatrix, x: &[f32], n: usize, precision: Precision) -> Vec<f32> {
    matmul_t_many(&[w], x, n, precision)
        .pop()
        .expect("one result per matrix")
}

/// `x · wᵀ` for several matrices of the same input width (q, k, v; gate, up) in one parallel
/// pass over all their rows: one fork-join instead of one per matrix.
pub fn matmul_t_many(ws: &[&QMatrix], x: &[f32], n: usize, precision: Precision) -> Vec<Vec<f32>> {
    let cols = ws[0].cols;
    assert!(
        ws.iter().all(|w| w.cols == cols),
        "matrices of different widths"
    );
    assert_eq!(
        x.len(),
        n * cols,
        "activation shape does not match the weight"
    );
    let starts: Vec<usize> = ws
        .iter()
        .scan(0, |acc, w| {
            let s = *acc;
            *acc += w.rows;
            Some(s)
        })
        .collect();
    let total: usize = ws.iter().map(|w| w.rows).sum();
    let floats = ws
        .iter()
        .any(|w| matches!(w.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16));
    let simd = if floats { Simd::Scalar } else { simd() };
    // 8-bit activations for every batch size, so a token's result never depends on the batch.
    let q8 = (precision == Precision::Int8 && !floats).then(|| Q8Rows::quantize(x, cols));
    let gemm = n >= GEMM_FROM && q8.is_none();
    // Block sums of x for the one-token SIMD path (d·Σqx + m·Σx); scalar and GEMM don't use them.
    let sx = if simd == Simd::Scalar || gemm || q8.is_some() {
        Vec::new()
    } else {
        block_sums(x)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = &sx;
    // Results come weight-row-major (each weight row is read once for all n tokens).
    let mut out_t = vec![0.0f32; total * n];
    par_rows(&mut out_t, n, total, |r0, o| {
        // This chunk of global rows may span several matrices: hand each its segment.
        let (mut r, mut o) = (r0, o);
        while !o.is_empty() {
            let k = starts.iter().rposition(|&s| s <= r).expect("row in range");
            let (w, local) = (ws[k], r - starts[k]);
            let len = (w.rows - local).min(o.len() / n);
            let (seg, rest) = o.split_at_mut(len * n);
            match simd {
                _ if q8.is_some() => {
                    int8::rows_at(w, q8.as_ref().expect("checked"), simd, local, seg)
                }
                _ if gemm => rows_gemm(w, x, n, local, seg),
                #[cfg(target_arch = "wasm32")]
                Simd::Simd128 => rows_scalar(w, x, n, local, seg),
                Simd::Scalar => rows_scalar(w, x, n, local, seg),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => rows_avx2(w, x, &sx, n, local, seg),
            }
            r += len;
            o = rest;
        }
    });
    ws.iter()
        .zip(&starts)
        .map(|(w, &s)| transpose(&out_t[s * n..(s + w.rows) * n], w.rows, n))
        .collect()
}

/// [rows × n] to [n × rows].
fn transpose(a: &[f32], rows: usize, n: usize) -> Vec<f32> {
    if n == 1 {
        return a.to_vec();
    }
    let mut out = vec![0.0f32; n * rows];
    for r in 0..rows {
        for t in 0..n {
            out[t * rows + r] = a[r * n + t];
        }
    }
    out
}

/// Gathers rows of an embedding table and dequantizes them.
pub fn embedding_rows(w: &QMatrix, ids: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0f32; ids.len() * w.cols];
    for (o, &id) in out.chunks_exact_mut(w.cols).zip(ids) {
        dequantize_into(w.ty, w.row(id as usize), o);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
        QMatrix::random(ty, rows, cols, seed)
    }

    #[test]
    fn quantized_matmul_matches_dequantized_f32() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            // 9 tokens: one full tile of 8 and a remainder of 1; 20 take the GEMM path.
            for (rows, cols, n) in [(40, 96, 9), (40, 96, 20)] {
                let w = random_matrix(ty, rows, cols, 7);
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let got = matmul_t(&w, &x, n, Precision::F32);
                let wf = w.dequantize();
                for t in 0..n {
                    for r in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64)
                            .sum();
                        let scale: f64 = (0..cols)
                            .map(|c| (wf[r * cols + c] as f64 * x[t * cols + c] as f64).abs())
                            .sum();
                        let err = (got[t * rows + r] as f64 - want).abs();
                        assert!(
                            err <= 1e-5 * (1.0 + scale),
                            "{ty:?} n={n} t={t} r={r}: {} vs {want}",
                            got[t * rows + r]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn several_matrices_in_one_pass_equal_one_at_a_time() {
        let (a, b, c) = (
            random_matrix(GgmlType::Q4_1, 20, 64, 1),
            random_matrix(GgmlType::Q8_0, 7, 64, 2),
            random_matrix(GgmlType::Q4_0, 33, 64, 4),
        );
        for (n, p) in [1, 3, 17]
            .into_iter()
            .flat_map(|n| [(n, Precision::F32), (n, Precision::Int8)])
        {
            let x: Vec<f32> = (0..n * 64).map(|i| (i as f32 * 0.11).cos()).collect();
            let many = matmul_t_many(&[&a, &b, &c], &x, n, p);
            for (w, got) in [&a, &b, &c].into_iter().zip(&many) {
                assert_eq!(got, &matmul_t(w, &x, n, p), "n={n} {p:?}");
            }
        }
    }

    /// Every kernel level against an f64 product of the dequantized weights: the scalar loop
    /// on every CPU, the AVX2 one where the CPU has it (and it is then checked as well).
    #[test]
    fn every_simd_level_agrees_with_an_f64_reference() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols, n) = (12, 128, 11);
            let w = random_matrix(ty, rows, cols, 5);
            let x: Vec<f32> = (0..n * cols)
                .map(|i| (i as f32 * 0.23).sin() * 3.0)
                .collect();
            // Weight-row-major, as the row kernels write: (r, t) at r * n + t.
            let (wf, xs) = (&w.dequantize(), &x);
            let terms = |r: usize, t: usize| {
                (0..cols).map(move |c| wf[r * cols + c] as f64 * xs[t * cols + c] as f64)
            };
            let check = |level: &str, got: &[f32]| {
                for (i, &g) in got.iter().enumerate() {
                    let (r, t) = (i / n, i % n);
                    let want: f64 = terms(r, t).sum();
                    let scale: f64 = terms(r, t).map(f64::abs).sum();
                    assert!(
                        (g as f64 - want).abs() <= 1e-5 * (1.0 + scale),
                        "{ty:?} {level} r={r} t={t}: {g} vs {want}"
                    );
                }
            };
            let mut got = vec![0.0; rows * n];
            rows_scalar(&w, &x, n, 0, &mut got);
            check("scalar", &got);
            #[cfg(target_arch = "x86_64")]
            if avx2::available() {
                let mut got = vec![1e9; rows * n];
                rows_avx2(&w, &x, &block_sums(&x), n, 0, &mut got);
                check("avx2", &got);
            } else {
                eprintln!("this CPU has no AVX2+FMA+F16C: only the scalar level is checked");
            }
        }
    }

    #[test]
    fn one_token_at_a_time_equals_the_batch() {
        let w = random_matrix(GgmlType::Q4_1, 24, 64, 3);
        let n = 10;
        let x: Vec<f32> = (0..n * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let all = matmul_t(&w, &x, n, Precision::F32);
        for t in 0..n {
            let one = matmul_t(&w, &x[t * 64..(t + 1) * 64], 1, Precision::F32);
            for r in 0..24 {
                assert!((one[r] - all[t * 24 + r]).abs() <= 1e-5 * (1.0 + one[r].abs()));
            }
        }
    }
}
