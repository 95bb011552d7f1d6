//! The engine: GGUF weights, the Llama-family transformer on burn, its KV cache and sampling.

pub mod device;
pub mod gguf;
#[cfg(all(feature = "wgpu", not(feature = "wgpu-fusion")))]
pub mod gpu;
pub mod int8;
pub mod kernels;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod ops;
pub mod quant;
pub mod sampler;
pub mod scores;

pub use device::{Backend, EngineDevice, read_f32};
pub use gguf::Gguf;
pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig, Logits};
pub use lora::{Adapter, BaseShape, LoraConfig, LoraWeights, Target};
pub use sampler::{Sampler, SamplerConfig};
pub use scores::{Readback, Scores};
