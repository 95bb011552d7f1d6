//! CPU hot path: `y = x · Wᵀ` with W kept in its GGML blocks.
//!
//! Each 32-weight block is unpacked to f32 once (`d·q + m` for Q4_1) and used against a tile
//! of up to 8 tokens, with one accumulator per token so no FMA waits on the one before. The
//! activations stay f32: the result equals the dequantized f32 product up to summation order,
//! so this path and the reference path give the same greedy tokens. x86-64 uses AVX2+FMA+F16C
//! when present; everything else (wasm included) runs the scalar loop.

use super::quant::{GgmlType, QK, QMatrix, dequantize_into};

/// Tokens per tile in the batched kernel.
const TILE: usize = 8;
/// From this many tokens on (prefill), weight panels are dequantized and handed to a GEMM:
/// it blocks for the caches, which a row-at-a-time kernel cannot do once the activations
/// outgrow L1.
const GEMM_FROM: usize = 16;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GgmlType, QK};
    use std::arch::x86_64::*;

    const F: &str = "avx2,fma,f16c";
    const _: () = assert!(QK == 32);

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Two f16 at `p` as broadcast f32 vectors.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x2(p: *const u8) -> (__m256, __m256) {
        let h = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe { (p as *const i32).read_unaligned() }));
        (_mm256_broadcastss_ps(h), _mm256_broadcastss_ps(_mm_movehdup_ps(h)))
    }

    /// 16 packed bytes at `p` as 32 nibbles in element order: low nibbles are 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles_f32(p: *const u8) -> [__m256; 4] {
        let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let m = _mm_set1_epi8(0x0f);
        let (lo, hi) = (_mm_and_si128(q, m), _mm_and_si128(_mm_srli_epi16(q, 4), m));
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        [f(lo), f(_mm_srli_si128(lo, 8)), f(hi), f(_mm_srli_si128(hi, 8))]
    }

    /// One block of 32 weights as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(ty: GgmlType, p: *const u8) -> [__m256; 4] {
        unsafe {
            match ty {
                GgmlType::Q4_1 => {
                    let (d, m) = f16x2(p);
                    nibbles_f32(p.add(4)).map(|q| _mm256_fmadd_ps(q, d, m))
                }
                GgmlType::Q4_0 => {
                    let (d, _) = f16x2(p);
                    let off = _mm256_mul_ps(d, _mm256_set1_ps(-8.0));
                    nibbles_f32(p.add(2)).map(|q| _mm256_fmadd_ps(q, d, off))
                }
                GgmlType::Q8_0 => {
                    let (d, _) = f16x2(p);
                    let f = |i: usize| {
                        let v = _mm_loadl_epi64(p.add(2 + 8 * i) as *const __m128i);
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
    pub unsafe fn dot_tile<const T: usize>(ty: GgmlType, w: &[u8], xs: [*const f32; T]) -> [f32; T] {
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
        let _ = F;
        std::array::from_fn(|t| hsum(_mm256_add_ps(acc[t], acc2[t])))
    }

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(avx2::available)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f(first_row, rows_out)` over disjoint chunks of `out` (rows × `n` each), in parallel natively.
fn par_rows(out: &mut [f32], n: usize, rows: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads().max(1);
        let chunk = rows.div_ceil(threads * 4).max(8);
        out.par_chunks_mut(chunk * n).enumerate().for_each(|(i, o)| f(i * chunk, o));
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = rows;
        f(0, out)
    }
}

/// Weight-row-major results for rows `r0..` (`o` holds rows × n): the scalar definition.
fn rows_scalar(w: &QMatrix, x: &[f32], n: usize, r0: usize, o: &mut [f32]) {
    let mut row = vec![0.0f32; w.cols];
    for (i, o_row) in o.chunks_exact_mut(n).enumerate() {
        dequantize_into(w.ty, w.row(r0 + i), &mut row);
        for (t, o) in o_row.iter_mut().enumerate() {
            *o = row.iter().zip(&x[t * w.cols..(t + 1) * w.cols]).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn rows_avx2(w: &QMatrix, x: &[f32], n: usize, r0: usize, o: &mut [f32]) {
    let xp = |t: usize| x[t * w.cols..].as_ptr();
    for (i, o_row) in o.chunks_exact_mut(n).enumerate() {
        let wr = w.row(r0 + i);
        let mut t = 0;
        // SAFETY: only called when `simd_available()`; every pointer addresses `cols` floats of `x`.
        while t + TILE <= n {
            let r = unsafe { avx2::dot_tile::<TILE>(w.ty, wr, std::array::from_fn(|j| xp(t + j))) };
            o_row[t..t + TILE].copy_from_slice(&r);
            t += TILE;
        }
        while t < n {
            o_row[t] = unsafe { avx2::dot_tile::<1>(w.ty, wr, [xp(t)]) }[0];
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
    // o[rows × n] = panel[rows × cols] · xᵀ[cols × n]
    // SAFETY: the pointers and strides describe `o`, `panel` and `x`, whose sizes are checked above.
    unsafe {
        gemm::gemm(
            rows,
            n,
            w.cols,
            o.as_mut_ptr(),
            1,
            n as isize,
            false,
            panel.as_ptr(),
            1,
            w.cols as isize,
            x.as_ptr(),
            w.cols as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `x` is `n` rows of `w.cols`; returns `n` rows of `w.rows` (row-major): `x · wᵀ`.
pub fn matmul_t(w: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * w.cols, "activation shape does not match the weight");
    // Each weight row is read once for all n tokens: results come weight-row-major, then are
    // transposed to token-major.
    let mut out_t = vec![0.0f32; w.rows * n];
    if n >= GEMM_FROM {
        par_rows(&mut out_t, n, w.rows, |r0, o| rows_gemm(w, x, n, r0, o));
        return transpose(&out_t, w.rows, n);
    }
    let quantized = !matches!(w.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    #[cfg(target_arch = "x86_64")]
    if quantized && simd_available() {
        par_rows(&mut out_t, n, w.rows, |r0, o| rows_avx2(w, x, n, r0, o));
    } else {
        par_rows(&mut out_t, n, w.rows, |r0, o| rows_scalar(w, x, n, r0, o));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = quantized;
        par_rows(&mut out_t, n, w.rows, |r0, o| rows_scalar(w, x, n, r0, o));
    }
    transpose(&out_t, w.rows, n)
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
mod tests {
    use super::*;
    use half::f16;
    use std::sync::Arc;

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (_, bb) = ty.block();
        let mut data = Vec::new();
        for _ in 0..rows * cols / QK {
            let d = f16::from_f32(0.01 + (next() % 100) as f32 * 1e-4).to_le_bytes();
            let m = f16::from_f32(-0.05 + (next() % 100) as f32 * 1e-3).to_le_bytes();
            let mut block = vec![0u8; bb];
            block[..2].copy_from_slice(&d);
            if ty == GgmlType::Q4_1 {
                block[2..4].copy_from_slice(&m);
            }
            let q0 = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            for b in &mut block[q0..] {
                *b = next() as u8;
            }
            data.extend(block);
        }
        QMatrix { ty, rows, cols, data: Arc::from(data) }
    }

    #[test]
    fn quantized_matmul_matches_dequantized_f32() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            // 11 tokens: one full tile of 8 and a remainder of 3; 20 take the GEMM path.
            for (rows, cols, n) in [(40, 96, 11), (40, 96, 20)] {
            let w = random_matrix(ty, rows, cols, 7);
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let got = matmul_t(&w, &x, n);
            let wf = w.dequantize();
            for t in 0..n {
                for r in 0..rows {
                    let want: f64 = (0..cols).map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64).sum();
                    let scale: f64 = (0..cols).map(|c| (wf[r * cols + c] as f64 * x[t * cols + c] as f64).abs()).sum();
                    let err = (got[t * rows + r] as f64 - want).abs();
                    assert!(err <= 1e-5 * (1.0 + scale), "{ty:?} n={n} t={t} r={r}: {} vs {want}", got[t * rows + r]);
                }
            }
            }
        }
    }

    #[test]
    fn one_token_at_a_time_equals_the_batch() {
        let w = random_matrix(GgmlType::Q4_1, 24, 64, 3);
        let n = 10;
        let x: Vec<f32> = (0..n * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let all = matmul_t(&w, &x, n);
        for t in 0..n {
            let one = matmul_t(&w, &x[t * 64..(t + 1) * 64], 1);
            for r in 0..24 {
                assert!((one[r] - all[t * 24 + r]).abs() <= 1e-5 * (1.0 + one[r].abs()));
            }
        }
    }
}
