//! Fuzzes the GGUF reader: any bytes must give a GGUF or a typed error, never a panic, a hang
//! or a huge allocation; every tensor it accepts must be readable and dequantizable.
//!
//!     cargo +nightly fuzz run gguf -- -max_total_time=600 -rss_limit_mb=512
#![no_main]

// The reader and the block formats, compiled on their own (no burn) so the fuzzer builds fast.
#[path = "../../crate/src/model/gguf.rs"]
mod gguf;
#[path = "../../crate/src/model/quant.rs"]
mod quant;

use gguf::Gguf;
use libfuzzer_sys::fuzz_target;
use quant::dequantize;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse(data.to_vec()) {
        for t in &g.tensors {
            let bytes = g.tensor_bytes(t);
            assert_eq!(bytes.len(), t.ty.row_bytes(t.n_elements() as usize));
            if t.n_elements() <= 1 << 16 {
                let v = dequantize(t.ty, bytes, t.n_elements() as usize);
                assert_eq!(v.len() as u64, t.n_elements());
            }
        }
        for v in g.metadata.values() {
            let _ = (v.as_u64(), v.as_f64(), v.as_str(), v.as_array());
        }
    }
});
