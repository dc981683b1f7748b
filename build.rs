//! `cfg(trm_full_data)` when the full data sets are beside the checkout (`../shared/data`, or
//! `TRM_SHARED`): the few tests that need them are ignored otherwise, with the reason shown.
//!
//! With the `libtorch` feature: finds the libtorch that torch-sys builds against (the same
//! Python query, or `LIBTORCH`), records its folder as the binaries' run path (so `trm` starts
//! without LD_LIBRARY_PATH on the machine it was built on) and passes its folder and version to
//! the code (`backend::torch`), which checks the loaded libtorch against them at run time.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    full_data();
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if std::env::var_os("CARGO_FEATURE_LIBTORCH").is_none() {
        return;
    }
    let (lib, version, abi) = match libtorch() {
        Ok(found) => found,
        Err(e) => panic!(
            "feature `libtorch`: {e}. Install PyTorch 2.11 (pip install torch==2.11.0) and build with \
             LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 (docs/gpu.md)"
        ),
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=TRM_LIBTORCH_LIB={}", lib.display());
    println!("cargo:rustc-env=TRM_LIBTORCH_VERSION={version}");
    torch_shims(&lib, &abi);
}

/// Compiles trm's C++ shims over libtorch (src/backend/torch_*.cpp: the profiler, autograd on a
/// given output gradient, the CUDA allocator's counters, the deterministic mode) against the headers of the libtorch
/// found above, with its C++ ABI (`abi`: 0 or 1).
#[cfg(feature = "libtorch")]
fn torch_shims(lib: &std::path::Path, abi: &str) {
    const SOURCES: [&str; 4] = [
        "src/backend/torch_profiler.cpp",
        "src/backend/torch_autograd.cpp",
        "src/backend/torch_memory.cpp",
        "src/backend/torch_context.cpp",
    ];
    for src in SOURCES.iter().chain(&["src/backend/torch_shim.h"]) {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib.parent().expect("libtorch's lib folder has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .files(SOURCES)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .compile("trm_torch_shims");
}

#[cfg(not(feature = "libtorch"))]
fn torch_shims(_lib: &std::path::Path, _abi: &str) {}

/// libtorch's lib folder, version and C++ ABI (`torch._C._GLIBCXX_USE_CXX11_ABI` as 0 or 1, as
/// torch-sys reads it; `LIBTORCH_CXX11_ABI` for a plain libtorch, default 1).
fn libtorch() -> Result<(PathBuf, String, String), String> {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
        let script = "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__); \
                      print(int(torch._C._GLIBCXX_USE_CXX11_ABI))";
        let out = Command::new(python).args(["-c", script]).output().map_err(|e| format!("cannot run {python}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{python} cannot import torch: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let lib = lines.next().ok_or("no torch lib folder printed")?;
        let version = lines.next().ok_or("no torch version printed")?;
        let abi = lines.next().ok_or("no C++ ABI printed")?;
        return Ok((PathBuf::from(lib), version.trim().to_string(), abi.trim().to_string()));
    }
    let root = PathBuf::from(std::env::var("LIBTORCH").map_err(|_| "neither LIBTORCH_USE_PYTORCH nor LIBTORCH is set")?);
    let version = std::fs::read_to_string(root.join("build-version")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    Ok((root.join("lib"), version, abi))
}

fn full_data() {
    println!("cargo:rustc-check-cfg=cfg(trm_full_data)");
    println!("cargo:rerun-if-env-changed=TRM_SHARED");
    let shared = match std::env::var_os("TRM_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../shared"),
    };
    let data = shared.join("data");
    if data.is_dir() {
        println!("cargo:rerun-if-changed={}", data.display());
    }
    if data.join("arc").is_dir() && data.join("maze-30x30-hard-1k/npy").is_dir() {
        println!("cargo:rustc-cfg=trm_full_data");
    }
}
