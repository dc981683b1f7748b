//! The ACT wrapper: a per-row carry that persists across calls (and, in training, across
//! optimiser steps). One call = one deep-supervision step:
//!
//! 1. rows that halted on the previous call restart from (H_init, L_init), step 0, and take the
//!    same row of the incoming batch; other rows keep their state and data (the incoming row is
//!    discarded, as in the reference);
//! 2. the inner model runs (see `trm.rs`);
//! 3. `steps += 1`; a row halts at `halt_max_steps`, or in training when `q_halt > 0` (unless
//!    exploration, with probability `halt_exploration_prob`, demands a random minimum of steps in
//!    `[2, halt_max_steps]`). Evaluation never halts early.
//!
//! The halting state and the current data live on the host (B values per step).

use super::config::ModelConfig;
use super::precision::to_dtype;
use super::weights::Weights;
use crate::data::loader::Batch;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;

#[derive(Debug, Clone)]
pub struct Carry<B: Backend> {
    /// y, `[B, T, D]`
    pub z_h: Tensor<B, 3>,
    /// z, `[B, T, D]`
    pub z_l: Tensor<B, 3>,
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
    /// A carry in which every row counts as halted, so the first call loads the whole batch.
    pub fn new(cfg: &ModelConfig, batch: usize, device: &B::Device) -> Self {
        let (t, d, s) = (cfg.total_len(), cfg.d(), cfg.seq_len);
        Carry {
            z_h: Tensor::zeros([batch, t, d], device),
            z_l: Tensor::zeros([batch, t, d], device),
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
        let [b, t, d] = self.z_h.dims();
        let device = self.z_h.device();
        let mask = Tensor::<B, 1, Bool>::from_data(TensorData::new(self.halted.clone(), [b]), &device).reshape([b, 1, 1]).expand([b, t, d]);
        // The init states in the carry's dtype (bfloat16 once a bfloat16 forward has run).
        let h0 = to_dtype(w.h_init.clone(), self.z_h.dtype()).reshape([1, 1, d]).expand([b, t, d]);
        let l0 = to_dtype(w.l_init.clone(), self.z_l.dtype()).reshape([1, 1, d]).expand([b, t, d]);
        self.z_h = self.z_h.clone().mask_where(mask.clone(), h0);
        self.z_l = self.z_l.clone().mask_where(mask, l0);
    }

    /// The current inputs as a `[B, S]` int tensor.
    pub fn inputs_tensor<B2: Backend>(&self, device: &B2::Device) -> Tensor<B2, 2, Int> {
        Tensor::from_data(TensorData::new(self.inputs.clone(), [self.batch_size(), self.seq_len]), device)
    }

    /// Step 3: count the step and decide which rows halt. `explore` draws the exploration.
    pub fn advance(&mut self, q_halt: &[f32], training: bool, cfg: &ModelConfig, max_steps: usize, rng: &mut impl Rng) {
        let a = &cfg.arch;
        for r in 0..self.batch_size() {
            self.steps[r] += 1;
            let last = self.steps[r] as usize >= max_steps;
            let mut halt = last;
            if training && max_steps > 1 {
                // no_ACT_continue = True: halt on the sign of q_halt alone.
                halt |= q_halt[r] > 0.0;
                let min_halt = if rng.random::<f64>() < a.halt_exploration_prob { rng.random_range(2..=max_steps as u32) } else { 0 };
                halt &= self.steps[r] >= min_halt;
            }
            self.halted[r] = halt;
        }
    }
}
