//! The training loop (the reference's `pretrain.py` main loop):
//!
//! ```text
//! for iteration in 0..epochs/eval_interval:          # one iteration = eval_interval epochs
//!     for batch in loader(iteration):                # one batch = one ACT step = one optimiser step
//!         for micro in this rank's rows of the batch, micro_batch_size at a time:
//!             loss = supervision step on those rows of the persistent carry
//!             gradients += backward(loss / global_batch)
//!         metrics and stop flags summed over the ranks; non-finite loss -> stop or skip
//!         update::apply_gradients (exchange, guard, sign-SGD, AdamATan2, EMA); log;
//!         checkpoint every `checkpoint_interval_steps`
//!     evaluate (EMA weights if enabled) on the test split; log; checkpoint
//! ```
//! Everything that changes is in `TrainState` and saved by `checkpoint::save`, so a run killed at
//! any moment resumes with `--resume` exactly where its last checkpoint stood. With several ranks
//! (`parallel`), each runs this loop on its share of every batch; the collectives are in
//! `collective.rs` and `update.rs`, and only rank 0 writes.

use super::collective::{self, Stop};
use super::logging::MetricsLog;
use super::progress::{Progress, StepFigures};
use super::setup::{Plan, check_test_split, eval_and_log, model_config, open_state, read_splits};
use crate::data::format::{self, Split};
use crate::data::loader::{Batch, Position, prefetch};
use crate::eval::evaluate::EvalResult;
use crate::model::act::{Carry, Exploration};
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use crate::parallel::{Reducer, Single};
use crate::step::curriculum::DepthCurriculum;
use crate::step::guard;
use crate::step::loss::Metrics;
use crate::step::optim::{AdamHyper, lr_at};
use crate::step::supervision::{MicroBatches, Ropes, micro_batch_step};
use crate::step::update::{Learner, NonFinite, StepHyper, apply_gradients};
use crate::store::checkpoint::{LogMark, TrainState};
use crate::store::config::TrainConfig;
use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use super::setup::TrainJob;

/// Summary of a finished run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub last_train: Metrics,
    pub evals: Vec<(u64, EvalResult)>,
    pub seconds: f64,
    pub checkpoint: Option<PathBuf>,
}

/// A line above the progress bar, or on stderr when there is no terminal for the bar.
/// Runs (or resumes) a training job in this process alone.
pub fn train<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device) -> Result<TrainSummary> {
    train_with::<AD>(job, device, &mut Single)
}

/// Runs (or resumes) a training job on backend `AD` as one rank of `reducer`'s group (`Single`
/// for one process). Every rank gets the same job; rank 0 writes the run folder.
pub fn train_with<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device, reducer: &mut dyn Reducer) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let lead = reducer.rank() == 0;
    let (train_split, test_split) = read_splits(&job.data)?;
    // One writer per run folder, held until this function returns (or the process dies); what an
    // interrupted save left behind is removed first, under the lock, with a note.
    let locked =
        || crate::util::lock::RunLock::acquire(&job.out).and_then(|l| crate::store::checkpoint::clean_leftovers(&job.out).map(|()| l));
    let _lock = collective::lead_result(lead.then(locked), "lock the run folder", reducer)?;
    let (cfg, mut st, resumed_from) = open_state::<AD::InnerBackend>(job, &train_split, device, reducer)?;
    collective::check_same_position(st.step, st.position.iteration, st.position.batch, reducer)?;
    let model = model_config(&cfg, &train_split)?;
    if let Some(t) = &test_split {
        check_test_split(t, &model, &job.data)?;
    }
    if crate::model::precision::bf16_falls_back::<AD>(&model) {
        eprintln!(
            "note: arch.forward_dtype=bfloat16 runs in float32 on the CPU backend (bfloat16 would only be emulated there, slower); TRM_CPU_BF16=1 emulates it anyway"
        );
    }
    let plan = Plan::new(&cfg, &train_split, test_split.is_some(), reducer.rank(), reducer.world())?;
    let ropes = Ropes::<AD>::new(&model, device);
    let mut log = open_run_log(job, &cfg, &model, &st, &plan, reducer)?;
    let mut progress = Progress::new(job.quiet || !lead, plan.stop_at, st.step);
    let curriculum = depth_curriculum(&cfg, &plan, lead, job.quiet)?;
    if curriculum.as_ref().is_some_and(|c| c.stage_index(st.step + 1, plan.total) + 1 < c.stages.len()) {
        progress.starts_shallow();
    }
    let cx = StepContext { model: &model, cfg: &cfg, ropes: &ropes, device, plan: &plan, job, t0, curriculum };
    // The checkpoint resumed from is this run's last one until it writes another.
    let mut run = RunRecord { evals: Vec::new(), last_train: Metrics::default(), last_ckpt: resumed_from.clone(), interrupted: false };
    if resumed_from.is_some() && st.step >= plan.stop_at && lead {
        eprintln!(
            "note: the run is already at step {}, where it ends (max_steps / total_steps {}): nothing to train; pass max_steps=N to go on",
            st.step, plan.stop_at
        );
    }

    'outer: for iteration in st.position.iteration..plan.iterations {
        let start = if iteration == st.position.iteration { st.position } else { Position { iteration, batch: 0 } };
        st.position = start;
        for batch in prefetch(plan.sampler.iteration(start), 4) {
            if st.step >= plan.stop_at {
                break 'outer;
            }
            let t_step = Instant::now();
            let stepped = crate::util::out_of_memory::catch(|| optimiser_step(&cx, &mut st, &batch, reducer));
            let last_good = run.last_ckpt.as_deref().or(resumed_from.as_deref());
            let stop = match stepped.map_err(|oom| step_out_of_memory(&cx, st.step, last_good, oom))?? {
                Outcome::Skipped { bad, lr } => {
                    skip_or_stop(&cfg, &mut st, iteration, bad, lr, last_good, &mut log, &progress)?;
                    continue;
                }
                Outcome::Done { metrics, stop, lr } => {
                    run.last_train = metrics;
                    let seconds = t_step.elapsed().as_secs_f64();
                    log_train_step(&cx, st.step, &metrics, lr, seconds, &mut log, &mut progress)?;
                    stop
                }
            };
            if cfg.checkpoint_interval_steps > 0 && st.step % cfg.checkpoint_interval_steps == 0 {
                run.last_ckpt = Some(save(job, &mut st, &cfg, &model, &mut log, reducer)?);
            }
            if stop.interrupt {
                run.interrupted = true; // the step is done; checkpoint below
                break 'outer;
            }
            if stop.time_up {
                break 'outer;
            }
        }
        if !end_of_iteration(&cx, &mut st, iteration, test_split.as_ref(), &mut log, &progress, &mut run, reducer)? {
            break;
        }
        if st.step >= plan.stop_at {
            break;
        }
    }
    finish(&cx, &mut st, test_split.as_ref(), log, progress, run, reducer)
}

/// What stays the same over the steps of a run.
struct StepContext<'a, AD: AutodiffBackend> {
    model: &'a ModelConfig,
    cfg: &'a TrainConfig,
    ropes: &'a Ropes<AD>,
    device: &'a AD::Device,
    plan: &'a Plan,
    job: &'a TrainJob,
    t0: Instant,
    /// `depth_curriculum`: the recursion depth of each training step.
    curriculum: Option<DepthCurriculum>,
}

/// The run's depth curriculum, if it has one, refused when its schedule is too short to reach the
/// model's depth. The lead rank prints its stages (unless quiet) and warns when `max_steps` stops
/// the run before the last.
fn depth_curriculum(cfg: &TrainConfig, plan: &Plan, lead: bool, quiet: bool) -> Result<Option<DepthCurriculum>> {
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

/// What the run has produced so far.
struct RunRecord {
    evals: Vec<(u64, EvalResult)>,
    last_train: Metrics,
    last_ckpt: Option<PathBuf>,
    interrupted: bool,
}

/// The error of a training step that ran out of memory: which step, in passes of how many rows,
/// and the command that continues in smaller passes (`micro_batch_size`, the same update). The
/// step's state is given up; the run continues from its last checkpoint.
fn step_out_of_memory<AD: AutodiffBackend>(
    cx: &StepContext<AD>,
    step: u64,
    last_good: Option<&Path>,
    oom: crate::util::out_of_memory::OutOfMemory,
) -> anyhow::Error {
    let (plan, job) = (cx.plan, cx.job);
    let share = cx.cfg.global_batch_size / cx.plan.sampler.world;
    let passes = share / plan.micro_batch;
    let what = format!(
        "training step {step} ran out of memory in passes of {} rows ({passes} pass{} over this rank's {share} rows of global_batch_size {}): {}",
        plan.micro_batch,
        if passes == 1 { "" } else { "es" },
        cx.cfg.global_batch_size,
        oom.message
    );
    let Some(m) = crate::util::out_of_memory::smaller_pass(plan.micro_batch, share) else {
        return anyhow::anyhow!("{what}\neven one row at a time does not fit on this device: the model needs a device with more memory");
    };
    // The command the user ran, with its device and flags (not saved in the run), and the key.
    let key = format!("`micro_batch_size={m}` (in place of any micro_batch_size it gives)");
    let how = match last_good {
        Some(ckpt) if job.resume => format!("continue from {}: run the same command again with {key}", ckpt.display()),
        Some(ckpt) => format!("continue from {}: run the same command again with `--resume` and {key}", ckpt.display()),
        None => format!(
            "no checkpoint was written yet: run the same command again with {key}; it starts {} over \
             (trm adapt takes the key as `--set micro_batch_size={m}`)",
            job.out.display()
        ),
    };
    anyhow::anyhow!(
        "{what}\nsmaller passes need less memory for the same update (micro_batch_size; docs/gpu.md, \"Less GPU memory\"): {how}"
    )
}

/// How one optimiser step ended.
enum Outcome {
    /// The update was made; `stop` is what the ranks agreed on.
    Done { metrics: Metrics, stop: Stop, lr: f64 },
    /// The loss or the update was not finite: nothing changed.
    Skipped { bad: NonFinite, lr: f64 },
}

/// One batch: the supervision step on the carry, the stop flags and metrics summed over the
/// ranks, then the gradient step. A non-finite loss or update leaves the state as it was.
fn optimiser_step<AD: AutodiffBackend>(
    cx: &StepContext<AD>,
    st: &mut TrainState<AD::InnerBackend>,
    batch: &Batch,
    reducer: &mut dyn Reducer,
) -> Result<Outcome> {
    let (model, cfg, plan) = (cx.model, cx.cfg, cx.plan);
    // Kept to undo a skipped step (tensors are shared, so this copies no data).
    let before = st.carry.clone();
    st.step += 1;
    let carry = st.carry.take().unwrap_or_else(|| Carry::for_training(model, batch.batch_size, cx.device));
    let explore = |a: usize| Exploration::of(&model.arch, cfg.seed, st.step, plan.first_row + a);
    let decay = (cfg.supervision_decay != 1.0).then_some(cfg.supervision_decay);
    let rows = MicroBatches { size: plan.micro_batch, global: cfg.global_batch_size, supervision_decay: decay };
    // The depth this step trains at (the model's own unless a curriculum says shallower).
    let staged = cx.curriculum.as_ref().map(|c| c.model_at(model, st.step, plan.total));
    let (metrics, grads, carry) =
        micro_batch_step::<AD>(staged.as_ref().unwrap_or(model), &st.params, st.table.as_ref(), carry, batch, cx.ropes, explore, rows);
    st.carry = Some(carry);
    let local_stop =
        Stop { interrupt: crate::util::interrupt::requested(), time_up: cx.job.time_limit.is_some_and(|l| cx.t0.elapsed() >= l) };
    let (metrics, stop) = collective::reduce_step(metrics, local_stop, reducer)?;
    let h = step_hyper(cfg, st.step, plan.total);
    let mut bad = guard::nonfinite_loss(&metrics, model.arch.continue_target());
    if bad.is_none() {
        let learner = Learner { params: &mut st.params, table: &mut st.table, adam: &mut st.adam, ema: st.ema.as_deref_mut() };
        bad = apply_gradients(learner, grads, &h, reducer)?;
    }
    if let Some(bad) = bad {
        st.carry = before;
        st.step -= 1;
        return Ok(Outcome::Skipped { bad, lr: h.adam.lr });
    }
    st.position.batch += 1;
    Ok(Outcome::Done { metrics, stop, lr: h.adam.lr })
}

/// The optimiser's settings at `step` (learning rates warmed up and decayed over `total`).
fn step_hyper(cfg: &TrainConfig, step: u64, total: u64) -> StepHyper {
    StepHyper {
        adam: AdamHyper {
            lr: lr_at(step, cfg.lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio),
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            weight_decay: cfg.weight_decay,
            kind: cfg.optimizer,
        },
        puzzle_lr: lr_at(step, cfg.puzzle_emb_lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio),
        puzzle_weight_decay: cfg.puzzle_emb_weight_decay,
        ema_rate: cfg.ema_rate,
        freeze_weights: cfg.freeze_weights,
    }
}

/// A batch whose loss or update was not finite: skipped while `skip_nonfinite_batches` allows,
/// else the run stops with the divergence message (naming the last good checkpoint).
fn skip_or_stop<B: burn::prelude::Backend>(
    cfg: &TrainConfig,
    st: &mut TrainState<B>,
    iteration: u64,
    (what, value): NonFinite,
    lr: f64,
    last_good: Option<&Path>,
    log: &mut Option<MetricsLog>,
    progress: &Progress,
) -> Result<()> {
    if st.skipped < cfg.skip_nonfinite_batches {
        st.skipped += 1;
        st.position.batch += 1;
        progress.println(format!(
            "warning: skipped batch {} of iteration {iteration} (step {}): the {what} is {value} ({} of skip_nonfinite_batches={} skipped)",
            st.position.batch,
            st.step + 1,
            st.skipped,
            cfg.skip_nonfinite_batches
        ));
        if let Some(log) = log.as_mut() {
            log.log(st.step + 1, "skipped", &[("skipped_batches", st.skipped as f64)])?;
        }
        return Ok(());
    }
    flush(log)?;
    progress.finish();
    bail!(guard::divergence_message(st.step + 1, what, value, last_good, lr))
}

/// The step's metrics, per example, to the log and the progress display, with the step's wall
/// time (`seconds`) and the memory peaks (`system_figures`).
fn log_train_step<AD: AutodiffBackend>(
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

/// The end of an iteration: evaluation (from `min_eval_interval` on) and a checkpoint. False when
/// a stop request came during the evaluation (a resume runs it again).
fn end_of_iteration<AD: AutodiffBackend>(
    cx: &StepContext<AD>,
    st: &mut TrainState<AD::InnerBackend>,
    iteration: u64,
    test: Option<&Arc<Split>>,
    log: &mut Option<MetricsLog>,
    progress: &Progress,
    run: &mut RunRecord,
    reducer: &mut dyn Reducer,
) -> Result<bool> {
    let end_of_batches = st.position;
    st.position = Position { iteration: iteration + 1, batch: 0 };
    if (iteration as usize) < cx.cfg.min_eval_interval {
        return Ok(true);
    }
    if let Some(test) = test {
        let Some(r) = eval_and_log(cx.model, cx.cfg, st, test, &cx.job.data, &cx.job.out, log.as_mut(), reducer)? else {
            st.position = end_of_batches;
            run.interrupted = true;
            return Ok(false);
        };
        progress.println(format!(
            "eval @ step {}: token accuracy {:.4}, exact accuracy {:.4} (95% CI {:.4}-{:.4}) on {} examples",
            st.step, r.accuracy, r.exact_accuracy, r.exact_accuracy_ci95.0, r.exact_accuracy_ci95.1, r.count
        ));
        run.evals.push((st.step, r));
        st.evaluated_step = Some(st.step);
    }
    if cx.cfg.checkpoint_every_eval || iteration + 1 == cx.plan.iterations {
        run.last_ckpt = Some(save(cx.job, st, cx.cfg, cx.model, log, reducer)?);
    }
    Ok(true)
}

/// After the loop: a run cut short by max_steps still ends with an evaluation of its final
/// weights; an interrupted one checkpoints and says how to resume; every run ends checkpointed.
fn finish<AD: AutodiffBackend>(
    cx: &StepContext<AD>,
    st: &mut TrainState<AD::InnerBackend>,
    test: Option<&Arc<Split>>,
    mut log: Option<MetricsLog>,
    progress: Progress,
    mut run: RunRecord,
    reducer: &mut dyn Reducer,
) -> Result<TrainSummary> {
    let (job, model, cfg) = (cx.job, cx.model, cx.cfg);
    let mut evaluated = false;
    // Not when this step's evaluation is logged already (by the loop, or before the checkpoint a
    // resumed run started from).
    if let (Some(test), false, false) = (test, run.interrupted, st.evaluated_step == Some(st.step)) {
        match eval_and_log(model, cfg, st, test, &job.data, &job.out, log.as_mut(), reducer)? {
            Some(r) => {
                run.evals.push((st.step, r));
                st.evaluated_step = Some(st.step);
                evaluated = true;
            }
            None => run.interrupted = true,
        }
    }
    if run.interrupted {
        let at = save(job, st, cfg, model, &mut log, reducer)?;
        progress.finish();
        return Err(crate::util::interrupt::Interrupted(format!(
            "interrupted at step {}: checkpoint written to {}; continue with `trm train --data {} --out {} --resume`",
            st.step,
            at.display(),
            job.data.display(),
            job.out.display()
        ))
        .into());
    }
    // A checkpoint of this step already written stands, unless the final evaluation was logged
    // after it: its log mark must include that, or a resume would cut it. (Every rank knows both,
    // so all of them take part in the save, a collective, or none.)
    flush(&mut log)?;
    if run.last_ckpt.as_ref().is_none_or(|p| !p.ends_with(format!("step_{:08}", st.step))) || evaluated {
        run.last_ckpt = Some(save(job, st, cfg, model, &mut log, reducer)?);
    }
    progress.finish();
    Ok(TrainSummary {
        steps: st.step,
        last_train: run.last_train,
        evals: run.evals,
        seconds: cx.t0.elapsed().as_secs_f64(),
        checkpoint: run.last_ckpt,
    })
}

/// Flushes the logs and says how far they reach.
fn flush(log: &mut Option<MetricsLog>) -> Result<Option<LogMark>> {
    log.as_mut()
        .map(|l| {
            l.flush()?;
            l.mark()
        })
        .transpose()
}

/// Writes a checkpoint of `st` with how far the logs reach (`LogMark`), so that a run resumed
/// from it cuts them back to exactly there.
fn save<B: burn::prelude::Backend>(
    job: &TrainJob,
    st: &mut TrainState<B>,
    cfg: &TrainConfig,
    model: &ModelConfig,
    log: &mut Option<MetricsLog>,
    reducer: &mut dyn Reducer,
) -> Result<PathBuf> {
    st.log_mark = flush(log)?;
    collective::save(&job.out, st, cfg, model, reducer)
}

/// Rank 0 writes the run's config, its identifier map and opens the logs (cut back to the
/// checkpoint's step on a resume); a new run's first record says its size.
fn open_run_log<B: burn::prelude::Backend>(
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
