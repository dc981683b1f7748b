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
use super::evaluation::eval_and_log;
use super::logging::MetricsLog;
use super::plan::{Plan, depth_curriculum};
use super::progress::Progress;
use super::records::{log_train_step, open_run_log};
use super::setup::{StepContext, check_test_split, model_config, open_state, read_splits};
use crate::data::format::Split;
use crate::data::loader::{Batch, Position, prefetch};
use crate::eval::evaluate::EvalResult;
use crate::model::act::{Carry, Exploration};
use crate::model::config::ModelConfig;
use crate::parallel::{Reducer, Single};
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
    /// The step the run is at: its last step trained, in this process or before it.
    pub steps: u64,
    /// The step this process started from (0 for a new run, the checkpoint's step on --resume).
    pub started_at: u64,
    pub last_train: Metrics,
    pub evals: Vec<(u64, EvalResult)>,
    pub seconds: f64,
    pub checkpoint: Option<PathBuf>,
    /// Its ARC scores are those of a pool of every evaluation's votes (`aggregated_voting`).
    pub arc_pooled: bool,
    /// Batches the divergence guard skipped over the whole run (`skip_nonfinite_batches`).
    pub skipped: u64,
}

impl TrainSummary {
    /// The steps this process trained.
    pub fn trained(&self) -> u64 {
        self.steps - self.started_at
    }
}

/// Runs (or resumes) a training job in this process alone.
pub fn train<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device) -> Result<TrainSummary> {
    train_with::<AD>(job, device, &mut Single)
}

/// Runs (or resumes) a training job on backend `AD` as one rank of `reducer`'s group (`Single`
/// for one process). Every rank gets the same job; rank 0 writes the run folder.
pub fn train_with<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device, reducer: &mut dyn Reducer) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let lead = reducer.rank() == 0;
    let (train_split, test_split) = read_splits(&job.data, lead)?;
    // One writer per run folder, held until this function returns (or the process dies); what an
    // interrupted save left behind is removed first, under the lock, with a note.
    let locked =
        || crate::util::lock::RunLock::acquire(&job.out).and_then(|l| crate::store::checkpoint::clean_leftovers(&job.out).map(|()| l));
    let _lock = collective::lead_result(lead.then(locked), "lock the run folder", reducer)?;
    let (cfg, mut st, resumed_from) = open_state::<AD::InnerBackend>(job, &train_split, test_split.as_deref(), device, reducer)?;
    collective::check_same_position(st.step, st.position.iteration, st.position.batch, reducer)?;
    let model = model_config(&cfg, &train_split)?;
    if let Some(t) = &test_split {
        check_test_split(t, &model, &job.data)?;
        if lead && !job.quiet && !cfg.eval_save_outputs.is_empty() {
            let keys = crate::store::eval_outputs::Output::parse(&cfg.eval_save_outputs, "eval_save_outputs")?;
            let per = crate::store::eval_outputs::Recorder::new(keys, model.seq_len, model.vocab_size).bytes_per_example();
            let examples = cfg.eval_max_examples.map_or(t.num_examples(), |m| m.min(t.num_examples())).div_ceil(reducer.world());
            eprintln!(
                "note: eval_save_outputs: each evaluation keeps the outputs of {examples} examples in memory until it writes them to \
                 step_<N>_all_preds.{{rank}} (about {} a rank; not counted by the memory check)",
                super::memory_check::size((examples * per) as u64)
            );
        }
    }
    if crate::model::precision::bf16_falls_back::<AD>(&model) {
        eprintln!(
            "note: arch.forward_dtype=bfloat16 runs in float32 on the CPU backend (bfloat16 would only be emulated there, slower); TRM_CPU_BF16=1 emulates it anyway"
        );
    }
    let plan = Plan::new(&cfg, &train_split, test_split.is_some(), reducer.rank(), reducer.world())?;
    if let (Some(order), true) = (&plan.sampler.recorded, lead) {
        eprintln!(
            "replaying the recorded batch order {} ({} iterations)",
            cfg.batch_order.as_deref().unwrap_or_default(),
            order.iterations.len()
        );
    }
    let curriculum = depth_curriculum(&cfg, &plan, lead, job.quiet)?;
    // Once the configuration, the folder and the state are known to be good, and before the run
    // writes anything: its state (weights, puzzle table, a resumed carry) is in memory by now, so
    // what it needs on top is what the check counts.
    if job.memory_check {
        // A resumed run at its last step trains nothing, and evaluates only when that step's
        // evaluation is not logged yet (`finish`).
        let trains = st.step < plan.stop_at;
        let test = test_split.as_deref().filter(|_| trains || !step_evaluated(&st, &cfg));
        super::memory_check::check::<AD>(&cfg, &model, trains, test, reducer.world(), resumed_from.is_some(), st.carry.is_none())?;
    }
    let ropes = Ropes::<AD>::new(&model, device);
    let mut log = open_run_log(job, &cfg, &model, &st, &plan, reducer)?;
    let mut progress = Progress::new(job.quiet || !lead, plan.stop_at, st.step);
    if curriculum.as_ref().is_some_and(|c| c.stage_index(st.step + 1, plan.total) + 1 < c.stages.len()) {
        progress.starts_shallow();
    }
    let cx = StepContext { model: &model, cfg: &cfg, ropes: &ropes, device, plan: &plan, job, t0, started_at: st.step, curriculum };
    // The checkpoint resumed from is this run's last one until it writes another.
    let mut run = RunRecord {
        evals: Vec::new(),
        last_train: Metrics::default(),
        last_ckpt: resumed_from.clone(),
        evaluated_since_save: false,
        interrupted: false,
    };
    if resumed_from.is_some() && st.step >= plan.stop_at && lead {
        eprintln!(
            "note: the run is already at step {}, where it ends (max_steps / total_steps {}): nothing to train; pass max_steps=N to go on",
            st.step, plan.stop_at
        );
    }

    'outer: for iteration in st.position.iteration..plan.iterations {
        let start = if iteration == st.position.iteration { st.position } else { Position { iteration, batch: 0 } };
        st.position = start;
        let mut batches = prefetch(plan.sampler.iteration(start), 4).peekable();
        while let Some(batch) = batches.next() {
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
                    log_train_step(&cx, st.step, &metrics, lr, seconds, &mut log, &mut progress)
                        .map_err(|e| stopped_writing(e, st.step, last_good, job))?;
                    stop
                }
            };
            if cfg.checkpoint_interval_steps > 0 && st.step % cfg.checkpoint_interval_steps == 0 {
                let saved = save(job, &mut st, &cfg, &model, &mut log, reducer).map_err(|e| stopped_writing(e, st.step, last_good, job))?;
                run.saved(saved);
            }
            if stop.interrupt {
                run.interrupted = true; // the step is done; checkpoint below
                break 'outer;
            }
            if stop.time_up {
                // On an iteration's last batch the run ends as an uninterrupted one goes on: with
                // the iteration's scheduled evaluation, whose ARC votes join the pool.
                if batches.peek().is_none() {
                    end_of_iteration(&cx, &mut st, iteration, test_split.as_ref(), &mut log, &progress, &mut run, reducer)?;
                }
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

/// What the run has produced so far.
struct RunRecord {
    evals: Vec<(u64, EvalResult)>,
    last_train: Metrics,
    last_ckpt: Option<PathBuf>,
    /// An evaluation was logged after the newest checkpoint (also the one resumed from).
    evaluated_since_save: bool,
    interrupted: bool,
}

impl RunRecord {
    /// Whether the newest checkpoint is of `step`.
    fn saved_at(&self, step: u64) -> bool {
        self.last_ckpt.as_ref().is_some_and(|p| p.ends_with(format!("step_{step:08}")))
    }
    /// Whether the newest checkpoint holds all the run has done at `step`: it is of that step,
    /// and no evaluation was logged after it (its log mark, evaluated step and ARC vote pool
    /// would leave that evaluation out, and a resume would cut it and run it again).
    fn up_to_date(&self, step: u64) -> bool {
        self.saved_at(step) && !self.evaluated_since_save
    }
    fn saved(&mut self, at: PathBuf) {
        self.last_ckpt = Some(at);
        self.evaluated_since_save = false;
    }
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

/// A log or checkpoint that could not be written (a full disk) ends the run: what is intact, and
/// how to go on.
fn stopped_writing(e: anyhow::Error, step: u64, last_good: Option<&Path>, job: &TrainJob) -> anyhow::Error {
    let how = match last_good {
        Some(ckpt) => format!("its checkpoint {} is intact: free space, then continue with `--resume`", ckpt.display()),
        None => format!("no checkpoint was written yet: free space, then run the same command again ({} starts over)", job.out.display()),
    };
    e.context(format!("the run stopped at step {step}: {how}"))
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
        progress.note(format!(
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
    if let Some(test) = test.filter(|_| !step_evaluated(st, cx.cfg)) {
        let Some(r) = eval_and_log(cx.model, cx.cfg, st, test, &cx.job.data, &cx.job.out, log.as_mut(), reducer, true)? else {
            st.position = end_of_batches;
            run.interrupted = true;
            return Ok(false);
        };
        progress.note(format!(
            "eval @ step {}: token accuracy {:.4}, exact accuracy {:.4} (95% CI {:.4}-{:.4}) on {} examples{}",
            st.step,
            r.accuracy,
            r.exact_accuracy,
            r.exact_accuracy_ci95.0,
            r.exact_accuracy_ci95.1,
            r.count,
            arc_summary(&r, st.arc_votes.is_some())
        ));
        run.evals.push((st.step, r));
        st.evaluated_step = Some(st.step);
        st.evaluated_off_schedule = false;
        run.evaluated_since_save = true;
    }
    // A checkpoint of this step stands unless an evaluation was logged after it (as in `finish`).
    if (cx.cfg.checkpoint_every_eval || iteration + 1 == cx.plan.iterations) && !run.up_to_date(st.step) {
        run.saved(save(cx.job, st, cx.cfg, cx.model, log, reducer)?);
    }
    Ok(true)
}

/// The iteration's evaluation of the current step is logged already, so its end evaluates
/// nothing. A resumed run may find it so: off the schedule, by a run stopped before the
/// iteration's end whose remaining batches are then all skipped as non-finite, or by an older trm
/// stopped on the iteration's last batch. That evaluation stands for the iteration's (the same
/// weights), except that its ARC votes were not pooled: a run that pools them evaluates again, so
/// that its pool is an uninterrupted run's. (A checkpoint of an older trm does not say, and counts
/// as on the schedule.) Every rank decides alike: the configuration and the state are theirs all.
fn step_evaluated<B: burn::prelude::Backend>(st: &TrainState<B>, cfg: &TrainConfig) -> bool {
    st.evaluated_step == Some(st.step) && !(st.evaluated_off_schedule && cfg.pools_arc_votes())
}

/// `; ARC pass@2 X` (the first k listed when 2 is not), and whose votes those are, for the
/// evaluation line; empty without an ARC score.
pub fn arc_summary(r: &EvalResult, pooled: bool) -> String {
    let Some(s) = &r.arc else { return String::new() };
    let Some((k, v)) = s.at(2).map(|v| (2, v)).or_else(|| s.pass_at.first().copied()) else { return String::new() };
    let whose = if pooled { "the votes of every evaluation so far" } else { "this evaluation's votes" };
    format!("; ARC pass@{k} {v:.4} ({whose})")
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
    // Not when this step's evaluation is logged already (by the loop, or before the checkpoint a
    // resumed run started from).
    if let (Some(test), false, false) = (test, run.interrupted, st.evaluated_step == Some(st.step)) {
        // Off the schedule (a run stopped between evaluations): its ARC votes are not pooled.
        match eval_and_log(model, cfg, st, test, &job.data, &job.out, log.as_mut(), reducer, false)? {
            Some(r) => {
                run.evals.push((st.step, r));
                st.evaluated_step = Some(st.step);
                st.evaluated_off_schedule = true;
                run.evaluated_since_save = true;
            }
            None => run.interrupted = true,
        }
    }
    if run.interrupted {
        let at = save(job, st, cfg, model, &mut log, reducer).map_err(|e| stopped_writing(e, st.step, run.last_ckpt.as_deref(), job))?;
        progress.finish();
        let resume = format!("train --data {} --out {} --resume{}", job.data.display(), job.out.display(), job.engine_flags);
        let how = match reducer.world() {
            1 => format!("`trm {resume}`"),
            n => format!("the launcher that started its {n} ranks, giving them `{resume}`"),
        };
        return Err(crate::util::interrupt::Interrupted(format!(
            "interrupted at step {}: checkpoint written to {}; continue with {how}",
            st.step,
            at.display()
        ))
        .into());
    }
    // A checkpoint of this step already written stands, unless an evaluation (this one, or the
    // iteration's own when no scheduled checkpoint followed it) was logged after it: its log
    // mark must include that, or a resume would cut it. (Every rank knows both, so all of them
    // take part in the save, a collective, or none.)
    flush(&mut log)?;
    if !run.up_to_date(st.step) {
        let saved = save(job, st, cfg, model, &mut log, reducer).map_err(|e| stopped_writing(e, st.step, run.last_ckpt.as_deref(), job))?;
        run.saved(saved);
    }
    progress.finish();
    Ok(TrainSummary {
        steps: st.step,
        started_at: cx.started_at,
        last_train: run.last_train,
        evals: run.evals,
        seconds: cx.t0.elapsed().as_secs_f64(),
        checkpoint: run.last_ckpt,
        arc_pooled: st.arc_votes.is_some(),
        skipped: st.skipped,
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
