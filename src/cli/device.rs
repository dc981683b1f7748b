//! `--device cpu|cuda[:N]|cuda-unfused[:N]` and `--threads N`.
//!
//! `cuda` is burn's CUDA backend with its kernel fusion (burn's default); `cuda-unfused` the same
//! backend without fusion, one kernel per tensor operation: slower in principle, but it isolates
//! fusion when a result or a time on a GPU looks wrong (burn 0.21 has open fusion reports).

use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    /// CUDA without burn's kernel fusion.
    CudaUnfused(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "cuda-unfused" => Ok(DeviceSpec::CudaUnfused(0)),
            _ => {
                let index = |prefix: &str| s.strip_prefix(prefix).and_then(|n| n.parse().ok());
                if let Some(n) = index("cuda:") {
                    Ok(DeviceSpec::Cuda(n))
                } else if let Some(n) = index("cuda-unfused:") {
                    Ok(DeviceSpec::CudaUnfused(n))
                } else {
                    Err(format!("unknown device `{s}` (expected cpu, cuda, cuda:N, cuda-unfused or cuda-unfused:N)"))
                }
            }
        }
    }
}

impl DeviceSpec {
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_) | DeviceSpec::CudaUnfused(_))
    }
}

/// Sizes the CPU thread pool (burn's CPU backend and our data work use rayon's global pool).
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().ok();
    }
}

pub type CpuAutodiff = burn::backend::Autodiff<burn::backend::Flex>;
pub type Cpu = burn::backend::Flex;
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type GpuAutodiff = burn::backend::Autodiff<burn::backend::Cuda>;
#[cfg(feature = "cuda")]
pub type GpuUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
#[cfg(feature = "cuda")]
pub type GpuUnfusedAutodiff = burn::backend::Autodiff<GpuUnfused>;

/// Fails clearly when CUDA is asked of a binary built without it.
pub fn require_cuda(spec: DeviceSpec) -> Result<()> {
    if spec.is_cuda() && !cfg!(feature = "cuda") {
        bail!("this trm was built without CUDA: rebuild with `cargo build --release --features cuda`");
    }
    Ok(())
}
