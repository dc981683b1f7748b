//! Test-time training for ARC tasks the model never saw (`trm adapt`).
//!
//! 1. The new tasks' demonstration pairs are augmented (dihedral transforms, colour permutations,
//!    translations) into a training split and their test inputs into a test split, exactly as the
//!    ARC builder does, under identifiers that continue the checkpoint's identifier map.
//! 2. Training starts from the checkpoint; the new identifiers' embedding rows start at zero.
//!    By default only the puzzle embeddings learn (`freeze_weights`); `all_weights` tunes the
//!    network too.
//! 3. The adapted model is evaluated on the new test inputs with augmentation voting, and a
//!    Kaggle submission is written.

use super::setup::InitFrom;
use super::trainer::{TrainJob, TrainSummary, train};
use crate::data::arc::{self, BuildOptions};
use crate::data::arc_task::Task;
use crate::eval::arc_vote::ArcScore;
use crate::store::config::{TrainConfig, apply_overrides, from_table};
use crate::store::puzzle_rows::NewRows;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use std::path::PathBuf;

#[derive(Clone)]
pub struct AdaptJob {
    /// Run or checkpoint folder of a trained ARC model, or a bare weights file (`source.rs`).
    pub checkpoint: PathBuf,
    /// A bare weights file's configuration (else all_config.yaml beside it).
    pub config: Option<String>,
    /// A bare weights file's identifiers.json (else the one beside it).
    pub identifiers: Option<PathBuf>,
    pub tasks: Vec<Task>,
    /// The files the tasks (and their solutions) were read from: kept out of `out`, which is
    /// cleared on every run.
    pub task_files: Vec<PathBuf>,
    /// Output folder: data/ (the built data set), run/ (checkpoints, metrics), submission.json.
    pub out: PathBuf,
    /// Augmented copies of each task (reference ARC builder: 1000).
    pub num_aug: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Tune every weight, not only the new puzzle embeddings.
    pub all_weights: bool,
    /// Rows per batch [default: min(checkpoint's, 64)].
    pub batch: Option<usize>,
    /// Further reference-style overrides (`puzzle_emb_lr=0.05` ...).
    pub overrides: Vec<String>,
    pub seed: u64,
    pub quiet: bool,
    /// As `TrainJob::engine_flags`: what a resume of its run must be given again.
    pub engine_flags: String,
    /// As `TrainJob::memory_check`.
    pub memory_check: bool,
}

pub struct AdaptResult {
    pub train: TrainSummary,
    pub score: Option<ArcScore>,
    pub new_identifiers: usize,
    pub data: PathBuf,
    pub run: PathBuf,
}

/// What the adaptation data holds, for sizing its epochs: examples per epoch (one puzzle of each
/// group), and the most examples one puzzle has.
struct EpochSize {
    examples: f64,
    largest_puzzle: usize,
}

/// The adaptation recipe on top of the checkpoint's training configuration. The epoch count is
/// sized so that the schedule, not the data, ends at `job.steps`; the base run's own evaluation
/// cap, micro-batches and recorded batch order belonged to its data and batch, not to this one.
fn adapt_config(base: &TrainConfig, job: &AdaptJob, data: &std::path::Path, epoch: EpochSize) -> Result<TrainConfig> {
    let mut c = base.clone();
    c.data_paths = vec![data.display().to_string()];
    c.freeze_weights = !job.all_weights;
    c.global_batch_size = job.batch.unwrap_or(base.global_batch_size.min(64));
    c.max_steps = Some(job.steps);
    // Enough epochs for `steps` batches. A batch takes up to `largest_puzzle - 1` rows more than
    // it holds (the rest of a puzzle cut at its end is dropped); one evaluation, at the end.
    let rows_per_batch = (c.global_batch_size + epoch.largest_puzzle.saturating_sub(1)) as f64;
    c.epochs = ((job.steps as f64 * rows_per_batch / epoch.examples.max(1.0)).ceil() as usize + 1).max(1);
    c.eval_interval = Some(c.epochs);
    c.min_eval_interval = 0;
    c.eval_max_examples = None;
    c.micro_batch_size = None;
    c.batch_order = None;
    c.lr_warmup_steps = (job.steps / 10).max(1);
    c.lr_min_ratio = 1.0;
    c.ema = false;
    c.seed = job.seed;
    c.checkpoint_interval_steps = 0;
    c.checkpoint_every_eval = false;
    // The checkpoint's model is trained to its depth: adaptation runs at it, unweighted.
    c.depth_curriculum = None;
    c.supervision_decay = 1.0;
    // Its score is what adaptation reports.
    c.evaluators = vec![crate::store::config::ARC_EVALUATOR.to_string()];
    c.arc_evaluator = crate::store::config::ArcEvaluatorArgs::default();
    c.data_paths_test = vec![];
    c.eval_save_outputs = vec![];
    for o in &job.overrides {
        let key = crate::store::overrides::override_key(o).trim_start_matches('~');
        let why = match key {
            "max_steps" => "trm adapt trains the steps --steps gives: pass --steps N",
            "global_batch_size" => "trm adapt trains at the batch --batch gives: pass --batch N",
            "epochs" | "eval_interval" | "min_eval_interval" => "trm adapt sizes its epochs from --steps and evaluates once, at the end",
            "data_paths" | "data_paths_test" => "trm adapt trains and evaluates on the data it builds from --tasks",
            "evaluators" => "trm adapt scores the tasks it adapts to with the ARC evaluator, always",
            "freeze_weights" => "trm adapt tunes only the puzzle embeddings unless --all-weights: pass --all-weights to tune every weight",
            "seed" => "--seed N seeds both the augmentations trm adapt makes and its training run: pass --seed N",
            "eval_save_outputs" => {
                "trm adapt rebuilds its run folder on every run; save the adapted model's outputs with `trm eval --checkpoint OUT/run --data OUT/data --save-outputs FILE`"
            }
            _ => continue,
        };
        bail!("--set {o}: {why}");
    }
    let mut t = c.to_table();
    apply_overrides(&mut t, &job.overrides)?;
    let c = from_table(t)?;
    crate::store::idle_keys::refuse_idle(&c, &job.overrides).with_context(|| {
        format!(
            "--set (trm adapt {})",
            if job.all_weights { "--all-weights" } else { "tunes only the puzzle embeddings unless --all-weights" }
        )
    })?;
    anyhow::ensure!(
        c.depth_curriculum.is_none(),
        "depth_curriculum: trm adapt runs at the trained model's depth (its schedule is sized by --steps, not by epochs); drop the key"
    );
    Ok(c)
}

pub fn adapt<AD: AutodiffBackend>(job: &AdaptJob, device: &AD::Device) -> Result<AdaptResult> {
    if job.tasks.is_empty() {
        bail!("no tasks to adapt to");
    }
    let source = crate::store::arc_model::open_arc(&job.checkpoint, job.config.as_deref(), &[], job.identifiers.as_deref())?;
    let ckpt = source.label.clone();
    let old = source.identifiers.len();

    let out = std::path::absolute(&job.out)?;
    let _out_held = crate::util::lock::RunLock::acquire_output(&out, "trm adapt")?;
    let (data, run) = (out.join("data"), out.join("run"));
    // A previous adaptation's data and run are replaced; anything else there is refused, never
    // deleted, and so is an --out that holds what this adaptation reads (the checkpoint as
    // resolved: a run folder's newest checkpoint, or the weights file).
    let config_file = job.config.as_deref().map(std::path::Path::new).filter(|p| p.exists());
    let inputs: Vec<&std::path::Path> = [Some(std::path::Path::new(&ckpt)), job.identifiers.as_deref(), config_file]
        .into_iter()
        .flatten()
        .chain(job.task_files.iter().map(|p| p.as_path()))
        .collect();
    crate::util::fs::fresh_own_data_and_run(&data, &run, "trm adapt", &inputs)?;
    let opt = BuildOptions {
        input_prefix: String::new(),
        subsets: vec![],
        test_sets: vec![],
        num_aug: job.num_aug,
        seed: job.seed,
        translate: true,
    };
    let tasks: Vec<(Task, bool)> = job.tasks.iter().cloned().map(|t| (t, true)).collect();
    let built = arc::build_tasks(&data, tasks, source.identifiers.clone(), &opt)?;
    let new_identifiers = built.identifiers - old;

    let train_split = crate::data::format::read_dataset_split(&data, "train")?;
    let largest_puzzle =
        (train_split.sets.iter()).flat_map(|(_, d)| d.puzzle_indices.windows(2).map(|w| (w[1] - w[0]).max(0) as usize)).max().unwrap_or(1);
    let examples = train_split.metadata.total_groups as f64 * train_split.metadata.mean_puzzle_examples;
    let cfg = adapt_config(&source.config, job, &data, EpochSize { examples, largest_puzzle })?;
    let tj = TrainJob {
        config: cfg,
        data: data.clone(),
        out: run.clone(),
        resume: false,
        overrides: vec![],
        quiet: job.quiet,
        // The built data's identifiers continue the checkpoint's: its rows stay, the new
        // identifiers' rows start at zero.
        init_from: Some(InitFrom { weights: source.weights, identifiers: Some(source.identifiers), new_rows: NewRows::Zero }),
        time_limit: None,
        engine_flags: job.engine_flags.clone(),
        memory_check: job.memory_check,
    };
    let summary = train::<AD>(&tj, device)?;
    let score = summary.evals.last().and_then(|(_, r)| r.arc.clone());
    Ok(AdaptResult { train: summary, score, new_identifiers, data, run })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapted(all_weights: bool, overrides: &[&str]) -> Result<TrainConfig> {
        let job = AdaptJob {
            checkpoint: "run".into(),
            config: None,
            identifiers: None,
            tasks: vec![],
            task_files: vec![],
            out: "out".into(),
            num_aug: 1,
            steps: 10,
            all_weights,
            batch: None,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            seed: 3,
            quiet: true,
            engine_flags: String::new(),
            memory_check: false,
        };
        let base = crate::store::config::resolve("arc1", &[])?;
        adapt_config(&base, &job, std::path::Path::new("data"), EpochSize { examples: 100.0, largest_puzzle: 4 })
    }

    /// What the flags say is not overridden by --set, and a key the adaptation would not use is
    /// refused: the network's optimiser keys while only the puzzle embeddings learn.
    #[test]
    fn set_may_not_contradict_the_flags_or_name_an_idle_key() {
        let e = |all, ov: &[&str]| format!("{:#}", adapted(all, ov).unwrap_err());
        assert!(e(true, &["freeze_weights=True"]).contains("--all-weights"));
        assert!(e(false, &["seed=5"]).contains("pass --seed N"));
        let idle = e(false, &["lr=0.001"]);
        assert!(idle.contains("unless --all-weights") && idle.contains("lr=0.001 would change nothing: freeze_weights=True"), "{idle}");
        let c = adapted(true, &["lr=0.001"]).unwrap();
        assert!(!c.freeze_weights && c.lr == 0.001 && c.seed == 3);
        assert_eq!(adapted(false, &["puzzle_emb_lr=0.05"]).unwrap().puzzle_emb_lr, 0.05);
    }
}
