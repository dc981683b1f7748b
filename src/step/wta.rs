//! Winner-take-all training over latent chains (`arch.wta_chains = K > 1`; arXiv 2601.19085
//! reports 96.9% on Sudoku-Extreme from one model trained this way with K = 4):
//!
//! 1. every example of the batch runs K chains, carry rows `i·K .. i·K + K` for example i;
//! 2. the chains share the answer y and keep their own latent z. Chain 0 starts z from the
//!    model's `L_init`, so chain 0 is the plain model (evaluation and inference run it alone);
//!    chains 1..K start z from a fresh std-1 truncated-normal draw per token, from the stream
//!    `(seed, step, example, chain)`, so a resumed run draws the same;
//! 3. one supervision step runs all the chains; each chain's loss is its part of the ACT loss
//!    (token loss + half the Q-halt loss);
//! 4. the chain with the lowest loss is the example's winner (the first on a tie): only the
//!    winners' losses are summed, so only they are backpropagated;
//! 5. every chain of the example carries the winner's y into the next step and keeps its own
//!    z; the example halts (all its chains together) on the winner's q_halt.
//!
//! With K = 1 none of this runs: the step is the reference's.

use super::loss::{LossOutput, Metrics, act_loss};
use crate::data::loader::Batch;
use crate::model::act::{Carry, Exploration};
use crate::model::config::ModelConfig;
use crate::model::schedule::Schedule;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;

/// The positions of the answer y and the latent z among the carried states.
fn answer_and_latent(cfg: &ModelConfig) -> (usize, usize) {
    let states = Schedule::of(&cfg.arch).states;
    let at = |name: &str| states.iter().position(|s| s.name == name).expect("winner-take-all needs TRM's states y and z");
    (at("y"), at("z"))
}

/// Step 1: the batch with each example repeated once per chain.
pub fn expand_batch(batch: &Batch, k: usize) -> Batch {
    let repeat =
        |v: &[i32], width: usize| -> Vec<i32> { v.chunks(width).flat_map(|row| std::iter::repeat_n(row, k).flatten().copied()).collect() };
    Batch {
        set: batch.set,
        batch_size: batch.batch_size * k,
        seq_len: batch.seq_len,
        inputs: repeat(&batch.inputs, batch.seq_len),
        labels: repeat(&batch.labels, batch.seq_len),
        puzzle_identifiers: repeat(&batch.puzzle_identifiers, 1),
        global_effective: batch.global_effective,
    }
}

/// Step 2: rows just reset (`reset`, the carry's `halted` before loading) of chains 1..K start
/// their latent z from their own truncated-normal draw; chain 0 keeps `L_init`.
pub fn fresh_latents<B: Backend>(cfg: &ModelConfig, carry: &mut Carry<B>, reset: &[bool], explore: &Exploration) {
    let k = explore.chains;
    let rows: Vec<usize> = (0..reset.len()).filter(|&r| reset[r] && r % k != 0).collect();
    let (_, z) = answer_and_latent(cfg);
    let stream = |r: usize| crate::util::rng::derive(explore.seed, &[13, explore.step, explore.example(r), (r % k) as u64]);
    carry.draw_state(z, &rows, stream);
}

/// Step 4: each example's winning carry row, the chain with the lowest loss (the first on a tie).
pub fn winners(rows: &[Metrics], k: usize) -> Vec<usize> {
    let loss = |m: &Metrics| m.lm_loss + 0.5 * m.q_halt_loss;
    rows.chunks(k)
        .enumerate()
        .map(|(i, chains)| i * k + (0..chains.len()).fold(0, |best, c| if loss(&chains[c]) < loss(&chains[best]) { c } else { best }))
        .collect()
}

/// Steps 3 to 5 after the forward pass over every chain: the chains' losses, the winners, the
/// winners' y carried by every chain, halting on the winners' q_halt, and the loss of the winners
/// alone (one row per example, as a plain step's).
pub fn winner_loss<AD: AutodiffBackend>(
    cfg: &ModelConfig,
    carry: &mut Carry<AD::InnerBackend>,
    logits: Tensor<AD, 3>,
    q_halt: Tensor<AD, 1>,
    q_halt_host: &[f32],
    explore: Exploration,
) -> LossOutput<AD> {
    let (a, k, n) = (&cfg.arch, explore.chains, carry.batch_size());
    let next_steps: Vec<u32> = carry.steps.iter().map(|s| s + 1).collect();
    let all = act_loss(logits, q_halt, None, &carry.labels, &vec![false; n], &next_steps, a.loss_type);
    let win = winners(&all.rows, k);
    let (y, _) = answer_and_latent(cfg);
    let device = carry.states[y].device();
    let of_row: Vec<i32> = (0..n).map(|r| win[r / k] as i32).collect();
    carry.states[y] = carry.states[y].clone().select(0, Tensor::from_data(TensorData::new(of_row, [n]), &device));
    let q: Vec<f32> = (0..n).map(|r| q_halt_host[win[r / k]]).collect();
    carry.advance((&q, &q), a.halt_rule(), a.adaptive_in_training(), Some(explore), a.halt_max_steps);
    // Metrics as a plain step's: counts over the winners that halted, losses over all winners.
    let mut metrics = Metrics::default();
    for &w in win.iter().filter(|&&w| carry.halted[w]) {
        metrics.add(&all.rows[w]);
    }
    metrics.lm_loss = win.iter().map(|&w| all.rows[w].lm_loss).sum();
    metrics.q_halt_loss = win.iter().map(|&w| all.rows[w].q_halt_loss).sum();
    let s = carry.seq_len;
    let ids: Vec<i32> = win.iter().map(|&w| w as i32).collect();
    let row_total = all.row_total.select(0, Tensor::from_data(TensorData::new(ids, [win.len()]), &all.total.device()));
    LossOutput {
        total: row_total.clone().sum().reshape([1]),
        row_total,
        metrics,
        preds: win.iter().flat_map(|&w| all.preds[w * s..(w + 1) * s].iter().copied()).collect(),
        seq_correct: win.iter().map(|&w| all.seq_correct[w]).collect(),
        rows: win.iter().map(|&w| all.rows[w]).collect(),
        q_continue_target: None,
    }
}
