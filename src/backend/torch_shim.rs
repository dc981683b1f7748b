//! The Rust side of trm's C++ shims over libtorch (src/backend/torch_*.cpp, built by build.rs):
//! what tch does not wrap. Each C function returns 0, or 1 with a message in a buffer; no C++
//! exception crosses into Rust. This module turns those into `Result`s.
//! - torch_profiler.cpp: libtorch's profiler (Kineto), used by `torch_profiler`;
//! - torch_autograd.cpp: a torch graph's backward applied to a given output gradient;
//! - torch_memory.cpp: the CUDA caching allocator's counters;
//! - torch_context.cpp: torch's deterministic mode.

use anyhow::{Result, bail};
use std::ffi::c_char;
use torch_sys::C_tensor;

unsafe extern "C" {
    pub(super) fn trm_profiler_start(with_cuda: i32, err: *mut c_char, err_len: usize) -> i32;
    pub(super) fn trm_profiler_stop(events_path: *const c_char, err: *mut c_char, err_len: usize) -> i32;
    fn trm_graph_grad(
        out: *const C_tensor,
        dout: *const C_tensor,
        inputs: *const *const C_tensor,
        n: usize,
        grads: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn trm_cuda_memory(device: i32, out: *mut i64, err: *mut c_char, err_len: usize) -> i32;
    fn trm_torch_set_deterministic(on: i32, err: *mut c_char, err_len: usize) -> i32;
    fn trm_torch_deterministic() -> i32;
}

/// The message a shim wrote into `buf` (NUL-terminated, or the whole buffer).
pub(super) fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Calls a shim function with an error buffer; `what` names the call in the error.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    let mut err = [0u8; 512];
    if f(err.as_mut_ptr().cast(), err.len()) != 0 {
        bail!("{what}: {}", message(&err));
    }
    Ok(())
}

/// The gradients of `inputs` (leaves of the torch graph that made `out`, each requiring grad)
/// for the output gradient `dout`: that graph's backward applied to `dout`. torch frees the
/// graph's saved tensors as it goes: burn moves an op's state into its one backward call and
/// never clones it (burn-autodiff's `OpsPrep::finish`, and the graph server removes each step
/// as it runs it). The fused attention and libtorch's fused block (`model::torch_block`) are
/// differentiated through it.
///
/// Panics when torch refuses (an input that does not require grad, a `dout` of another shape):
/// a burn backward step has no way to return an error, and either would be a defect in trm.
pub(crate) fn graph_backward(out: &tch::Tensor, dout: &tch::Tensor, inputs: &[&tch::Tensor]) -> Vec<tch::Tensor> {
    let ptrs: Vec<*const C_tensor> = inputs.iter().map(|t| t.as_ptr()).collect();
    let mut grads: Vec<*mut C_tensor> = vec![std::ptr::null_mut(); inputs.len()];
    // SAFETY: every pointer is a live tensor borrowed for the call; the shim writes exactly
    // `inputs.len()` new tensors into `grads` on success, and at most `len` bytes into `err`.
    call("torch's backward of a fused op", |err, len| unsafe {
        trm_graph_grad(out.as_ptr(), dout.as_ptr(), ptrs.as_ptr(), ptrs.len(), grads.as_mut_ptr(), err, len)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // SAFETY: each pointer is a tensor the shim allocated for the caller to own (and free).
    grads.into_iter().map(|g| unsafe { tch::Tensor::from_ptr(g) }).collect()
}

/// GPU memory as the CUDA caching allocator counts it, in bytes: what `torch.cuda`'s
/// `memory_allocated`, `max_memory_allocated`, `memory_reserved` and `max_memory_reserved` read,
/// so trm's figures compare with a PyTorch process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    pub allocated: u64,
    pub peak_allocated: u64,
    pub reserved: u64,
    pub peak_reserved: u64,
}

/// GPU `device`'s memory counters now.
pub fn cuda_memory(device: usize) -> Result<CudaMemory> {
    let mut v = [0i64; 4];
    // SAFETY: the shim writes four values into `v` and at most `len` bytes into `err`.
    call("reading the CUDA allocator's counters", |err, len| unsafe { trm_cuda_memory(device as i32, v.as_mut_ptr(), err, len) })?;
    let [allocated, peak_allocated, reserved, peak_reserved] = v.map(|x| x.max(0) as u64);
    Ok(CudaMemory { allocated, peak_allocated, reserved, peak_reserved })
}

/// Turns torch's deterministic algorithms on or off for this process (`backend::deterministic`
/// sets CUBLAS_WORKSPACE_CONFIG first, which cuBLAS reads when it starts).
pub fn set_deterministic(on: bool) -> Result<()> {
    // SAFETY: the shim writes at most `len` bytes into `err`.
    call("setting torch's deterministic mode", |err, len| unsafe { trm_torch_set_deterministic(on as i32, err, len) })
}

/// Whether torch's deterministic algorithms are on in this process.
pub fn deterministic() -> bool {
    // SAFETY: reads a flag of libtorch's global context.
    unsafe { trm_torch_deterministic() != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn graph_backward_applies_the_graph_to_the_output_gradient() {
        // out = sin(x · w) + x over [4, 8]: its backward on dout is dout · cos(x · w) · w + dout
        // for x and dout · cos(x · w) · x for w, which the shim must give (and tch's own
        // `run_backward` of sum(out · dout), the form the shim replaced, must agree).
        tch::manual_seed(7);
        let (x0, w0) = (Tensor::randn([4, 8], (Kind::Float, Device::Cpu)), Tensor::randn([4, 8], (Kind::Float, Device::Cpu)));
        let dout = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let graph = || {
            tch::with_grad(|| {
                let (x, w) = (x0.detach().set_requires_grad(true), w0.detach().set_requires_grad(true));
                let out = (&x * &w).sin() + &x;
                (x, w, out)
            })
        };
        let (x, w, out) = graph();
        let g = graph_backward(&out, &dout, &[&x, &w]);
        let c = (&x0 * &w0).cos();
        let want = [&dout * &c * &w0 + &dout, &dout * &c * &x0];
        for (got, want) in g.iter().zip(&want) {
            let err = f64::try_from((got - want).abs().max()).unwrap();
            assert!(err < 1e-6, "gradient off by {err}");
        }
        let (x, w, out) = graph();
        let seeded = tch::with_grad(|| Tensor::run_backward(&[(&out * &dout).sum(Kind::Float)], &[&x, &w], false, false));
        for (got, old) in g.iter().zip(&seeded) {
            assert!(got.equal(old), "the shim and the seeded form differ");
        }
        // Only the wanted leaves: one gradient for one input.
        let (x, _w, out) = graph();
        assert_eq!(graph_backward(&out, &dout, &[&x]).len(), 1);
        // An output gradient laid out unlike the output (transposed) gives the same gradients.
        let dout_t = dout.tr().contiguous().tr();
        assert_ne!(dout_t.stride(), dout.stride());
        let (x, w, out) = graph();
        for (got, want) in graph_backward(&out, &dout_t, &[&x, &w]).iter().zip(&g) {
            assert!(got.equal(want), "a transposed output gradient changed the result");
        }
    }

    #[test]
    fn a_gradient_never_shares_memory_with_the_output_gradient() {
        // out = x through views only: torch's backward hands `dout` itself (as a view) to x.
        // burn would then own memory that its caller also holds, so the shim copies it.
        let x0 = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let dout = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let (x, out) = tch::with_grad(|| {
            let x = x0.detach().set_requires_grad(true);
            let out = x.reshape([32]).reshape([4, 8]);
            (x, out)
        });
        let g = graph_backward(&out, &dout, &[&x]);
        assert!(g[0].equal(&dout));
        assert_ne!(g[0].data_ptr(), dout.data_ptr(), "the gradient aliases the output gradient");
    }

    #[test]
    fn cuda_memory_counters_are_read_or_refused_cleanly() {
        if tch::Cuda::is_available() {
            let _t = Tensor::zeros([1 << 20], (Kind::Float, Device::Cuda(0)));
            let m = cuda_memory(0).unwrap();
            assert!(m.allocated >= 4 << 20 && m.peak_allocated >= m.allocated, "{m:?}");
            assert!(m.peak_reserved >= m.peak_allocated, "{m:?}");
        } else {
            let e = format!("{:#}", cuda_memory(0).unwrap_err());
            assert!(e.starts_with("reading the CUDA allocator's counters: "), "{e}");
        }
    }

    #[test]
    fn deterministic_mode_reaches_torch_and_refuses_what_has_no_deterministic_form() {
        // The mode is process-wide, so the test runs again alone in a child process of this
        // test binary, where no other test's torch calls can meet it.
        const CHILD: &str = "TRM_TEST_DETERMINISTIC_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = format!("{}::deterministic_mode_reaches_torch_and_refuses_what_has_no_deterministic_form", module_path!());
            let name = name.split_once("::").map_or(name.as_str(), |(_, rest)| rest);
            let o = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success() && out.contains("1 passed"), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
            return;
        }
        // put_ without accumulation has no deterministic implementation on any device, so torch
        // refuses it in deterministic mode: proof that the switch reached torch's checks.
        let put = || {
            let mut t = Tensor::zeros([4], (Kind::Float, Device::Cpu));
            let index = Tensor::from_slice(&[1i64, 1]);
            let source = Tensor::from_slice(&[1f32, 2.0]);
            t.f_put_(&index, &source, false).map(|_| ())
        };
        assert!(put().is_ok());
        set_deterministic(true).unwrap();
        let on = deterministic();
        let refused = put();
        set_deterministic(false).unwrap();
        assert!(on, "the deterministic mode was not turned on");
        let e = refused.expect_err("put_ ran in deterministic mode").to_string();
        assert!(e.contains("deterministic"), "{e}");
        assert!(!deterministic() && put().is_ok(), "the deterministic mode was not turned off");
    }
}
