//! `trm demo`: the whole pipeline on a laptop CPU with no download: generate Sudoku puzzles,
//! train a small TRM for a fixed number of optimiser steps (a budget of work, so a slow or busy
//! machine takes longer but ends with the same model), evaluate it, solve one held-out puzzle step
//! by step, then an ordinary published puzzle with test-time views and checking.

use crate::backend::{CpuAutodiff, set_threads};
use crate::data::{format, sudoku, sudoku_solver};
use crate::train::{config, trainer};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

/// An ordinary published Sudoku (30 givens): the example puzzle of Wikipedia's "Sudoku" article,
/// whose image is in the public domain.
/// The demo's default work budget: on a quiet 2-core machine (2026-11-27) 1213 steps gave an
/// exact accuracy of 0.867 on the held-out puzzles.
pub const DEMO_STEPS: u64 = 1200;

/// Exact accuracy below which the demo's model is called undertrained.
const GOOD_ENOUGH: f64 = 0.8;

pub const PUBLISHED: &str = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Optimiser steps to train (batch 64): the work budget. About 4 minutes on a quiet 2-core
    /// machine; a slower one takes longer and ends with the same model
    #[arg(long, default_value_t = DEMO_STEPS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub steps: u64,
    /// Optional cap on the training time in minutes; if it stops training before --steps, the
    /// demo says that the model is undertrained
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Output folder (data/, run/)
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Givens per generated puzzle (more = easier): a number, or a range like 24-40
    #[arg(long, default_value = "40")]
    pub givens: sudoku::Givens,
    /// CPU threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the generated data and the model
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: DemoArgs) -> Result<()> {
    if let Some(m) = a.minutes {
        anyhow::ensure!(m.is_finite() && m > 0.0, "--minutes {m}: a positive number of minutes");
    }
    crate::util::interrupt::install()?;
    set_threads(a.threads);
    let data = a.out.join("data");
    let run = a.out.join("run");
    // A previous demo's run is replaced; anything else at OUT/run is refused, never deleted.
    crate::util::fs::fresh_own_folder(&run, "trm demo")?;
    println!("[1/6] generating Sudoku puzzles with unique solutions ({} givens) into {}", a.givens, data.display());
    let train = sudoku::generate(3000, a.givens, a.seed, 0);
    let test = sudoku::generate(300, a.givens, a.seed, 1);
    sudoku::write_dataset(&data, &train, &test, 3, a.seed)?;

    let cap = a.minutes.map(|m| format!(", capped at {m:.1} minutes")).unwrap_or_default();
    println!(
        "[2/6] training a small TRM on the CPU for {} optimiser steps (preset `demo`{cap}); about 4 minutes on a quiet \
         2-core machine, longer on a slower or busy one (the bar's eta is this machine's estimate)",
        a.steps
    );
    let cfg = config::resolve("demo", &[format!("seed={}", a.seed), format!("max_steps={}", a.steps)])?;
    let job = trainer::TrainJob {
        config: cfg,
        data: data.clone(),
        out: run.clone(),
        resume: false,
        overrides: vec![],
        quiet: false,
        init_from: None,
        time_limit: a.minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
    };
    let s = trainer::train::<CpuAutodiff>(&job, &Default::default())?;
    println!("      {} optimiser steps in {:.0}s ({:.2} s per step)", s.steps, s.seconds, s.seconds / s.steps.max(1) as f64);
    let cut_short = s.steps < a.steps;

    println!("[3/6] evaluating on {} held-out puzzles", test.len());
    let args = super::train::EvalArgs {
        checkpoint: Some(run.clone()),
        data: data.clone(),
        steps: None,
        limit: None,
        batch: 100,
        config: None,
        set: vec![],
        json: false,
        submission: None,
        force: false,
        device: crate::backend::DeviceSpec::Cpu,
        threads: None,
        views: None,
        view_steps: None,
        seed: None,
    };
    let r = super::train::eval_checkpoint::<crate::backend::Cpu>(&args, &Default::default())?;
    println!(
        "      token accuracy {:.3}, exact accuracy {:.3} (95% CI {:.3}-{:.3}); per step exact: {}",
        r.accuracy,
        r.exact_accuracy,
        r.exact_accuracy_ci95.0,
        r.exact_accuracy_ci95.1,
        r.per_step.iter().map(|(_, e)| format!("{e:.2}")).collect::<Vec<_>>().join(" ")
    );
    if cut_short {
        println!(
            "      NOTE: the {:.1}-minute cap stopped training after {} of {} steps, so this model is undertrained{}. \
             Run the demo without --minutes (or with a larger cap) for the model the README describes.",
            a.minutes.unwrap_or(0.0),
            s.steps,
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

    let split = format::read_dataset_split(&data, "test")?;
    let q: sudoku_solver::Grid = std::array::from_fn(|i| split.sets[0].1.example_input(0)[i] - 1);
    println!("[4/6] solving a held-out puzzle, step by step:\n      {}", sudoku_solver::format_grid(&q));
    super::solve::run(super::solve::SolveArgs {
        checkpoint: Some(run.clone()),
        sudoku: Some(sudoku_solver::format_grid(&q)),
        maze: None,
        arc_task: None,
        task: None,
        identifiers: None,
        steps: None,
        halt: false,
        json: false,
        views: None,
        seed: None,
        config: None,
        set: vec![],
        device: crate::backend::DeviceSpec::Cpu,
    })?;
    println!(
        "\n[5/6] an ordinary published puzzle (Wikipedia's example, 30 givens), with test-time scaling: 8 views of it \
         (digits relabelled, transposed, rows and columns permuted) side by side for up to 16 steps; every \
         answer is mapped back and checked against the rules and the givens, never a solution:\n      {PUBLISHED}"
    );
    super::solve::run(super::solve::SolveArgs {
        checkpoint: Some(run.clone()),
        sudoku: Some(PUBLISHED.into()),
        maze: None,
        arc_task: None,
        task: None,
        identifiers: None,
        steps: Some(16),
        halt: false,
        json: false,
        views: Some(8),
        seed: None,
        config: None,
        set: vec![],
        device: crate::backend::DeviceSpec::Cpu,
    })?;
    let html = a.out.join("report.html");
    let o = crate::report::ReportOptions { run: run.clone(), out: html.clone(), data: Some(data), puzzles: 3, steps: None, png: true };
    crate::report::write_report(&o)?;
    println!("\n[6/6] report: {} (curves and puzzles step by step) and {}", html.display(), html.with_extension("png").display());
    println!("run folder: {} (metrics.jsonl, TensorBoard events, checkpoints/)", run.display());
    Ok(())
}
