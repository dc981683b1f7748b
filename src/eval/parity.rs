//! `trm parity DIR`: replays a golden fixture produced by the reference PyTorch code and compares
//! every expected tensor (format of `shared/fixtures/trm-small-attn`: weights.safetensors,
//! batch.safetensors, expected.safetensors, config.json). Works for any architecture the
//! reference has (trm, hrm, trm_singlez, trm_hier6, transformers_baseline), any size, mlp_t,
//! any position encoding and prefix length: everything is read from the fixture's config
//! (`bench/make_fixture.py` writes such fixtures).
//!
//! Tolerances: forward tensors `tol · max|expected|` with tol 10x the fixture's
//! float32-vs-float64 noise floor at that call (at least 1e-5; 1e-5 at call 1 and 1e-4 later
//! where no floor is listed); a head output
//! (logits, Q logits) also at least what its answer state's tolerance allows through the head
//! (`Checker::head_tol`); gradients 1e-4;
//! optimiser results 1e-6 absolute; discrete outputs exact. A loss inherits the tolerance of what
//! it is computed from (`loss_bound`): with logits within δ = tol·max|logits| (max-norm), each
//! token's log-probability moves by at most 2δ (stable-max and softmax alike), so the row-summed
//! lm_loss by at most 2Bδ; a BCE sum over B rows moves by at most B·δ_q (its derivative in the
//! logit is bounded by 1) plus B·max|q|·δ_target for a soft target; the total adds them with the
//! 0.5 weight. The bound, relative to |expected|, is the loss's tolerance (never below 1e-6).
//!
//! Experiments replayed (see the fixture README): K training-mode and K eval-mode ACT calls with
//! fixed weights; one real training step (gradients, sign-SGD + AdamATan2, EMA, logged metrics);
//! a second training step with the persisted carry and the updated weights.

pub use super::fixture::model_config;
use super::fixture::{Fixture, read_fixture};
use crate::backend::to_host_f32;
use crate::model::act::Carry;
use crate::model::act::Exploration;
use crate::model::config::ModelConfig;
use crate::model::forward::{StepOutput, embed_input, run_net, update_input};
use crate::model::layers::block;
use crate::model::schedule::Schedule;
use crate::model::weights::Named;
use crate::parallel::Single;
use crate::step::loss::Metrics;
use crate::step::optim::{AdamHyper, AdamState, OptimizerKind};
use crate::step::supervision::{Ropes, eval_forward, train_forward};
use crate::step::update::{Learner, LocalGrads, StepHyper, apply_gradients};
use crate::util::tensors::HostTensor;
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    /// max |got - expected| / max |expected| (or absolute / exact, see `mode`)
    pub error: f64,
    pub tolerance: f64,
    pub mode: &'static str,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.error <= self.tolerance
    }
}

/// Compares one tensor and records the result.
struct Checker<'a> {
    expected: &'a BTreeMap<String, HostTensor>,
    noise: Option<&'a Value>,
    results: Vec<Check>,
    /// The reference's key of the state the heads read (z_H, or z_L for single z).
    answer_key: String,
    /// Largest row L1 norm of lm_head.weight and of q_head.weight: a head output moves by at
    /// most that times the largest change of its input state.
    gains: (f64, f64),
}

/// |a - b|, where a NaN or an infinity on one side only is an infinite error (and the same
/// non-finite value on both sides, at the same place, none): a NaN never hides in a maximum.
fn diff(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if !a.is_finite() || !b.is_finite() {
        f64::INFINITY
    } else {
        (a - b).abs()
    }
}

impl Checker<'_> {
    /// Fails `key` when trm's tensor has another shape than the expected one (the values alone
    /// would pass a transposed tensor of the same size).
    fn shape(&mut self, key: &str, got: &[usize]) {
        let Some(e) = self.expected.get(key) else { return };
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&e.shape) != squeeze(got) {
            self.results.push(Check {
                name: format!("{key} (shape {:?}, expected {:?})", got, e.shape),
                error: f64::INFINITY,
                tolerance: 0.0,
                mode: "shape",
            });
        }
    }
    /// Relative-to-max comparison (forward tensors, gradients).
    fn rel(&mut self, key: &str, got: &[f64], tol: f64) {
        let Some(e) = self.expected.get(key) else { return };
        let scale = e.max_abs().max(1e-30);
        let err = if got.len() != e.values.len() {
            f64::INFINITY
        } else {
            got.iter().zip(&e.values).map(|(&a, &b)| diff(a, b)).fold(0.0, f64::max) / scale
        };
        self.results.push(Check { name: key.into(), error: err, tolerance: tol, mode: "rel-to-max" });
    }
    fn abs(&mut self, key: &str, got: &[f64], tol: f64) {
        let Some(e) = self.expected.get(key) else { return };
        let err = if got.len() != e.values.len() {
            f64::INFINITY
        } else {
            got.iter().zip(&e.values).map(|(&a, &b)| diff(a, b)).fold(0.0, f64::max)
        };
        self.results.push(Check { name: key.into(), error: err, tolerance: tol, mode: "absolute" });
    }
    fn exact(&mut self, key: &str, got: &[f64]) {
        let Some(e) = self.expected.get(key) else { return };
        let wrong = if got.len() != e.values.len() {
            got.len().max(e.values.len())
        } else {
            got.iter().zip(&e.values).filter(|&(&a, &b)| diff(a, b) != 0.0).count()
        };
        self.results.push(Check { name: key.into(), error: wrong as f64, tolerance: 0.0, mode: "exact (mismatches)" });
    }
    /// Forward tolerance of `what` at call `k`: 10x the fp32-vs-fp64 noise floor the fixture lists
    /// for it, at least 1e-5 (1e-5 at call 1 and 1e-4 later where no floor is listed).
    fn fwd_tol(&self, mode: &str, what: &str, k: usize) -> f64 {
        let floor =
            self.noise.and_then(|n| n.get(format!("{mode}.{what}")).and_then(|m| m.get(format!("step{k}"))).and_then(Value::as_f64));
        match floor {
            Some(f) => (10.0 * f).max(1e-5),
            None if k <= 1 => 1e-5,
            None => 1e-4,
        }
    }

    /// Tolerance of a head output (logits, q_halt_logits, q_continue_logits) at a call: its own
    /// forward tolerance, or what the tolerance of the answer state allows, if larger: the heads
    /// are linear, so `|Δ out| <= gain · tol_state · max|state|`, relative to `max|out|`. (One
    /// float32 run's distance to float64, the noise floor, is a single sample: a projection of the
    /// state can land far below the state's own floor, and another float32 run need not.)
    fn head_tol(&self, prefix: &str, mode: &str, what: &str, k: usize) -> f64 {
        let own = self.fwd_tol(mode, what, k);
        let gain = if what == "logits" { self.gains.0 } else { self.gains.1 };
        let (Some(state), Some(out)) =
            (self.expected.get(&format!("{prefix}.{}", self.answer_key)), self.expected.get(&format!("{prefix}.{what}")))
        else {
            return own;
        };
        let derived = gain * self.fwd_tol(mode, &self.answer_key, k) * state.max_abs() / out.max_abs().max(1e-30);
        own.max(derived)
    }
}

impl Checker<'_> {
    /// Absolute bounds of (total, lm_loss, q_halt_loss, q_continue_loss) at one call, from the
    /// tolerances of the logits, Q logits and target they are computed from (module docs).
    fn loss_bounds(&self, prefix: &str, mode: &str, k: usize) -> [f64; 4] {
        let get = |what: &str| self.expected.get(&format!("{prefix}.{what}"));
        let b = get("q_halt_logits").map_or(1, |t| t.values.len()) as f64;
        let delta = |what: &str| get(what).map_or(0.0, |t| self.head_tol(prefix, mode, what, k) * t.max_abs());
        let max_qc = get("q_continue_logits").map_or(0.0, |t| t.max_abs());
        let lm = 2.0 * b * delta("logits");
        let qh = b * delta("q_halt_logits");
        let qc = b * (delta("q_continue_logits") + max_qc * delta("target_q_continue"));
        [lm + 0.5 * (qh + qc), lm, qh, qc]
    }

    /// The losses of one call, each with the tolerance derived from its inputs'.
    fn losses(&mut self, prefix: &str, mode: &str, k: usize, loss: &crate::step::loss::LossOutput<impl Backend>) {
        let bounds = self.loss_bounds(prefix, mode, k);
        let m = &loss.metrics;
        let got = [loss.total.clone().into_scalar().to_f64(), m.lm_loss, m.q_halt_loss, m.q_continue_loss];
        for ((what, got), bound) in ["loss.total", "loss.lm_loss", "loss.q_halt_loss", "loss.q_continue_loss"].iter().zip(got).zip(bounds) {
            let key = format!("{prefix}.{what}");
            let Some(e) = self.expected.get(&key) else { continue };
            let Some(&want) = e.values.first().filter(|_| e.values.len() == 1) else {
                self.results.push(Check { name: key, error: f64::INFINITY, tolerance: 0.0, mode: "size mismatch: a loss is one value" });
                continue;
            };
            let tol = (bound / want.abs().max(1e-12)).max(1e-6);
            let err = (got - want).abs() / want.abs().max(1e-12);
            self.results.push(Check { name: key, error: err, tolerance: tol, mode: "relative, derived from the inputs" });
        }
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn check_step<B: Backend, C: Backend>(
    c: &mut Checker,
    prefix: &str,
    mode: &str,
    k: usize,
    sched: &Schedule,
    out: &StepOutput<B>,
    loss: &crate::step::loss::LossOutput<B>,
    carry: &Carry<C>,
) {
    let tol = |w: &str| c.head_tol(prefix, mode, w, k);
    let (tl, tq, tc) = (tol("logits"), tol("q_halt_logits"), tol("q_continue_logits"));
    c.rel(&format!("{prefix}.logits"), &f64s(&to_host_f32(&out.logits)), tl);
    c.shape(&format!("{prefix}.logits"), &out.logits.dims());
    c.rel(&format!("{prefix}.q_halt_logits"), &f64s(&to_host_f32(&out.q_halt)), tq);
    c.shape(&format!("{prefix}.q_halt_logits"), &out.q_halt.dims());
    c.rel(&format!("{prefix}.q_continue_logits"), &f64s(&to_host_f32(&out.q_continue)), tc);
    c.shape(&format!("{prefix}.q_continue_logits"), &out.q_continue.dims());
    for (spec, state) in sched.states.iter().zip(&out.states) {
        let t = c.fwd_tol(mode, &spec.key, k);
        c.rel(&format!("{prefix}.{}", spec.key), &f64s(&to_host_f32(state)), t);
        c.shape(&format!("{prefix}.{}", spec.key), &state.dims());
    }
    if let Some(target) = &loss.q_continue_target {
        let t = c.fwd_tol(mode, "target_q_continue", k);
        c.rel(&format!("{prefix}.target_q_continue"), &f64s(target), t);
    }
    c.exact(&format!("{prefix}.preds"), &loss.preds.iter().map(|&p| p as f64).collect::<Vec<_>>());
    c.exact(&format!("{prefix}.steps"), &carry.steps.iter().map(|&s| s as f64).collect::<Vec<_>>());
    c.exact(&format!("{prefix}.halted"), &carry.halted.iter().map(|&h| h as u8 as f64).collect::<Vec<_>>());
    c.exact(&format!("{prefix}.all_halted"), &[carry.halted.iter().all(|&h| h) as u8 as f64]);
    c.losses(prefix, mode, k, loss);
    let m = &loss.metrics;
    c.exact(&format!("{prefix}.metrics.count"), &[m.count]);
    c.exact(&format!("{prefix}.metrics.exact_accuracy"), &[m.exact_accuracy]);
    c.exact(&format!("{prefix}.metrics.q_halt_accuracy"), &[m.q_halt_accuracy]);
    c.exact(&format!("{prefix}.metrics.steps"), &[m.steps]);
    c.abs(&format!("{prefix}.metrics.accuracy"), &[m.accuracy], 1e-6);
}

fn calls_in(expected: &BTreeMap<String, HostTensor>, mode: &str) -> usize {
    (1..).take_while(|k| expected.keys().any(|key| key.starts_with(&format!("{mode}.step{k}.")))).count()
}

/// Runs every experiment of the fixture; returns one check per expected tensor.
pub fn run<AD: AutodiffBackend>(dir: &Path, device: &AD::Device) -> Result<Vec<Check>> {
    run_with_progress::<AD>(dir, device, false)
}

/// As [`run`]; with `progress`, each stage's start and the time so far go to stderr (a first run
/// on a new device compiles its kernels as it goes, which can take long).
pub fn run_with_progress<AD: AutodiffBackend>(dir: &Path, device: &AD::Device, progress: bool) -> Result<Vec<Check>> {
    let t0 = std::time::Instant::now();
    let stage = |what: &str| {
        if progress {
            eprintln!("parity [{:.1}s] {what}", t0.elapsed().as_secs_f64());
        }
    };
    let fx = read_fixture::<AD::InnerBackend>(dir, device)?;
    let ropes = Ropes::<AD>::new(&fx.cfg, device);
    let sched = Schedule::of(&fx.cfg.arch);
    let gain = |l: &crate::model::weights::Linear<AD::InnerBackend>| {
        let [rows, cols] = l.weight.dims();
        let v = to_host_f32(&l.weight);
        (0..rows).map(|r| v[r * cols..(r + 1) * cols].iter().map(|x| x.abs() as f64).sum::<f64>()).fold(0.0, f64::max)
    };
    let mut c = Checker {
        expected: &fx.expected,
        noise: fx.cfg_json.get("fp32_vs_fp64_noise_floor_rel_to_max"),
        results: Vec::new(),
        answer_key: sched.states[sched.answer].key.clone(),
        gains: (gain(&fx.w.lm_head), gain(&fx.w.q_head)),
    };
    check_intermediates(&mut c, &fx, &ropes.inner, &sched, device);
    check_rollouts::<AD>(&mut c, &fx, &ropes, &sched, device, &stage);
    stage("one training step with gradients");
    let (carry, pgrads) = check_gradients::<AD>(&mut c, &fx, &ropes, device);
    let after = check_optimiser(&mut c, &fx, pgrads, device, dir)?;
    check_second_step::<AD>(&mut c, &fx, &ropes, after, carry);
    Ok(unchecked_fail(c))
}

/// The fixture's exploration probability (they use 0: the reference's draws cannot be reproduced).
fn explore(cfg: &ModelConfig, step: u64) -> Exploration {
    Exploration::of(&cfg.arch, 0, step, 0)
}

/// The checks, plus a failure for every expected tensor that was not compared with anything.
fn unchecked_fail(c: Checker) -> Vec<Check> {
    let checked: std::collections::HashSet<&str> = c.results.iter().map(|r| r.name.as_str()).collect();
    let missing: Vec<String> = c.expected.keys().filter(|k| !checked.contains(k.as_str())).cloned().collect();
    let mut results = c.results;
    for k in missing {
        results.push(Check { name: k, error: f64::INFINITY, tolerance: 0.0, mode: "not computed" });
    }
    results
}

/// Debug intermediates: RoPE tables, the input embedding, the first network application
/// (`{net}_block0_call1_out`, `{net}_call1_out`, named after the network of the first update).
fn check_intermediates<B: Backend>(
    c: &mut Checker,
    fx: &Fixture<B>,
    rope: &crate::model::layers::Rope<B>,
    sched: &Schedule,
    device: &B::Device,
) {
    let (cfg, w, batch, b) = (&fx.cfg, &fx.w, &fx.batch, fx.batch.batch_size);
    c.rel("debug.rope.cos", &f64s(&to_host_f32(&rope.cos)), 1e-5);
    c.rel("debug.rope.sin", &f64s(&to_host_f32(&rope.sin)), 1e-5);
    {
        let mut carry = Carry::<B>::new(cfg, b, device);
        carry.reset_and_load(w, batch);
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(carry.puzzle_ids.clone(), [b]), device);
        let x = embed_input(w, cfg, carry.inputs_tensor(device), fx.table.clone().map(|t| t.select(0, ids)));
        c.rel("debug.train.step1.input_embeddings", &f64s(&to_host_f32(&x)), 1e-5);
        let first = &sched.updates[0];
        let net = sched.nets[first.net].name;
        let input = update_input(first, &carry.states, &x);
        let b0 = block(input.clone(), &w.nets[first.net][0], cfg, Some(rope));
        c.rel(&format!("debug.train.step1.{net}_block0_call1_out"), &f64s(&to_host_f32(&b0)), 1e-5);
        let z1 = run_net(w, first.net, cfg, rope, input);
        c.rel(&format!("debug.train.step1.{net}_call1_out"), &f64s(&to_host_f32(&z1)), 1e-5);
    }
}

/// The training-mode and the evaluation-mode rollouts with the fixture's weights.
fn check_rollouts<AD: AutodiffBackend>(
    c: &mut Checker,
    fx: &Fixture<AD::InnerBackend>,
    ropes: &Ropes<AD>,
    sched: &Schedule,
    device: &AD::Device,
    stage: &dyn Fn(&str),
) {
    let (cfg, b) = (&fx.cfg, fx.batch.batch_size);
    // 1. Training-mode rollout with fixed weights.
    let mut carry = Carry::<AD::InnerBackend>::new(cfg, b, device);
    for k in 1..=calls_in(&fx.expected, "train") {
        stage(&format!("training-mode step {k}"));
        let (loss, out, _) = train_forward::<AD>(cfg, &fx.params, fx.table.as_ref(), &mut carry, &fx.batch, ropes, explore(cfg, k as u64));
        check_step(c, &format!("train.step{k}"), "train", k, sched, &out, &loss, &carry);
    }
    // 2. Eval-mode rollout.
    let mut carry = Carry::<AD::InnerBackend>::new(cfg, b, device);
    for k in 1..=calls_in(&fx.expected, "eval") {
        stage(&format!("evaluation-mode step {k}"));
        let (loss, out) = eval_forward(cfg, &fx.w, fx.table.as_ref(), &mut carry, &fx.batch, &ropes.inner, cfg.arch.halt_max_steps);
        check_step(c, &format!("eval.step{k}"), "eval", k, sched, &out, &loss, &carry);
    }
}

/// One real training step: the gradients of total / global_batch and the logged metrics. Returns
/// the carry after it and the gradients.
fn check_gradients<AD: AutodiffBackend>(
    c: &mut Checker,
    fx: &Fixture<AD::InnerBackend>,
    ropes: &Ropes<AD>,
    device: &AD::Device,
) -> (Carry<AD::InnerBackend>, Vec<Option<Tensor<AD::InnerBackend, 2>>>) {
    let (cfg, h, b) = (&fx.cfg, &fx.h, fx.batch.batch_size);
    let mut carry = Carry::<AD::InnerBackend>::new(cfg, b, device);
    let (loss, _, leaves) = train_forward::<AD>(cfg, &fx.params, fx.table.as_ref(), &mut carry, &fx.batch, ropes, explore(cfg, 1));
    let grads = (loss.total.clone() / h.global_batch as f64).backward();
    let (pgrads, puzzle_grad) = leaves.grads(&grads);
    for (n, g) in fx.params.iter().zip(&pgrads) {
        if let Some(g) = g {
            c.rel(&format!("grad.model.inner.{}", n.name), &f64s(&to_host_f32(g)), 1e-4);
        }
    }
    if let Some(g) = &puzzle_grad {
        c.rel("grad.model.inner.puzzle_emb.local_weights", &f64s(&to_host_f32(g)), 1e-4);
    }
    // Logged metrics: losses / global batch (their tolerance derived as the step's losses'),
    // the rest / max(count, 1).
    let m: Metrics = loss.metrics;
    let norm = m.count.max(1.0);
    let g = h.global_batch as f64;
    let [_, lm_bound, qh_bound, qc_bound] = c.loss_bounds("train.step1", "train", 1);
    for (k, v, bound) in [
        ("accuracy", m.accuracy / norm, 0.0),
        ("count", m.count / norm, 0.0), // the reference divides every non-loss metric by max(count, 1)
        ("exact_accuracy", m.exact_accuracy / norm, 0.0),
        ("lm_loss", m.lm_loss / g, lm_bound / g),
        ("q_halt_accuracy", m.q_halt_accuracy / norm, 0.0),
        ("q_halt_loss", m.q_halt_loss / g, qh_bound / g),
        ("q_continue_loss", m.q_continue_loss / g, qc_bound / g),
        ("steps", m.steps / norm, 0.0),
        ("lr", h.lr, 0.0),
    ] {
        c.abs(&format!("trainstep1.logged.train/{k}"), &[v], (1e-6 * v.abs().max(1.0)).max(bound));
    }
    (carry, pgrads)
}

/// The optimiser: the trainer's step (update.rs) fed the fixture's own gradients (which isolates
/// it from the backward pass), then fed ours. Returns the weights and table after the first.
fn check_optimiser<B: Backend>(
    c: &mut Checker,
    fx: &Fixture<B>,
    pgrads: Vec<Option<Tensor<B, 2>>>,
    device: &B::Device,
    dir: &Path,
) -> Result<(Vec<Named<B>>, Option<Tensor<B, 2>>)> {
    let (h, params, expected) = (&fx.h, &fx.params, &fx.expected);
    let grad_of = |name: &str, shape: &[usize]| -> Option<Tensor<B, 2>> {
        expected.get(&format!("grad.model.inner.{name}")).map(|g| {
            let (r, cc) = if shape.len() == 1 { (1, shape[0]) } else { (shape[0], shape[1]) };
            Tensor::from_data(TensorData::new(g.f32s(), [r, cc]), device)
        })
    };
    let fixture_grads: Vec<_> = params.iter().map(|n| if n.trainable { grad_of(&n.name, &n.shape) } else { None }).collect();
    let hyper = AdamHyper { lr: h.lr, beta1: h.beta1, beta2: h.beta2, weight_decay: h.wd, kind: OptimizerKind::AdamAtan2 };
    let step_h =
        StepHyper { adam: hyper, puzzle_lr: h.puzzle_lr, puzzle_weight_decay: h.puzzle_wd, ema_rate: h.ema_rate, freeze_weights: false };
    // The trainer's step (update.rs), fed the fixture's gradients.
    let (mut updated, mut new_table, mut shadow) = (params.clone(), fx.table.clone(), params.clone());
    let mut adam = AdamState::new(&updated);
    let puzzle = expected.get("grad.model.inner.puzzle_emb.local_weights").map(|g| (fx.batch.puzzle_identifiers.clone(), g.f32s()));
    let learner = Learner { params: &mut updated, table: &mut new_table, adam: &mut adam, ema: Some(&mut shadow) };
    let nonfinite = apply_gradients(learner, LocalGrads { params: fixture_grads, puzzle }, &step_h, &mut Single)?;
    anyhow::ensure!(nonfinite.is_none(), "{}: the fixture's gradients are not finite: {nonfinite:?}", dir.display());
    for n in &updated {
        c.abs(&format!("after_step.model.inner.{}", n.name), &f64s(&to_host_f32(&n.tensor)), 1e-6);
    }
    if let Some(t) = &new_table {
        c.abs("after_step.model.inner.puzzle_emb.weights", &f64s(&to_host_f32(t)), 1e-6);
    }
    for n in shadow.iter().filter(|n| n.trainable) {
        c.abs(&format!("ema.model.inner.{}", n.name), &f64s(&to_host_f32(&n.tensor)), 1e-6);
    }
    // The same optimiser step from our own gradients: reported, with the README's caveat that
    // elements with a near-zero gradient may flip sign (first AdamATan2 step ~ lr * sign(g)).
    let (mut own, mut own_table) = (params.clone(), None);
    let mut own_state = AdamState::new(&own);
    let learner = Learner { params: &mut own, table: &mut own_table, adam: &mut own_state, ema: None };
    apply_gradients(learner, LocalGrads { params: pgrads, puzzle: None }, &step_h, &mut Single)?;
    for n in own.iter().filter(|n| n.trainable) {
        let (Some(want), Some(g)) =
            (expected.get(&format!("after_step.model.inner.{}", n.name)), expected.get(&format!("grad.model.inner.{}", n.name)))
        else {
            continue;
        };
        let gmax = g.max_abs();
        let got = to_host_f32(&n.tensor);
        let err = got
            .iter()
            .zip(&want.values)
            .zip(&g.values)
            .filter(|(_, gv)| gv.abs() >= 1e-4 * gmax)
            .map(|((a, b), _)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        c.results.push(Check {
            name: format!("after_step(own grads).{}", n.name),
            error: err,
            tolerance: 1e-6,
            mode: "absolute, |g| >= 1e-4 max|g|",
        });
    }
    Ok((updated, new_table))
}

/// The second training step: the carry persisted, the weights after the step (the fixture's).
fn check_second_step<AD: AutodiffBackend>(
    c: &mut Checker,
    fx: &Fixture<AD::InnerBackend>,
    ropes: &Ropes<AD>,
    (updated, new_table): (Vec<Named<AD::InnerBackend>>, Option<Tensor<AD::InnerBackend, 2>>),
    mut carry: Carry<AD::InnerBackend>,
) {
    let cfg = &fx.cfg;
    let (loss2, out2, _) = train_forward::<AD>(cfg, &updated, new_table.as_ref(), &mut carry, &fx.batch, ropes, explore(cfg, 2));
    let tol2 = c.fwd_tol("train", "logits", 2);
    c.rel("trainstep2.logits", &f64s(&to_host_f32(&out2.logits)), tol2);
    let tq2 = c.fwd_tol("train", "q_halt_logits", 2);
    c.rel("trainstep2.q_halt_logits", &f64s(&to_host_f32(&out2.q_halt)), tq2);
    let tc2 = c.fwd_tol("train", "q_continue_logits", 2);
    c.rel("trainstep2.q_continue_logits", &f64s(&to_host_f32(&out2.q_continue)), tc2);
    c.exact("trainstep2.steps", &carry.steps.iter().map(|&s| s as f64).collect::<Vec<_>>());
    c.exact("trainstep2.halted", &carry.halted.iter().map(|&x| x as u8 as f64).collect::<Vec<_>>());
    if let Some(target) = &loss2.q_continue_target {
        let t = c.fwd_tol("train", "target_q_continue", 2);
        c.rel("trainstep2.target_q_continue", &f64s(target), t);
    }
    c.losses("trainstep2", "train", 2, &loss2);
}
