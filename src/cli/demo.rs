//! `trm demo`: the whole pipeline on a laptop CPU with no download: generate Sudoku puzzles,
//! train a small TRM for a fixed number of optimiser steps (a budget of work, so a slow or busy
//! machine takes longer but ends with the same model), evaluate it, solve one held-out puzzle step
//! by step, then an ordinary published puzzle with test-time views and checking.

use crate::backend::{CpuAutodiff, set_threads};
use crate::data::{format, sudoku, sudoku_solver};
use crate::store::config;
use crate::train::trainer;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An ordinary published Sudoku (30 givens): the example puzzle of Wikipedia's "Sudoku" article,
/// whose image is in the public domain.
/// The demo's default work budget: on a quiet 2-core machine (2026-11-27) 1177 steps in 4 minutes gave
/// an exact accuracy of 0.863 on the held-out puzzles (docs/benchmarks.md).
pub const DEMO_STEPS: u64 = 1200;

/// Exact accuracy below which the demo's model is called undertrained.
const GOOD_ENOUGH: f64 = 0.8;

pub const PUBLISHED: &str = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Optimiser steps to train (batch 64): the work budget. 4 to 14 minutes on a quiet 2-core
    /// machine, by its speed; a slower one takes longer and ends with the same model
    #[arg(long, default_value_t = DEMO_STEPS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub steps: u64,
    /// Optional cap on the training time in minutes; if it stops training before --steps, the
    /// demo says that the model is undertrained
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Output folder (data/, run/, report.html): an earlier demo's are replaced; anything else
    /// there is refused, never deleted
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Givens per generated puzzle (more = easier): a number, or a range like 24-40
    #[arg(long, default_value = "40")]
    pub givens: sudoku::Givens,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
    /// Seed of the generated data and the model
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The demo, as its six printed steps.
pub fn run(a: DemoArgs) -> Result<()> {
    if let Some(m) = a.minutes {
        anyhow::ensure!(m.is_finite() && m > 0.0, "--minutes {m}: a positive number of minutes");
        Duration::try_from_secs_f64(m * 60.0).map_err(|_| anyhow::anyhow!("--minutes {m:e}: too many minutes"))?;
    }
    crate::util::interrupt::install()?;
    set_threads(a.threads);
    let _out_held = crate::util::lock::RunLock::acquire_output(&a.out, "trm demo")?;
    let data = a.out.join("data");
    let run = a.out.join("run");
    // A previous demo's data, run and report are replaced; anything else there is refused, never
    // deleted or written over.
    let html = a.out.join("report.html");
    if !crate::util::fs::made_by(&run, "trm demo") {
        for f in [html.clone(), html.with_extension("png")] {
            anyhow::ensure!(
                f.symlink_metadata().is_err(),
                "{} exists and is not a previous demo's report; choose another --out, or move it away",
                f.display()
            );
        }
    }
    crate::util::fs::fresh_own_data_and_run(&data, &run, "trm demo", &[])?;
    let held_out = generate_puzzles(&a, &data)?;
    let trained = train_model(&a, &data, &run)?;
    evaluate_model(&a, &data, &run, held_out, trained)?;
    solve_a_held_out_puzzle(&data, &run)?;
    solve_the_published_puzzle(&run)?;
    let o = crate::report::ReportOptions { run: run.clone(), out: html.clone(), data: Some(data), puzzles: 3, steps: None, png: true };
    crate::report::write_report(&o)?;
    println!("\n[6/6] report: {} (curves and puzzles step by step) and {}", html.display(), html.with_extension("png").display());
    println!("run folder: {} (metrics.jsonl, TensorBoard events, checkpoints/)", run.display());
    Ok(())
}

/// Step 1: 3000 training and 300 held-out puzzles (each training puzzle with 3 shuffles). Returns
/// the number held out.
fn generate_puzzles(a: &DemoArgs, data: &Path) -> Result<usize> {
    println!("[1/6] generating Sudoku puzzles with unique solutions ({} givens) into {}", a.givens, data.display());
    let train = sudoku::generate(3000, a.givens, a.seed, 0);
    let test = sudoku::generate(300, a.givens, a.seed, 1);
    sudoku::write_dataset(data, &train, &test, 3, a.seed)?;
    Ok(test.len())
}

/// The epochs of a schedule that holds `steps`: the preset's (200 epochs, about 9,000 steps of
/// the demo's puzzles), or more for a longer budget, in whole evaluation intervals.
fn schedule_epochs(preset: &config::TrainConfig, train: &crate::data::format::Metadata, steps: u64) -> usize {
    let interval = preset.eval_interval.unwrap_or(preset.epochs).max(1);
    let per_interval = crate::data::loader::total_steps_of(train, interval, preset.global_batch_size).max(1);
    preset.epochs.max(steps.div_ceil(per_interval) as usize * interval)
}

/// Step 2: the `demo` preset for `--steps` optimiser steps (fewer if `--minutes` cuts it short).
/// Returns the steps trained.
fn train_model(a: &DemoArgs, data: &Path, run: &Path) -> Result<u64> {
    let cap = a.minutes.map(|m| format!(", capped at {m:.1} minutes")).unwrap_or_default();
    println!(
        "[2/6] training a small TRM on the CPU for {} optimiser steps (preset `demo`{cap}); 4 to 14 minutes on a quiet \
         2-core machine, by its speed, and longer on a busy one (the bar's eta is this machine's estimate)",
        a.steps
    );
    let epochs = schedule_epochs(&config::resolve("demo", &[])?, &crate::data::format::read_metadata(&data.join("train"))?, a.steps);
    let cfg = config::resolve("demo", &[format!("seed={}", a.seed), format!("max_steps={}", a.steps), format!("epochs={epochs}")])?;
    let job = trainer::TrainJob {
        config: cfg,
        data: data.to_path_buf(),
        out: run.to_path_buf(),
        resume: false,
        overrides: vec![],
        quiet: false,
        init_from: None,
        time_limit: a.minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
        engine_flags: String::new(),
        memory_check: true,
    };
    let s = trainer::train::<CpuAutodiff>(&job, &Default::default())?;
    let trained = s.trained();
    println!("      {trained} optimiser steps in {:.0}s ({:.2} s per step)", s.seconds, s.seconds / trained.max(1) as f64);
    Ok(s.steps)
}

/// Step 3: exact accuracy on the held-out puzzles, and a note when the model is undertrained.
fn evaluate_model(a: &DemoArgs, data: &Path, run: &Path, held_out: usize, trained: u64) -> Result<()> {
    println!("[3/6] evaluating on {held_out} held-out puzzles");
    let args = super::eval::EvalArgs {
        checkpoint: Some(run.to_path_buf()),
        data: data.to_path_buf(),
        steps: None,
        limit: None,
        batch: 100,
        config: None,
        set: vec![],
        json: false,
        submission: None,
        save_outputs: None,
        outputs: vec![],
        force: false,
        device: crate::backend::DeviceSpec::Cpu,
        threads: None,
        views: None,
        view_steps: None,
        seed: None,
        view_lifetime: None,
        drawn_latents: false,
        precision: None,
        no_memory_check: false,
    };
    let r = super::eval::eval_checkpoint::<crate::backend::Cpu>(&args, &Default::default())?;
    println!(
        "      token accuracy {:.3}, exact accuracy {:.3} (95% CI {:.3}-{:.3}); per step exact: {}",
        r.accuracy,
        r.exact_accuracy,
        r.exact_accuracy_ci95.0,
        r.exact_accuracy_ci95.1,
        r.per_step.iter().map(|(_, e)| format!("{e:.2}")).collect::<Vec<_>>().join(" ")
    );
    if trained < a.steps {
        println!(
            "      NOTE: the {:.1}-minute cap stopped training after {} of {} steps, so this model is undertrained{}. \
             Run the demo without --minutes (or with a larger cap) for the model the README describes.",
            a.minutes.unwrap_or(0.0),
            trained,
            a.steps,
            if r.exact_accuracy < GOOD_ENOUGH { " and its answers below are not what a trained TRM gives" } else { "" }
        );
    } else if r.exact_accuracy < GOOD_ENOUGH && a.steps >= DEMO_STEPS {
        println!(
            "      NOTE: exact accuracy {:.3} is below the {GOOD_ENOUGH} this budget reached when it was measured; \
             try --steps {} (or another --seed)",
            r.exact_accuracy,
            2 * a.steps
        );
    }
    Ok(())
}

/// `trm solve --sudoku PUZZLE` on the demo's model, with the given views and steps.
fn solve_with_demo_model(run: &Path, puzzle: String, views: Option<usize>, steps: Option<usize>) -> Result<()> {
    super::solve::run(super::solve::SolveArgs {
        checkpoint: Some(run.to_path_buf()),
        sudoku: Some(puzzle),
        maze: None,
        arc_task: None,
        task: None,
        identifiers: None,
        steps,
        halt: false,
        json: false,
        views,
        seed: None,
        view_lifetime: None,
        drawn_latents: false,
        precision: None,
        config: None,
        set: vec![],
        device: crate::backend::DeviceSpec::Cpu,
    })
}

/// Step 4: the first held-out puzzle, one view, step by step.
fn solve_a_held_out_puzzle(data: &Path, run: &Path) -> Result<()> {
    let split = format::read_dataset_split(data, "test")?;
    let q: sudoku_solver::Grid = std::array::from_fn(|i| split.sets[0].1.example_input(0)[i] - 1);
    println!("[4/6] solving a held-out puzzle, step by step:\n      {}", sudoku_solver::format_grid(&q));
    solve_with_demo_model(run, sudoku_solver::format_grid(&q), None, None)
}

/// Step 5: an ordinary published puzzle with 8 checked views.
fn solve_the_published_puzzle(run: &Path) -> Result<()> {
    println!(
        "\n[5/6] an ordinary published puzzle (Wikipedia's example, 30 givens), with test-time scaling: 8 views of it \
         (digits relabelled, transposed, rows and columns permuted) side by side for up to 16 steps; every \
         answer is mapped back and checked against the rules and the givens, never a solution:\n      {PUBLISHED}"
    );
    solve_with_demo_model(run, PUBLISHED.into(), Some(8), Some(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_holds_any_steps_budget() {
        let preset = config::resolve("demo", &[]).unwrap();
        // The demo's training split: 3000 groups (a puzzle and its shuffles) of one example each.
        let meta = format::Metadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size: 11,
            seq_len: 81,
            num_puzzle_identifiers: 1,
            total_groups: 3000,
            mean_puzzle_examples: 1.0,
            total_puzzles: Some(3000),
            sets: vec!["all".into()],
        };
        let interval = preset.eval_interval.unwrap();
        let per_interval = crate::data::loader::total_steps_of(&meta, interval, preset.global_batch_size);
        for steps in [1, DEMO_STEPS, 4 * per_interval, 4 * per_interval + 1, 20_000, 1_000_000] {
            let epochs = schedule_epochs(&preset, &meta, steps);
            assert!(epochs >= preset.epochs && epochs.is_multiple_of(interval), "{steps}: {epochs}");
            // Each evaluation interval is one iteration of the sampler, whose last short batch
            // is dropped: whole intervals must hold the budget.
            assert!((epochs / interval) as u64 * per_interval >= steps, "{steps}: {epochs} epochs");
        }
        assert_eq!(schedule_epochs(&preset, &meta, DEMO_STEPS), preset.epochs, "the README's demo is unchanged");
        assert_eq!(schedule_epochs(&preset, &meta, 4 * per_interval + 1), preset.epochs + interval);
    }
}
