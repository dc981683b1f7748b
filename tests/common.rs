//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `shared/` folder beside the checkout (real data sets and golden fixtures).
/// Override with `TRM_SHARED=/path/to/shared`.
pub fn shared() -> PathBuf {
    if let Ok(p) = std::env::var("TRM_SHARED") {
        return PathBuf::from(p);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for cand in [here.join("../shared"), here.join("shared")] {
        if cand.join("data").exists() {
            return cand;
        }
    }
    panic!("cannot find shared/ (set TRM_SHARED)");
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
        config: trm::train::config::resolve("sudoku-tiny", &ov).unwrap(),
        data: data.into(),
        out: out.into(),
        resume,
        overrides: ov,
        quiet: true,
        init_from: None,
        time_limit: None,
    }
}
