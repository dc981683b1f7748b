//! `--device cpu|cuda[:N]` and `--threads N`.

use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(DeviceSpec::Cuda(n)),
                None => Err(format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
            },
        }
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

/// Fails clearly when CUDA is asked of a binary built without it.
pub fn require_cuda(spec: DeviceSpec) -> Result<()> {
    if matches!(spec, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
        bail!("this trm was built without CUDA: rebuild with `cargo build --release --features cuda`");
    }
    Ok(())
}
