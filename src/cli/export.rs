//! `trm export`: a trained model in another program's format. `--format torch` writes the
//! reference's own checkpoint format (torch.save of the state dict under `model.inner.*`), which
//! its evaluation code loads with `model.load_state_dict(torch.load(path))` (float32 weights, the
//! state-init buffers in the forward dtype, as its own files hold them), and the run's
//! configuration beside it as the reference's `all_config.yaml`, which `trm eval`/`solve` read
//! back when given the bare file without `--config`. The `all_config.yaml` beside the weights
//! always describes them: an identical one is kept, another one is replaced only with `--force`.
//! The run's identifier map goes beside them too (`identifiers.json`, as an ARC model's rows are
//! named), kept or replaced in the same way. No file may be one of the checkpoint's own files, a
//! folder, pipe or device; an existing file is replaced only with `--force`.

use crate::model::config::ForwardDtype;
use crate::store::checkpoint;
use crate::util::fs::{Protected, check_output};
use crate::util::torch_zip_write::{Entry, Stored};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Run or checkpoint folder
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// torch: the reference's torch.save format (the only one for now)
    #[arg(long, default_value = "torch")]
    pub format: String,
    /// Output file (the reference names its checkpoints step_N)
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output file (and an all_config.yaml beside it that describes another model)
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    if a.format != "torch" {
        bail!(
            "--format {}: only `torch` (the reference's torch.save format) is written; trm's own checkpoints are already safetensors",
            a.format
        );
    }
    let ckpt = checkpoint::resolve(&a.checkpoint)?;
    // The run around the checkpoint holds it; a checkpoint alone is the checkpoint.
    let run = crate::store::integrity::run_holding(&ckpt);
    let protected = [
        Protected { path: &a.checkpoint, what: "the run being exported" },
        match &run {
            Some(path) => Protected { path, what: "the run of the checkpoint being exported" },
            None => Protected { path: &ckpt, what: "the checkpoint being exported" },
        },
    ];
    if a.out.file_name().is_some_and(|n| n == "all_config.yaml") {
        bail!(
            "--out {}: the weights' configuration goes to all_config.yaml beside them; name the weights otherwise (the reference's step_N)",
            a.out.display()
        );
    }
    check_output(&a.out, "--out", &protected, a.force)?;
    let yaml_path = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("all_config.yaml");
    let state = checkpoint::read_state_json(&ckpt)?;
    let mut config = state.config.clone();
    // A checkpoint written before trm recorded its evaluators reads as the default, arc@ARC,
    // which only ever ran on ARC data.
    if config.data_paths.first().map(Path::new).is_some_and(|d| d.is_dir() && !crate::eval::arc_vote::is_arc_data(d)) {
        config.evaluators.retain(|e| e != crate::store::config::ARC_EVALUATOR);
    }
    let yaml = crate::store::hydra_config::to_yaml(&config)?;
    // Compared only where it is a regular file of about the size (a pipe there is refused below).
    let same_yaml =
        crate::util::fs::read_bytes_capped(&yaml_path, 2 * yaml.len() as u64 + 4096, "a config").is_ok_and(|old| old == yaml.as_bytes());
    if !same_yaml {
        check_output(&yaml_path, "all_config.yaml beside --out", &protected, a.force).map_err(|e| {
            e.context("the weights' configuration goes there, and a config that describes other weights would make a later solve run them wrongly")
        })?;
    }
    // The identifier map (an ARC model's rows by task and augmentation): beside the weights, where
    // `trm solve --arc-task` and `trm adapt` look for it; the reference keeps it only with the
    // data set. Handled as all_config.yaml.
    let ids_path = yaml_path.with_file_name("identifiers.json");
    // None: a run of a data set without one (HRM's builders).
    let names: Option<Vec<String>> = checkpoint::identifiers_path(&ckpt).map(|p| crate::util::fs::read_json(&p)).transpose()?;
    let ids_json = names.as_ref().map(crate::util::pyjson::to_string).transpose()?;
    // The same names there (in whatever layout: the run's own map, when --out is in the run) stay.
    let same_ids = names.as_ref().is_none_or(|n| crate::util::fs::read_json::<Vec<String>>(&ids_path).is_ok_and(|old| &old == n));
    if !same_ids {
        check_output(&ids_path, "identifiers.json beside --out", &protected, a.force)
            .map_err(|e| e.context("the weights' identifier map goes there, and another model's would name their rows wrongly"))?;
    }
    let model = state.model;
    // Every tensor the model has, verified and finite, in the reference's names (EMA weights when
    // the run kept an EMA: they are what model.safetensors holds and what evaluation uses).
    let (params, table) = checkpoint::load_model::<crate::backend::Cpu>(&ckpt.join("model.safetensors"), &model, &Default::default())?;
    // The dtypes the reference's own checkpoints have: float32 weights and puzzle table, and the
    // state-init buffers (H_init, L_init) in the forward dtype. Its `load_checkpoint` loads with
    // `assign=True`, which keeps a file's dtype: float32 buffers would run its carries in float32.
    let buffers = match model.arch.forward_dtype {
        ForwardDtype::Bfloat16 => Stored::Bfloat16,
        ForwardDtype::Float32 => Stored::Float32,
    };
    let mut tensors: Vec<Entry> = params
        .iter()
        .map(|p| Entry {
            stored: if p.trainable { Stored::Float32 } else { buffers },
            ..Entry::f32(format!("{}{}", checkpoint::PREFIX, p.name), p.shape.clone(), crate::backend::to_host_f32(&p.tensor))
        })
        .collect();
    if let Some(t) = &table {
        tensors.push(Entry::f32(format!("{}puzzle_emb.weights", checkpoint::PREFIX), t.dims().to_vec(), crate::backend::to_host_f32(t)));
    }
    // Both files are written in full beside their names first; a stop until then leaves the old
    // pair as it was. Then they are put in place, the configuration of other weights (which
    // --force allowed replacing) removed first: a stop between those few renames leaves weights
    // with no configuration, which eval and solve refuse, never weights beside another model's
    // configuration, which they would run wrongly.
    let weights = crate::util::torch_zip_write::stage(&a.out, &tensors)?;
    let config = (!same_yaml).then(|| crate::util::fs::stage(&yaml_path, yaml.as_bytes())).transpose()?;
    let ids = match (&ids_json, same_ids) {
        (Some(j), false) => Some(crate::util::fs::stage(&ids_path, j.as_bytes())?),
        _ => None,
    };
    for (staged, path) in [(config.is_some(), &yaml_path), (ids.is_some(), &ids_path)] {
        if staged && path.symlink_metadata().is_ok() {
            std::fs::remove_file(path).with_context(|| format!("cannot remove the old {}", path.display()))?;
        }
    }
    weights.commit()?;
    if let Some(config) = config {
        config.commit()?;
        println!("wrote {} (the run's configuration, as the reference writes it)", yaml_path.display());
    }
    if let Some(ids) = ids {
        ids.commit()?;
        println!("wrote {} (the model's identifier map: its puzzle-embedding rows by name)", ids_path.display());
    }
    println!(
        "wrote {} ({} tensors, float32{}, keys {}*): load it with model.load_state_dict(torch.load(path)) in the reference's code",
        a.out.display(),
        tensors.len(),
        if buffers == Stored::Bfloat16 { ", H_init/L_init bfloat16 as the reference keeps them" } else { "" },
        checkpoint::PREFIX
    );
    Ok(())
}
