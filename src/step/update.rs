//! One optimiser step from a rank's gradients, shared by the trainer, `trm bench` and
//! `trm parity`:
//!
//! ```text
//! exchange   all-reduce (sum) of the network gradients, in buckets; all-gather of the puzzle
//!            rows' ids and gradients (every rank then holds the whole global batch's)
//! guard      non-finite gradient -> nothing is touched, the caller decides (guard.rs)
//! sign-SGD   on the puzzle-embedding rows of the global batch
//! AdamATan2  (or AdamW) on the network weights, unless they are frozen
//! EMA        of the weights, when enabled
//! ```
//! The loss was divided by the global batch, so the summed gradient is the single-process one
//! (up to the order of the float sums). With one rank the exchange is skipped: no copies.

use super::guard;
use super::optim::{AdamHyper, AdamState, adam_step, ema_update, sign_sgd_rows};
use crate::model::weights::Named;
use crate::parallel::{Reducer, all_reduce_bucketed};
use anyhow::Result;
use burn::prelude::*;
use burn::tensor::TensorData;

/// What one step updates.
pub struct Learner<'a, B: Backend> {
    pub params: &'a mut [Named<B>],
    pub table: &'a mut Option<Tensor<B, 2>>,
    pub adam: &'a mut AdamState<B>,
    pub ema: Option<&'a mut [Named<B>]>,
}

/// This rank's gradients: one per named tensor (None for buffers), and the puzzle-embedding
/// rows of its share of the batch (ids, `[rows, ndim]` on the host).
pub struct LocalGrads<B: Backend> {
    pub params: Vec<Option<Tensor<B, 2>>>,
    pub puzzle: Option<(Vec<i32>, Vec<f32>)>,
}

impl<B: Backend> LocalGrads<B> {
    /// Adds another micro-batch's gradients of the same step: the network gradients are summed,
    /// the puzzle rows appended (the sign-SGD step sums rows of the same id, as for one batch).
    pub fn plus(self, other: LocalGrads<B>) -> LocalGrads<B> {
        let params = self
            .params
            .into_iter()
            .zip(other.params)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            })
            .collect();
        let puzzle = match (self.puzzle, other.puzzle) {
            (Some((mut ids, mut rows)), Some((more_ids, more_rows))) => {
                ids.extend(more_ids);
                rows.extend(more_rows);
                Some((ids, rows))
            }
            (a, b) => a.or(b),
        };
        LocalGrads { params, puzzle }
    }
}

/// The step's hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct StepHyper {
    pub adam: AdamHyper,
    pub puzzle_lr: f64,
    pub puzzle_weight_decay: f64,
    /// EMA rate (used when the learner has an EMA shadow).
    pub ema_rate: f64,
    pub freeze_weights: bool,
}

/// A non-finite quantity found by the guard: (what, value).
pub type NonFinite = (&'static str, f64);

/// Sums the network gradients over the ranks, in place (a host round trip, except in a plain run).
fn reduce_params<B: Backend>(grads: Vec<Option<Tensor<B, 2>>>, r: &mut dyn Reducer) -> Result<Vec<Option<Tensor<B, 2>>>> {
    if r.is_single() {
        return Ok(grads);
    }
    let mut flat = Vec::new();
    for g in grads.iter().flatten() {
        flat.extend(g.clone().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("gradient to host: {e:?}"))?);
    }
    all_reduce_bucketed(r, &mut flat)?;
    let mut at = 0;
    Ok(grads
        .into_iter()
        .map(|g| {
            g.map(|g| {
                let dims = g.dims();
                let n = dims[0] * dims[1];
                let t = Tensor::from_data(TensorData::new(flat[at..at + n].to_vec(), dims), &g.device());
                at += n;
                t
            })
        })
        .collect())
}

/// Exchanges the gradients, checks them, and applies the optimisers. Returns the non-finite
/// quantity instead when there is one (nothing is updated then); every rank returns the same.
pub fn apply_gradients<B: Backend>(l: Learner<'_, B>, g: LocalGrads<B>, h: &StepHyper, r: &mut dyn Reducer) -> Result<Option<NonFinite>> {
    let params = reduce_params(g.params, r)?;
    let puzzle = match g.puzzle {
        Some((ids, rows)) if !r.is_single() => Some((r.all_gather_i32(&ids)?, r.all_gather(&rows)?)),
        other => other,
    };
    if let Some(bad) = guard::nonfinite_grad(&params, puzzle.as_ref().map(|(_, rows)| rows.as_slice())) {
        return Ok(Some(bad));
    }
    // Taken, not cloned: the table is updated in place (it can be gigabytes for ARC).
    if let Some((ids, rows)) = &puzzle
        && let Some(table) = l.table.take()
    {
        *l.table = Some(sign_sgd_rows(table, ids, rows, h.puzzle_lr, h.puzzle_weight_decay));
    }
    if !h.freeze_weights {
        adam_step(l.params, &params, l.adam, &h.adam);
    }
    if let Some(shadow) = l.ema {
        ema_update(shadow, l.params, h.ema_rate);
    }
    Ok(None)
}
