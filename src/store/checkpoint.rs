//! Checkpoints: everything needed to resume exactly, written atomically.
//!
//! ```text
//! RUN/checkpoints/step_00001234/model.safetensors  evaluation weights (EMA if enabled) and the
//!                                                  puzzle table, reference names `model.inner.*`
//! RUN/checkpoints/step_00001234/state.safetensors  raw weights, Adam moments, EMA shadow, carry
//! RUN/checkpoints/step_00001234/state.json         step, loader position, RNG, carry rows, config
//! RUN/checkpoints/step_00001234/arc_votes.jsonl.gz the ARC vote pool of a run that pools its
//!                                                  evaluations (`arc_votes.rs`), when it has one
//! RUN/checkpoints/step_00001234/SHA256SUMS         checksums of the files above (integrity.rs)
//! RUN/checkpoints/latest                           name of the newest complete checkpoint
//! ```
//! A checkpoint folder is written as `*.tmp`, checksummed, verified and renamed when complete
//! (swapped atomically with an existing folder of the same step); `latest` is replaced atomically
//! after that, so a kill at any moment leaves the previous checkpoint usable. Non-finite weights
//! are never written, so a diverged run cannot rotate away its last good checkpoint.

pub use super::carry_rows::CarryRows;
use super::config::TrainConfig;
use super::integrity;
use crate::backend::to_host_f32;
use crate::data::loader::Position;
use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::model::weights::Named;
use crate::step::optim::AdamState;
use crate::util::tensors::{F32Tensor, read_safetensors_f32, write_safetensors};
use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PREFIX: &str = "model.inner.";

/// Everything of a training run that changes while it trains.
#[derive(Debug, Clone)]
pub struct TrainState<B: Backend> {
    pub params: Vec<Named<B>>,
    /// Puzzle-embedding table `[num_puzzle_identifiers, puzzle_emb_ndim]`.
    pub table: Option<Tensor<B, 2>>,
    pub adam: AdamState<B>,
    pub ema: Option<Vec<Named<B>>>,
    pub carry: Option<Carry<B>>,
    /// Optimiser steps taken.
    pub step: u64,
    /// Loader position of the next batch.
    pub position: Position,
    /// Batches skipped so far by the divergence guard (`skip_nonfinite_batches`).
    pub skipped: u64,
    /// How far the run's logs reached when this state was saved (None: no logs on this rank).
    pub log_mark: Option<LogMark>,
    /// The last step whose evaluation was logged (so a resumed run that is already at its end
    /// does not evaluate and log it again).
    pub evaluated_step: Option<u64>,
    /// That evaluation was off the schedule (the last one of a run stopped between evaluations),
    /// so its ARC votes were not pooled.
    pub evaluated_off_schedule: bool,
    /// The votes of every ARC evaluation so far, in a run that pools them (the reference's
    /// `aggregated_voting`); rank 0's only. Shared, so that cloning the state copies no votes.
    pub arc_votes: Option<std::sync::Arc<super::arc_votes::Votes>>,
}

/// The lengths in bytes of a run's `metrics.jsonl` and TensorBoard file at a checkpoint: a run
/// resumed from it cuts its logs back to exactly these, so what was logged after the checkpoint
/// (an evaluation of the same step included) appears once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMark {
    pub metrics_jsonl: u64,
    pub tensorboard: u64,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateJson {
    pub format: String,
    pub step: u64,
    pub adam_step: u64,
    pub position: Position,
    /// (Checkpoints written before exploration was drawn per row also hold `rng`; it is ignored:
    /// the draws are a function of seed, step and row, `act::Exploration`.)
    #[serde(default)]
    pub skipped_batches: u64,
    pub config: TrainConfig,
    pub model: ModelConfig,
    pub carry: Option<CarryRows>,
    /// Whether model.safetensors holds the EMA weights.
    pub model_is_ema: bool,
    /// The logs' lengths at this checkpoint (absent in checkpoints of older trm versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogMark>,
    /// The last step whose evaluation was logged before this checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_step: Option<u64>,
    /// That evaluation was off the schedule (absent: on it, or written by an older trm).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evaluated_off_schedule: bool,
}

fn named_entries<B: Backend>(prefix: &str, v: &[Named<B>]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    v.iter().map(|n| (format!("{prefix}{}", n.name), n.shape.clone(), to_host_f32(&n.tensor))).collect()
}

/// Writes the evaluation weights (+ table) in the reference's naming.
pub fn write_model(
    path: &Path,
    weights: &[Named<impl Backend>],
    table: Option<&Tensor<impl Backend, 2>>,
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let mut entries = named_entries(PREFIX, weights);
    if let Some(t) = table {
        entries.push((format!("{PREFIX}puzzle_emb.weights"), t.dims().to_vec(), to_host_f32(t)));
    }
    ensure_finite(&entries, &format!("refusing to write {}", path.display()))?;
    write_safetensors(path, &entries, Some(meta.into_iter().collect()))
}

/// Removes what an interrupted save left in `run` (`*.tmp` folders and files: a full disk, a
/// kill), with a note for each, so the space is free and the next save starts clean. Only called
/// while the run's lock is held. Links are removed, never followed.
pub fn clean_leftovers(run: &Path) -> Result<()> {
    for dir in [run.to_path_buf(), run.join("checkpoints")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "tmp") {
                continue;
            }
            let is_dir = p.symlink_metadata().is_ok_and(|m| m.is_dir());
            if is_dir { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
                .with_context(|| format!("cannot remove {}, left by an interrupted save; remove it by hand", p.display()))?;
            eprintln!("note: removed {}, left by an interrupted save", p.display());
        }
    }
    Ok(())
}

/// Saves a checkpoint under `run/checkpoints/`, prunes old ones, returns its folder.
pub fn save<B: Backend>(run: &Path, st: &TrainState<B>, cfg: &TrainConfig, model: &ModelConfig) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    let name = format!("step_{:08}", st.step);
    let tmp = root.join(format!("{name}.tmp"));
    let dst = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let eval_weights = st.ema.as_ref().unwrap_or(&st.params);
    let meta = BTreeMap::from([("format".to_string(), "trm".to_string()), ("step".to_string(), st.step.to_string())]);
    write_model(&tmp.join("model.safetensors"), eval_weights, st.table.as_ref(), meta)?;
    // The identifier map travels with the weights: row i of the table is identifier i.
    if run.join("identifiers.json").exists() {
        std::fs::copy(run.join("identifiers.json"), tmp.join("identifiers.json"))?;
    }
    let mut entries = named_entries("params.", &st.params);
    for (i, n) in st.params.iter().enumerate() {
        if let (Some(m), Some(v)) = (&st.adam.m[i], &st.adam.v[i]) {
            entries.push((format!("adam_m.{}", n.name), n.shape.clone(), to_host_f32(m)));
            entries.push((format!("adam_v.{}", n.name), n.shape.clone(), to_host_f32(v)));
        }
    }
    if let Some(e) = &st.ema {
        entries.extend(named_entries("ema.", e));
    }
    let sched = crate::model::schedule::Schedule::of(&model.arch);
    let carry = st.carry.as_ref().map(|c| {
        for (spec, t) in sched.states.iter().zip(&c.states) {
            entries.push((format!("carry.{}", spec.key), t.dims().to_vec(), to_host_f32(t)));
        }
        CarryRows {
            steps: c.steps.clone(),
            halted: c.halted.clone(),
            inputs: c.inputs.clone(),
            labels: c.labels.clone(),
            puzzle_ids: c.puzzle_ids.clone(),
        }
    });
    // The same check as load_state's: a checkpoint that could not be loaded is never written.
    ensure_finite(&entries, &format!("refusing to save the checkpoint of step {}", st.step))?;
    write_safetensors(&tmp.join("state.safetensors"), &entries, None)?;
    let js = StateJson {
        format: STATE_FORMAT.into(),
        step: st.step,
        adam_step: st.adam.step,
        position: st.position,
        skipped_batches: st.skipped,
        config: cfg.clone(),
        model: model.clone(),
        carry,
        model_is_ema: st.ema.is_some(),
        logs: st.log_mark,
        evaluated_step: st.evaluated_step,
        evaluated_off_schedule: st.evaluated_off_schedule,
    };
    crate::util::fs::write_json(&tmp.join("state.json"), &js)?;
    if let Some(v) = &st.arc_votes {
        v.write(&tmp.join(super::arc_votes::FILE))?;
    }
    // Checksums last, then read everything back against them before the folder counts.
    integrity::write_sums(&tmp)?;
    integrity::forget(&tmp);
    integrity::verify(&tmp).with_context(|| format!("the checkpoint just written to {} does not verify", tmp.display()))?;
    integrity::forget(&tmp);
    install(&tmp, &dst)?;
    crate::util::fs::write_atomic(&root.join("latest"), name.as_bytes())?;
    crate::util::fs::sync_dir(&root);
    // Keep `keep_checkpoints` (the one just written is intact, so others may go): folders that
    // fail verification go first (after a fallback resume), then the oldest.
    let mut all = integrity::checkpoints(run);
    all.retain(|p| p != &dst);
    all.sort_by_key(|p| (integrity::verify(p).is_err(), std::cmp::Reverse(p.clone())));
    while all.len() + 1 > cfg.keep_checkpoints {
        let old = all.pop().expect("non-empty");
        std::fs::remove_dir_all(&old).ok();
    }
    Ok(dst)
}

/// Moves a complete checkpoint folder `tmp` to `dst`. When `dst` exists (the same step saved
/// again), the two folders are swapped atomically where the OS can (`swap`), so `latest` never
/// names a missing folder; elsewhere the old folder is removed first.
fn install(tmp: &Path, dst: &Path) -> Result<()> {
    integrity::forget(dst);
    if dst.exists() {
        if swap(tmp, dst) {
            // `tmp` now holds the previous content of `dst`.
            std::fs::remove_dir_all(tmp).ok();
            return Ok(());
        }
        std::fs::remove_dir_all(dst).with_context(|| format!("cannot replace {}", dst.display()))?;
    }
    std::fs::rename(tmp, dst).with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))
}

/// Exchanges two existing paths in one step: Linux's `renameat2(RENAME_EXCHANGE)`, macOS's
/// `renamex_np(RENAME_SWAP)`. False where the OS or the file system cannot.
#[cfg(any(all(target_os = "linux", target_env = "gnu"), target_os = "macos"))]
fn swap(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let (a, b) = (c(a), c(b));
    // SAFETY: two valid NUL-terminated paths; neither call keeps the pointers.
    #[cfg(target_os = "linux")]
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    // SAFETY: as above.
    #[cfg(target_os = "macos")]
    let rc = unsafe { libc::renamex_np(a.as_ptr(), b.as_ptr(), libc::RENAME_SWAP) };
    rc == 0
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), target_os = "macos")))]
fn swap(_: &Path, _: &Path) -> bool {
    false
}

/// Refuses to write (or read) weights that are not finite: a diverged run must never replace a
/// good checkpoint, and evaluating NaN weights gives meaningless numbers.
fn ensure_finite(entries: &[(String, Vec<usize>, Vec<f32>)], what: &str) -> Result<()> {
    for (name, _, v) in entries {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!("{what}: `{name}` holds a non-finite value ({} at flat index {i}): the weights have diverged", v[i]);
        }
    }
    Ok(())
}

/// The checkpoint a reader loads: a checkpoint folder, or a run's latest, verified
/// (`integrity::resolve`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    integrity::resolve(path)
}

/// The identifier map of a checkpoint folder (its own copy, else the run folder's).
pub fn read_identifiers(ckpt: &Path) -> Result<Vec<String>> {
    match identifiers_path(ckpt) {
        Some(path) => {
            let names: Vec<String> = crate::util::fs::read_json(&path)?;
            crate::data::format::check_identifier_names(&names, &path)?;
            Ok(names)
        }
        None => anyhow::bail!("{}: no identifiers.json in the checkpoint or its run folder", ckpt.display()),
    }
}

/// The checkpoint's identifier map: its own `identifiers.json`, else its run folder's (None: it
/// has none, as a run of a data set without one).
pub fn identifiers_path(ckpt: &Path) -> Option<PathBuf> {
    let run = ckpt.parent().and_then(Path::parent).map(|r| r.join("identifiers.json"));
    std::iter::once(ckpt.join("identifiers.json")).chain(run).find(|p| p.exists())
}

/// The state.json of a run's newest checkpoint that has a readable one, read without verifying
/// the checkpoint (for what a run recorded, such as its data set; loading verifies).
pub fn newest_state_json(run: &Path) -> Option<StateJson> {
    integrity::checkpoints(run).iter().find_map(|c| read_state_json(c).ok())
}

/// The `format` of the state.json trm writes, and the one it reads.
const STATE_FORMAT: &str = "trm-checkpoint-1";

pub fn read_state_json(ckpt: &Path) -> Result<StateJson> {
    let file = ckpt.join("state.json");
    let mut js: StateJson = crate::util::fs::read_json(&file)?;
    anyhow::ensure!(
        js.format == STATE_FORMAT,
        "{}: format `{}` is not the one this trm reads ({STATE_FORMAT}): written by another version of trm?",
        file.display(),
        js.format
    );
    // The folder's name is the step (`save`): another step in the file was edited by hand.
    let named = ckpt.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("step_")).and_then(|n| n.parse::<u64>().ok());
    if let Some(named) = named {
        anyhow::ensure!(
            js.step == named,
            "{}: step {} in a checkpoint of step {named} (its folder's name): a checkpoint copied under another name? Its \
             folder would be step_{:08}",
            file.display(),
            js.step,
            js.step
        );
    }
    // Runs of trm before 2026-12-05 accepted a puzzle_emb_len with puzzle_emb_ndim=0, where it
    // did nothing (no prefix); it reads as the 0 that new runs must give.
    for arch in [&mut js.model.arch, &mut js.config.arch] {
        if arch.puzzle_emb_ndim == 0 {
            arch.puzzle_emb_len = 0;
        }
    }
    js.model.validate().with_context(|| format!("{}: model", file.display()))?;
    Ok(js)
}

fn tensor2<B: Backend>(t: &F32Tensor, device: &B::Device) -> Tensor<B, 2> {
    let (r, c) = match t.shape.len() {
        1 => (1, t.shape[0]),
        2 => (t.shape[0], t.shape[1]),
        _ => (t.shape[..t.shape.len() - 1].iter().product(), *t.shape.last().unwrap()),
    };
    Tensor::from_data(TensorData::new(t.values.clone(), [r, c]), device)
}

/// Named tensors `prefix<name>` of `map` in the order of `like`.
fn take_named<B: Backend>(
    map: &BTreeMap<String, F32Tensor>,
    prefix: &str,
    like: &[(String, Vec<usize>)],
    device: &B::Device,
    file: &Path,
) -> Result<Vec<Named<B>>> {
    like.iter()
        .map(|(name, shape)| {
            let t = map.get(&format!("{prefix}{name}")).ok_or_else(|| anyhow!("{}: missing `{prefix}{name}`", file.display()))?;
            if &t.shape != shape {
                bail!("{}: `{prefix}{name}` has shape {:?}, expected {shape:?}", file.display(), t.shape);
            }
            Ok(Named {
                name: name.clone(),
                shape: shape.clone(),
                tensor: tensor2(t, device),
                trainable: !crate::model::weights::is_init_buffer(name),
            })
        })
        .collect()
}

/// Verifies the checkpoint folder a weights file sits in, when that folder has checksums.
fn verify_parent(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if dir.join(integrity::SUMS).exists() => integrity::verify(dir).map(|_| ()),
        _ => Ok(()),
    }
}

fn ensure_finite_host(map: &BTreeMap<String, F32Tensor>, file: &Path) -> Result<()> {
    for (name, t) in map {
        if let Some(i) = t.values.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: `{name}` holds a non-finite value ({} at flat index {i}): written by a run that diverged",
                file.display(),
                t.values[i]
            );
        }
    }
    Ok(())
}

/// Strips the reference's wrapper prefixes (`_orig_mod.` from torch.compile, `model.inner.` from
/// the loss head and ACT wrapper) from a state-dict key.
pub fn canonical_name(key: &str) -> &str {
    let k = key.strip_prefix("_orig_mod.").unwrap_or(key);
    k.strip_prefix("model.inner.").unwrap_or(k)
}

/// Buffers the reference may hold at run time that carry no weights (skipped when present).
const RUNTIME_BUFFERS: [&str; 4] = ["puzzle_emb.local_weights", "puzzle_emb.local_ids", "rotary_emb.cos_cached", "rotary_emb.sin_cached"];

/// Whether `spec` names a weights file (`FILE` or `FILE#key`) rather than a folder.
pub fn is_weights_file(spec: &Path) -> bool {
    spec.is_file() || spec.to_string_lossy().rsplit_once('#').is_some_and(|(f, _)| Path::new(f).is_file())
}

/// The tensors of a weights file, by canonical name (`canonical_name`), as float32: a safetensors
/// file, or a `torch.save` state dict (the reference's checkpoints, recognised by their bytes;
/// `FILE#key` picks a nested one, e.g. `step_1000#ema`). Returns the file's own path too.
pub fn read_weights(spec: &Path) -> Result<(PathBuf, BTreeMap<String, F32Tensor>)> {
    let text = spec.to_string_lossy();
    let (file, key) = match text.rsplit_once('#') {
        Some((f, k)) if !spec.exists() && Path::new(f).exists() => (PathBuf::from(f), k.to_string()),
        _ => (spec.to_path_buf(), String::new()),
    };
    let torch = crate::util::torch_zip::is_torch_file(&file);
    let map = if torch {
        crate::util::torch_zip::read(&file, &key)?
    } else {
        anyhow::ensure!(key.is_empty(), "{}: a #key picks a state dict inside a torch file; this is a safetensors file", file.display());
        verify_parent(&file)?;
        read_safetensors_f32(&file).context("trm reads weights as safetensors, or as a torch.save zip")?
    };
    let mut canon = BTreeMap::new();
    for (k, v) in map {
        let name = canonical_name(&k).to_string();
        if canon.insert(name.clone(), v).is_some() {
            bail!("{}: `{name}` appears twice (with and without a wrapper prefix)", file.display());
        }
    }
    Ok((file, canon))
}

/// Loads the evaluation weights and the puzzle table of a checkpoint: ours, a reference state
/// dict exported to safetensors, or the reference's own `torch.save` file (`read_weights`).
/// Every tensor must be one the model has: a key of another model is an error naming it.
pub fn load_model<B: Backend>(file: &Path, model: &ModelConfig, device: &B::Device) -> Result<(Vec<Named<B>>, Option<Tensor<B, 2>>)> {
    load_model_impl(file, model, device, false)
}

/// As `load_model`, but the puzzle-embedding table may have any number of rows (of the model's
/// width): a run that starts from these weights maps them onto its own data set's identifiers
/// (`puzzle_rows::start_table`).
pub fn load_model_any_rows<B: Backend>(
    file: &Path,
    model: &ModelConfig,
    device: &B::Device,
) -> Result<(Vec<Named<B>>, Option<Tensor<B, 2>>)> {
    load_model_impl(file, model, device, true)
}

fn load_model_impl<B: Backend>(
    file: &Path,
    model: &ModelConfig,
    device: &B::Device,
    any_rows: bool,
) -> Result<(Vec<Named<B>>, Option<Tensor<B, 2>>)> {
    let (file, canon) = read_weights(file)?;
    let file = file.as_path();
    ensure_finite_host(&canon, file)?;
    let like = crate::model::weights::expected_shapes(model);
    let unknown: Vec<&String> = canon
        .keys()
        .filter(|k| *k != "puzzle_emb.weights" && !RUNTIME_BUFFERS.contains(&k.as_str()) && !like.iter().any(|(n, _)| n == *k))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: {} tensor(s) that the {} model configured here does not have: {}{} (weights of another architecture or size? check --config and arch=)",
            file.display(),
            unknown.len(),
            model.arch.name.name(),
            unknown.iter().take(6).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if unknown.len() > 6 { ", ..." } else { "" }
        );
    }
    let params = take_named(&canon, "", &like, device, file)?;
    let table = match canon.get("puzzle_emb.weights") {
        Some(t) if any_rows && t.shape.len() == 2 && t.shape[0] >= 1 && t.shape[1] == model.arch.puzzle_emb_ndim => {
            Some(tensor2(t, device))
        }
        Some(t) if model.arch.puzzle_emb_ndim > 0 => {
            if t.shape != [model.num_puzzle_identifiers, model.arch.puzzle_emb_ndim] {
                bail!(
                    "{}: puzzle_emb.weights is {:?} but the data set has {} identifiers x {} (rebuild the data set with the same command, or use `trm adapt`)",
                    file.display(),
                    t.shape,
                    model.num_puzzle_identifiers,
                    model.arch.puzzle_emb_ndim
                );
            }
            Some(tensor2(t, device))
        }
        None if model.arch.puzzle_emb_ndim > 0 => bail!("{}: no puzzle_emb.weights", file.display()),
        _ => None,
    };
    Ok((params, table))
}

/// The ARC vote pool a checkpoint holds (None: it holds none).
pub fn read_arc_votes(ckpt: &Path) -> Result<Option<super::arc_votes::Votes>> {
    let file = ckpt.join(super::arc_votes::FILE);
    if !file.exists() {
        return Ok(None);
    }
    super::arc_votes::Votes::read(&file).map(Some)
}

/// Restores the full training state of a checkpoint folder.
pub fn load_state<B: Backend>(ckpt: &Path, device: &B::Device) -> Result<(StateJson, TrainState<B>)> {
    integrity::verify(ckpt)?;
    let js = read_state_json(ckpt)?;
    let model = &js.model;
    let (_, table) = load_model::<B>(&ckpt.join("model.safetensors"), model, device)?;
    let file = ckpt.join("state.safetensors");
    let map = read_safetensors_f32(&file)?;
    ensure_finite_host(&map, &file)?;
    let like = crate::model::weights::expected_shapes(model);
    let params = take_named::<B>(&map, "params.", &like, device, &file)?;
    let mut adam = AdamState::new(&params);
    adam.step = js.adam_step;
    if js.adam_step > 0 {
        for (i, n) in params.iter().enumerate().filter(|(_, n)| n.trainable) {
            let moment = |kind: &str| {
                let t = map.get(&format!("{kind}.{}", n.name)).ok_or_else(|| anyhow!("{}: missing {kind}.{}", file.display(), n.name))?;
                anyhow::ensure!(
                    t.shape == n.shape,
                    "{}: `{kind}.{}` has shape {:?}, its weight has {:?}",
                    file.display(),
                    n.name,
                    t.shape,
                    n.shape
                );
                Ok(tensor2(t, device))
            };
            adam.m[i] = Some(moment("adam_m")?);
            adam.v[i] = Some(moment("adam_v")?);
        }
    }
    let ema = if js.config.ema { Some(take_named::<B>(&map, "ema.", &like, device, &file)?) } else { None };
    let carry = match &js.carry {
        Some(rows) => {
            rows.check(model, js.config.global_batch_size, &ckpt.join("state.json"))?;
            let want = [rows.steps.len(), model.total_len(), model.d()];
            let state = |key: &str| -> Result<Tensor<B, 3>> {
                // Checkpoints written before the schedule refactor named TRM's states in lower case.
                let t = map
                    .get(&format!("carry.{key}"))
                    .or_else(|| map.get(&format!("carry.{}", key.to_lowercase())))
                    .ok_or_else(|| anyhow!("{}: missing carry.{key}", file.display()))?;
                anyhow::ensure!(t.shape == want, "{}: carry.{key} has shape {:?}, expected {want:?}", file.display(), t.shape);
                Ok(Tensor::from_data(TensorData::new(t.values.clone(), want), device))
            };
            let sched = crate::model::schedule::Schedule::of(&model.arch);
            Some(Carry {
                states: sched.states.iter().map(|s| state(&s.key)).collect::<Result<Vec<_>>>()?,
                steps: rows.steps.clone(),
                halted: rows.halted.clone(),
                inputs: rows.inputs.clone(),
                labels: rows.labels.clone(),
                puzzle_ids: rows.puzzle_ids.clone(),
                seq_len: model.seq_len,
            })
        }
        None => None,
    };
    let st = TrainState {
        params,
        table,
        adam,
        ema,
        carry,
        step: js.step,
        position: js.position,
        skipped: js.skipped_batches,
        log_mark: js.logs,
        evaluated_step: js.evaluated_step,
        evaluated_off_schedule: js.evaluated_off_schedule,
        // Rank 0's alone: `train::setup` reads it there.
        arc_votes: None,
    };
    Ok((js, st))
}
