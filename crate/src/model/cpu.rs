//! The CPU fast path's host-side steps: everything of a layer but attention over the cache.
//!
//! On the CPU, burn's per-operation cost (a few µs) times the ~70 small operations of a layer
//! outweighs the arithmetic of a decode step, so these steps run as plain loops on the
//! activations around the quantized kernels. `llama.rs` holds the same steps as burn tensor
//! operations (the reference, GPU and autodiff path); the tests hold the two paths together.

/// RMSNorm of each row of `x` (width `w.len()`), scaled by `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0.0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(r).zip(w) {
            *o = v * inv * g;
        }
    }
    out
}

/// Rotates adjacent pairs of each head of `x` ([T, heads, head_dim]) at positions `pos..`,
/// with `cos`/`sin` tables of [context, head_dim / 2].
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, width: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let (c, s) = (
            &cos[(pos + t) * half..][..half],
            &sin[(pos + t) * half..][..half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c[i] - x1 * s[i];
                pair[1] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

/// `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
