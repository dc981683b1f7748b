//! The Tiny Recursive Model, in algorithm order:
//!
//! 1. `embed_input`: tokens (and the puzzle embedding as a prefix) -> x `[B, T, D]`, scaled by sqrt D.
//! 2. `reasoning_net`: the one shared network; `net(h, inj) = blocks(h + inj)`.
//! 3. `latent_recursion`: `n = L_cycles` updates of z from (y + x), then one update of y from z.
//! 4. `deep_recursion`: `T = H_cycles` latent recursions; the first T-1 without gradient (on the
//!    inner backend: no graph is recorded), the last one differentiated.
//! 5. `heads`: logits from y (prefix dropped) and the (halt, continue) Q logits from y at position 0.
//!
//! Names follow the paper: y = z_H (the answer state), z = z_L (the latent).

use super::config::{ModelConfig, PosEncoding};
use super::layers::{Rope, block, linear2, linear3};
use super::precision::{activation_dtype, to_dtype};
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

/// The shared network: add the injection once, then run the blocks in order.
pub fn reasoning_net<B: Backend>(
    w: &Weights<B>,
    cfg: &ModelConfig,
    rope: &Rope<B>,
    hidden: Tensor<B, 3>,
    injection: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let mut h = hidden + injection;
    for b in &w.layers {
        h = block(h, b, cfg, Some(rope));
    }
    h
}

/// One recursion: z <- net(z, y + x) `L_cycles` times, then y <- net(y, z). Returns (y, z).
pub fn latent_recursion<B: Backend>(
    w: &Weights<B>,
    cfg: &ModelConfig,
    rope: &Rope<B>,
    y: Tensor<B, 3>,
    mut z: Tensor<B, 3>,
    x: &Tensor<B, 3>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    for _ in 0..cfg.arch.l_cycles {
        z = reasoning_net(w, cfg, rope, z, y.clone() + x.clone());
    }
    let y = reasoning_net(w, cfg, rope, y, z.clone());
    (y, z)
}

/// Outputs of one supervision step.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// New answer state y `[B, T, D]`.
    pub z_h: Tensor<B, 3>,
    /// New latent z `[B, T, D]`.
    pub z_l: Tensor<B, 3>,
    /// `[B, S, vocab]`
    pub logits: Tensor<B, 3>,
    /// `[B]`
    pub q_halt: Tensor<B, 1>,
    /// `[B]`
    pub q_continue: Tensor<B, 1>,
}

/// Logits from y without the prefix positions, Q logits from y at position 0.
pub fn heads<B: Backend>(w: &Weights<B>, cfg: &ModelConfig, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>) -> StepOutput<B> {
    let [b, t, d] = z_h.dims();
    let p = cfg.prefix_len();
    // Both heads run in the forward dtype; their outputs leave the model as float32.
    let logits = to_dtype(linear3(z_h.clone().narrow(1, p, t - p), &w.lm_head), DType::F32);
    let q = to_dtype(linear2(z_h.clone().narrow(1, 0, 1).reshape([b, d]), &w.q_head), DType::F32);
    let q_halt = q.clone().narrow(1, 0, 1).reshape([b]);
    let q_continue = q.narrow(1, 1, 1).reshape([b]);
    StepOutput { z_h, z_l, logits, q_halt, q_continue }
}

/// Deep recursion without autodiff (evaluation, inference): all `H_cycles` recursions.
pub fn deep_recursion<B: Backend>(
    w: &Weights<B>,
    cfg: &ModelConfig,
    rope: &Rope<B>,
    z_h: Tensor<B, 3>,
    z_l: Tensor<B, 3>,
    x: &Tensor<B, 3>,
) -> StepOutput<B> {
    let (mut y, mut z) = (to_dtype(z_h, x.dtype()), to_dtype(z_l, x.dtype())); // a float32 carry from a checkpoint
    for _ in 0..cfg.arch.h_cycles {
        (y, z) = latent_recursion(w, cfg, rope, y, z, x);
    }
    heads(w, cfg, y, z)
}

/// Deep recursion for training: the first `H_cycles - 1` recursions run on the inner backend
/// (no graph at all), only the last one is recorded for backprop. The incoming carry is a
/// constant; the returned carry should be detached by the caller (`.inner()`).
pub fn deep_recursion_train<AD: AutodiffBackend>(
    w: &Weights<AD>,
    w_inner: &Weights<AD::InnerBackend>,
    cfg: &ModelConfig,
    rope: &Rope<AD>,
    rope_inner: &Rope<AD::InnerBackend>,
    z_h: Tensor<AD::InnerBackend, 3>,
    z_l: Tensor<AD::InnerBackend, 3>,
    x: &Tensor<AD, 3>,
) -> StepOutput<AD> {
    let x_inner = x.clone().inner();
    let (mut y, mut z) = (to_dtype(z_h, x_inner.dtype()), to_dtype(z_l, x_inner.dtype()));
    for _ in 0..cfg.arch.h_cycles - 1 {
        (y, z) = latent_recursion(w_inner, cfg, rope_inner, y, z, &x_inner);
    }
    let (y, z) = latent_recursion(w, cfg, rope, Tensor::from_inner(y), Tensor::from_inner(z), x);
    heads(w, cfg, y, z)
}
