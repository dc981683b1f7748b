//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `shared/` folder beside the checkout (the full real data sets). Override with
/// `TRM_SHARED=/path/to/shared`. Tests that can run on the samples in tests/data use `data()`.
pub fn shared() -> PathBuf {
    shared_opt().expect("cannot find shared/ (set TRM_SHARED)")
}

/// `shared()` when it is there.
pub fn shared_opt() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TRM_SHARED") {
        // TRM_SHARED=/nonexistent runs the tests as on a fresh clone with nothing beside it.
        return Some(PathBuf::from(p)).filter(|p| p.join("data").exists());
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [here.join("../shared"), here.join("shared")].into_iter().find(|cand| cand.join("data").exists())
}

/// The data sets folder: `shared/data` when the full data sets are beside the checkout, else the
/// small samples committed in `tests/data` (same layout; tests/data/README.md).
pub fn data() -> PathBuf {
    match shared_opt() {
        Some(s) => s.join("data"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

/// The full data sets folder, or None after saying that `test` is skipped without them.
pub fn full_data(test: &str) -> Option<PathBuf> {
    let d = shared_opt().map(|s| s.join("data"));
    if d.is_none() {
        eprintln!("{test}: skipped: needs the full data sets (../shared beside the checkout, or TRM_SHARED=/path/to/shared)");
    }
    d
}

pub fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A tiny generated Sudoku data set (the embedded default), built once per test.
pub fn tiny_data(dir: &Path) {
    let train = trm::data::sudoku::generate(48, 30, 1, 0);
    let test = trm::data::sudoku::generate(16, 30, 1, 1);
    trm::data::sudoku::write_dataset(dir, &train, &test, 1, 1).unwrap();
}

/// The tiny attention model and recipe the resume tests share (in process and through the CLI).
pub const TINY: [&str; 11] = [
    "arch.hidden_size=16",
    "arch.num_heads=2",
    "arch.puzzle_emb_ndim=16",
    "arch.mlp_t=False",
    "arch.pos_encodings=rope",
    "arch.H_cycles=2",
    "arch.L_cycles=1",
    "arch.halt_max_steps=3",
    "global_batch_size=8",
    "lr_warmup_steps=3",
    "ema=True",
];

/// A quiet training job of the tiny model on `data`: TINY, then `overrides` (also handed to a
/// resumed run as its command-line overrides).
pub fn tiny_job(data: &Path, out: &Path, overrides: &[String], resume: bool) -> trm::train::trainer::TrainJob {
    let ov: Vec<String> = TINY.iter().map(|s| s.to_string()).chain(overrides.iter().cloned()).collect();
    trm::train::trainer::TrainJob {
        config: trm::store::config::resolve("sudoku-tiny", &ov).unwrap(),
        data: data.into(),
        out: out.into(),
        resume,
        overrides: ov,
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    }
}

/// A run's newest checkpoint as one map: the state (optimiser moments, EMA, carry, ...) and the
/// model under `model/`, for comparing runs tensor by tensor.
pub fn run_state(run: &Path) -> std::collections::BTreeMap<String, trm::util::tensors::HostTensor> {
    let ckpt = trm::store::checkpoint::resolve(run).unwrap();
    let mut all = trm::util::tensors::read_safetensors(&ckpt.join("state.safetensors")).unwrap();
    for (k, v) in trm::util::tensors::read_safetensors(&ckpt.join("model.safetensors")).unwrap() {
        all.insert(format!("model/{k}"), v);
    }
    all
}

/// Runs trm with its memory capped at `cap` bytes (RLIMIT_DATA: its heap and private writable
/// mappings): returns its exit code (None if a signal ended it, as an allocation failure past the
/// cap does in Rust code) and stderr. Unix only: Windows has no such limit.
#[cfg(unix)]
pub fn trm_capped<S: AsRef<std::ffi::OsStr>>(args: &[S], cap: u64) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
    c.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: cap as libc::rlim_t, rlim_max: cap as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}
