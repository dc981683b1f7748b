//! The Sudoku model that ships inside the binary (`models/sudoku/`: weights, the reference-style
//! `all_config.yaml`, and its model card). `trm solve --sudoku` and `trm eval` use it when no
//! `--checkpoint` is given.
//!
//! The files are compiled in, so the binary works wherever it is copied. On first use they are
//! written to a folder of the system's temporary directory named after the weights' hash, and from
//! there load as any bare weights file does (the same checks, the same code path).

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The weights (safetensors, the reference's parameter names).
pub const WEIGHTS: &[u8] = include_bytes!("../../models/sudoku/model.safetensors");
/// Its configuration, as the reference's `all_config.yaml`.
pub const CONFIG: &str = include_str!("../../models/sudoku/all_config.yaml");
/// How it was trained and what it scores.
pub const CARD: &str = include_str!("../../models/sudoku/README.md");

/// The path of the bundled Sudoku model's weights file, written out on first use.
pub fn sudoku_model_file() -> Result<PathBuf> {
    let hash = Sha256::digest(WEIGHTS);
    let tag: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("trm-bundled-sudoku-{tag}"));
    let file = dir.join("model.safetensors");
    let yaml = dir.join("all_config.yaml");
    let same = |p: &PathBuf, want: &[u8]| std::fs::read(p).is_ok_and(|b| b == want);
    if !same(&file, WEIGHTS) || !same(&yaml, CONFIG.as_bytes()) {
        crate::util::fs::write_atomic(&yaml, CONFIG.as_bytes()).context("writing the bundled Sudoku model's configuration")?;
        crate::util::fs::write_atomic(&file, WEIGHTS).context("writing the bundled Sudoku model")?;
    }
    Ok(file)
}

/// The bundled model, loaded: its configuration, weights and puzzle table (what `trm solve` loads
/// for `--sudoku` without `--checkpoint`).
pub fn load<B: burn::prelude::Backend>(
    device: &B::Device,
) -> Result<(crate::model::config::ModelConfig, crate::model::weights::Weights<B>, Option<burn::prelude::Tensor<B, 2>>)> {
    use crate::data::sudoku::{SEQ_LEN, VOCAB};
    let file = sudoku_model_file()?;
    let cfg = crate::train::config::resolve_for_weights(&file, None, &[])?;
    let model = crate::model::config::ModelConfig { arch: cfg.arch, seq_len: SEQ_LEN, vocab_size: VOCAB, num_puzzle_identifiers: 1 };
    model.validate()?;
    let (params, table) = crate::train::checkpoint::load_model::<B>(&file, &model, device)?;
    let w = crate::model::weights::Weights::from_named(&model, params)?;
    Ok((model, w, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_model_is_small_and_written_out_intact() {
        assert!(WEIGHTS.len() <= 5 << 20, "the bundled model is {} bytes; the limit is 5 MiB", WEIGHTS.len());
        let f = sudoku_model_file().unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), WEIGHTS);
        // A second call finds it in place.
        assert_eq!(sudoku_model_file().unwrap(), f);
        assert!(CARD.contains("accuracy"), "the model card states the measured accuracy");
    }
}
