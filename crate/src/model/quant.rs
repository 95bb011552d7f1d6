//! GGML tensor formats: block layouts and dequantization to f32.
//!
//! Quantized weights stay in these GGML blocks in memory; [`super::kernels`] multiplies with them
//! directly, and [`dequantize`] gives the exact f32 values for the differentiable reference path.

use half::f16;

/// The GGML tensor types this engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

/// Elements per quantization block.
pub const QK: usize = 32;

/// An f16 as GGML stores it: two little-endian bytes, unaligned.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    pub fn to_f32(self) -> f32 {
        f16::from_le_bytes(self.0).to_f32()
    }
}

/// Q4_0: `w = d·(q - 8)`. Byte j of `qs` holds element j in its low nibble, j + 16 in its high.
#[repr(C)]
#[derive(Debug)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}

/// Q4_1: `w = d·q + m`, nibbles as in [`BlockQ4_0`].
#[repr(C)]
#[derive(Debug)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; QK / 2],
}

/// Q8_0: `w = d·q`.
#[repr(C)]
#[derive(Debug)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; QK],
}

/// A GGML block layout: the one spelling of it that the scalar and SIMD code share.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of byte arrays only (alignment 1, no padding, every bit
/// pattern valid), so any bytes can be viewed as them.
pub unsafe trait Block: Sized {}
unsafe impl Block for BlockQ4_0 {}
unsafe impl Block for BlockQ4_1 {}
unsafe impl Block for BlockQ8_0 {}

const _: () = assert!(
    size_of::<BlockQ4_0>() == 18 && size_of::<BlockQ4_1>() == 20 && size_of::<BlockQ8_0>() == 34
);

/// `bytes` as blocks of `B` (a trailing partial block is left out).
pub fn blocks<B: Block>(bytes: &[u8]) -> &[B] {
    const { assert!(align_of::<B>() == 1) };
    // SAFETY: `B` has alignment 1 and accepts any bytes (the `Block` contract); the length
    // stays within `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / size_of::<B>()) }
}

/// The block at `p` (the start of `size_of::<B>()` readable bytes).
///
/// # Safety
/// `p` addresses `size_of::<B>()` bytes that stay valid for `'a`.
#[inline]
pub unsafe fn block_at<'a, B: Block>(p: *const u8) -> &'a B {
    // SAFETY: alignment 1 and any bytes are valid (`Block`); the caller vouches for the size.
    unsafe { &*p.cast::<B>() }
}

impl GgmlType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (QK, size_of::<BlockQ4_0>()),
            Self::Q4_1 => (QK, size_of::<BlockQ4_1>()),
            Self::Q8_0 => (QK, size_of::<BlockQ8_0>()),
        }
    }

    /// Bytes taken by `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        let (b, bytes) = self.block();
        n / b * bytes
    }
}

/// Dequantizes `bytes` (a whole number of blocks of `ty`) into `out`.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(blocks::<BlockQ4_0>(bytes)) {
                let d = b.d.to_f32();
                for (j, q) in b.qs.iter().enumerate() {
                    o[j] = d * ((q & 0x0f) as f32 - 8.0);
                    o[j + QK / 2] = d * ((q >> 4) as f32 - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(blocks::<BlockQ4_1>(bytes)) {
                let (d, m) = (b.d.to_f32(), b.m.to_f32());
                for (j, q) in b.qs.iter().enumerate() {
                    o[j] = d * (q & 0x0f) as f32 + m;
                    o[j + QK / 2] = d * (q >> 4) as f32 + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(blocks::<BlockQ8_0>(bytes)) {
                let d = b.d.to_f32();
                for (o, &q) in o.iter_mut().zip(&b.qs) {
                    *o = d * q as f32;
                }
            }
        }
    }
}

pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_into(ty, bytes, &mut out);
    out
}

/// A weight matrix of `rows` x `cols` (row-major, `cols` contiguous) kept in its GGML blocks.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: std::sync::Arc<[u8]>,
}

impl QMatrix {
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    pub fn dequantize(&self) -> Vec<f32> {
        dequantize(self.ty, &self.data, self.rows * self.cols)
    }

    /// A matrix of `ty` (Q4_0, Q4_1 or Q8_0) with pseudo-random blocks from `seed`, scaled like
    /// real weights: what the kernels are checked on.
    pub fn random(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Self {
        let mut s = seed.max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (_, bb) = ty.block();
        let mut data = Vec::with_capacity(rows * cols / QK * bb);
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
        Self {
            ty,
            rows,
            cols,
            data: std::sync::Arc::from(data),
        }
    }
}
