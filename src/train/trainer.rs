//! The training loop (the reference's `pretrain.py` main loop):
//!
//! ```text
//! for iteration in 0..epochs/eval_interval:          # one iteration = eval_interval epochs
//!     for batch in loader(iteration):                # one batch = one ACT step = one optimiser step
//!         loss = supervision step on the persistent carry
//!         backward(loss / global_batch); sign-SGD on the batch's puzzle rows; AdamATan2 on weights
//!         EMA update; log; checkpoint every `checkpoint_interval_steps`
//!     evaluate (EMA weights if enabled) on the test split; log; checkpoint
//! ```
//! Everything that changes is in `TrainState` and saved by `checkpoint::save`, so a run killed at
//! any moment resumes with `--resume` exactly where its last checkpoint stood.

use super::checkpoint::{self, TrainState};
use super::config::TrainConfig;
use super::guard;
use super::integrity;
use super::logging::MetricsLog;
use super::loss::Metrics;
use super::optim::{AdamHyper, AdamState, adam_step, ema_update, lr_at, sign_sgd_rows};
use super::step::{Ropes, train_forward};
use crate::data::format::{self, Split};
use crate::data::loader::{Position, RecordedOrder, TrainSampler, prefetch, total_steps};
use crate::eval::arc_vote::ArcEval;
use crate::eval::evaluate::{EvalResult, evaluate};
use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::model::weights::{self, Weights};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What `train` was asked to do.
pub struct TrainJob {
    pub config: TrainConfig,
    pub data: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// The KEY=VALUE overrides as given. A resumed run applies them to its checkpoint's config
    /// where that is safe and refuses the others (`config::resume_config`); `config` is then
    /// not used.
    pub overrides: Vec<String>,
    /// Print no progress bar (tests, CI logs).
    pub quiet: bool,
    /// Start from these weights (fine-tuning / adaptation): a model.safetensors file.
    pub init_from: Option<PathBuf>,
    /// Stop (then evaluate and checkpoint) after this much wall time.
    pub time_limit: Option<std::time::Duration>,
}

/// Summary of a finished run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub last_train: Metrics,
    pub evals: Vec<(u64, EvalResult)>,
    pub seconds: f64,
    pub checkpoint: Option<PathBuf>,
}

/// The model configuration for a data set.
pub fn model_config(cfg: &TrainConfig, split: &Split) -> Result<ModelConfig> {
    let m = ModelConfig {
        arch: cfg.arch.clone(),
        seq_len: split.metadata.seq_len,
        vocab_size: split.metadata.vocab_size,
        num_puzzle_identifiers: split.metadata.num_puzzle_identifiers,
    };
    m.validate()?;
    Ok(m)
}

fn fresh_state<B: Backend>(cfg: &TrainConfig, model: &ModelConfig, device: &B::Device, init_from: Option<&Path>) -> Result<TrainState<B>> {
    let mut rng = crate::util::rng::derive(cfg.seed, &[7]);
    let (params, table) = match init_from {
        Some(file) => {
            let (p, t) = checkpoint::load_model_growing::<B>(file, model, device)
                .with_context(|| format!("cannot start from {}", file.display()))?;
            (p, t)
        }
        None => {
            let p = weights::init::<B>(model, &mut rng, device).into_named();
            let t =
                (model.arch.puzzle_emb_ndim > 0).then(|| Tensor::zeros([model.num_puzzle_identifiers, model.arch.puzzle_emb_ndim], device));
            (p, t)
        }
    };
    let adam = AdamState::new(&params);
    let ema = cfg.ema.then(|| params.clone());
    Ok(TrainState { params, table, adam, ema, carry: None, step: 0, position: Position::default(), rng })
}

/// Evaluates the current evaluation weights (EMA if enabled) on the test split and logs it.
fn eval_and_log<B: Backend>(
    model: &ModelConfig,
    cfg: &TrainConfig,
    st: &TrainState<B>,
    test: &Arc<Split>,
    data: &Path,
    out: &Path,
    log: &mut MetricsLog,
) -> Result<EvalResult> {
    let w_eval = Weights::from_named(model, st.ema.clone().unwrap_or_else(|| st.params.clone()))?;
    let eb = cfg.eval_batch_size.unwrap_or(cfg.global_batch_size);
    // ARC: votes of this evaluation only (the reference's aggregated_voting=False).
    let mut arc = ArcEval::open(data)?;
    let mut arc_err = Ok(());
    let mut r =
        evaluate(model, &w_eval, st.table.as_ref(), test.clone(), eb, model.arch.halt_max_steps, cfg.eval_max_examples, |b, p, q, n| {
            if let (Some(a), Ok(())) = (arc.as_mut(), &arc_err) {
                arc_err = a.on_batch(b, p, q, n);
            }
        });
    if crate::util::interrupt::requested() {
        return Ok(r); // partial: the caller discards it, nothing is logged
    }
    if let Err(e) = arc_err {
        // Scoring is bookkeeping: a bad identifier name must not end a long training run.
        eprintln!("warning: ARC scoring skipped at step {}: {e:#}", st.step);
        arc = None;
    }
    let mut fields = vec![
        ("accuracy".to_string(), r.accuracy),
        ("exact_accuracy".to_string(), r.exact_accuracy),
        ("lm_loss".to_string(), r.lm_loss),
        ("q_halt_accuracy".to_string(), r.q_halt_accuracy),
        ("q_halt_loss".to_string(), r.q_halt_loss),
        ("steps".to_string(), r.steps),
        ("count".to_string(), r.count as f64),
    ];
    if let Some(a) = arc {
        crate::util::fs::write_json(&out.join("submission.json"), &a.submission())?;
        let s = a.score();
        fields.extend(s.pass_at.iter().map(|(k, v)| (format!("ARC/pass@{k}"), *v)));
        r.arc = Some(s);
    }
    let refs: Vec<(&str, f64)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    log.log(st.step, "eval", &refs)?;
    Ok(r)
}

fn carry_ids<B: Backend>(st: &TrainState<B>) -> Vec<i32> {
    st.carry.as_ref().map(|c| c.puzzle_ids.clone()).unwrap_or_default()
}

/// Runs (or resumes) a training job on backend `AD`.
pub fn train<AD: AutodiffBackend>(job: &TrainJob, device: &AD::Device) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let train_split = Arc::new(format::read_dataset_split(&job.data, "train")?);
    let examples: usize = train_split.sets.iter().map(|(_, d)| d.num_examples()).sum();
    anyhow::ensure!(examples > 0, "{}: the train split holds no examples: nothing to train on (rebuild the data set)", job.data.display());
    let test_split = if job.data.join("test").exists() {
        // Present but unreadable is an error: a long run must not silently skip its evaluations.
        Some(Arc::new(format::read_dataset_split(&job.data, "test").context("the test split exists but cannot be read")?))
    } else {
        eprintln!("warning: {} has no test split: training without evaluation", job.data.display());
        None
    };
    // One writer per run folder, held until this function returns (or the process dies).
    let _lock = crate::util::lock::RunLock::acquire(&job.out)?;

    // Resume: the checkpoint's config wins, except the keys that are safe to change
    // (config::resume_config says which; the others are refused).
    let mut resumed_from = None;
    let (cfg, mut st) = if job.resume {
        let ckpt = integrity::resolve_for_resume(&job.out)?;
        anyhow::ensure!(job.init_from.is_none(), "--init-from starts a new run; it cannot be combined with --resume");
        let (js, st) = checkpoint::load_state::<AD::InnerBackend>(&ckpt, device)?;
        eprintln!("resuming from {} (step {})", ckpt.display(), js.step);
        let here = model_config(&js.config, &train_split)?;
        anyhow::ensure!(
            here == js.model,
            "{} does not describe the data set this run trained on (seq_len/vocab/identifiers {}/{}/{} here, {}/{}/{} in {})",
            job.data.display(),
            here.seq_len,
            here.vocab_size,
            here.num_puzzle_identifiers,
            js.model.seq_len,
            js.model.vocab_size,
            js.model.num_puzzle_identifiers,
            ckpt.display()
        );
        let cfg = super::config::resume_config(&js.config, &job.overrides)?;
        resumed_from = Some(ckpt);
        (cfg, st)
    } else {
        if job.out.join("checkpoints").join("latest").exists() || !integrity::checkpoints(&job.out).is_empty() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", job.out.display());
        }
        let mut cfg = job.config.clone();
        if cfg.data_paths.is_empty() {
            // Recorded so that `trm report` and `trm eval` can find the data again.
            cfg.data_paths = vec![std::path::absolute(&job.data).unwrap_or(job.data.clone()).display().to_string()];
        }
        let model = model_config(&cfg, &train_split)?;
        (cfg.clone(), fresh_state::<AD::InnerBackend>(&cfg, &model, device, job.init_from.as_deref())?)
    };
    let model = model_config(&cfg, &train_split)?;
    if let Some(t) = &test_split {
        let m = &t.metadata;
        anyhow::ensure!(
            m.seq_len == model.seq_len && m.vocab_size <= model.vocab_size && m.num_puzzle_identifiers <= model.num_puzzle_identifiers,
            "{}: the test split (seq_len {}, vocab {}, {} identifiers) does not fit the model built from the train split (seq_len {}, vocab {}, {} identifiers)",
            job.data.join("test").display(),
            m.seq_len,
            m.vocab_size,
            m.num_puzzle_identifiers,
            model.seq_len,
            model.vocab_size,
            model.num_puzzle_identifiers
        );
    }
    if crate::model::precision::bf16_falls_back::<AD>(&model) {
        eprintln!(
            "note: arch.forward_dtype=bfloat16 runs in float32 on the CPU backend (bfloat16 would only be emulated there, slower); TRM_CPU_BF16=1 emulates it anyway"
        );
    }
    crate::util::fs::write_atomic(&job.out.join("config.toml"), cfg.to_toml().as_bytes())?;
    if let Ok(ids) = format::read_identifiers(&job.data) {
        crate::util::fs::write_json(&job.out.join("identifiers.json"), &ids)?;
    }

    let g = cfg.global_batch_size;
    let sampler = TrainSampler {
        split: train_split.clone(),
        global_batch: g,
        rank: 0,
        world: 1,
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
    let mut log = MetricsLog::open(&job.out, job.resume.then_some(st.step))?;
    if st.step == 0 {
        let n = Weights::from_named(&model, st.params.clone())?.num_params();
        log.log(0, "info", &[("num_params", n as f64), ("total_steps", total as f64)])?;
    }
    let hyper = |step: u64| AdamHyper {
        lr: lr_at(step, cfg.lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio),
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        weight_decay: cfg.weight_decay,
        kind: cfg.optimizer,
    };
    let pb = if job.quiet { ProgressBar::hidden() } else { ProgressBar::new(stop_at) };
    pb.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}").unwrap().progress_chars("=> "));
    pb.set_position(st.step);
    let mut evals = Vec::new();
    let mut last_train = Metrics::default();
    let mut last_ckpt = None;
    let (mut skipped, mut interrupted) = (0u64, false);
    let (mut window_rows, mut window_t) = (0usize, Instant::now());

    'outer: for iteration in st.position.iteration..iterations {
        let start = if iteration == st.position.iteration { st.position } else { Position { iteration, batch: 0 } };
        st.position = start;
        for batch in prefetch(sampler.iteration(start), 4) {
            if st.step >= stop_at || job.time_limit.is_some_and(|l| t0.elapsed() >= l) {
                break 'outer;
            }
            if crate::util::interrupt::requested() {
                interrupted = true;
                break 'outer;
            }
            // Kept to undo a skipped step (tensors are shared, so this copies no data).
            let before = (st.carry.clone(), st.rng.clone());
            st.step += 1;
            let carry = st.carry.get_or_insert_with(|| Carry::new(&model, batch.batch_size, device));
            let (loss, _out, leaves) = train_forward::<AD>(&model, &st.params, st.table.as_ref(), carry, &batch, &ropes, &mut st.rng);
            let h = hyper(st.step);
            let mut bad = guard::nonfinite_loss(&loss.metrics, model.arch.continue_target());
            let mut update = None;
            if bad.is_none() {
                let grads = (loss.total.clone() / g as f64).backward();
                let (pgrads, puzzle_grad) = leaves.grads(&grads);
                let gh = puzzle_grad.as_ref().map(checkpoint::host);
                bad = guard::nonfinite_grad(&pgrads, gh.as_deref());
                update = Some((pgrads, gh));
            }
            if let Some((what, value)) = bad {
                (st.carry, st.rng) = before;
                st.step -= 1;
                if skipped < cfg.skip_nonfinite_batches {
                    skipped += 1;
                    st.position.batch += 1;
                    pb.println(format!(
                        "warning: skipped batch {} of iteration {iteration} (step {}): the {what} is {value} ({skipped} of skip_nonfinite_batches={} skipped)",
                        st.position.batch,
                        st.step + 1,
                        cfg.skip_nonfinite_batches
                    ));
                    log.log(st.step + 1, "skipped", &[("skipped_batches", skipped as f64)])?;
                    continue;
                }
                log.flush()?;
                pb.finish_and_clear();
                bail!(guard::divergence_message(st.step + 1, what, value, last_ckpt.as_deref().or(resumed_from.as_deref()), h.lr));
            }
            let (pgrads, gh) = update.expect("gradients of a finite step");
            if let (Some(table), Some(gh)) = (st.table.take(), gh) {
                let plr = lr_at(st.step, cfg.puzzle_emb_lr, cfg.lr_warmup_steps, total, cfg.lr_min_ratio);
                st.table = Some(sign_sgd_rows(table, &carry_ids(&st), &gh, plr, cfg.puzzle_emb_weight_decay));
            }
            if !cfg.freeze_weights {
                adam_step(&mut st.params, &pgrads, &mut st.adam, &h);
            }
            if let Some(shadow) = st.ema.as_mut() {
                ema_update(shadow, &st.params, cfg.ema_rate);
            }
            st.position.batch += 1;

            let m = loss.metrics;
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
            log.log(st.step, "train", &vals)?;
            pb.set_position(st.step);
            if st.step % 10 == 0 || st.step == 1 {
                let rate = window_rows as f64 / window_t.elapsed().as_secs_f64().max(1e-9);
                pb.set_message(format!("loss {:.4} acc {:.3} exact {:.3} | {:.0} ex/s", vals[0].1, vals[2].1, vals[3].1, rate));
                (window_rows, window_t) = (0, Instant::now());
            }
            if cfg.checkpoint_interval_steps > 0 && st.step % cfg.checkpoint_interval_steps == 0 {
                log.flush()?;
                last_ckpt = Some(checkpoint::save(&job.out, &st, &cfg, &model)?);
            }
        }
        // End of an iteration: evaluation + checkpoint.
        let end_of_batches = st.position;
        st.position = Position { iteration: iteration + 1, batch: 0 };
        if iteration as usize >= cfg.min_eval_interval {
            if let Some(test) = &test_split {
                let r = eval_and_log(&model, &cfg, &st, test, &job.data, &job.out, &mut log)?;
                if crate::util::interrupt::requested() {
                    // Stopped inside the evaluation: a resume runs it again.
                    st.position = end_of_batches;
                    interrupted = true;
                    break;
                }
                pb.println(format!(
                    "eval @ step {}: token accuracy {:.4}, exact accuracy {:.4} (95% CI {:.4}-{:.4}) on {} examples",
                    st.step, r.accuracy, r.exact_accuracy, r.exact_accuracy_ci95.0, r.exact_accuracy_ci95.1, r.count
                ));
                evals.push((st.step, r));
            }
            if cfg.checkpoint_every_eval || iteration + 1 == iterations {
                log.flush()?;
                last_ckpt = Some(checkpoint::save(&job.out, &st, &cfg, &model)?);
            }
        }
        if st.step >= stop_at {
            break;
        }
    }
    if interrupted || crate::util::interrupt::requested() {
        log.flush()?;
        let at = checkpoint::save(&job.out, &st, &cfg, &model)?;
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
    // A run cut short by max_steps still ends with an evaluation of its final weights.
    if let (Some(test), false) = (&test_split, evals.last().is_some_and(|(s, _)| *s == st.step)) {
        let r = eval_and_log(&model, &cfg, &st, test, &job.data, &job.out, &mut log)?;
        evals.push((st.step, r));
    }
    log.flush()?;
    if last_ckpt.as_ref().is_none_or(|p| !p.ends_with(format!("step_{:08}", st.step))) {
        last_ckpt = Some(checkpoint::save(&job.out, &st, &cfg, &model)?);
    }
    pb.finish_and_clear();
    Ok(TrainSummary { steps: st.step, last_train, evals, seconds: t0.elapsed().as_secs_f64(), checkpoint: last_ckpt })
}
