//! The ACT wrapper: a per-row carry that persists across calls (and, in training, across
//! optimiser steps). One call = one deep-supervision step:
//!
//! 1. rows that halted on the previous call restart from their init states, step 0, and take
//!    the same row of the incoming batch; other rows keep their states and data (the incoming
//!    row is discarded, as in the reference);
//! 2. the inner model runs (`forward.rs`);
//! 3. `steps += 1`; a row halts at `halt_max_steps`, or when halting is adaptive (training;
//!    the baseline's `act_inference` in evaluation) by the architecture's rule: q_halt > 0 (TRM)
//!    or q_halt > q_continue (HRM, TRM "w/ ACT", the baseline). In training, exploration (with
//!    probability `halt_exploration_prob`) demands a random minimum of steps in
//!    `[2, halt_max_steps]`.
//! 4. with the Q-continue loss on (HRM), the target of q_continue is bootstrapped from one more
//!    no-grad pass on the new carry: sigmoid(next q_halt) at the last step, else
//!    sigmoid(max(next q_halt, next q_continue)) (`continue_target`).
//!
//! The halting state and the current data live on the host (B values per step).

use super::config::{HaltRule, ModelConfig};
use super::precision::to_dtype;
use super::weights::Weights;
use crate::data::loader::Batch;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;

/// Where a training step's exploration draws come from: row `r` of the global batch at optimiser
/// step `step` draws from its own stream `(seed, step, r)`, so the draws do not depend on how the
/// batch is split across ranks (the reference seeds each rank instead, so its draws do).
#[derive(Debug, Clone, Copy)]
pub struct Exploration {
    pub prob: f64,
    pub seed: u64,
    pub step: u64,
    /// Global index of this rank's first example (rank x local batch).
    pub first_row: usize,
    /// Carry rows per example (`arch.wta_chains`): the chains of one example draw together.
    pub chains: usize,
}

impl Exploration {
    /// The exploration of training step `step` for a model, `first_row` its first example.
    pub fn of(arch: &super::config::ArchConfig, seed: u64, step: u64, first_row: usize) -> Self {
        Exploration { prob: arch.halt_exploration_prob, seed, step, first_row, chains: arch.wta_chains }
    }

    /// The global index of the example that carry row `r` (local) works on.
    pub fn example(&self, r: usize) -> u64 {
        (self.first_row + r / self.chains.max(1)) as u64
    }

    /// The minimum number of steps row `r` (local) must run: 0, or a draw in `[2, max_steps]`.
    fn min_steps(&self, r: usize, max_steps: usize) -> u32 {
        let mut g = crate::util::rng::derive(self.seed, &[11, self.step, self.example(r)]);
        if g.random::<f64>() < self.prob { g.random_range(2..=max_steps as u32) } else { 0 }
    }
}

#[derive(Debug, Clone)]
pub struct Carry<B: Backend> {
    /// The carried states `[B, T, D]`, in the schedule's order (`schedule::StateSpec`).
    pub states: Vec<Tensor<B, 3>>,
    /// Supervision steps taken by each row since its reset.
    pub steps: Vec<u32>,
    /// Rows that halted on the last call (they are reset on the next one).
    pub halted: Vec<bool>,
    /// The data each row is working on: `[B*S]`, `[B*S]`, `[B]`.
    pub inputs: Vec<i32>,
    pub labels: Vec<i32>,
    pub puzzle_ids: Vec<i32>,
    pub seq_len: usize,
}

impl<B: Backend> Carry<B> {
    /// A training carry for `examples` rows of data: `arch.wta_chains` carry rows each.
    pub fn for_training(cfg: &ModelConfig, examples: usize, device: &B::Device) -> Self {
        Self::new(cfg, examples * cfg.arch.wta_chains, device)
    }

    /// A carry in which every row counts as halted, so the first call loads the whole batch.
    pub fn new(cfg: &ModelConfig, batch: usize, device: &B::Device) -> Self {
        let (t, d, s) = (cfg.total_len(), cfg.d(), cfg.seq_len);
        let n = super::schedule::Schedule::of(&cfg.arch).states.len();
        Carry {
            states: (0..n).map(|_| Tensor::zeros([batch, t, d], device)).collect(),
            steps: vec![0; batch],
            halted: vec![true; batch],
            inputs: vec![0; batch * s],
            labels: vec![-100; batch * s],
            puzzle_ids: vec![0; batch],
            seq_len: s,
        }
    }

    pub fn batch_size(&self) -> usize {
        self.steps.len()
    }

    /// Carry rows `rows` on their own (a rank's share of a checkpoint's carry, a micro-batch's
    /// rows of a rank's); `Carry::cat` puts such parts back together.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Carry<B> {
        let s = self.seq_len;
        Carry {
            states: self.states.iter().map(|t| t.clone().narrow(0, rows.start, rows.len())).collect(),
            steps: self.steps[rows.clone()].to_vec(),
            halted: self.halted[rows.clone()].to_vec(),
            inputs: self.inputs[rows.start * s..rows.end * s].to_vec(),
            labels: self.labels[rows.start * s..rows.end * s].to_vec(),
            puzzle_ids: self.puzzle_ids[rows].to_vec(),
            seq_len: s,
        }
    }

    /// Carries of consecutive rows, concatenated in order (the inverse of `rows`).
    pub fn cat(parts: Vec<Carry<B>>) -> Carry<B> {
        let seq_len = parts.first().expect("at least one part").seq_len;
        let n = parts[0].states.len();
        let states = (0..n).map(|i| Tensor::cat(parts.iter().map(|p| p.states[i].clone()).collect(), 0)).collect();
        Carry {
            states,
            steps: parts.iter().flat_map(|p| p.steps.iter().copied()).collect(),
            halted: parts.iter().flat_map(|p| p.halted.iter().copied()).collect(),
            inputs: parts.iter().flat_map(|p| p.inputs.iter().copied()).collect(),
            labels: parts.iter().flat_map(|p| p.labels.iter().copied()).collect(),
            puzzle_ids: parts.iter().flat_map(|p| p.puzzle_ids.iter().copied()).collect(),
            seq_len,
        }
    }

    /// Step 1: halted rows restart from the init states with the incoming batch's row.
    pub fn reset_and_load(&mut self, w: &Weights<B>, batch: &Batch) {
        let n = self.batch_size();
        assert_eq!(batch.batch_size, n, "batch size changed under a persistent carry");
        if !self.halted.iter().any(|&h| h) {
            return;
        }
        let s = self.seq_len;
        for r in (0..n).filter(|&r| self.halted[r]) {
            self.inputs[r * s..(r + 1) * s].copy_from_slice(&batch.inputs[r * s..(r + 1) * s]);
            self.labels[r * s..(r + 1) * s].copy_from_slice(&batch.labels[r * s..(r + 1) * s]);
            self.puzzle_ids[r] = batch.puzzle_identifiers[r];
            self.steps[r] = 0;
        }
        let [b, t, d] = self.states[0].dims();
        let device = self.states[0].device();
        let mask = Tensor::<B, 1, Bool>::from_data(TensorData::new(self.halted.clone(), [b]), &device).reshape([b, 1, 1]).expand([b, t, d]);
        for (state, init) in self.states.iter_mut().zip(&w.inits) {
            // The init state in the carry's dtype (bfloat16 once a bfloat16 forward has run).
            let init = to_dtype(init.clone(), state.dtype()).reshape([1, 1, d]).expand([b, t, d]);
            *state = state.clone().mask_where(mask.clone(), init);
        }
    }

    /// Rows `rows` start their state `state` over from a std-1 truncated-normal draw per token,
    /// row i's from `streams[i]` (winner-take-all chains, views with drawn latents).
    pub fn draw_state(&mut self, state: usize, rows: &[usize], streams: impl Fn(usize) -> rand_chacha::ChaCha8Rng) {
        if rows.is_empty() {
            return;
        }
        let [b, t, d] = self.states[state].dims();
        let mut values = vec![0f32; b * t * d];
        let mut mask = vec![false; b];
        for &r in rows {
            values[r * t * d..(r + 1) * t * d].copy_from_slice(&super::weights::trunc_normal(&mut streams(r), t * d, 1.0));
            mask[r] = true;
        }
        let s = &mut self.states[state];
        let device = s.device();
        let drawn = to_dtype(Tensor::<B, 3>::from_data(TensorData::new(values, [b, t, d]), &device), s.dtype());
        let mask = Tensor::<B, 1, Bool>::from_data(TensorData::new(mask, [b]), &device).reshape([b, 1, 1]).expand([b, t, d]);
        *s = s.clone().mask_where(mask, drawn);
    }

    /// The puzzle-embedding rows of the carry's current identifiers.
    pub fn puzzle_rows(&self, table: Option<&Tensor<B, 2>>) -> Option<Tensor<B, 2>> {
        table.map(|t| {
            let n = self.puzzle_ids.len();
            let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(self.puzzle_ids.clone(), [n]), &t.device());
            t.clone().select(0, ids)
        })
    }

    /// The current inputs as a `[B, S]` int tensor.
    pub fn inputs_tensor<B2: Backend>(&self, device: &B2::Device) -> Tensor<B2, 2, Int> {
        Tensor::from_data(TensorData::new(self.inputs.clone(), [self.batch_size(), self.seq_len]), device)
    }

    /// Step 3: count the step and decide which rows halt. `adaptive` lets the Q head stop a row
    /// early; `explore` (training) demands a random minimum of steps. Returns, per row, whether
    /// this was its last allowed step (the bootstrap target needs it).
    pub fn advance(
        &mut self,
        q: (&[f32], &[f32]),
        rule: HaltRule,
        adaptive: bool,
        explore: Option<Exploration>,
        max_steps: usize,
    ) -> Vec<bool> {
        let (q_halt, q_continue) = q;
        let mut last_step = vec![false; self.batch_size()];
        for r in 0..self.batch_size() {
            self.steps[r] += 1;
            let last = self.steps[r] as usize >= max_steps;
            last_step[r] = last;
            let mut halt = last;
            if adaptive && max_steps > 1 {
                halt |= rule.fires(q_halt[r], q_continue[r]);
                if let Some(e) = explore.filter(|e| e.prob > 0.0) {
                    halt &= self.steps[r] >= e.min_steps(r, max_steps);
                }
            }
            self.halted[r] = halt;
        }
        last_step
    }
}

/// The bootstrapped Q-continue target (step 4): `sigmoid(next_q_halt)` where this was the row's
/// last step, else `sigmoid(max(next_q_halt, next_q_continue))`.
pub fn continue_target<B: Backend>(next_q_halt: Tensor<B, 1>, next_q_continue: Tensor<B, 1>, last_step: &[bool]) -> Tensor<B, 1> {
    let n = last_step.len();
    let last = Tensor::<B, 1, Bool>::from_data(TensorData::new(last_step.to_vec(), [n]), &next_q_halt.device());
    let best = next_q_halt.clone().max_pair(next_q_continue);
    burn::tensor::activation::sigmoid(best.mask_where(last, next_q_halt))
}
