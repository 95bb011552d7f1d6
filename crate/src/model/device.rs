//! Where the engine runs: the one place that knows about devices.
//!
//! `Cpu` runs burn's Flex backend with the hand-written quantized kernels for the matrix
//! products (weights stay in their GGML blocks, activations are quantized to 8 bits as
//! llama.cpp does); `CpuF32` runs the same kernels with f32 activations, the exact option.
//! `CpuReference` runs the same model with the weights dequantized to f32 and burn's own
//! matmul: the differentiable path used for training and as the reference the fast kernels are
//! checked against. `Wgpu` runs our CubeCL kernels on burn's wgpu device (WebGPU in the
//! browser, Vulkan/Metal natively; `model::gpu`), `WgpuBurn` burn's own operations there.

use burn::tensor::{Device, Tensor};

use super::kernels::Precision;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    CpuF32,
    CpuReference,
    /// Our CubeCL kernels (`model::gpu`) on wgpu.
    Wgpu,
    /// burn's own tensor operations on wgpu: the reference the kernels are measured against.
    WgpuBurn,
}

impl Backend {
    /// The name `FromStr` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::CpuF32 => "cpu-f32",
            Self::CpuReference => "cpu-reference",
            Self::Wgpu => "wgpu",
            Self::WgpuBurn => "wgpu-burn",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cpu-f32" => Ok(Self::CpuF32),
            "cpu-reference" => Ok(Self::CpuReference),
            "wgpu" => Ok(Self::Wgpu),
            "wgpu-burn" => Ok(Self::WgpuBurn),
            _ => Err(format!(
                "unknown backend '{s}' (cpu, cpu-f32, cpu-reference, wgpu, wgpu-burn)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineDevice {
    pub device: Device,
    pub backend: Backend,
}

impl EngineDevice {
    pub fn cpu() -> Self {
        Self {
            device: Device::flex(),
            backend: Backend::Cpu,
        }
    }

    /// The CPU kernels with f32 activations: the dequantized product up to summation order.
    pub fn cpu_f32() -> Self {
        Self {
            device: Device::flex(),
            backend: Backend::CpuF32,
        }
    }

    pub fn cpu_reference() -> Self {
        Self {
            device: Device::flex(),
            backend: Backend::CpuReference,
        }
    }

    /// Where the aligner is trained: burn's differentiable operations on the weights
    /// dequantized to f32 (the reference path), with autodiff. The CPU backends train on the
    /// CPU; `wgpu` and `wgpu-burn` on burn's wgpu device (Vulkan/Metal natively), the same
    /// model code on the GPU.
    pub async fn training(backend: Backend) -> Result<Self> {
        Ok(match backend {
            Backend::Wgpu | Backend::WgpuBurn => Self {
                device: Self::wgpu().await?.device.autodiff(),
                backend: Backend::WgpuBurn,
            },
            Backend::Cpu | Backend::CpuF32 | Backend::CpuReference => Self {
                device: Device::flex().autodiff(),
                backend: Backend::CpuReference,
            },
        })
    }

    /// Initialises the wgpu runtime once; later calls reuse it.
    #[cfg(feature = "wgpu")]
    pub async fn wgpu() -> Result<Self> {
        static WGPU: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
        if let Some(d) = WGPU.get() {
            return Ok(Self {
                device: d.clone(),
                backend: Backend::Wgpu,
            });
        }
        let device = Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| Error::Device(format!("no WebGPU/Vulkan adapter: {e}")))?;
        let device = WGPU.get_or_init(|| device).clone();
        Ok(Self {
            device,
            backend: Backend::Wgpu,
        })
    }

    /// This build has no wgpu backend (the CPU-only package).
    #[cfg(not(feature = "wgpu"))]
    pub async fn wgpu() -> Result<Self> {
        Err(Error::Device(
            "this build has no wgpu backend (built without the `wgpu` feature): use the CPU".into(),
        ))
    }

    pub async fn new(backend: Backend) -> Result<Self> {
        match backend {
            Backend::Cpu => Ok(Self::cpu()),
            Backend::CpuF32 => Ok(Self::cpu_f32()),
            Backend::CpuReference => Ok(Self::cpu_reference()),
            Backend::Wgpu => Self::wgpu().await,
            Backend::WgpuBurn => Ok(Self {
                backend: Backend::WgpuBurn,
                ..Self::wgpu().await?
            }),
        }
    }

    /// Whether matrix products use the quantized CPU kernels (else dequantized f32 on the device).
    pub fn quantized_kernels(&self) -> bool {
        matches!(self.backend, Backend::Cpu | Backend::CpuF32) && !self.device.is_autodiff()
    }

    /// Whether the model runs in the hand-written GPU kernels (`model::gpu`): wgpu without
    /// autodiff (training keeps burn's differentiable operations).
    pub fn gpu_kernels(&self) -> bool {
        cfg!(all(feature = "wgpu", not(feature = "wgpu-fusion")))
            && self.backend == Backend::Wgpu
            && !self.device.is_autodiff()
    }

    /// The activations the quantized kernels multiply with: 8-bit on `Cpu`, f32 on `CpuF32`.
    pub fn precision(&self) -> Precision {
        match self.backend {
            Backend::CpuF32 => Precision::F32,
            _ => Precision::Int8,
        }
    }
}

/// Reads a tensor back to the host (asynchronously: WebGPU can only read back that way).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("{e:?}")))
}
