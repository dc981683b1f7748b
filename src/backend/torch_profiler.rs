//! libtorch's profiler (Kineto) around a few steps, through the C++ shim torch_profiler.cpp (`torch_shim`)
//! (torch.profiler cannot reach a Rust process). With CUDA present it records the GPU kernels
//! too. The events go to a file; `backend::profile` summarises them.

use super::torch_shim::{message, trm_profiler_start, trm_profiler_stop};
use anyhow::{Result, bail};
use std::ffi::CString;
use std::path::Path;

/// Runs `step` `steps` times under the profiler, writes its events to `events`, and returns
/// the wall time of those steps.
pub fn record(steps: usize, events: &Path, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    let path = CString::new(events.as_os_str().as_encoded_bytes())?;
    let mut err = [0u8; 512];
    // SAFETY: the shim writes at most err.len() bytes (NUL included) into err.
    if unsafe { trm_profiler_start(i32::from(tch::Cuda::is_available()), err.as_mut_ptr().cast(), err.len()) } != 0 {
        bail!("libtorch's profiler did not start: {}", message(&err));
    }
    // Stops the profiler when dropped: after the steps, or when one fails or panics.
    struct Stop<'a> {
        path: &'a CString,
        err: [u8; 512],
        code: Option<i32>,
    }
    impl Stop<'_> {
        fn stop(&mut self) -> i32 {
            // SAFETY: path is NUL-terminated; the shim writes at most err.len() bytes into err.
            *self.code.get_or_insert_with(|| unsafe { trm_profiler_stop(self.path.as_ptr(), self.err.as_mut_ptr().cast(), self.err.len()) })
        }
    }
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.stop();
        }
    }
    let mut stop = Stop { path: &path, err: [0; 512], code: None };
    let t = std::time::Instant::now();
    let ran = (0..steps).try_for_each(|_| step());
    let wall = t.elapsed().as_secs_f64();
    let stopped = stop.stop();
    ran?;
    if stopped != 0 {
        bail!("libtorch's profiler could not write {}: {}", events.display(), message(&stop.err));
    }
    Ok(wall)
}
