//! The Sudoku model that ships inside the binary (`models/sudoku/`: weights, the reference-style
//! `all_config.yaml`, and its model card). `trm solve --sudoku` and `trm eval` use it when no
//! `--checkpoint` is given.
//!
//! The files are compiled in, so the binary works wherever it is copied. Each use writes them to a
//! fresh folder of the system's temporary directory (a random name, owner-only permissions, so
//! another user can neither plant links there nor swap the weights), loads them from there as any
//! bare weights file (the same checks, the same code path), and removes the folder when done.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The weights (safetensors, the reference's parameter names).
pub const WEIGHTS: &[u8] = include_bytes!("../../models/sudoku/model.safetensors");
/// Its configuration, as the reference's `all_config.yaml`.
pub const CONFIG: &str = include_str!("../../models/sudoku/all_config.yaml");
/// How it was trained and what it scores.
pub const CARD: &str = include_str!("../../models/sudoku/README.md");

/// The bundled model's files, written out for this process; the folder goes when this is dropped.
pub struct BundledFiles {
    _dir: tempfile::TempDir,
    /// The weights file (`all_config.yaml` beside it).
    pub weights: PathBuf,
}

/// Writes the bundled Sudoku model to a fresh private folder.
pub fn sudoku_model_file() -> Result<BundledFiles> {
    let dir = tempfile::Builder::new()
        .prefix("trm-bundled-sudoku-")
        .tempdir()
        .context("cannot create a private folder for the bundled Sudoku model in the temporary directory")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .context("cannot make the bundled model's folder private")?;
    }
    let weights = dir.path().join("model.safetensors");
    crate::util::fs::write_atomic(&dir.path().join("all_config.yaml"), CONFIG.as_bytes())
        .context("writing the bundled Sudoku model's configuration")?;
    crate::util::fs::write_atomic(&weights, WEIGHTS).context("writing the bundled Sudoku model")?;
    Ok(BundledFiles { _dir: dir, weights })
}

/// The bundled model, loaded: its configuration, weights and puzzle table (what `trm solve` loads
/// for `--sudoku` without `--checkpoint`).
pub fn load<B: burn::prelude::Backend>(
    device: &B::Device,
) -> Result<(crate::model::config::ModelConfig, crate::model::weights::Weights<B>, Option<burn::prelude::Tensor<B, 2>>)> {
    use crate::data::sudoku::{SEQ_LEN, VOCAB};
    let files = sudoku_model_file()?;
    let file = &files.weights;
    let cfg = crate::store::hydra_config::resolve_for_weights(file, None, &[])?;
    let model = crate::model::config::ModelConfig { arch: cfg.arch, seq_len: SEQ_LEN, vocab_size: VOCAB, num_puzzle_identifiers: 1 };
    model.validate()?;
    let (params, table) = crate::store::checkpoint::load_model::<B>(file, &model, device)?;
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
        assert_eq!(std::fs::read(&f.weights).unwrap(), WEIGHTS);
        let dir = f.weights.parent().unwrap().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "owner-only folder");
        }
        // Another use gets a folder of its own; the folder goes with its holder.
        let g = sudoku_model_file().unwrap();
        assert_ne!(g.weights, f.weights);
        drop(f);
        assert!(!dir.exists());
        assert!(CARD.contains("accuracy"), "the model card states the measured accuracy");
    }
}
