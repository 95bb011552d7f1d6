//! The attention KV cache, with the tokens it holds, so that a caller can roll it back to any
//! length and prefill only what changed (the sentence loop does this every round).

use burn::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<3>, Tensor<3>)>>,
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
                Some((k, v)) => Some((k.narrow(1, 0, len), v.narrow(1, 0, len))),
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
    ) -> (Tensor<3>, Tensor<3>) {
        let kv = match self.layers[layer].take() {
            None => (k, v),
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 1), Tensor::cat(vec![cv, v], 1)),
        };
        self.layers[layer] = Some(kv.clone());
        kv
    }

    pub(crate) fn push_tokens(&mut self, ids: &[u32]) {
        self.tokens.extend_from_slice(ids);
    }
}
