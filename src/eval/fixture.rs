//! A parity fixture folder (`trm parity DIR`): the reference's configuration (`config.json`,
//! read into trm's model configuration), the batch, the expected tensors and the reference's
//! weights, checked before anything runs: complete (every experiment it claims), well-formed
//! (tokens and identifiers in range) and shaped as what each tensor is compared with.

use crate::data::loader::{Batch, IGNORE_LABEL};
use crate::model::architecture::Architecture;
use crate::model::config::{ForwardDtype, LossType, ModelConfig, PosEncoding};
use crate::model::weights::{Named, Weights};
use crate::util::tensors::{HostTensor, read_safetensors};
use anyhow::{Context, Result, anyhow, bail};
use burn::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Training hyper-parameters the fixture used.
pub(super) struct Hyper {
    pub(super) global_batch: usize,
    pub(super) lr: f64,
    pub(super) puzzle_lr: f64,
    pub(super) wd: f64,
    pub(super) puzzle_wd: f64,
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) ema_rate: f64,
}

fn num(v: &Value, key: &str) -> Result<f64> {
    v.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow!("config.json: missing number `{key}`"))
}

/// The architecture a fixture was made with, from the reference's `arch.name`
/// (`recursive_reasoning.hrm@...`, HRM's own `hrm.hrm_act_v1@...`).
fn architecture(cfg: &Value) -> Result<Architecture> {
    let name = cfg.pointer("/pretrain_config/arch/name").and_then(Value::as_str).unwrap_or("recursive_reasoning.trm@");
    Architecture::from_class_path(name).ok_or_else(|| anyhow!("config.json: unknown architecture `{name}`"))
}

/// The model configuration from `model_config_effective` (reference field names), on top of the
/// architecture's defaults. Keys the reference model ignores (TRM's H_layers) are not read.
pub fn model_config(cfg: &Value) -> Result<ModelConfig> {
    let m =
        cfg.get("model_config_effective").or_else(|| cfg.get("model_config_passed_to_model")).context("config.json: no model config")?;
    let u = |k: &str| num(m, k).map(|x| x as usize);
    let flag = |k: &str, default: bool| m.get(k).and_then(Value::as_bool).unwrap_or(default);
    let name = architecture(cfg)?;
    let mut arch = name.defaults();
    arch.pos_encodings = match m.get("pos_encodings").and_then(Value::as_str) {
        Some("rope") => PosEncoding::Rope,
        Some("learned") => PosEncoding::Learned,
        _ => PosEncoding::None,
    };
    let loss = cfg.pointer("/pretrain_config/arch/loss/loss_type").and_then(Value::as_str).unwrap_or("stablemax_cross_entropy");
    arch.loss_type = if loss == "softmax_cross_entropy" { LossType::SoftmaxCrossEntropy } else { LossType::StablemaxCrossEntropy };
    arch.hidden_size = u("hidden_size")?;
    arch.num_heads = u("num_heads")?;
    arch.expansion = num(m, "expansion")?;
    arch.puzzle_emb_ndim = u("puzzle_emb_ndim").unwrap_or(0);
    arch.halt_max_steps = u("halt_max_steps")?;
    arch.halt_exploration_prob = num(m, "halt_exploration_prob")?;
    arch.rms_norm_eps = num(m, "rms_norm_eps").unwrap_or(1e-5);
    arch.rope_theta = num(m, "rope_theta").unwrap_or(10000.0);
    arch.forward_dtype = ForwardDtype::Float32;
    arch.mlp_t = flag("mlp_t", false);
    match name {
        Architecture::Trm | Architecture::TrmSinglez | Architecture::TrmHier6 => {
            (arch.h_cycles, arch.l_cycles, arch.l_layers) = (u("H_cycles")?, u("L_cycles")?, u("L_layers")?);
            arch.h_layers = 0; // the reference's TRM files ignore it
            arch.puzzle_emb_len = u("puzzle_emb_len").unwrap_or(16);
            arch.no_act_continue = flag("no_ACT_continue", true);
        }
        Architecture::Hrm => {
            (arch.h_cycles, arch.l_cycles, arch.l_layers, arch.h_layers) = (u("H_cycles")?, u("L_cycles")?, u("L_layers")?, u("H_layers")?);
        }
        Architecture::TransformersBaseline => {
            arch.h_layers = u("H_layers")?;
            arch.act_enabled = flag("act_enabled", true);
            arch.act_inference = flag("act_inference", false);
        }
    }
    let c =
        ModelConfig { arch, seq_len: u("seq_len")?, vocab_size: u("vocab_size")?, num_puzzle_identifiers: u("num_puzzle_identifiers")? };
    c.validate()?;
    Ok(c)
}

/// The fixture's batch, checked against the model config (shapes, token and identifier ranges).
fn batch_from(b: &BTreeMap<String, HostTensor>, cfg: &ModelConfig, file: &Path) -> Result<Batch> {
    let f = file.display();
    let inputs = b.get("inputs").with_context(|| format!("{f}: no `inputs`"))?;
    let labels = b.get("labels").with_context(|| format!("{f}: no `labels`"))?;
    let ids = b.get("puzzle_identifiers").with_context(|| format!("{f}: no `puzzle_identifiers`"))?;
    anyhow::ensure!(
        inputs.shape.len() == 2 && inputs.shape[0] > 0 && inputs.shape[1] == cfg.seq_len,
        "{f}: `inputs` has shape {:?}, expected [batch, {}] (seq_len of config.json)",
        inputs.shape,
        cfg.seq_len
    );
    let (n, s) = (inputs.shape[0], inputs.shape[1]);
    anyhow::ensure!(labels.shape == inputs.shape, "{f}: `labels` has shape {:?}, `inputs` {:?}", labels.shape, inputs.shape);
    anyhow::ensure!(ids.shape == [n], "{f}: `puzzle_identifiers` has shape {:?}, expected [{n}]", ids.shape);
    let v = cfg.vocab_size as f64;
    let bad = |t: &HostTensor, ok: &dyn Fn(f64) -> bool| t.values.iter().position(|&x| !ok(x) || x.fract() != 0.0);
    if let Some(i) = bad(inputs, &|x| (0.0..v).contains(&x)) {
        bail!("{f}: `inputs` row {}, position {}: token {} is outside the vocabulary 0..{v}", i / s, i % s, inputs.values[i]);
    }
    if let Some(i) = bad(labels, &|x| x == IGNORE_LABEL as f64 || (0.0..v).contains(&x)) {
        bail!("{f}: `labels` row {}, position {}: {} is neither a token of 0..{v} nor {IGNORE_LABEL}", i / s, i % s, labels.values[i]);
    }
    let np = cfg.num_puzzle_identifiers as f64;
    if let Some(i) = bad(ids, &|x| (0.0..np.max(1.0)).contains(&x)) {
        bail!("{f}: `puzzle_identifiers` row {i}: {} is outside 0..{np}", ids.values[i]);
    }
    Ok(Batch {
        set: 0,
        batch_size: n,
        seq_len: s,
        inputs: inputs.i32s(),
        labels: labels.i32s(),
        puzzle_identifiers: ids.i32s(),
        global_effective: n,
    })
}

/// A fixture folder: its configuration, batch, expected tensors and the reference's weights,
/// checked to hold every experiment it claims.
pub(super) struct Fixture<B: Backend> {
    pub(super) cfg_json: Value,
    pub(super) cfg: ModelConfig,
    pub(super) h: Hyper,
    pub(super) batch: Batch,
    pub(super) expected: BTreeMap<String, HostTensor>,
    pub(super) params: Vec<Named<B>>,
    pub(super) table: Option<Tensor<B, 2>>,
    pub(super) w: Weights<B>,
}

pub(super) fn read_fixture<B: Backend>(dir: &Path, device: &B::Device) -> Result<Fixture<B>> {
    let file = dir.join("config.json");
    let cfg_json: Value = crate::util::fs::read_json(&file)?;
    // The errors below name `config.json`; the folder is named here.
    let cfg = model_config(&cfg_json).with_context(|| format!("fixture {}", dir.display()))?;
    let p = cfg_json.get("pretrain_config").with_context(|| format!("{}: no pretrain_config", file.display()))?;
    let h = Hyper {
        global_batch: num(p, "global_batch_size")? as usize,
        lr: num(p, "lr")?,
        puzzle_lr: num(p, "puzzle_emb_lr")?,
        wd: num(p, "weight_decay")?,
        puzzle_wd: num(p, "puzzle_emb_weight_decay")?,
        beta1: num(p, "beta1")?,
        beta2: num(p, "beta2")?,
        ema_rate: num(p, "ema_rate").unwrap_or(0.999),
    };
    let batch_file = dir.join("batch.safetensors");
    let batch = batch_from(&read_safetensors(&batch_file)?, &cfg, &batch_file)?;
    anyhow::ensure!(h.global_batch > 0, "{}: pretrain_config.global_batch_size must be positive", dir.join("config.json").display());
    let expected = read_safetensors(&dir.join("expected.safetensors"))?;
    // The reference's state dict, read by the same loader as our checkpoints.
    let (params, table) = crate::store::checkpoint::load_model::<B>(&dir.join("weights.safetensors"), &cfg, device)?;
    let w = Weights::from_named(&cfg, params.clone())?;
    // A fixture must hold the experiments it claims: both rollouts and every parameter's gradient.
    let mut required: Vec<String> = ["train.step1.logits", "eval.step1.logits", "trainstep2.logits"].map(String::from).to_vec();
    required.extend(params.iter().filter(|n| n.trainable).map(|n| format!("grad.model.inner.{}", n.name)));
    let missing: Vec<&String> = required.iter().filter(|k| !expected.contains_key(*k)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{}: not a complete fixture, {} expected tensors are missing (first: {})",
        dir.join("expected.safetensors").display(),
        missing.len(),
        missing[0]
    );
    check_shapes(dir, &expected, &params, table.as_ref(), &batch, &cfg)?;
    Ok(Fixture { cfg_json, cfg, h, batch, expected, params, table, w })
}

/// Every expected tensor that is there has the shape of what it is compared with.
fn check_shapes<B: Backend>(
    dir: &Path,
    expected: &BTreeMap<String, HostTensor>,
    params: &[Named<B>],
    table: Option<&Tensor<B, 2>>,
    batch: &Batch,
    cfg: &ModelConfig,
) -> Result<()> {
    // Every tensor that is there has the shape of what it is compared with (not only its size:
    // a transposed tensor has the same number of values).
    let (n, sl) = (batch.batch_size, cfg.seq_len);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![];
    for n_ in params {
        for k in ["grad", "after_step", "ema"] {
            shapes.push((format!("{k}.model.inner.{}", n_.name), n_.shape.clone()));
        }
    }
    shapes.push(("grad.model.inner.puzzle_emb.local_weights".into(), vec![n, cfg.arch.puzzle_emb_ndim]));
    if let Some(t) = table {
        shapes.push(("after_step.model.inner.puzzle_emb.weights".into(), t.dims().to_vec()));
    }
    for k in expected.keys().filter(|k| k.ends_with(".logits")) {
        shapes.push((k.clone(), vec![n, sl, cfg.vocab_size]));
    }
    for (key, shape) in shapes {
        if let Some(t) = expected.get(&key) {
            anyhow::ensure!(
                t.shape == shape,
                "{}: `{key}` has shape {:?} ({} values), but what it is compared with has shape {shape:?}",
                dir.join("expected.safetensors").display(),
                t.shape,
                t.values.len()
            );
        }
    }
    Ok(())
}
