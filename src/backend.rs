//! The backend seam: every compute engine trm runs on, what each one can do, and the one place
//! that turns a `--device` into a backend type and a device. Model, training and inference code
//! is generic over burn's `Backend`; nothing outside this module names a concrete engine except
//! the fused blocks, which are engine-specific by construction: `model::cpu` (Flex) and
//! `model::torch_block` (libtorch).
//!
//! | `--device` | engine | cargo feature | fused block | fused attention | native bf16 | token loss | `--deterministic` |
//! |---|---|---|---|---|---|---|---|
//! | `cpu` | burn's Flex (+ trm's fused kernels) | default | trm's CPU kernels (`model::cpu`) | (inside the block) | no (emulated, see `model::precision`) | float64 | always |
//! | `torch-cpu` | libtorch on the CPU | `libtorch` | libtorch ops + torch autograd (`model::torch_block`) | yes (SDPA) | yes | float64 | torch's deterministic mode |
//! | `cuda[:N]` | libtorch on GPU N | `libtorch` | libtorch ops + torch autograd (`model::torch_block`) | yes (SDPA) | yes | float64 | torch's deterministic mode |
//! | `cubecl[:N]` | burn's CUDA backend (cubecl, fused) on GPU N | `cubecl` | no | no | yes | float32 | refused |
//! | `cubecl-unfused[:N]` | the same without kernel fusion | `cubecl` | no | no | yes | float32 | refused |
//!
//! libtorch runs the very code on the CPU (`torch-cpu`) that it runs on a GPU (`cuda`), so the
//! GPU path is tested in CI without a GPU. burn 0.21's fused cubecl kernels have no float64
//! ("Unsupported precision for fusion: f64", seen on an H200), hence its float32 loss.
//! Gradients and other collectives go through host buffers (`parallel::Reducer`), so NCCL
//! (`parallel::nccl`) works with every GPU engine.
//!
//! Adding a backend: a `DeviceSpec` variant and its parse arm, a row in `capabilities`, an arm in
//! `with_backend!` and in `make_deterministic`, and a row in the table above (docs/architecture.md).

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use burn::prelude::{Backend, Tensor};
use burn::tensor::DType;
use std::any::TypeId;

/// A tensor's values copied to the host as float32 (any float dtype, any backend): the one
/// host-copy used by checkpoints, parity, evaluation and inference. A large tensor comes over in
/// slices of 16M values: burn's whole-tensor `into_data` holds two more copies of it on the way
/// (for an ARC puzzle table, 1.8 GB: measured 3424 MiB more at the peak and 23 s, against one
/// copy and 1.6 s in slices).
pub fn to_host_f32<B: burn::prelude::Backend, const D: usize>(t: &burn::prelude::Tensor<B, D>) -> Vec<f32> {
    const SLICE: usize = 1 << 24;
    let whole = |t: burn::prelude::Tensor<B, 1>| -> Vec<f32> { t.into_data().convert::<f32>().into_vec().expect("float tensor") };
    let n = t.shape().num_elements();
    let flat = t.clone().reshape([n]);
    if n <= SLICE {
        return whole(flat);
    }
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(SLICE) {
        out.extend(whole(flat.clone().slice(start..(start + SLICE).min(n))));
    }
    out
}

/// burn's CPU backend.
pub type Cpu = Flex;
pub type CpuAutodiff = Autodiff<Flex>;
/// libtorch (CPU or CUDA, chosen by the device), float32 parameters.
#[cfg(feature = "libtorch")]
pub type Torch = burn::backend::LibTorch<f32>;
/// burn's CUDA backend with kernel fusion.
#[cfg(feature = "cubecl")]
pub type Cubecl = burn::backend::Cuda;
/// burn's CUDA backend without kernel fusion (one kernel per tensor operation).
#[cfg(feature = "cubecl")]
pub type CubeclUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// A `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// libtorch on the CPU.
    TorchCpu,
    /// libtorch on GPU N.
    Cuda(usize),
    /// burn's CUDA backend on GPU N.
    Cubecl(usize),
    /// burn's CUDA backend without fusion on GPU N.
    CubeclUnfused(usize),
}

pub const DEVICE_HELP: &str = "cpu, torch-cpu, cuda[:N], cubecl[:N] or cubecl-unfused[:N]";

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, index) = match s.split_once(':') {
            Some((name, n)) => match n.parse::<usize>() {
                Ok(n) => (name, Some(n)),
                Err(_) => return Err(format!("device `{s}`: `{n}` is not a GPU index (expected {DEVICE_HELP})")),
            },
            None => (s, None),
        };
        let gpu = index.unwrap_or(0);
        match (name, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("torch-cpu", None) => Ok(DeviceSpec::TorchCpu),
            ("cuda", _) => Ok(DeviceSpec::Cuda(gpu)),
            ("cubecl", _) => Ok(DeviceSpec::Cubecl(gpu)),
            ("cubecl-unfused", _) => Ok(DeviceSpec::CubeclUnfused(gpu)),
            ("cuda-unfused", _) => {
                Err(format!("device `{s}` was renamed: `cuda` is now libtorch on the GPU and `cubecl-unfused` burn's unfused CUDA backend"))
            }
            _ => Err(format!("unknown device `{s}` (expected {DEVICE_HELP})")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::TorchCpu => write!(f, "torch-cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Cubecl(n) => write!(f, "cubecl:{n}"),
            DeviceSpec::CubeclUnfused(n) => write!(f, "cubecl-unfused:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The GPU this device runs on, if any (one per rank under a launcher).
    pub fn gpu(self) -> Option<usize> {
        match self {
            DeviceSpec::Cpu | DeviceSpec::TorchCpu => None,
            DeviceSpec::Cuda(n) | DeviceSpec::Cubecl(n) | DeviceSpec::CubeclUnfused(n) => Some(n),
        }
    }

    /// The same engine on GPU `n` (a launcher's LOCAL_RANK).
    pub fn on_gpu(self, n: usize) -> Self {
        match self {
            DeviceSpec::Cuda(_) => DeviceSpec::Cuda(n),
            DeviceSpec::Cubecl(_) => DeviceSpec::Cubecl(n),
            DeviceSpec::CubeclUnfused(_) => DeviceSpec::CubeclUnfused(n),
            other => other,
        }
    }

    /// The cargo feature that builds this device.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::TorchCpu | DeviceSpec::Cuda(_) => Some("libtorch"),
            DeviceSpec::Cubecl(_) | DeviceSpec::CubeclUnfused(_) => Some("cubecl"),
        }
    }

    /// Whether this binary was built with the engine this device needs.
    pub fn built(self) -> bool {
        match self.feature() {
            None => true,
            Some("libtorch") => cfg!(feature = "libtorch"),
            Some(_) => cfg!(feature = "cubecl"),
        }
    }
}

/// A clear error for a device this binary was built without (called by `with_backend!`).
pub fn not_built(spec: DeviceSpec) -> anyhow::Error {
    let feature = spec.feature().unwrap_or("default");
    let how = if feature == "libtorch" {
        "cargo build --release --features libtorch, with PyTorch 2.11 installed (pip install torch==2.11.0) and \
         LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 set (docs/gpu.md)"
    } else {
        "cargo build --release --features cubecl (docs/gpu.md)"
    };
    anyhow::anyhow!("--device {spec}: this trm was built without the `{feature}` engine; rebuild with {how}")
}

/// What an engine can do; read by the model (dtypes, the fused block) and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The engine's name in logs and benchmark results.
    pub engine: &'static str,
    /// trm's fused CPU transformer block applies (burn's Flex only).
    pub fused_cpu_block: bool,
    /// trm's fused libtorch block applies (`model::torch_block`: each block in libtorch's own ops
    /// and differentiated by torch's autograd as one node).
    pub fused_torch_block: bool,
    /// Attention runs as one fused op, forward and backward (`fused_attention`).
    pub fused_attention: bool,
    /// bfloat16 activations run natively (otherwise emulated through float32, see `model::precision`).
    pub native_bf16: bool,
    /// The dtype of the stable-max token loss (float64 as the reference wherever the engine has it).
    pub loss_dtype: DType,
}

const FLEX: Capabilities = Capabilities {
    engine: "flex",
    fused_cpu_block: true,
    fused_torch_block: false,
    fused_attention: false,
    native_bf16: false,
    loss_dtype: DType::F64,
};
#[cfg(feature = "libtorch")]
const LIBTORCH: Capabilities = Capabilities {
    engine: "libtorch",
    fused_cpu_block: false,
    fused_torch_block: true,
    fused_attention: true,
    native_bf16: true,
    loss_dtype: DType::F64,
};
#[cfg(feature = "cubecl")]
const CUBECL: Capabilities = Capabilities {
    engine: "cubecl",
    fused_cpu_block: false,
    fused_torch_block: false,
    fused_attention: false,
    native_bf16: true,
    loss_dtype: DType::F32,
};

/// The capabilities of backend `B` (with or without autodiff). The one place where trm looks at
/// a backend's type.
pub fn capabilities<B: Backend>() -> Capabilities {
    fn is<B: 'static, T: Backend>() -> bool {
        TypeId::of::<B>() == TypeId::of::<T>() || TypeId::of::<B>() == TypeId::of::<Autodiff<T>>()
    }
    if is::<B, Flex>() {
        return FLEX;
    }
    #[cfg(feature = "libtorch")]
    if is::<B, Torch>() {
        return LIBTORCH;
    }
    #[cfg(feature = "cubecl")]
    if is::<B, Cubecl>() || is::<B, CubeclUnfused>() {
        return CUBECL;
    }
    // A backend this table does not know (a test's own): burn's generic ops, float32 loss.
    Capabilities {
        engine: "other",
        fused_cpu_block: false,
        fused_torch_block: false,
        fused_attention: false,
        native_bf16: true,
        loss_dtype: DType::F32,
    }
}

/// The same tensor under its concrete backend type, for code that checked with `TypeId` that
/// `A` and `C` are the same type (the fused CPU block, libtorch's fused attention).
pub(crate) fn cast<A: Backend, C: Backend, const D: usize>(t: Tensor<A, D>) -> Tensor<C, D> {
    let any: Box<dyn std::any::Any> = Box::new(t);
    *any.downcast::<Tensor<C, D>>().expect("the backend type was checked")
}

/// Whether `B` is exactly burn's Flex without autodiff (the fused block's forward).
pub fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// Runs `$body` with `$B` bound to the backend type and `$device` to the device that `$spec`
/// names; an engine this binary was built without is an error (`not_built`). The body is
/// generic code, e.g. `train::<Autodiff<B>>(&job, &device)`.
#[macro_export]
macro_rules! with_backend {
    ($spec:expr, $B:ident, $device:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::backend::DeviceSpec as __Spec;
        #[allow(unreachable_patterns)]
        match $spec {
            __Spec::Cpu => {
                type $B = $crate::backend::Cpu;
                let $device: burn::tensor::Device<$B> = Default::default();
                $body
            }
            #[cfg(feature = "libtorch")]
            __Spec::TorchCpu => {
                $crate::backend::torch::check_runtime()?;
                type $B = $crate::backend::Torch;
                let $device = burn::backend::libtorch::LibTorchDevice::Cpu;
                $body
            }
            #[cfg(feature = "libtorch")]
            __Spec::Cuda(n) => {
                $crate::backend::torch::check_runtime()?;
                $crate::backend::torch::check_cuda(n)?;
                type $B = $crate::backend::Torch;
                let $device = burn::backend::libtorch::LibTorchDevice::Cuda(n);
                $body
            }
            #[cfg(feature = "cubecl")]
            __Spec::Cubecl(n) => {
                type $B = $crate::backend::Cubecl;
                let $device = burn::backend::cuda::CudaDevice::new(n);
                $body
            }
            #[cfg(feature = "cubecl")]
            __Spec::CubeclUnfused(n) => {
                type $B = $crate::backend::CubeclUnfused;
                let $device = burn::backend::cuda::CudaDevice::new(n);
                $body
            }
            other => return Err($crate::backend::not_built(other).into()),
        }
    }};
}

pub mod profile;
#[cfg(feature = "libtorch")]
pub mod torch;
#[cfg(feature = "libtorch")]
mod torch_attention;
#[cfg(feature = "libtorch")]
mod torch_profiler;
#[cfg(feature = "libtorch")]
pub mod torch_shim;
#[cfg(feature = "libtorch")]
pub(crate) use torch_shim::graph_backward;

/// Why `--profile` is refused on an engine other than libtorch.
pub const PROFILE_NEEDS_LIBTORCH: &str =
    "--profile needs the libtorch engine (--device torch-cpu or cuda[:N]): it runs libtorch's profiler";

/// Runs `step` `steps` times under the engine's profiler, writes the raw events to `events`, and
/// returns where the steps' time went (`trm bench --profile`). libtorch only (its profiler).
pub fn profile_steps<B: Backend>(steps: usize, events: &std::path::Path, step: impl FnMut() -> Result<()>) -> Result<profile::Profile> {
    anyhow::ensure!(capabilities::<B>().engine == "libtorch", PROFILE_NEEDS_LIBTORCH);
    #[cfg(feature = "libtorch")]
    {
        let wall = torch_profiler::record(steps, events, step)?;
        profile::summarise(events, steps, wall)
    }
    #[cfg(not(feature = "libtorch"))]
    {
        let _ = (steps, events, step);
        unreachable!("only the libtorch engine passes the check above")
    }
}

/// GPU memory as the CUDA caching allocator counts it, in bytes: what `torch.cuda`'s
/// `max_memory_allocated` and `max_memory_reserved` read, so trm's figures compare with a
/// PyTorch process's (bench/reference_step.py reports the former).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
}

/// The memory peaks of `device` since this process started: the libtorch engine on a GPU
/// (`cuda[:N]`) only; `None` for every other device, which has no such counters. Read after the
/// device has run something (the allocator starts with the first tensor).
pub fn device_memory(device: DeviceSpec) -> Option<Result<DeviceMemory>> {
    match device {
        #[cfg(feature = "libtorch")]
        DeviceSpec::Cuda(n) => Some(
            torch_shim::cuda_memory(n)
                .map(|m| DeviceMemory { peak_allocated_bytes: m.peak_allocated, peak_reserved_bytes: m.peak_reserved }),
        ),
        _ => None,
    }
}

/// `device_memory` of a backend's own device value (the trainer holds `B::Device`, not a
/// `DeviceSpec`): libtorch on a GPU only, `None` elsewhere.
pub fn device_memory_of<B: Backend>(device: &B::Device) -> Option<Result<DeviceMemory>> {
    #[cfg(feature = "libtorch")]
    if let Some(burn::backend::libtorch::LibTorchDevice::Cuda(n)) = (device as &dyn std::any::Any).downcast_ref() {
        return device_memory(DeviceSpec::Cuda(*n));
    }
    let _ = device;
    None
}

/// Whether attention runs fused on `B`: the engine has it (`Capabilities::fused_attention`) and
/// `TRM_FUSED_ATTENTION=0` does not turn it off.
pub fn fused_attention_on<B: Backend>() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    capabilities::<B>().fused_attention && !*OFF.get_or_init(crate::util::env::fused_attention_off)
}

/// The inputs of an attention call, handed back when the engine has no fused attention.
pub type AttentionInputs<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

/// Non-causal, unmasked attention `softmax(q kᵀ · scale) v` over `[B, H, T, hd]` tensors as one
/// fused op, forward and backward, where the engine has one (`Capabilities::fused_attention`:
/// libtorch's SDPA) and `TRM_FUSED_ATTENTION=0` does not turn it off; otherwise `Err` hands the
/// inputs back for burn's generic form (`model::layers::attention`).
pub fn fused_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
) -> Result<Tensor<B, 4>, AttentionInputs<B>> {
    if !fused_attention_on::<B>() {
        return Err((q, k, v));
    }
    #[cfg(feature = "libtorch")]
    return torch_attention::attention(q, k, v, scale);
    #[cfg(not(feature = "libtorch"))]
    {
        let _ = scale;
        Err((q, k, v))
    }
}

/// What `--deterministic` asks of an engine: that a run repeats bit for bit (same machine, same
/// build, same `--threads`), so a resumed run continues exactly as the run it resumes would have.
/// Returns a line saying how the engine meets it; an engine that cannot is an error. Called
/// before anything starts a thread or touches the device.
/// - `cpu`: always so (no atomics; every reduction runs in a fixed order).
/// - libtorch: torch's deterministic algorithms (`torch.use_deterministic_algorithms(True)`),
///   deterministic cuDNN without benchmarking, and CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset
///   (`util::env`). An operation with no deterministic form would stop the run with torch's
///   error; none of trm's has one.
/// - cubecl: refused (its reductions and kernels carry no such mode).
pub fn make_deterministic(spec: DeviceSpec) -> Result<String> {
    match spec {
        DeviceSpec::Cpu => Ok("deterministic: the CPU engine always is (same --threads)".into()),
        DeviceSpec::TorchCpu | DeviceSpec::Cuda(_) => {
            if !spec.built() {
                return Err(not_built(spec));
            }
            let cublas = crate::util::env::cublas_workspace_for_determinism()?;
            #[cfg(feature = "libtorch")]
            torch_shim::set_deterministic(true)?;
            Ok(format!("deterministic: torch's deterministic algorithms, deterministic cuDNN, CUBLAS_WORKSPACE_CONFIG={cublas}"))
        }
        DeviceSpec::Cubecl(_) | DeviceSpec::CubeclUnfused(_) => anyhow::bail!(
            "--deterministic: burn's CUDA engine ({spec}) has no deterministic mode; use --device cuda (libtorch), \
             whose deterministic algorithms make a run repeat bit for bit"
        ),
    }
}

/// Sizes the CPU thread pools: rayon's global pool (burn's Flex backend and trm's data work) and,
/// with the `libtorch` engine, libtorch's intra-op pool.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // Measured on 2 cores: a bench step 1.8 s with 2 threads, 7.4 s with 256, over 120 s with 1024.
        if let Ok(cores) = std::thread::available_parallelism()
            && n > cores.get()
        {
            eprintln!(
                "warning: --threads {n} is more than the {cores} cores this process may use: the threads take turns on them, \
                 which is slower (with many more, far slower); leave --threads out for one per core"
            );
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().ok();
        #[cfg(feature = "libtorch")]
        torch::set_threads(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("torch-cpu", DeviceSpec::TorchCpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("cubecl:1", DeviceSpec::Cubecl(1)),
            ("cubecl-unfused", DeviceSpec::CubeclUnfused(0)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
        for bad in ["gpu", "cuda:x", "cpu:1", "torch-cpu:0", "cuda-unfused"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn flex_capabilities_with_and_without_autodiff() {
        assert_eq!(capabilities::<Cpu>(), FLEX);
        assert_eq!(capabilities::<CpuAutodiff>(), FLEX);
        assert!(is_flex::<Cpu>() && !is_flex::<CpuAutodiff>());
    }

    #[test]
    fn a_device_not_built_is_a_clear_error() {
        let spec = DeviceSpec::Cubecl(0);
        if spec.built() {
            eprintln!("skipped: this build has the cubecl engine, so there is no missing engine to refuse");
        } else {
            let run = || -> Result<()> { with_backend!(spec, B, device => { let _: burn::tensor::Device<B> = device; Ok(()) }) };
            let e = run().unwrap_err().to_string();
            assert!(e.contains("cubecl") && e.contains("rebuild"), "{e}");
        }
    }

    #[test]
    fn a_large_tensor_comes_to_the_host_whole_and_in_order() {
        let device = Default::default();
        // Two full slices and a part of one; values exact in float32 and different from their
        // neighbours across every slice boundary.
        let n = 3 * 11_200_001;
        let value = |i: usize| (i % 1_000_003) as f32;
        let data = burn::tensor::TensorData::new((0..n).map(value).collect::<Vec<f32>>(), [3, n / 3]);
        let v = to_host_f32(&Tensor::<Flex, 2>::from_data(data, &device));
        assert_eq!(v.len(), n);
        assert!(v.iter().enumerate().all(|(i, &x)| x == value(i)), "a value out of place");
        assert_eq!(to_host_f32(&Tensor::<Flex, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device)), [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn deterministic_is_met_or_refused_per_engine() {
        assert!(make_deterministic(DeviceSpec::Cpu).unwrap().contains("always"));
        for spec in [DeviceSpec::Cubecl(0), DeviceSpec::CubeclUnfused(1)] {
            let e = make_deterministic(spec).unwrap_err().to_string();
            assert!(e.contains("no deterministic mode") && e.contains("--device cuda"), "{e}");
        }
        // Without libtorch the torch devices are refused as not built; with it (where this
        // would switch the whole test process's torch), tests/libtorch.rs runs it in a child.
        if !DeviceSpec::TorchCpu.built() {
            let e = make_deterministic(DeviceSpec::TorchCpu).unwrap_err().to_string();
            assert!(e.contains("libtorch") && e.contains("rebuild"), "{e}");
        }
    }
}
