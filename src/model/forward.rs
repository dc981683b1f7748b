//! One supervision step of any architecture, in algorithm order:
//!
//! 1. `embed_input`: tokens (and the puzzle embedding as a prefix) -> x `[B, T, D]`, scaled by sqrt D.
//! 2. `run_net`: a network applied to its input: the blocks in order.
//! 3. `apply_update`: one update of the schedule, `state <- net(Σ hidden + Σ injection)`.
//! 4. `deep_recursion` / `deep_recursion_train`: the schedule's updates in order; in training the
//!    ones before the gradient cut run on the inner backend (no graph is recorded), the rest on
//!    the autodiff backend.
//! 5. `heads`: logits from the answer state (prefix dropped) and the (halt, continue) Q logits
//!    from it at position 0.
//!
//! Names follow the paper: y = z_H (the answer state), z = z_L (the latent), T = H_cycles,
//! n = L_cycles. What differs between TRM, HRM and the ablations is data (`schedule.rs`).

use super::config::{ModelConfig, PosEncoding};
use super::layers::{Rope, block, linear2, linear3};
use super::precision::{activation_dtype, to_dtype};
use super::schedule::{Schedule, Term, Update};
use super::weights::Weights;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

/// x = sqrt(D) * [puzzle prefix ; token embeddings] (+ learned positions, averaged by 1/sqrt 2).
/// `puzzle` is `[B, puzzle_emb_ndim]`, zero-padded to `P * D` values and laid out as P rows.
pub fn embed_input<B: Backend>(w: &Weights<B>, cfg: &ModelConfig, inputs: Tensor<B, 2, Int>, puzzle: Option<Tensor<B, 2>>) -> Tensor<B, 3> {
    let [b, s] = inputs.dims();
    let d = cfg.d();
    let dt = activation_dtype::<B>(cfg); // lookups are cast to the forward dtype, as CastedEmbedding
    let mut e = to_dtype(w.embed_tokens.clone().select(0, inputs.reshape([b * s])), dt).reshape([b, s, d]);
    let p = cfg.prefix_len();
    if p > 0 {
        let puzzle = to_dtype(puzzle.expect("a puzzle embedding is configured"), dt);
        let ndim = puzzle.dims()[1];
        let padded = if p * d > ndim {
            Tensor::cat(vec![puzzle.clone(), to_dtype(Tensor::zeros([b, p * d - ndim], &puzzle.device()), dt)], 1)
        } else {
            puzzle
        };
        e = Tensor::cat(vec![padded.reshape([b, p, d]), e], 1);
    }
    if let (PosEncoding::Learned, Some(pos)) = (cfg.arch.pos_encodings, &w.embed_pos) {
        e = (e + to_dtype(pos.clone(), dt).unsqueeze::<3>()) * std::f64::consts::FRAC_1_SQRT_2;
    }
    e * (d as f64).sqrt()
}

/// Network `net` of the schedule applied to its (already summed) input: the blocks in order.
pub fn run_net<B: Backend>(w: &Weights<B>, net: usize, cfg: &ModelConfig, rope: &Rope<B>, mut h: Tensor<B, 3>) -> Tensor<B, 3> {
    for b in &w.nets[net] {
        h = block(h, b, cfg, Some(rope));
    }
    h
}

/// The summed input of an update: `(h_1 + h_2 + ...) + (i_1 + i_2 + ...)`, each sum left to right,
/// as the reference's `net(hidden, injection)` forms it.
pub fn update_input<B: Backend>(u: &Update, states: &[Tensor<B, 3>], x: &Tensor<B, 3>) -> Tensor<B, 3> {
    let term = |t: &Term| match t {
        Term::State(i) => states[*i].clone(),
        Term::Input => x.clone(),
    };
    let hidden = u.hidden.iter().map(|&i| states[i].clone()).reduce(|a, b| a + b).expect("an update reads at least one state");
    match u.injection.iter().map(term).reduce(|a, b| a + b) {
        Some(inj) => hidden + inj,
        None => hidden,
    }
}

/// `states[target] <- net(Σ hidden + Σ injection)`.
pub fn apply_update<B: Backend>(
    w: &Weights<B>,
    cfg: &ModelConfig,
    rope: &Rope<B>,
    u: &Update,
    states: &mut [Tensor<B, 3>],
    x: &Tensor<B, 3>,
) {
    let input = update_input(u, states, x);
    states[u.target] = run_net(w, u.net, cfg, rope, input);
}

/// Outputs of one supervision step.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// The new carried states `[B, T, D]`, in the schedule's order (y = z_H first when present).
    pub states: Vec<Tensor<B, 3>>,
    /// `[B, S, vocab]`
    pub logits: Tensor<B, 3>,
    /// `[B]`
    pub q_halt: Tensor<B, 1>,
    /// `[B]`
    pub q_continue: Tensor<B, 1>,
}

/// Logits from the answer state without the prefix positions, Q logits from it at position 0.
pub fn heads<B: Backend>(w: &Weights<B>, cfg: &ModelConfig, answer: usize, states: Vec<Tensor<B, 3>>) -> StepOutput<B> {
    let y = states[answer].clone();
    let [b, t, d] = y.dims();
    let p = cfg.prefix_len();
    // Both heads run in the forward dtype; their outputs leave the model as float32.
    let logits = to_dtype(linear3(y.clone().narrow(1, p, t - p), &w.lm_head), DType::F32);
    let q = to_dtype(linear2(y.narrow(1, 0, 1).reshape([b, d]), &w.q_head), DType::F32);
    let q_halt = q.clone().narrow(1, 0, 1).reshape([b]);
    let q_continue = q.narrow(1, 1, 1).reshape([b]);
    StepOutput { states, logits, q_halt, q_continue }
}

/// Deep recursion without autodiff (evaluation, inference, the bootstrap pass): every update.
pub fn deep_recursion<B: Backend>(
    w: &Weights<B>,
    cfg: &ModelConfig,
    rope: &Rope<B>,
    carry: &[Tensor<B, 3>],
    x: &Tensor<B, 3>,
) -> StepOutput<B> {
    let sched = Schedule::of(&cfg.arch);
    // A float32 carry from a checkpoint meets a bfloat16 forward: cast to x's dtype.
    let mut states: Vec<Tensor<B, 3>> = carry.iter().map(|s| to_dtype(s.clone(), x.dtype())).collect();
    for u in &sched.updates {
        apply_update(w, cfg, rope, u, &mut states, x);
    }
    heads(w, cfg, sched.answer, states)
}

/// Deep recursion for training: the updates before the schedule's gradient cut run on the inner
/// backend (no graph at all), the rest are recorded for backprop. The incoming carry is a
/// constant; the returned states should be detached by the caller (`.inner()`).
pub fn deep_recursion_train<AD: AutodiffBackend>(
    w: &Weights<AD>,
    w_inner: &Weights<AD::InnerBackend>,
    cfg: &ModelConfig,
    rope: &Rope<AD>,
    rope_inner: &Rope<AD::InnerBackend>,
    carry: &[Tensor<AD::InnerBackend, 3>],
    x: &Tensor<AD, 3>,
) -> StepOutput<AD> {
    let sched = Schedule::of(&cfg.arch);
    let x_inner = x.clone().inner();
    let mut states: Vec<_> = carry.iter().map(|s| to_dtype(s.clone(), x_inner.dtype())).collect();
    for u in &sched.updates[..sched.grad_from] {
        apply_update(w_inner, cfg, rope_inner, u, &mut states, &x_inner);
    }
    let mut states: Vec<Tensor<AD, 3>> = states.into_iter().map(Tensor::from_inner).collect();
    for u in &sched.updates[sched.grad_from..] {
        apply_update(w, cfg, rope, u, &mut states, x);
    }
    heads(w, cfg, sched.answer, states)
}
