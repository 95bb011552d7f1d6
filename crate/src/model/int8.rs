//! The fast CPU path: activations quantized to 8 bits per block of 32, multiplied with the
//! GGML weight blocks in integers, as llama.cpp does (its Q8_1 activations).
//!
//! A token's row `x` becomes, per block `b` of 32 values, `d_b = max|x| / 127`, `q = round(x /
//! d_b)` and `s_b = d_b · Σq`. A weight block `w = d·q_w + m` (Q4_1; Q4_0 is `m = -8d`, Q8_0 has
//! no `m`) then contributes `d·d_b·Σ(q_w·q) + m·s_b`: one integer dot of 32 byte pairs. The
//! rounding of `x` is the only approximation (a relative error of about 0.4% per block, well
//! inside the 4-bit weights' own); the f32-activation kernels (`cpu-f32`) stay as the exact path.
//!
//! Every token is quantized on its own and every level sums in the same order whether a token
//! comes alone or in a batch, so a prefill and a step-by-step decode give the same logits, bit
//! for bit: copy-speculation stays lossless on this path.

use super::kernels::Simd;
use super::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType, QK, QMatrix, blocks};

/// `n` rows of activations, 8-bit per block of 32.
pub struct Q8Rows {
    qs: Vec<i8>,
    /// Per block: the scale `d_b`.
    d: Vec<f32>,
    /// Per block: `d_b · Σq`, what a weight block's offset `m` multiplies.
    s: Vec<f32>,
    cols: usize,
}

/// One token's row of a [`Q8Rows`].
#[derive(Clone, Copy)]
pub struct Q8Row<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

impl Q8Rows {
    /// Quantizes `x` (`n` rows of `cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(QK),
            "activation width not a multiple of {QK}"
        );
        let blocks = x.len() / QK;
        let (mut qs, mut d, mut s) = (vec![0i8; x.len()], vec![0.0; blocks], vec![0.0; blocks]);
        for (b, (xb, qb)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                sum += *q as i32;
            }
            d[b] = scale;
            s[b] = scale * sum as f32;
        }
        Self { qs, d, s, cols }
    }

    pub fn row(&self, t: usize) -> Q8Row<'_> {
        let per_row = self.cols / QK;
        Q8Row {
            qs: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * per_row..(t + 1) * per_row],
            s: &self.s[t * per_row..(t + 1) * per_row],
        }
    }

    pub fn rows(&self) -> usize {
        self.qs.len() / self.cols.max(1)
    }
}

/// Σ a·b over 16 nibble bytes (low nibbles are elements 0..16, high ones 16..32) and 32 i8.
fn nibble_dot(qs: &[u8; QK / 2], x: &[i8]) -> i32 {
    qs.iter()
        .enumerate()
        .map(|(j, &q)| (q & 0x0f) as i32 * x[j] as i32 + (q >> 4) as i32 * x[j + QK / 2] as i32)
        .sum()
}

/// One weight row · one token: the scalar definition every SIMD level is tested against.
pub fn dot_scalar(ty: GgmlType, w: &[u8], x: Q8Row<'_>) -> f32 {
    let xq = |b: usize| &x.qs[b * QK..(b + 1) * QK];
    match ty {
        GgmlType::Q4_1 => blocks::<BlockQ4_1>(w)
            .iter()
            .enumerate()
            .map(|(b, w)| {
                let dot = nibble_dot(&w.qs, xq(b)) as f32;
                w.d.to_f32() * x.d[b] * dot + w.m.to_f32() * x.s[b]
            })
            .sum(),
        GgmlType::Q4_0 => blocks::<BlockQ4_0>(w)
            .iter()
            .enumerate()
            .map(|(b, w)| {
                let d = w.d.to_f32();
                d * x.d[b] * nibble_dot(&w.qs, xq(b)) as f32 - 8.0 * d * x.s[b]
            })
            .sum(),
        GgmlType::Q8_0 => blocks::<BlockQ8_0>(w)
            .iter()
            .enumerate()
            .map(|(b, w)| {
                let dot: i32 =
                    w.qs.iter()
                        .zip(xq(b))
                        .map(|(&a, &c)| a as i32 * c as i32)
                        .sum();
                w.d.to_f32() * x.d[b] * dot as f32
            })
            .sum(),
        _ => unreachable!("float weights take the f32 path"),
    }
}

/// Tokens per tile: each weight block is unpacked once for this many tokens.
#[cfg(target_arch = "x86_64")]
const TILE: usize = 4;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Q8Row;
    use crate::model::kernels::{self, avx2::hsum};
    use crate::model::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, F16Le, GgmlType, QK, blocks};
    use std::arch::x86_64::*;

    /// The two f16 of a block's `d` (and Q4_1's `m` after it) as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_pair(p: &F16Le) -> (f32, f32) {
        let h = unsafe { kernels::avx2::f16_pair(p) };
        (_mm_cvtss_f32(h), _mm_cvtss_f32(_mm_movehdup_ps(h)))
    }

    /// 16 nibble bytes as 32 bytes in element order (low nibbles 0..16, high ones 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(qs: *const u8) -> __m256i {
        let q = unsafe { _mm_loadu_si128(qs as *const __m128i) };
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }

    /// One weight row of `$block`s against `T` tokens. `$unpack` gives a block's weights as
    /// unsigned bytes for `maddubs`, the bytes whose signs go onto the activations (Q8_0's
    /// signed weights), and `(d, m)`. Per token the blocks alternate between two accumulators
    /// (so the FMA latency is hidden at any `T`) in the same order at every `T`, so a token's
    /// result does not depend on the batch.
    macro_rules! tile {
        ($name:ident, $block:ty, $signed:expr, |$b:ident| $unpack:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name<const T: usize>(w: &[u8], xs: [Q8Row<'_>; T]) -> [f32; T] {
                let ones = _mm256_set1_epi16(1);
                let mut acc = [[_mm256_setzero_ps(); 2]; T];
                let mut offs = [[0.0f32; 2]; T];
                let blocks = blocks::<$block>(w);
                for t in 0..T {
                    assert!(
                        xs[t].qs.len() >= blocks.len() * QK
                            && xs[t].d.len() >= blocks.len()
                            && xs[t].s.len() >= blocks.len()
                    );
                }
                // Block `i` into accumulator `k` (constant, so the accumulators stay in registers).
                macro_rules! step {
                    ($i:expr, $k:expr) => {{
                        let i = $i;
                        let $b = unsafe { blocks.get_unchecked(i) };
                        // SAFETY: `i` < blocks.len(); every token row holds `blocks.len()`
                        // blocks (asserted above).
                        let (wq, signs, (d, m)): (__m256i, __m256i, (f32, f32)) =
                            unsafe { $unpack };
                        for t in 0..T {
                            let x = unsafe {
                                _mm256_loadu_si256(xs[t].qs.as_ptr().add(i * QK) as *const __m256i)
                            };
                            let x = if $signed {
                                _mm256_sign_epi8(x, signs)
                            } else {
                                x
                            };
                            let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, x), ones);
                            let (dx, sx) =
                                unsafe { (*xs[t].d.get_unchecked(i), *xs[t].s.get_unchecked(i)) };
                            acc[t][$k] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dot),
                                _mm256_set1_ps(d * dx),
                                acc[t][$k],
                            );
                            offs[t][$k] += m * sx;
                        }
                    }};
                }
                let mut i = 0;
                while i + 1 < blocks.len() {
                    step!(i, 0);
                    step!(i + 1, 1);
                    i += 2;
                }
                if i < blocks.len() {
                    step!(i, 0);
                }
                std::array::from_fn(|t| {
                    hsum(_mm256_add_ps(acc[t][0], acc[t][1])) + (offs[t][0] + offs[t][1])
                })
            }
        };
    }

    tile!(tile_q4_1, BlockQ4_1, false, |b| {
        (
            nibbles(b.qs.as_ptr()),
            _mm256_setzero_si256(),
            f16_pair(&b.d),
        )
    });
    tile!(tile_q4_0, BlockQ4_0, false, |b| {
        let d = f16_pair(&b.d).0;
        (
            nibbles(b.qs.as_ptr()),
            _mm256_setzero_si256(),
            (d, -8.0 * d),
        )
    });
    tile!(tile_q8_0, BlockQ8_0, true, |b| {
        let w = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
        (_mm256_sign_epi8(w, w), w, (f16_pair(&b.d).0, 0.0))
    });

    /// One weight row of `ty` against `T` tokens.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[inline]
    pub unsafe fn dot_tile<const T: usize>(ty: GgmlType, w: &[u8], xs: [Q8Row<'_>; T]) -> [f32; T] {
        unsafe {
            match ty {
                GgmlType::Q4_1 => tile_q4_1(w, xs),
                GgmlType::Q4_0 => tile_q4_0(w, xs),
                GgmlType::Q8_0 => tile_q8_0(w, xs),
                _ => unreachable!("float weights take the f32 path"),
            }
        }
    }
}

/// wasm's 128-bit SIMD. Enabled on these functions only, so the rest of the module builds as
/// it did; every engine that runs our wasm has had SIMD since 2021-23 (Chrome 91, Firefox 89,
/// Safari 16.4, Deno, workerd).
#[cfg(target_arch = "wasm32")]
mod simd128 {
    use super::Q8Row;
    use crate::model::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType, QK, blocks};
    use core::arch::wasm32::*;

    /// Σ a·b over 16 weight bytes (unsigned nibbles, or signed for Q8_0) and 16 signed
    /// activations, as 4 i32 lanes.
    #[inline]
    #[target_feature(enable = "simd128")]
    fn dot16(w: v128, x: v128, signed_w: bool) -> v128 {
        let (wl, wh) = if signed_w {
            (i16x8_extend_low_i8x16(w), i16x8_extend_high_i8x16(w))
        } else {
            (u16x8_extend_low_u8x16(w), u16x8_extend_high_u8x16(w))
        };
        i32x4_add(
            i32x4_dot_i16x8(wl, i16x8_extend_low_i8x16(x)),
            i32x4_dot_i16x8(wh, i16x8_extend_high_i8x16(x)),
        )
    }

    /// 16 nibble bytes as elements 0..16 (low nibbles) and 16..32 (high ones).
    #[inline]
    #[target_feature(enable = "simd128")]
    fn nibbles(qs: &[u8; QK / 2]) -> (v128, v128) {
        // SAFETY: `qs` is 16 readable bytes; v128 loads need no alignment.
        let q = unsafe { v128_load(qs.as_ptr() as *const v128) };
        (v128_and(q, u8x16_splat(0x0f)), u8x16_shr(q, 4))
    }

    #[inline]
    #[target_feature(enable = "simd128")]
    fn hsum(v: v128) -> f32 {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }

    /// One weight row of `$block`s against `T` tokens; `$unpack` gives a block's 32 weights as
    /// two halves in element order and `(d, m)`. Blocks alternate between two accumulators in
    /// the same order at every `T`.
    macro_rules! tile {
        ($name:ident, $block:ty, $signed:expr, |$b:ident| $unpack:expr) => {
            #[target_feature(enable = "simd128")]
            fn $name<const T: usize>(w: &[u8], xs: [Q8Row<'_>; T]) -> [f32; T] {
                let mut acc = [[f32x4_splat(0.0); 2]; T];
                let mut offs = [[0.0f32; 2]; T];
                for (i, $b) in blocks::<$block>(w).iter().enumerate() {
                    let (lo, hi, (d, m)): (v128, v128, (f32, f32)) = $unpack;
                    let k = i & 1;
                    for t in 0..T {
                        let x = &xs[t].qs[i * QK..(i + 1) * QK];
                        // SAFETY: `x` is 32 readable bytes.
                        let (x0, x1) = unsafe {
                            let p = x.as_ptr() as *const v128;
                            (v128_load(p), v128_load(p.add(1)))
                        };
                        let dot = i32x4_add(dot16(lo, x0, $signed), dot16(hi, x1, $signed));
                        let scale = f32x4_splat(d * xs[t].d[i]);
                        acc[t][k] =
                            f32x4_add(acc[t][k], f32x4_mul(f32x4_convert_i32x4(dot), scale));
                        offs[t][k] += m * xs[t].s[i];
                    }
                }
                std::array::from_fn(|t| {
                    hsum(f32x4_add(acc[t][0], acc[t][1])) + (offs[t][0] + offs[t][1])
                })
            }
        };
    }

    tile!(tile_q4_1, BlockQ4_1, false, |b| {
        let (lo, hi) = nibbles(&b.qs);
        (lo, hi, (b.d.to_f32(), b.m.to_f32()))
    });
    tile!(tile_q4_0, BlockQ4_0, false, |b| {
        let (lo, hi) = nibbles(&b.qs);
        let d = b.d.to_f32();
        (lo, hi, (d, -8.0 * d))
    });
    tile!(tile_q8_0, BlockQ8_0, true, |b| {
        let p = b.qs.as_ptr() as *const v128;
        // SAFETY: `qs` is 32 readable bytes.
        let (lo, hi) = unsafe { (v128_load(p), v128_load(p.add(1))) };
        (lo, hi, (b.d.to_f32(), 0.0))
    });

    /// One weight row of `ty` against `T` tokens.
    pub fn dot_tile<const T: usize>(ty: GgmlType, w: &[u8], xs: [Q8Row<'_>; T]) -> [f32; T] {
        // Safe to call in wasm: an engine without SIMD refuses the whole module when it loads,
        // it cannot run these functions wrongly.
        match ty {
            GgmlType::Q4_1 => tile_q4_1(w, xs),
            GgmlType::Q4_0 => tile_q4_0(w, xs),
            GgmlType::Q8_0 => tile_q8_0(w, xs),
            _ => unreachable!("float weights take the f32 path"),
        }
    }
}

/// Weight rows `r0..` of `w` against every token of `x`, weight-row-major (`o` holds rows × n).
pub(crate) fn rows_at(w: &QMatrix, x: &Q8Rows, simd: Simd, r0: usize, o: &mut [f32]) {
    let n = x.rows();
    for (i, o_row) in o.chunks_exact_mut(n).enumerate() {
        let wr = w.row(r0 + i);
        match simd {
            Simd::Scalar => {
                for (t, o) in o_row.iter_mut().enumerate() {
                    *o = dot_scalar(w.ty, wr, x.row(t));
                }
            }
            #[cfg(target_arch = "wasm32")]
            Simd::Simd128 => {
                let mut t = 0;
                while t + 4 <= n {
                    let tile =
                        simd128::dot_tile::<4>(w.ty, wr, std::array::from_fn(|j| x.row(t + j)));
                    o_row[t..t + 4].copy_from_slice(&tile);
                    t += 4;
                }
                for t in t..n {
                    o_row[t] = simd128::dot_tile::<1>(w.ty, wr, [x.row(t)])[0];
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd()` reports AVX2 only when the CPU has AVX2+FMA+F16C; each row holds
            // whole blocks (`cols` values of the token, cols / 32 of the weight row).
            Simd::Avx2 => unsafe {
                let mut t = 0;
                while t + TILE <= n {
                    let tile =
                        avx2::dot_tile::<TILE>(w.ty, wr, std::array::from_fn(|j| x.row(t + j)));
                    o_row[t..t + TILE].copy_from_slice(&tile);
                    t += TILE;
                }
                for (j, o) in o_row[t..n].iter_mut().enumerate() {
                    *o = avx2::dot_tile::<1>(w.ty, wr, [x.row(t + j)])[0];
                }
            },
        }
    }
}

/// The largest gap between this machine's SIMD level and the scalar definition, relative to
/// each product's scale, over random matrices of every block type and 1 to 9 tokens. The unit
/// tests check the native levels; a wasm build cannot run them, so the browser tests call this
/// (`StreamAligner.kernelSelfCheck()`) to check the SIMD128 kernels where they run.
pub fn simd_disagreement() -> f32 {
    let level = super::kernels::simd();
    let mut worst = 0.0f32;
    for (seed, ty) in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0]
        .into_iter()
        .enumerate()
    {
        let (rows, cols, n) = (7, 192, 9);
        let w = QMatrix::random(ty, rows, cols, seed as u64 + 3);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| (i as f32 * 0.37).sin() * 2.0 + 0.3)
            .collect();
        let xq = Q8Rows::quantize(&x, cols);
        let (mut want, mut got) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        rows_at(&w, &xq, Simd::Scalar, 0, &mut want);
        rows_at(&w, &xq, level, 0, &mut got);
        let wf = w.dequantize();
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            let (r, t) = (i / n, i % n);
            let scale: f32 = (0..cols)
                .map(|c| (wf[r * cols + c] * x[t * cols + c]).abs())
                .sum();
            worst = worst.max((a - b).abs() / (1.0 + scale));
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::simd;
    use crate::model::kernels::tests::random_matrix;

    fn activations(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols)
            .map(|i| (i as f32 * 0.37).sin() * 2.0 + 0.3)
            .collect()
    }

    /// The integer dot equals the f64 product of the dequantized weights with the quantized
    /// activations (`d_b · q`): only f32 rounding separates them.
    #[test]
    fn the_scalar_integer_dot_is_the_product_of_what_was_quantized() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols, n) = (6, 128, 3);
            let w = random_matrix(ty, rows, cols, 11);
            let wf = w.dequantize();
            let xq = Q8Rows::quantize(&activations(n, cols), cols);
            for t in 0..n {
                let x = xq.row(t);
                let xd: Vec<f64> = (0..cols)
                    .map(|c| x.d[c / QK] as f64 * x.qs[c] as f64)
                    .collect();
                for r in 0..rows {
                    let terms = || (0..cols).map(|c| wf[r * cols + c] as f64 * xd[c]);
                    let (want, scale) = (terms().sum::<f64>(), terms().map(f64::abs).sum::<f64>());
                    let got = dot_scalar(ty, w.row(r), x) as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + scale),
                        "{ty:?} {r} {t}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_self_check_finds_this_machines_level_in_agreement() {
        let d = simd_disagreement();
        assert!(d < 1e-5, "{:?} vs scalar: {d}", simd());
    }

    /// Quantizing the activations costs well under a percent of the product's scale.
    #[test]
    fn eight_bit_activations_stay_close_to_the_f32_product() {
        let (rows, cols, n) = (16, 576, 2);
        let w = random_matrix(GgmlType::Q4_1, rows, cols, 3);
        let x = activations(n, cols);
        use crate::model::kernels::{Precision, matmul_t};
        let exact = matmul_t(&w, &x, n, Precision::F32);
        let int8 = matmul_t(&w, &x, n, Precision::Int8);
        let wf = w.dequantize();
        for t in 0..n {
            for r in 0..rows {
                let scale: f32 = (0..cols)
                    .map(|c| (wf[r * cols + c] * x[t * cols + c]).abs())
                    .sum();
                let err = (exact[t * rows + r] - int8[t * rows + r]).abs();
                assert!(err <= 0.01 * scale, "row {r} token {t}: {err} of {scale}");
            }
        }
    }

    /// Every SIMD level against the scalar definition, and a token alone equal to the same
    /// token in a batch, bit for bit.
    #[test]
    fn simd_levels_agree_and_batches_change_nothing() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols, n) = (9, 256, 7);
            let w = random_matrix(ty, rows, cols, 5);
            let x = activations(n, cols);
            let xq = Q8Rows::quantize(&x, cols);
            let mut scalar = vec![0.0; rows * n];
            super::rows_at(&w, &xq, Simd::Scalar, 0, &mut scalar);
            let level = simd();
            let mut fast = vec![0.0; rows * n];
            super::rows_at(&w, &xq, level, 0, &mut fast);
            for (i, (a, b)) in scalar.iter().zip(&fast).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{ty:?} {level:?} {i}: {a} vs {b}"
                );
            }
            for t in 0..n {
                let alone = Q8Rows::quantize(&x[t * cols..(t + 1) * cols], cols);
                let mut one = vec![0.0; rows];
                super::rows_at(&w, &alone, level, 0, &mut one);
                for r in 0..rows {
                    assert_eq!(
                        one[r].to_bits(),
                        fast[r * n + t].to_bits(),
                        "{ty:?} token {t} row {r}"
                    );
                }
            }
        }
    }
}
