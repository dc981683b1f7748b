//! The ARC model that `--checkpoint` names, for the commands that need its identifier names as
//! well as its weights (`trm solve --arc-task`, `trm adapt`): a trm run or checkpoint folder, or a
//! bare weights file (safetensors or the reference's torch.save). A bare file's configuration
//! comes from `--config`/`--set` or the reference's `all_config.yaml` beside it, and its
//! identifier names from `--identifiers` or the `identifiers.json` beside it (the reference keeps
//! that file in the data folder it trained on: copy it beside the checkpoint, or name it).

use crate::data::arc;
use crate::model::config::ModelConfig;
use crate::store::checkpoint;
use crate::store::config::TrainConfig;
use crate::store::hydra_config::resolve_for_weights;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// An ARC model to run or adapt.
pub struct ArcModel {
    /// Its training configuration (a bare file's: as resolved from --config or all_config.yaml).
    pub config: TrainConfig,
    pub model: ModelConfig,
    /// The weights file (`model.safetensors` of a checkpoint, or the bare file).
    pub weights: PathBuf,
    /// The name of every puzzle identifier, 0 = blank.
    pub identifiers: Vec<String>,
    /// What to name in messages: the checkpoint folder or the file.
    pub label: PathBuf,
}

pub fn open_arc(spec: &Path, config: Option<&str>, set: &[String], identifiers: Option<&Path>) -> Result<ArcModel> {
    let m = if checkpoint::is_weights_file(spec) {
        let cfg = resolve_for_weights(spec, config, set)?;
        let ids_path =
            identifiers.map(Path::to_path_buf).unwrap_or_else(|| spec.parent().unwrap_or(Path::new(".")).join("identifiers.json"));
        if !ids_path.is_file() {
            bail!(
                "{}: an ARC model's puzzle identifiers are named by the identifiers.json of the data it was trained on: \
                 pass --identifiers FILE (none at {})",
                spec.display(),
                ids_path.display()
            );
        }
        let names: Vec<String> = crate::util::fs::read_json(&ids_path)?;
        // Identifier 0 is the blank one that pads batches, never a task's.
        anyhow::ensure!(!names.is_empty(), "{}: no identifiers (the first is the blank one, `<blank>`)", ids_path.display());
        crate::data::format::check_identifier_names(&names, &ids_path)?;
        // The names must be the ones the weights' embedding rows were trained for: one per row.
        let (file, tensors) = checkpoint::read_weights(spec)?;
        if let Some(rows) = tensors.get("puzzle_emb.weights").and_then(|t| t.shape.first()).filter(|&&r| r != names.len()) {
            bail!(
                "{}: names {} puzzle identifiers, but the puzzle embedding table of {} has {rows} rows: \
                 pass --identifiers with the identifiers.json of the data set the model was trained on",
                ids_path.display(),
                names.len(),
                file.display()
            );
        }
        let model =
            ModelConfig { arch: cfg.arch.clone(), seq_len: arc::SEQ_LEN, vocab_size: arc::VOCAB, num_puzzle_identifiers: names.len() };
        model.validate().with_context(|| format!("{}: model", spec.display()))?;
        ArcModel { config: cfg, model, weights: spec.to_path_buf(), identifiers: names, label: spec.to_path_buf() }
    } else {
        anyhow::ensure!(
            config.is_none() && set.is_empty() && identifiers.is_none(),
            "--config/--set/--identifiers describe a bare weights file; a run or checkpoint folder carries its own"
        );
        let ckpt = checkpoint::resolve(spec)?;
        let state = checkpoint::read_state_json(&ckpt)?;
        let identifiers = checkpoint::read_identifiers(&ckpt)?;
        anyhow::ensure!(
            identifiers.len() == state.model.num_puzzle_identifiers,
            "{}: identifiers.json names {} puzzle identifiers, the model has {}",
            ckpt.display(),
            identifiers.len(),
            state.model.num_puzzle_identifiers
        );
        ArcModel { config: state.config, model: state.model, weights: ckpt.join("model.safetensors"), identifiers, label: ckpt }
    };
    if m.model.seq_len != arc::SEQ_LEN || m.model.vocab_size != arc::VOCAB {
        bail!("{}: not an ARC model (seq_len {}, vocab {})", m.label.display(), m.model.seq_len, m.model.vocab_size);
    }
    Ok(m)
}
