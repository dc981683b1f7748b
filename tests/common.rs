//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

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
