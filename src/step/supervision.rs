//! One deep-supervision step through the ACT wrapper and the loss head, in two flavours:
//!
//! * `train_forward`: autodiff leaves for the weights (and the batch's puzzle-embedding rows), the
//!   updates before the schedule's gradient cut on the inner backend, the bootstrap pass of the
//!   Q-continue target when the architecture has one, loss ready for `backward`;
//! * `eval_forward`: everything on a plain backend, no graph;
//! * `micro_batch_step`: a training step's forward and backward in passes of rows, its
//!   gradients summed for `update::apply_gradients`.
//!
//! The carry, the master weights and the puzzle table always live on the inner backend.

use super::loss::{LossOutput, Metrics, act_loss, weighted_total};
use super::update::LocalGrads;
use super::wta;
use crate::backend::to_host_f32;
use crate::data::loader::Batch;
use crate::model::act::{Carry, Exploration, continue_target};
use crate::model::config::ModelConfig;
use crate::model::forward::{StepOutput, deep_recursion, deep_recursion_train, embed_input};
use crate::model::layers::Rope;
use crate::model::weights::{Named, Weights};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The autodiff leaves of one training step, to read gradients from after `backward`.
pub struct Leaves<AD: AutodiffBackend> {
    pub params: Vec<Named<AD>>,
    /// `[B, puzzle_emb_ndim]` rows of the puzzle table used by this batch.
    pub puzzle: Option<Tensor<AD, 2>>,
}

impl<AD: AutodiffBackend> Leaves<AD> {
    /// Gradients of every named tensor (None for buffers) and of the puzzle rows.
    pub fn grads(&self, grads: &AD::Gradients) -> (Vec<Option<Tensor<AD::InnerBackend, 2>>>, Option<Tensor<AD::InnerBackend, 2>>) {
        let g = self.params.iter().map(|n| if n.trainable { n.tensor.grad(grads) } else { None }).collect();
        (g, self.puzzle.as_ref().and_then(|p| p.grad(grads)))
    }
}

/// The gradients of `loss_total / rows` (a batch's, or a micro-batch's share of it, `rows` being
/// the global batch either way), and the puzzle rows' gradients on the host with their ids.
pub fn local_grads<AD: AutodiffBackend>(
    loss_total: Tensor<AD, 1>,
    rows: usize,
    leaves: &Leaves<AD>,
    puzzle_ids: Vec<i32>,
) -> LocalGrads<AD::InnerBackend> {
    let grads = (loss_total / rows as f64).backward();
    let (params, puzzle) = leaves.grads(&grads);
    LocalGrads { params, puzzle: puzzle.map(|p| (puzzle_ids, to_host_f32(&p))) }
}

/// How a batch's loss is formed and split into passes: `size` rows per forward and backward pass
/// (the whole batch when it is not smaller), of a global batch of `global` rows (the loss's
/// divisor); `supervision_decay` weights each row's loss by its supervision step
/// (`loss::supervision_weight`; None: every step alike, as the reference).
#[derive(Debug, Clone, Copy)]
pub struct MicroBatches {
    pub size: usize,
    pub global: usize,
    pub supervision_decay: Option<f64>,
}

/// The supervision step of a batch in passes of `rows.size` rows, each with its backward at once
/// (so only one pass's graph is alive): the summed metrics and gradients (of the loss over the
/// global batch), and the carry put back together. `explore(a)` is the exploration of the pass
/// whose first row is row `a` of this batch. Rows are independent and each pass draws its
/// exploration for its rows' global places, so any split gives the whole batch's step up to
/// float summation order. Training's step (`train::trainer`) and `trm bench --micro-batch`.
#[allow(clippy::too_many_arguments)]
pub fn micro_batch_step<AD: AutodiffBackend>(
    cfg: &ModelConfig,
    params: &[Named<AD::InnerBackend>],
    table: Option<&Tensor<AD::InnerBackend, 2>>,
    carry: Carry<AD::InnerBackend>,
    batch: &Batch,
    ropes: &Ropes<AD>,
    explore: impl Fn(usize) -> Exploration,
    rows: MicroBatches,
) -> (Metrics, LocalGrads<AD::InnerBackend>, Carry<AD::InnerBackend>) {
    let n = batch.batch_size;
    let (m, k) = (rows.size.min(n), cfg.arch.wta_chains);
    assert!(m > 0 && n.is_multiple_of(m), "passes of {m} rows over a batch of {n} (callers check the split)");
    let mut parts = if m == n {
        vec![carry]
    } else {
        let parts = (0..n).step_by(m).map(|a| carry.rows(a * k..(a + m) * k)).collect();
        drop(carry); // not kept beside the new parts and their concatenation
        parts
    };
    let mut metrics = Metrics::default();
    let mut grads: Option<LocalGrads<AD::InnerBackend>> = None;
    for (i, part) in parts.iter_mut().enumerate() {
        let a = i * m;
        let sub;
        let micro = if m == n {
            batch
        } else {
            sub = batch.rows(a..a + m);
            &sub
        };
        let (loss, _out, leaves) = train_forward::<AD>(cfg, params, table, part, micro, ropes, explore(a));
        metrics.add(&loss.metrics);
        let total = match rows.supervision_decay {
            Some(lambda) => weighted_total(loss.row_total, &part.steps, cfg.arch.halt_max_steps, lambda),
            None => loss.total,
        };
        let g = local_grads(total, rows.global, &leaves, part.puzzle_ids.clone());
        grads = Some(match grads {
            Some(sum) => sum.plus(g),
            None => g,
        });
    }
    let carry = if parts.len() == 1 { parts.pop().expect("one part") } else { Carry::cat(parts) };
    (metrics, grads.expect("at least one pass"), carry)
}

/// Ropes for both backends of a training step.
pub struct Ropes<AD: AutodiffBackend> {
    pub ad: Rope<AD>,
    pub inner: Rope<AD::InnerBackend>,
}

impl<AD: AutodiffBackend> Ropes<AD> {
    pub fn new(cfg: &ModelConfig, device: &AD::Device) -> Self {
        Ropes { ad: Rope::new(cfg, device), inner: Rope::new(cfg, device) }
    }
}

/// A training step's forward: reset/load, recursion, halting, loss. The carry is updated
/// (detached); call `backward` on `loss.total` and read gradients from the leaves. `explore`
/// names the step, the rows' place in the global batch and the probability (the trainer passes
/// the architecture's `halt_exploration_prob`).
pub fn train_forward<AD: AutodiffBackend>(
    cfg: &ModelConfig,
    params: &[Named<AD::InnerBackend>],
    table: Option<&Tensor<AD::InnerBackend, 2>>,
    carry: &mut Carry<AD::InnerBackend>,
    batch: &Batch,
    ropes: &Ropes<AD>,
    explore: Exploration,
) -> (LossOutput<AD>, StepOutput<AD>, Leaves<AD>) {
    debug_assert!(
        params.iter().map(|n| &n.name).eq(crate::model::weights::expected_shapes(cfg).iter().map(|(k, _)| k)),
        "train_forward needs the weights in `Weights::into_named` order"
    );
    let w_inner = Weights::from_ordered(cfg, params.iter().map(|n| n.tensor.clone()).collect());
    // Winner-take-all: K carry rows (chains) per example, fresh latents for chains 1..K.
    let k = cfg.arch.wta_chains;
    let expanded = (k > 1).then(|| wta::expand_batch(batch, k));
    let reset = carry.halted.clone();
    carry.reset_and_load(&w_inner, expanded.as_ref().unwrap_or(batch));
    if k > 1 {
        wta::fresh_latents(cfg, carry, &reset, &explore);
    }
    let leaves: Vec<Named<AD>> = params
        .iter()
        .map(|n| {
            let t = Tensor::<AD, 2>::from_inner(n.tensor.clone());
            Named {
                tensor: if n.trainable { t.require_grad() } else { t },
                name: n.name.clone(),
                shape: n.shape.clone(),
                trainable: n.trainable,
            }
        })
        .collect();
    let w_ad = Weights::from_ordered(cfg, leaves.iter().map(|n| n.tensor.clone()).collect());
    let puzzle = carry.puzzle_rows(table).map(|p| Tensor::<AD, 2>::from_inner(p).require_grad());
    let device = w_inner.device();
    let x = embed_input(&w_ad, cfg, carry.inputs_tensor(&device), puzzle.clone());
    let out = deep_recursion_train(&w_ad, &w_inner, cfg, &ropes.ad, &ropes.inner, &carry.states, &x);
    carry.states = out.states.iter().map(|s| s.clone().inner()).collect();
    let (qh, qc) = (to_host_f32(&out.q_halt), to_host_f32(&out.q_continue));
    if k > 1 {
        let loss = wta::winner_loss::<AD>(cfg, carry, out.logits.clone(), out.q_halt.clone(), &qh, explore);
        return (loss, out, Leaves { params: leaves, puzzle });
    }
    let a = &cfg.arch;
    let max = a.halt_max_steps;
    let last = carry.advance((&qh, &qc), a.halt_rule(), a.adaptive_in_training(), Some(explore), max);
    // The bootstrap pass: the new carry, the same data, no graph (one more forward pass).
    let target = (a.continue_target() && max > 1).then(|| {
        let next = deep_recursion(&w_inner, cfg, &ropes.inner, &carry.states, &x.clone().inner());
        Tensor::<AD, 1>::from_inner(continue_target(next.q_halt, next.q_continue, &last))
    });
    let q_continue = target.map(|t| (out.q_continue.clone(), t));
    let loss = act_loss(out.logits.clone(), out.q_halt.clone(), q_continue, &carry.labels, &carry.halted, &carry.steps, a.loss_type);
    (loss, out, Leaves { params: leaves, puzzle })
}

/// An evaluation (or inference) step on any backend: no graph; halting at `max_steps` (or
/// adaptively, for the baseline's `act_inference`).
pub fn eval_forward<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    carry: &mut Carry<B>,
    batch: &Batch,
    rope: &Rope<B>,
    max_steps: usize,
) -> (LossOutput<B>, StepOutput<B>) {
    carry.reset_and_load(w, batch);
    let device = w.device();
    let x = embed_input(w, cfg, carry.inputs_tensor(&device), carry.puzzle_rows(table));
    let out = deep_recursion(w, cfg, rope, &carry.states, &x);
    carry.states = out.states.clone();
    let (qh, qc) = (to_host_f32(&out.q_halt), to_host_f32(&out.q_continue));
    let a = &cfg.arch;
    carry.advance((&qh, &qc), a.halt_rule(), a.adaptive_in_eval(), None, max_steps);
    let loss = act_loss(out.logits.clone(), out.q_halt.clone(), None, &carry.labels, &carry.halted, &carry.steps, a.loss_type);
    (loss, out)
}
