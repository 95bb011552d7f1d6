//! Bad GGUF input gives a typed error: never a panic, never a huge allocation.

use stream_aligner::Error;
use stream_aligner::model::gguf::{Gguf, GgufError};
use stream_aligner::model::{EngineDevice, Llama};

/// Builds small GGUF files for the tests.
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Self {
            kv: vec![],
            n_kv: 0,
            infos: vec![],
            n_tensors: 0,
            data: vec![],
        }
    }
    fn str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn kv_str(mut self, k: &str, v: &str) -> Self {
        Self::str(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        Self::str(&mut self.kv, v);
        self.n_kv += 1;
        self
    }
    fn kv_u32(mut self, k: &str, v: u32) -> Self {
        Self::str(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    /// An f32 tensor with the given dims and `n` floats of data at the current data offset.
    fn tensor(mut self, name: &str, dims: &[u64], n: usize) -> Self {
        Self::str(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(0u32.to_le_bytes()); // F32
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        for i in 0..n {
            self.data.extend((i as f32).to_le_bytes());
        }
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        self.n_tensors += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(self.n_tensors.to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.infos);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

fn valid() -> Writer {
    Writer::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .tensor("a", &[4, 2], 8)
        .tensor("b", &[8], 8)
}

#[test]
fn a_valid_small_file_parses() {
    let g = Gguf::parse(valid().bytes()).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 1);
    let b = g.tensor("b").unwrap();
    assert_eq!(b.dims, vec![8]);
    assert_eq!(
        g.tensor_bytes(b),
        (0..8)
            .map(|i| i as f32)
            .flat_map(f32::to_le_bytes)
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_magic_is_reported() {
    let mut b = valid().bytes();
    b[..4].copy_from_slice(b"GGML");
    assert_eq!(Gguf::parse(b).unwrap_err(), GgufError::BadMagic(*b"GGML"));
}

#[test]
fn version_2_parses_like_version_3() {
    let mut b = valid().bytes();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = Gguf::parse(b).unwrap();
    assert_eq!((g.version, g.tensors.len()), (2, 2));
}

#[test]
fn unsupported_version_is_reported() {
    let mut b = valid().bytes();
    b[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        Gguf::parse(b).unwrap_err(),
        GgufError::UnsupportedVersion(7)
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let b = valid().bytes();
    for len in 0..b.len() {
        let r = Gguf::parse(b[..len].to_vec());
        assert!(
            r.is_err(),
            "a file cut to {len} of {} bytes parsed",
            b.len()
        );
    }
}

#[test]
fn a_tensor_claiming_2_pow_60_elements_is_refused() {
    let b = Writer::new().tensor("huge", &[1 << 30, 1 << 30], 4).bytes();
    match Gguf::parse(b).unwrap_err() {
        GgufError::BadTensor { name, reason } => {
            assert_eq!(name, "huge");
            assert!(reason.contains("2^40"), "{reason}");
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn a_tensor_past_the_end_is_refused() {
    // Claims 1000 floats but carries 4.
    let b = Writer::new().tensor("t", &[1000], 4).bytes();
    assert!(
        matches!(Gguf::parse(b).unwrap_err(), GgufError::BadTensor { reason, .. } if reason.contains("past the end"))
    );
}

#[test]
fn absurd_counts_and_lengths_are_refused_before_allocating() {
    let mut b = valid().bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(matches!(
        Gguf::parse(b).unwrap_err(),
        GgufError::TooLarge { .. }
    ));

    let mut b = valid().bytes();
    b[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes()); // metadata count
    assert!(matches!(
        Gguf::parse(b).unwrap_err(),
        GgufError::TooLarge { .. }
    ));

    let mut b = valid().bytes();
    b[24..32].copy_from_slice(&(1u64 << 61).to_le_bytes()); // first key's length
    assert!(matches!(
        Gguf::parse(b).unwrap_err(),
        GgufError::Truncated { .. }
    ));
}

#[test]
fn unknown_tensor_and_value_types_are_refused() {
    let mut w = valid();
    let at = w.infos.len() - 12; // type of tensor "b"
    w.infos[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        Gguf::parse(w.bytes()).unwrap_err(),
        GgufError::UnknownTensorType { ty: 99, .. }
    ));

    let mut w = Writer::new().kv_u32("k", 1);
    let at = w.kv.len() - 8;
    w.kv[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert_eq!(
        Gguf::parse(w.bytes()).unwrap_err(),
        GgufError::UnknownValueType(77)
    );
}

#[test]
fn an_unknown_architecture_is_a_clear_error() {
    let g = Gguf::parse(
        Writer::new()
            .kv_str("general.architecture", "mamba")
            .bytes(),
    )
    .unwrap();
    let e = Llama::from_gguf(&g, &EngineDevice::cpu()).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedArchitecture(a) if a == "mamba"),
        "{e}"
    );
    assert!(e.to_string().contains("mamba"));
}

#[test]
fn a_missing_weight_is_named() {
    let g = Gguf::parse(
        Writer::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.embedding_length", 64)
            .kv_u32("llama.attention.head_count", 2)
            .kv_u32("llama.feed_forward_length", 128)
            .kv_u32("llama.context_length", 32)
            .tensor("token_embd.weight", &[64, 10], 640)
            .bytes(),
    )
    .unwrap();
    let e = Llama::from_gguf(&g, &EngineDevice::cpu()).unwrap_err();
    assert!(e.to_string().contains("blk.0.attn_norm.weight"), "{e}");
}
