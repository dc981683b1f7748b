//! The multi-rank parts of a training run, each a collective every rank calls at the same point:
//!
//! ```text
//! broadcast_weights   at start: rank 0's weights and puzzle table on every rank
//! local_carry         at resume: this rank's rows of the checkpoint's global carry
//! reduce_step         every step: the batch's summed metrics and the stop flags (signal, time)
//! save                at a checkpoint: the carries gathered in rank order, rank 0 writes,
//!                     every rank learns whether it worked
//! ```
//! With one rank (`Single`) each is the identity, so a single process pays nothing.

use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::parallel::Reducer;
use crate::step::loss::Metrics;
use crate::store::checkpoint::{self, TrainState};
use crate::store::config::TrainConfig;
use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::TensorData;
use std::path::{Path, PathBuf};

/// Overwrites every rank's weights and puzzle table with rank 0's (they start equal from the
/// seed; this makes sure, whatever the start).
pub fn broadcast_weights<B: Backend>(st: &mut TrainState<B>, r: &mut dyn Reducer) -> Result<()> {
    if r.is_single() {
        return Ok(());
    }
    let tensors = st.params.iter_mut().map(|n| &mut n.tensor).chain(st.table.as_mut());
    for t in tensors {
        let mut v = crate::backend::to_host_f32(t);
        r.broadcast(&mut v, 0)?;
        *t = Tensor::from_data(TensorData::new(v, t.dims()), &t.device());
    }
    Ok(())
}

/// Rows `[rank * b, (rank + 1) * b)` of a carry of the global batch.
pub fn local_carry<B: Backend>(c: Carry<B>, rank: usize, world: usize) -> Result<Carry<B>> {
    let g = c.batch_size();
    if world == 1 {
        return Ok(c);
    }
    if !g.is_multiple_of(world) {
        bail!("the checkpoint's carry has {g} rows, which do not split over {world} ranks");
    }
    let b = g / world;
    Ok(c.rows(rank * b..(rank + 1) * b))
}

/// Every rank's carry, concatenated in rank order: the carry of the global batch.
pub fn gather_carry<B: Backend>(c: &Carry<B>, r: &mut dyn Reducer) -> Result<Carry<B>> {
    if r.is_single() {
        return Ok(c.clone());
    }
    let mut states = Vec::new();
    for t in &c.states {
        let [b, tl, d] = t.dims();
        let all = r.all_gather(&crate::backend::to_host_f32(t))?;
        states.push(Tensor::from_data(TensorData::new(all, [b * r.world(), tl, d]), &t.device()));
    }
    let ints = |v: Vec<u32>| v.into_iter().map(|x| x as i32).collect::<Vec<_>>();
    let steps = r.all_gather_i32(&ints(c.steps.clone()))?.into_iter().map(|x| x as u32).collect();
    let halted = r.all_gather_i32(&c.halted.iter().map(|&h| h as i32).collect::<Vec<_>>())?.into_iter().map(|x| x != 0).collect();
    Ok(Carry {
        states,
        steps,
        halted,
        inputs: r.all_gather_i32(&c.inputs)?,
        labels: r.all_gather_i32(&c.labels)?,
        puzzle_ids: r.all_gather_i32(&c.puzzle_ids)?,
        seq_len: c.seq_len,
    })
}

/// A result only rank 0 has (its lock, its files): every rank learns whether it failed, so none
/// waits forever on a collective rank 0 will not reach. Rank 0 returns its value or error; the
/// others return None, or an error pointing at rank 0's.
pub fn lead_result<T>(mine: Option<Result<T>>, what: &str, r: &mut dyn Reducer) -> Result<Option<T>> {
    if r.is_single() {
        return mine.transpose();
    }
    let mut failed = [mine.as_ref().is_some_and(|m| m.is_err()) as u8 as f32];
    r.all_reduce_sum(&mut failed)?;
    match mine {
        Some(m) => m.map(Some),
        None if failed[0] > 0.0 => bail!("rank 0 failed to {what} (see its error)"),
        None => Ok(None),
    }
}

/// Every rank holds the same step and loader position (they resumed from the same checkpoint).
pub fn check_same_position(step: u64, iteration: u64, batch: u64, r: &mut dyn Reducer) -> Result<()> {
    if r.is_single() {
        return Ok(());
    }
    let mine = [step as i32, iteration as i32, batch as i32];
    let all = r.all_gather_i32(&mine)?;
    if let Some((k, c)) = all.chunks(3).enumerate().find(|(_, c)| *c != mine) {
        bail!(
            "rank {k} starts at step {} (iteration {}, batch {}) but rank {} at step {step}: the ranks resumed from different checkpoints (a file system that is not the same on every node?)",
            c[0],
            c[1],
            c[2],
            r.rank()
        );
    }
    Ok(())
}

/// Why a run should stop after this step, agreed by every rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stop {
    /// SIGINT/SIGTERM on some rank.
    pub interrupt: bool,
    /// The wall-time limit, on some rank.
    pub time_up: bool,
}

/// Sums the step's metrics over the ranks and agrees on the stop flags.
pub fn reduce_step(m: Metrics, stop: Stop, r: &mut dyn Reducer) -> Result<(Metrics, Stop)> {
    if r.is_single() {
        return Ok((m, stop));
    }
    let mut v: Vec<f32> = m.to_array().iter().chain(&[stop.interrupt as u8 as f64, stop.time_up as u8 as f64]).map(|&x| x as f32).collect();
    r.all_reduce_sum(&mut v)?;
    let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    let m = Metrics::from_array(&v);
    Ok((m, Stop { interrupt: v[8] > 0.0, time_up: v[9] > 0.0 }))
}

/// Writes a checkpoint of the whole run: the carries are gathered, rank 0 writes, and every rank
/// fails if rank 0 could not (so none waits forever on a collective rank 0 will not reach).
pub fn save<B: Backend>(run: &Path, st: &TrainState<B>, cfg: &TrainConfig, model: &ModelConfig, r: &mut dyn Reducer) -> Result<PathBuf> {
    if r.is_single() {
        return checkpoint::save(run, st, cfg, model);
    }
    let carry = st.carry.as_ref().map(|c| gather_carry(c, r)).transpose()?;
    let written = (r.rank() == 0).then(|| checkpoint::save(run, &TrainState { carry, ..st.clone() }, cfg, model));
    let mut failed = [written.as_ref().is_some_and(|w| w.is_err()) as u8 as f32];
    r.all_reduce_sum(&mut failed)?;
    match written {
        Some(w) => w,
        None if failed[0] > 0.0 => bail!("rank 0 could not write the checkpoint (see its error)"),
        None => Ok(run.join("checkpoints").join(format!("step_{:08}", st.step))),
    }
}
