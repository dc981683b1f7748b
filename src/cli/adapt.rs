//! `trm adapt`: test-time training on new ARC tasks, then voting and a submission.

use crate::backend::{DeviceSpec, set_threads};
use crate::data::arc_task::{Task, task_from_json};
use crate::train::adapt::{AdaptJob, AdaptResult, adapt};
use anyhow::{Context, Result, anyhow};
use clap::builder::TypedValueParser as _;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct AdaptArgs {
    /// Run or checkpoint folder of a trained ARC model, or a bare weights file (.safetensors, or
    /// the reference's torch.save checkpoint)
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A bare weights file's configuration (preset or TOML) [default: the reference's
    /// all_config.yaml beside the file]
    #[arg(long)]
    pub config: Option<String>,
    /// A bare weights file's puzzle identifiers: the identifiers.json of the data it was trained
    /// on [default: identifiers.json beside the file]
    #[arg(long)]
    pub identifiers: Option<PathBuf>,
    /// Tasks: a Kaggle challenges file `{name: {train, test}}` or one task `{train, test}`
    #[arg(long)]
    pub tasks: PathBuf,
    /// Kaggle solutions file `{name: [grid, ...]}`, to score the adapted model
    #[arg(long)]
    pub solutions: Option<PathBuf>,
    /// Output folder: data/, run/ (metrics, checkpoint, submission.json). An earlier `trm adapt`'s
    /// data/ and run/ there are replaced; anything else is refused, never deleted
    #[arg(long)]
    pub out: PathBuf,
    /// Augmented copies per task
    #[arg(long, default_value_t = 100)]
    pub num_aug: usize,
    /// Optimiser steps
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_ADAPT_STEPS))]
    pub steps: u64,
    /// Tune all weights, not only the new tasks' puzzle embeddings
    #[arg(long)]
    pub all_weights: bool,
    /// Rows per batch [default: min(checkpoint's, 64)]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_BATCH).map(|v| v as usize))]
    pub batch: Option<usize>,
    /// Reference-style overrides, e.g. --set puzzle_emb_lr=0.05
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seed of the augmentations built for the new tasks and of the tuning run (batch order, halting
    /// exploration)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, torch-cpu, cuda[:N] (libtorch), cubecl[:N] or cubecl-unfused[:N]
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
    /// Make the test-time training repeat bit for bit, as `trm train --deterministic`
    #[arg(long)]
    pub deterministic: bool,
    /// Run even when the memory estimate of the CPU engine says the training or evaluation
    /// pass does not fit the memory this machine has available (it is refused by default,
    /// naming the micro_batch_size or eval_batch_size that fits; docs/reliability.md, "Memory")
    #[arg(long)]
    pub no_memory_check: bool,
    /// No progress bar or per-step lines
    #[arg(long)]
    pub quiet: bool,
}

/// Reads tasks from a challenges file or a single-task file (named after the file stem).
pub fn read_tasks(path: &Path, solutions: Option<&Path>) -> Result<Vec<Task>> {
    let v: Value = crate::util::fs::read_json(path)?;
    let sols: Option<Value> = solutions.map(crate::util::fs::read_json).transpose()?;
    let what = path.display().to_string();
    let sol_what = solutions.map(|p| p.display().to_string()).unwrap_or_default();
    let obj = v.as_object().ok_or_else(|| anyhow!("{what}: expected a JSON object (a task or a map of tasks)"))?;
    // A single task (a file with `train` or `test` at the top: task_from_json names what is missing).
    if obj.contains_key("train") || obj.contains_key("test") {
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "task".into());
        // The solutions file: `{name: [...]}` or, for one task, the bare list `[...]`.
        let sol = match &sols {
            Some(s) => Some(s.get(&name).or(Some(s)).filter(|x| x.is_array()).ok_or_else(|| {
                anyhow!(
                    "{}: no solutions for task `{name}` (neither an entry `{name}` nor a bare list of grids)",
                    solutions.unwrap().display()
                )
            })?),
            None => None,
        };
        let task = task_from_json(&name, &v, sol.map(|s| (s, sol_what.as_str())), &what)?;
        return Ok(vec![has_test_inputs(task, &what)?]);
    }
    let mut tasks = Vec::new();
    for (name, t) in obj {
        anyhow::ensure!(t.is_object(), "{what}: entry `{name}` is not a task object {{\"train\": [...], \"test\": [...]}}");
        let sol = match &sols {
            Some(s) => Some(s.get(name).ok_or_else(|| anyhow!("{}: no solutions for task `{name}`", solutions.unwrap().display()))?),
            None => None,
        };
        tasks.push(has_test_inputs(task_from_json(name, t, sol.map(|s| (s, sol_what.as_str())), &what)?, &what)?);
    }
    anyhow::ensure!(!tasks.is_empty(), "{what}: no tasks in the file (an empty object)");
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tasks)
}

/// A task with test inputs to answer (`"test": []` would be solved and voted on as nothing).
fn has_test_inputs(t: Task, what: &str) -> Result<Task> {
    anyhow::ensure!(!t.test.is_empty(), "{what}: task {} has no test inputs (`\"test\": []`): nothing to answer", t.name);
    Ok(t)
}

/// Whether every test input of the file's tasks has a known output (in the file or `solutions`).
pub fn outputs_known(path: &Path, solutions: Option<&Path>) -> bool {
    if solutions.is_some() {
        return true; // read_tasks insists on an entry per task
    }
    let Ok(v) = crate::util::fs::read_json::<Value>(path) else { return false };
    let all = |t: &Value| t["test"].as_array().is_some_and(|a| a.iter().all(|p| p.get("output").is_some()));
    if v.get("test").is_some() { all(&v) } else { v.as_object().is_some_and(|o| o.values().all(all)) }
}

fn report(r: &AdaptResult, known: bool) {
    println!("{} new puzzle identifiers; {} steps in {:.0}s", r.new_identifiers, r.train.steps, r.train.seconds);
    if !known {
        println!("test outputs unknown (pass --solutions to score): see the submission for the answers");
    } else if let Some(s) = &r.score {
        let p = |k| s.at(k).map_or("-".into(), |v| format!("{v:.3}"));
        println!("ARC on the adapted tasks: pass@1 {}, pass@2 {}, pass@10 {} ({} tasks)", p(1), p(2), p(10), s.tasks);
    }
    println!("data {}, run {}, submission {}", r.data.display(), r.run.display(), r.run.join("submission.json").display());
}

pub fn run(a: AdaptArgs) -> Result<()> {
    super::refuse_cpu_engine_flags(a.device, None, a.no_memory_check)?;
    if a.deterministic {
        eprintln!("{}", crate::backend::make_deterministic(a.device)?);
    }
    crate::util::interrupt::install()?;
    set_threads(a.threads);
    let tasks = read_tasks(&a.tasks, a.solutions.as_deref()).with_context(|| format!("reading tasks from {}", a.tasks.display()))?;
    let job = AdaptJob {
        checkpoint: a.checkpoint,
        config: a.config,
        identifiers: a.identifiers,
        tasks,
        task_files: [Some(a.tasks.clone()), a.solutions.clone()].into_iter().flatten().collect(),
        out: a.out,
        num_aug: a.num_aug,
        steps: a.steps,
        all_weights: a.all_weights,
        batch: a.batch,
        overrides: a.set,
        seed: a.seed,
        quiet: a.quiet,
        engine_flags: super::engine_flags(a.device, None, a.deterministic, a.threads),
        memory_check: !a.no_memory_check,
    };
    let r = crate::with_backend!(a.device, B, device => adapt::<burn::backend::Autodiff<B>>(&job, &device)?);
    report(&r, outputs_known(&a.tasks, a.solutions.as_deref()));
    Ok(())
}
