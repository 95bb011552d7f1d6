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
            Self::Q4_0 => (QK, 2 + QK / 2),
            Self::Q4_1 => (QK, 4 + QK / 2),
            Self::Q8_0 => (QK, 2 + QK),
        }
    }

    /// Bytes taken by `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        let (b, bytes) = self.block();
        n / b * bytes
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (a whole number of blocks of `ty`) into `out`.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (_, bb) = ty.block();
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
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                for j in 0..QK / 2 {
                    o[j] = d * ((b[2 + j] & 0x0f) as f32 - 8.0);
                    o[j + QK / 2] = d * ((b[2 + j] >> 4) as f32 - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..QK / 2 {
                    o[j] = d * (b[4 + j] & 0x0f) as f32 + m;
                    o[j + QK / 2] = d * (b[4 + j] >> 4) as f32 + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = d * (b[2 + j] as i8) as f32;
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
}
