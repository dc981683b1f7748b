//! Data parallelism: one process (or thread) per rank, each with its share of the global batch;
//! gradients, puzzle-embedding rows, metrics and the carry are exchanged through a `Reducer`.
//!
//! ```text
//! Single         one process: every collective is the identity (no copies)
//! ThreadReducer  in-process ranks on threads (CPU tests and experiments)
//! NcclReducer    one process per GPU over NCCL (a GPU engine's build; nccl.rs), behind a
//!                Watchdog that ends a rank whose collective waits past a deadline (watchdog.rs)
//! ```
//! The training loop calls the same collectives whatever the implementation, so it does not
//! know whether it runs alone (`step::update::apply_gradients`, `train::trainer`).
//! Collectives are called by every rank in the same order; their results are the same on every
//! rank (sums are taken in rank order).

pub mod rendezvous;
pub mod threads;
pub mod watchdog;

#[cfg(any(feature = "libtorch", feature = "cubecl"))]
pub mod nccl;

use anyhow::Result;

/// The exchange between ranks. Buffers live on the host.
pub trait Reducer {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Element-wise sum over the ranks, in place.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `local` (the same length on every rank), concatenated in rank order.
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>>;
    /// Overwrites `buf` with rank `root`'s.
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;

    /// `all_gather` of integers (moved bit for bit).
    fn all_gather_i32(&mut self, local: &[i32]) -> Result<Vec<i32>> {
        let bits: Vec<f32> = local.iter().map(|&v| f32::from_bits(v as u32)).collect();
        Ok(self.all_gather(&bits)?.into_iter().map(|v| v.to_bits() as i32).collect())
    }
    /// Whether this reducer exchanges nothing at all (`Single`), so a collective may be skipped.
    /// A transport with one rank still exchanges through it: `trm launch --nproc 1` runs every
    /// NCCL collective, which is how one GPU tests the multi-GPU path against a plain run.
    fn is_single(&self) -> bool {
        false
    }
}

/// One process, one rank.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Reducer for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn broadcast(&mut self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
    fn is_single(&self) -> bool {
        true
    }
}

/// Largest buffer handed to one all-reduce (64 MiB of float32): the gradients go in few large
/// calls without doubling peak memory for big models.
pub const BUCKET: usize = 16 << 20;

/// All-reduce (sum) of `buf` in buckets of at most `BUCKET` values.
pub fn all_reduce_bucketed(r: &mut dyn Reducer, buf: &mut [f32]) -> Result<()> {
    for chunk in buf.chunks_mut(BUCKET) {
        r.all_reduce_sum(chunk)?;
    }
    Ok(())
}
