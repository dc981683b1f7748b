//! The libtorch engine's run-time checks: which libtorch this process loaded, whether it is the
//! version trm was built against, and whether it sees the GPU asked for. The binary links
//! libtorch dynamically (`build.rs` records the build's libtorch folder as the binary's run
//! path and its version here), so the same binary runs against another machine's PyTorch
//! 2.11 when `LD_LIBRARY_PATH` names that machine's `torch/lib` (docs/gpu.md).

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The libtorch version this binary was built against (`build.rs`), e.g. `2.11.0+cu130`.
pub const BUILT_VERSION: &str = env!("TRM_LIBTORCH_VERSION");
/// The libtorch folder this binary was built against (also its run path).
pub const BUILT_LIB: &str = env!("TRM_LIBTORCH_LIB");

/// The folder of the libtorch this process loaded (from /proc/self/maps).
pub fn loaded_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(Into::into))
}

/// The version of the libtorch in `lib` (pip's `torch/version.py`, or libtorch's `build-version`).
pub fn version_of(lib: &std::path::Path) -> Option<String> {
    let root = lib.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    std::fs::read_to_string(root.join("build-version")).ok().map(|s| s.trim().to_string())
}

/// `2.11.0+cu130` -> `2.11`: the part that must match (the C++ ABI changes between minors).
fn minor(v: &str) -> &str {
    let v = v.split('+').next().unwrap_or(v);
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// Checks the loaded libtorch once per process: its version against the build's.
pub fn check_runtime() -> Result<()> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let Some(lib) = loaded_lib_dir() else { return Ok(()) };
        match version_of(&lib) {
            Some(v) if minor(&v) != minor(BUILT_VERSION) => Err(format!(
                "libtorch {v} was loaded from {} but this trm was built against libtorch {BUILT_VERSION} ({BUILT_LIB}); \
                 point LD_LIBRARY_PATH at a PyTorch {} install's torch/lib (pip install torch=={}) or rebuild trm \
                 against this one (docs/gpu.md)",
                lib.display(),
                minor(BUILT_VERSION),
                BUILT_VERSION.split('+').next().unwrap_or(BUILT_VERSION)
            )),
            _ => Ok(()),
        }
    });
    r.clone().map_err(anyhow::Error::msg)
}

/// Checks that libtorch sees GPU `n`.
pub fn check_cuda(n: usize) -> Result<()> {
    let count = tch::Cuda::device_count().max(0) as usize;
    if count == 0 {
        let lib = loaded_lib_dir().map(|p| p.display().to_string()).unwrap_or_else(|| BUILT_LIB.into());
        let version = loaded_lib_dir().and_then(|p| version_of(&p)).unwrap_or_else(|| BUILT_VERSION.into());
        bail!(
            "--device cuda:{n}: libtorch {version} ({lib}) sees no CUDA device: no NVIDIA driver or GPU here, \
             or a CPU-only PyTorch (use --device torch-cpu to run the same engine on the CPU)"
        );
    }
    if n >= count {
        bail!("--device cuda:{n}: libtorch sees {count} CUDA device(s) (cuda:0..cuda:{})", count - 1);
    }
    Ok(())
}

/// libtorch's intra-op threads (its CPU kernels' pool).
pub fn set_threads(n: usize) {
    tch::set_num_threads(n as i32);
}

/// One line for logs and benchmark results: the loaded libtorch's version and folder.
pub fn describe() -> String {
    let lib = loaded_lib_dir();
    let version = lib.as_deref().and_then(version_of).unwrap_or_else(|| "unknown".into());
    format!(
        "libtorch {version} ({}), built against {BUILT_VERSION}, CUDA devices: {}",
        lib.map(|p| p.display().to_string()).unwrap_or_else(|| "not mapped".into()),
        tch::Cuda::device_count()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn minor_versions() {
        assert_eq!(super::minor("2.11.0+cu130"), "2.11");
        assert_eq!(super::minor("2.11.1"), "2.11");
        assert_eq!(super::minor("2.9"), "2.9");
    }

    #[test]
    fn the_loaded_libtorch_is_the_built_one() {
        // Touch libtorch so that it is mapped, then read its folder and version back.
        let _ = tch::Cuda::device_count();
        let lib = super::loaded_lib_dir().expect("libtorch_cpu.so is mapped");
        assert_eq!(super::version_of(&lib).as_deref(), Some(super::BUILT_VERSION));
        super::check_runtime().unwrap();
    }
}
