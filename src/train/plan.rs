//! How a run walks its data, settled before its first step: the batches split over the ranks
//! and into micro-batches, an iteration's order of puzzle groups fits in memory, at least one
//! step, and the depth curriculum's stages fit the schedule.

use crate::data::format::Split;
use crate::data::loader::{RecordedOrder, TrainSampler, total_steps};
use crate::step::curriculum::DepthCurriculum;
use crate::store::config::TrainConfig;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// The batches split as they must: the global batch (and an evaluation's) over the ranks, the
/// rank's share into micro-batches.
pub fn check_batches(cfg: &TrainConfig, has_test: bool, world: usize) -> Result<()> {
    let g = cfg.global_batch_size;
    anyhow::ensure!(g.is_multiple_of(world), "global_batch_size {g} does not split over {world} ranks: make it a multiple of {world}");
    if has_test && world > 1 {
        let eb = cfg.eval_batch_size.unwrap_or(g);
        anyhow::ensure!(eb.is_multiple_of(world), "eval_batch_size {eb} does not split over {world} ranks: make it a multiple of {world}");
    }
    let share = g / world;
    let micro_batch = cfg.micro_batch_size.unwrap_or(share);
    anyhow::ensure!(
        share.is_multiple_of(micro_batch),
        "micro_batch_size {micro_batch} does not divide the {share} rows of global_batch_size {g}{}: make it a divisor of {share}",
        if world > 1 { format!(" that each of the {world} ranks takes") } else { String::new() }
    );
    Ok(())
}

/// How a run walks its data: this rank's sampler, the iterations, the steps.
pub struct Plan {
    pub sampler: TrainSampler,
    /// Iterations (`eval_interval` epochs each) of the whole schedule.
    pub iterations: u64,
    /// Optimiser steps of the whole schedule (the learning-rate schedule's length).
    pub total: u64,
    /// The step this run stops at (`max_steps`, or the schedule's end).
    pub stop_at: u64,
    /// This rank's first row in every global batch (for the exploration draws).
    pub first_row: usize,
    /// Rows of each forward and backward pass (`micro_batch_size`, else the rank's share).
    pub micro_batch: usize,
}

impl Plan {
    /// The plan of `cfg` over `train`, refusing batches that do not split over the ranks and a
    /// schedule of zero steps.
    pub fn new(cfg: &TrainConfig, train: &Arc<Split>, has_test: bool, rank: usize, world: usize) -> Result<Plan> {
        check_batches(cfg, has_test, world)?;
        let g = cfg.global_batch_size;
        let share = g / world;
        let micro_batch = cfg.micro_batch_size.unwrap_or(share);
        let iterations = (cfg.epochs / cfg.epochs_per_iter()) as u64;
        check_group_order(cfg, train)?;
        let mut sampler = TrainSampler {
            split: train.clone(),
            global_batch: g,
            rank,
            world,
            seed: cfg.seed,
            epochs_per_iter: cfg.epochs_per_iter(),
            recorded: None,
        };
        if let Some(path) = &cfg.batch_order {
            let rec = RecordedOrder::read(Path::new(path), train, g).with_context(|| format!("batch_order = {path}"))?;
            anyhow::ensure!(
                rec.iterations.len() as u64 >= iterations,
                "batch_order {path} records {} iterations; this run has {iterations}",
                rec.iterations.len()
            );
            sampler.recorded = Some(Arc::new(rec));
        }
        let total = total_steps(train, cfg.epochs, g);
        if total == 0 || !sampler.has_batches() {
            return Err(zero_steps(cfg, train));
        }
        let stop_at = cfg.max_steps.map_or(total, |m| m.min(total));
        Ok(Plan { sampler, iterations, total, stop_at, first_row: rank * share, micro_batch })
    }
}

/// The error of a run whose global batch is larger than an iteration of its data.
pub(super) fn zero_steps(cfg: &TrainConfig, train: &Split) -> anyhow::Error {
    let m = &train.metadata;
    anyhow::anyhow!(
        "this run would take 0 optimiser steps: global_batch_size={} is larger than the {} examples that one iteration ({} epoch(s)) of {} puzzle groups gives; lower global_batch_size or raise eval_interval/epochs",
        cfg.global_batch_size,
        examples_per_iteration(cfg, train),
        cfg.epochs_per_iter(),
        m.total_groups
    )
}

/// About how many examples one iteration draws (`epochs_per_iter` × groups × examples a puzzle).
fn examples_per_iteration(cfg: &TrainConfig, train: &Split) -> u64 {
    let m = &train.metadata;
    (cfg.epochs_per_iter() as f64 * m.total_groups as f64 * m.mean_puzzle_examples) as u64
}

/// Refuses an iteration whose order of puzzle groups (`eval_interval` epochs × groups entries,
/// which the sampler holds as the reference does) cannot be held: its count overflows, or it
/// takes more than this machine has (an allocation failure ends a process with no message).
fn check_group_order(cfg: &TrainConfig, train: &Split) -> Result<()> {
    if cfg.batch_order.is_some() {
        return Ok(()); // a recorded order is replayed, none drawn
    }
    let epochs = cfg.epochs_per_iter();
    let groups = train.sets.iter().map(|(_, set)| set.num_groups()).max().unwrap_or(0);
    let bytes = groups.checked_mul(epochs).and_then(|n| n.checked_mul(std::mem::size_of::<usize>())).map(|b| b as u64);
    let available = crate::util::host_memory::available();
    // Where the memory is not known, a bound far above any real schedule (ARC's: 320 MB).
    const MAX_ORDER_BYTES: u64 = 1 << 40;
    let fits = bytes.is_some_and(|b| b <= MAX_ORDER_BYTES && available.is_none_or(|a| b <= a.bytes / 2));
    anyhow::ensure!(
        fits,
        "an iteration of {epochs} epochs (eval_interval, else epochs) over {groups} puzzle groups is an order of {} draws ({}), {}: \
         evaluate more often (a smaller eval_interval that divides epochs)",
        groups as u128 * epochs as u128,
        bytes.map_or("more than any memory".to_string(), super::memory_check::size),
        match available {
            Some(a) if bytes.is_some_and(|b| b <= MAX_ORDER_BYTES) => {
                format!("more than half of the memory here ({})", a.said(&super::memory_check::size(a.bytes)))
            }
            _ => "which trm does not hold".to_string(),
        }
    );
    Ok(())
}

/// The run's depth curriculum, if it has one, refused when its schedule is too short to reach the
/// model's depth. The lead rank prints its stages (unless quiet) and warns when `max_steps` stops
/// the run before the last.
pub(super) fn depth_curriculum(cfg: &TrainConfig, plan: &Plan, lead: bool, quiet: bool) -> Result<Option<DepthCurriculum>> {
    let Some(spec) = &cfg.depth_curriculum else { return Ok(None) };
    let c = DepthCurriculum::parse(spec, &cfg.arch)?;
    let last = c.first_step(c.stages.len() - 1, plan.total);
    anyhow::ensure!(
        last <= plan.total,
        "depth_curriculum: the schedule has {} steps, too few for its last stage (the model's depth) to start: \
         give it more epochs, or fewer stages",
        plan.total
    );
    if lead && !quiet {
        let stages: Vec<String> = (0..c.stages.len())
            .map(|i| {
                format!("from step {}: H_cycles={} L_cycles={}", c.first_step(i, plan.total), c.stages[i].h_cycles, c.stages[i].l_cycles)
            })
            .collect();
        eprintln!("depth curriculum over the {} steps of the schedule: {}", plan.total, stages.join(", "));
    }
    if lead && plan.stop_at < last {
        eprintln!(
            "warning: this run stops at step {} (max_steps), before the curriculum reaches the model's depth at step {last}: \
             its checkpoints run a depth it has not trained at (shorten the schedule with epochs=, not max_steps=)",
            plan.stop_at
        );
    }
    Ok(Some(c))
}
