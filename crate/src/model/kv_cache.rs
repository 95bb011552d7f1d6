//! The attention KV cache, with the tokens it holds, so that a caller can roll it back to any
//! length and prefill only what changed (the sentence loop does this every round).

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// One layer's keys and values.
// One per layer and cache, never moved in a hot loop: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Kv {
    /// On the device, [kv_heads, tokens, head_dim] (the tensor path).
    Tensor(Tensor<3>, Tensor<3>),
    /// On the host, one row of `width` (kv_heads · head_dim) a token (the CPU kernels' path):
    /// appending a token extends the rows, nothing is copied again.
    Host {
        k: Vec<f32>,
        v: Vec<f32>,
        width: usize,
    },
    /// On the device, preallocated (the GPU kernels' path): the kernels write each token's
    /// row in place.
    #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
    Gpu(super::gpu::GpuKv),
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<Kv>>,
    tokens: Vec<u32>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            tokens: Vec::new(),
        }
    }

    /// The tokens whose keys and values are cached, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Forgets everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(len);
        for l in &mut self.layers {
            *l = match l.take() {
                Some(_) if len == 0 => None,
                Some(Kv::Tensor(k, v)) => {
                    Some(Kv::Tensor(k.narrow(1, 0, len), v.narrow(1, 0, len)))
                }
                Some(Kv::Host {
                    mut k,
                    mut v,
                    width,
                }) => {
                    k.truncate(len * width);
                    v.truncate(len * width);
                    Some(Kv::Host { k, v, width })
                }
                #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
                Some(Kv::Gpu(kv)) => Some(Kv::Gpu(kv)),
                None => None,
            };
        }
    }

    /// How many leading tokens of `ids` are already cached.
    pub fn common_prefix(&self, ids: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Appends one layer's new keys/values ([kv_heads, new, head_dim]) and returns the whole.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> Result<(Tensor<3>, Tensor<3>)> {
        let kv = match self.layers[layer].take() {
            None => (k, v),
            Some(Kv::Tensor(ck, cv)) => (Tensor::cat(vec![ck, k], 1), Tensor::cat(vec![cv, v], 1)),
            _ => return Err(other_backend()),
        };
        self.layers[layer] = Some(Kv::Tensor(kv.0.clone(), kv.1.clone()));
        Ok(kv)
    }

    /// Appends one layer's new keys/values (rows of `width`) on the host and returns all of
    /// the layer's rows.
    pub(crate) fn append_host(
        &mut self,
        layer: usize,
        k: &[f32],
        v: &[f32],
        width: usize,
    ) -> Result<(&[f32], &[f32])> {
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            *slot = Some(Kv::Host {
                k: Vec::new(),
                v: Vec::new(),
                width,
            });
        }
        match slot {
            Some(Kv::Host {
                k: ck,
                v: cv,
                width: w,
            }) if *w == width => {
                ck.extend_from_slice(k);
                cv.extend_from_slice(v);
                Ok((&ck[..], &cv[..]))
            }
            _ => Err(other_backend()),
        }
    }

    /// The layer's device buffers, with room for `tokens` tokens (the first `len()` kept).
    #[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
    pub(crate) fn reserve_gpu(
        &mut self,
        layer: usize,
        client: &cubecl::client::Client,
        tokens: usize,
        width: usize,
    ) -> Result<(super::gpu::KvArg, super::gpu::KvArg)> {
        let keep = self.tokens.len();
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            // Room for a typical answer; it doubles when full.
            *slot = Some(Kv::Gpu(super::gpu::GpuKv::new(
                client,
                tokens.max(128),
                width,
            )));
        }
        match slot {
            Some(Kv::Gpu(kv)) if kv.width() == width => {
                kv.reserve(tokens, keep);
                Ok(kv.bufs())
            }
            _ => Err(other_backend()),
        }
    }

    pub(crate) fn push_tokens(&mut self, ids: &[u32]) {
        self.tokens.extend_from_slice(ids);
    }
}

fn other_backend() -> Error {
    Error::Data("this KV cache was filled by an engine on another backend or model".into())
}
