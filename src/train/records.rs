//! What a training run writes as it goes, besides its checkpoints: the run folder's config and
//! identifier map with the opened logs, and each step's record (losses, accuracies, the depth
//! curriculum's stage, the step's time and memory peaks) in the log and on the progress display.

use super::collective;
use super::logging::MetricsLog;
use super::plan::Plan;
use super::progress::{Progress, StepFigures};
use super::setup::{StepContext, TrainJob};
use crate::data::format;
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use crate::parallel::Reducer;
use crate::step::loss::Metrics;
use crate::store::checkpoint::TrainState;
use crate::store::config::TrainConfig;
use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;

/// Rank 0 writes the run's config, its identifier map and opens the logs (cut back to the
/// checkpoint's step on a resume); a new run's first record says its size.
pub(super) fn open_run_log<B: burn::prelude::Backend>(
    job: &TrainJob,
    cfg: &TrainConfig,
    model: &ModelConfig,
    st: &TrainState<B>,
    plan: &Plan,
    reducer: &mut dyn Reducer,
) -> Result<Option<MetricsLog>> {
    let open_run = || -> Result<MetricsLog> {
        // Copied into the run (eval, solve and the ARC submission name puzzles by it); one that
        // is there but unreadable is an error, never left out. Read before anything is written.
        let ids = if job.data.join("identifiers.json").exists() { Some(format::read_identifiers(&job.data)?) } else { None };
        // A run folder trm made: a new run may start over it while it holds no checkpoint
        // (`setup::open_state`). demo's and adapt's folders keep their own mark.
        if !job.out.join(crate::util::fs::MADE_BY).exists() {
            crate::util::fs::write_atomic(&job.out.join(crate::util::fs::MADE_BY), b"trm train")?;
        }
        crate::util::fs::write_atomic(&job.out.join("config.toml"), cfg.to_toml().as_bytes())?;
        if let Some(ids) = ids {
            crate::util::fs::write_json(&job.out.join("identifiers.json"), &ids)?;
        }
        MetricsLog::open(&job.out, job.resume.then_some((st.step, st.log_mark)))
    };
    let mut log = collective::lead_result((reducer.rank() == 0).then(open_run), "write the run folder", reducer)?;
    if let (Some(log), 0) = (log.as_mut(), st.step) {
        let n = Weights::from_named(model, st.params.clone())?.num_params();
        log.log(0, "info", &[("num_params", n as f64), ("total_steps", plan.total as f64), ("world_size", reducer.world() as f64)])?;
    }
    Ok(log)
}

/// The step's metrics, per example, to the log and the progress display, with the step's wall
/// time (`seconds`) and the memory peaks (`system_figures`).
pub(super) fn log_train_step<AD: AutodiffBackend>(
    cx: &StepContext<AD>,
    step: u64,
    m: &Metrics,
    lr: f64,
    seconds: f64,
    log: &mut Option<MetricsLog>,
    progress: &mut Progress,
) -> Result<()> {
    let g = cx.cfg.global_batch_size as f64;
    let n = m.count.max(1.0);
    let mut vals = vec![
        ("lm_loss", m.lm_loss / g),
        ("q_halt_loss", m.q_halt_loss / g),
        ("accuracy", m.accuracy / n),
        ("exact_accuracy", m.exact_accuracy / n),
        ("q_halt_accuracy", m.q_halt_accuracy / n),
        ("steps", m.steps / n),
        ("count", m.count),
        ("lr", lr),
    ];
    if cx.model.arch.continue_target() {
        vals.push(("q_continue_loss", m.q_continue_loss / g));
    }
    if let Some(c) = &cx.curriculum {
        let i = c.stage_index(step, cx.plan.total);
        vals.push(("H_cycles", c.stages[i].h_cycles as f64));
        vals.push(("L_cycles", c.stages[i].l_cycles as f64));
        if i > 0 && step == c.first_step(i, cx.plan.total) {
            progress.note(format!(
                "step {step}: depth curriculum stage {} of {}: H_cycles={} L_cycles={}",
                i + 1,
                c.stages.len(),
                c.stages[i].h_cycles,
                c.stages[i].l_cycles
            ));
        }
    }
    if let Some(log) = log.as_mut() {
        vals.extend(system_figures::<AD>(seconds, g, cx.device));
        log.log(step, "train", &vals)?;
    }
    progress.after_step(step, cx.cfg.global_batch_size, StepFigures { lm_loss: vals[0].1, accuracy: vals[2].1, exact: vals[3].1 });
    Ok(())
}

/// How fast the step ran and how much memory the run holds, logged beside the losses: the
/// optimiser step's wall time (forward, backward, the exchange between ranks and the update;
/// batches are read ahead in another thread) and the examples per second it makes; this
/// process's peak resident memory; on a GPU (libtorch), the caching allocator's peak allocated and
/// reserved memory, as PyTorch's `max_memory_allocated` and `max_memory_reserved` read them. Peaks
/// are since the process started. Every rank's log would say the same of its own process; only
/// rank 0 writes one.
fn system_figures<AD: AutodiffBackend>(seconds: f64, examples: f64, device: &AD::Device) -> Vec<(&'static str, f64)> {
    const MIB: f64 = (1u64 << 20) as f64;
    let mut vals = vec![("step_seconds", seconds), ("examples_per_second", examples / seconds.max(1e-9))];
    if let Some(bytes) = crate::util::alloc::peak_rss() {
        vals.push(("host_peak_rss_mib", bytes as f64 / MIB));
    }
    if let Some(Ok(m)) = crate::backend::device_memory_of::<AD>(device) {
        vals.push(("gpu_peak_allocated_mib", m.peak_allocated_bytes as f64 / MIB));
        vals.push(("gpu_peak_reserved_mib", m.peak_reserved_bytes as f64 / MIB));
    }
    vals
}
