//! The training loop (the reference's `pretrain.py` main loop):
//!
//! ```text
//! for iteration in 0..epochs/eval_interval:          # one iteration = eval_interval epochs
//!     for batch in loader(iteration):                # one batch = one ACT step = one optimiser step
//!         loss = supervision step on the persistent carry (this rank's rows of the batch)
//!         metrics and stop flags summed over the ranks; non-finite loss -> stop or skip
//!         backward(loss / global_batch); update::apply_gradients (exchange, guard, sign-SGD,
//!         AdamATan2, EMA); log; checkpoint every `checkpoint_interval_steps`
//!     evaluate (EMA weights if enabled) on the test split; log; checkpoint
//! ```
//! Everything that changes is in `TrainState` and saved by `checkpoint::save`, so a run killed at
//! any moment resumes with `--resume` exactly where its last checkpoint stood. With several ranks
//! (`dist`), each runs this loop on its share of every batch; the collectives are in
//! `collective.rs` and `update.rs`, and only rank 0 writes.

use super::collective::{self, Stop};
use super::guard;
use super::logging::MetricsLog;
use super::loss::Metrics;
use super::optim::{AdamHyper, lr_at};
use super::setup::{check_test_split, eval_and_log, model_config, open_state, read_splits};
use super::step::{Ropes, train_forward};
use super::update::{Learner, LocalGrads, StepHyper, apply_gradients};
use crate::data::format;
use crate::data::loader::{Position, RecordedOrder, TrainSampler, prefetch, total_steps};
use crate::dist::{Reducer, Single};
use crate::eval::evaluate::EvalResult;
use crate::model::act::{Carry, Exploration};
use crate::model::weights::Weights;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
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
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() { eprintln!("{line}") } else { pb.println(line) }
}

/// Steps timed before the trainer prints its estimate of the time left.
const ESTIMATE_AFTER: u64 = 20;

/// Runs (or resumes) a training job in this process alone.
pub fn train<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device) -> Result<TrainSummary> {
    train_with::<AD>(job, device, &mut Single)
}

/// Runs (or resumes) a training job on backend `AD` as one rank of `reducer`'s group (`Single`
/// for one process). Every rank gets the same job; rank 0 writes the run folder.
pub fn train_with<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device, reducer: &mut dyn Reducer) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let (rank, world) = (reducer.rank(), reducer.world());
    let lead = rank == 0;
    let (train_split, test_split) = read_splits(&job.data)?;
    // One writer per run folder, held until this function returns (or the process dies).
    // What an interrupted save left behind is removed first (under the lock), with a note.
    let locked = || crate::util::lock::RunLock::acquire(&job.out).and_then(|l| super::checkpoint::clean_leftovers(&job.out).map(|()| l));
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

    let g = cfg.global_batch_size;
    anyhow::ensure!(g.is_multiple_of(world), "global_batch_size {g} does not split over {world} ranks: make it a multiple of {world}");
    let b = g / world;
    let sampler = TrainSampler {
        split: train_split.clone(),
        global_batch: g,
        rank,
        world,
        seed: cfg.seed,
        epochs_per_iter: cfg.epochs_per_iter(),
        recorded: None,
    };
    let iterations = (cfg.epochs / cfg.epochs_per_iter()) as u64;
    let sampler = match &cfg.batch_order {
        None => sampler,
        Some(path) => {
            let rec = RecordedOrder::read(Path::new(path), &train_split, g).with_context(|| format!("batch_order = {path}"))?;
            anyhow::ensure!(
                rec.iterations.len() as u64 >= iterations,
                "batch_order {path} records {} iterations; this run has {iterations}",
                rec.iterations.len()
            );
            eprintln!("replaying the recorded batch order {path} ({} iterations)", rec.iterations.len());
            TrainSampler { recorded: Some(Arc::new(rec)), ..sampler }
        }
    };
    let total = total_steps(&train_split, cfg.epochs, g);
    let per_iteration = sampler.batches_per_iteration();
    if total == 0 || per_iteration == 0 {
        let m = &train_split.metadata;
        bail!(
            "this run would take 0 optimiser steps: global_batch_size={g} is larger than the {} examples that one iteration ({} epoch(s)) of {} puzzle groups gives; lower global_batch_size or raise eval_interval/epochs",
            (cfg.epochs_per_iter() as f64 * m.total_groups as f64 * m.mean_puzzle_examples) as u64,
            cfg.epochs_per_iter(),
            m.total_groups
        );
    }
    let stop_at = cfg.max_steps.map_or(total, |m| m.min(total));
    let ropes = Ropes::<AD>::new(&model, device);
    if test_split.is_some() && world > 1 {
        let eb = cfg.eval_batch_size.unwrap_or(g);
        anyhow::ensure!(eb.is_multiple_of(world), "eval_batch_size {eb} does not split over {world} ranks: make it a multiple of {world}");
    }
    // Only rank 0 writes: the config, the identifier map, the logs.
    let open_run = || -> Result<MetricsLog> {
        crate::util::fs::write_atomic(&job.out.join("config.toml"), cfg.to_toml().as_bytes())?;
        if let Ok(ids) = format::read_identifiers(&job.data) {
            crate::util::fs::write_json(&job.out.join("identifiers.json"), &ids)?;
        }
        MetricsLog::open(&job.out, job.resume.then_some(st.step))
    };
    let mut log = collective::lead_result(lead.then(open_run), "write the run folder", reducer)?;
    if let (Some(log), 0) = (log.as_mut(), st.step) {
        let n = Weights::from_named(&model, st.params.clone())?.num_params();
        log.log(0, "info", &[("num_params", n as f64), ("total_steps", total as f64), ("world_size", world as f64)])?;
    }
    let flush = |log: &mut Option<MetricsLog>| log.as_mut().map_or(Ok(()), |l| l.flush());
    let hyper = |step: u64| AdamHyper {
        lr: lr_at(step, cfg.lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio),
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        weight_decay: cfg.weight_decay,
        kind: cfg.optimizer,
    };
    let pb = if job.quiet || !lead { ProgressBar::hidden() } else { ProgressBar::new(stop_at) };
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps, eta {eta} {msg}").unwrap().progress_chars("=> "),
    );
    pb.set_position(st.step);
    let mut evals = Vec::new();
    let mut last_train = Metrics::default();
    let mut last_ckpt = None;
    let mut interrupted = false;
    let (mut window_rows, mut window_t) = (0usize, Instant::now());
    let (first_step, t_first) = (st.step, Instant::now());

    'outer: for iteration in st.position.iteration..iterations {
        let start = if iteration == st.position.iteration { st.position } else { Position { iteration, batch: 0 } };
        st.position = start;
        for batch in prefetch(sampler.iteration(start), 4) {
            if st.step >= stop_at {
                break 'outer;
            }
            // Kept to undo a skipped step (tensors are shared, so this copies no data).
            let before = st.carry.clone();
            st.step += 1;
            let carry = st.carry.get_or_insert_with(|| Carry::new(&model, batch.batch_size, device));
            let explore = Exploration { prob: model.arch.halt_exploration_prob, seed: cfg.seed, step: st.step, first_row: rank * b };
            let (loss, _out, leaves) = train_forward::<AD>(&model, &st.params, st.table.as_ref(), carry, &batch, &ropes, explore);
            let local_stop =
                Stop { interrupt: crate::util::interrupt::requested(), time_up: job.time_limit.is_some_and(|l| t0.elapsed() >= l) };
            let (m, stop) = collective::reduce_step(loss.metrics, local_stop, reducer)?;
            let h = hyper(st.step);
            let step_h = StepHyper {
                adam: h,
                puzzle_lr: lr_at(st.step, cfg.puzzle_emb_lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio),
                puzzle_weight_decay: cfg.puzzle_emb_weight_decay,
                ema_rate: cfg.ema_rate,
                freeze_weights: cfg.freeze_weights,
            };
            let mut bad = guard::nonfinite_loss(&m, model.arch.continue_target());
            if bad.is_none() {
                let grads = (loss.total.clone() / g as f64).backward();
                let (pgrads, puzzle_grad) = leaves.grads(&grads);
                let ids = carry.puzzle_ids.clone();
                let local = LocalGrads { params: pgrads, puzzle: puzzle_grad.map(|p| (ids, crate::backend::to_host_f32(&p))) };
                let learner = Learner { params: &mut st.params, table: &mut st.table, adam: &mut st.adam, ema: st.ema.as_deref_mut() };
                bad = apply_gradients(learner, local, &step_h, reducer)?;
            }
            if let Some((what, value)) = bad {
                st.carry = before;
                st.step -= 1;
                if st.skipped < cfg.skip_nonfinite_batches {
                    st.skipped += 1;
                    st.position.batch += 1;
                    pb.println(format!(
                        "warning: skipped batch {} of iteration {iteration} (step {}): the {what} is {value} ({} of skip_nonfinite_batches={} skipped)",
                        st.position.batch,
                        st.step + 1,
                        st.skipped,
                        cfg.skip_nonfinite_batches
                    ));
                    if let Some(log) = log.as_mut() {
                        log.log(st.step + 1, "skipped", &[("skipped_batches", st.skipped as f64)])?;
                    }
                    continue;
                }
                flush(&mut log)?;
                pb.finish_and_clear();
                bail!(guard::divergence_message(st.step + 1, what, value, last_ckpt.as_deref().or(resumed_from.as_deref()), h.lr));
            }
            st.position.batch += 1;

            last_train = m;
            let n = m.count.max(1.0);
            window_rows += g;
            let mut vals = vec![
                ("lm_loss", m.lm_loss / g as f64),
                ("q_halt_loss", m.q_halt_loss / g as f64),
                ("accuracy", m.accuracy / n),
                ("exact_accuracy", m.exact_accuracy / n),
                ("q_halt_accuracy", m.q_halt_accuracy / n),
                ("steps", m.steps / n),
                ("count", m.count),
                ("lr", h.lr),
            ];
            if model.arch.continue_target() {
                vals.push(("q_continue_loss", m.q_continue_loss / g as f64));
            }
            if let Some(log) = log.as_mut() {
                log.log(st.step, "train", &vals)?;
            }
            pb.set_position(st.step);
            if st.step == first_step + ESTIMATE_AFTER && stop_at > st.step && !job.quiet && lead {
                // One line early on: what this machine takes per step, and for the rest.
                let per = t_first.elapsed().as_secs_f64() / ESTIMATE_AFTER as f64;
                say(
                    &pb,
                    format!(
                        "about {per:.2} s per step on this machine: about {:.1} minutes for the {} steps left",
                        per * (stop_at - st.step) as f64 / 60.0,
                        stop_at - st.step
                    ),
                );
            }
            if pb.is_hidden() && !job.quiet && lead && stop_at >= 10 && st.step % (stop_at / 10) == 0 {
                // No terminal for the bar (a log file, CI): a line every tenth of the run.
                let per = t_first.elapsed().as_secs_f64() / (st.step - first_step).max(1) as f64;
                eprintln!(
                    "step {}/{stop_at}: {per:.2} s per step, about {:.1} minutes left; lm_loss {:.4}, exact accuracy {:.3}",
                    st.step,
                    per * (stop_at - st.step) as f64 / 60.0,
                    vals[0].1,
                    vals[3].1
                );
            }
            if st.step % 10 == 0 || st.step == 1 {
                let rate = window_rows as f64 / window_t.elapsed().as_secs_f64().max(1e-9);
                pb.set_message(format!("loss {:.4} acc {:.3} exact {:.3} | {:.0} ex/s", vals[0].1, vals[2].1, vals[3].1, rate));
                (window_rows, window_t) = (0, Instant::now());
            }
            if cfg.checkpoint_interval_steps > 0 && st.step % cfg.checkpoint_interval_steps == 0 {
                flush(&mut log)?;
                last_ckpt = Some(collective::save(&job.out, &st, &cfg, &model, reducer)?);
            }
            if stop.interrupt {
                interrupted = true; // the step is done; checkpoint below
                break 'outer;
            }
            if stop.time_up {
                break 'outer;
            }
        }
        // End of an iteration: evaluation + checkpoint.
        let end_of_batches = st.position;
        st.position = Position { iteration: iteration + 1, batch: 0 };
        if iteration as usize >= cfg.min_eval_interval {
            if let Some(test) = &test_split {
                let Some(r) = eval_and_log(&model, &cfg, &st, test, &job.data, &job.out, log.as_mut(), reducer)? else {
                    // Stopped inside the evaluation: a resume runs it again.
                    st.position = end_of_batches;
                    interrupted = true;
                    break;
                };
                pb.println(format!(
                    "eval @ step {}: token accuracy {:.4}, exact accuracy {:.4} (95% CI {:.4}-{:.4}) on {} examples",
                    st.step, r.accuracy, r.exact_accuracy, r.exact_accuracy_ci95.0, r.exact_accuracy_ci95.1, r.count
                ));
                evals.push((st.step, r));
            }
            if cfg.checkpoint_every_eval || iteration + 1 == iterations {
                flush(&mut log)?;
                last_ckpt = Some(collective::save(&job.out, &st, &cfg, &model, reducer)?);
            }
        }
        if st.step >= stop_at {
            break;
        }
    }
    // A run cut short by max_steps still ends with an evaluation of its final weights.
    if let (Some(test), false, false) = (&test_split, interrupted, evals.last().is_some_and(|(s, _)| *s == st.step)) {
        match eval_and_log(&model, &cfg, &st, test, &job.data, &job.out, log.as_mut(), reducer)? {
            Some(r) => evals.push((st.step, r)),
            None => interrupted = true,
        }
    }
    if interrupted {
        flush(&mut log)?;
        let at = collective::save(&job.out, &st, &cfg, &model, reducer)?;
        pb.finish_and_clear();
        return Err(crate::util::interrupt::Interrupted(format!(
            "interrupted at step {}: checkpoint written to {}; continue with `trm train --data {} --out {} --resume`",
            st.step,
            at.display(),
            job.data.display(),
            job.out.display()
        ))
        .into());
    }
    flush(&mut log)?;
    if last_ckpt.as_ref().is_none_or(|p| !p.ends_with(format!("step_{:08}", st.step))) {
        last_ckpt = Some(collective::save(&job.out, &st, &cfg, &model, reducer)?);
    }
    pb.finish_and_clear();
    Ok(TrainSummary { steps: st.step, last_train, evals, seconds: t0.elapsed().as_secs_f64(), checkpoint: last_ckpt })
}
