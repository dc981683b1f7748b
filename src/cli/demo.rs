//! `trm demo`: the whole pipeline on a laptop CPU with no download: generate Sudoku puzzles,
//! train a small TRM for a few minutes, evaluate it, and solve one held-out puzzle step by step.

use super::device::{CpuAutodiff, set_threads};
use crate::data::{format, sudoku, sudoku_solver};
use crate::train::{config, trainer};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Training time budget in minutes
    #[arg(long, default_value_t = 4.0)]
    pub minutes: f64,
    /// Output folder (data/, run/)
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Givens per generated puzzle (more = easier)
    #[arg(long, default_value_t = 40)]
    pub givens: usize,
    /// CPU threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the generated data and the model
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: DemoArgs) -> Result<()> {
    crate::util::interrupt::install()?;
    set_threads(a.threads);
    let data = a.out.join("data");
    let run = a.out.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run)?;
    }
    println!("[1/5] generating Sudoku puzzles with unique solutions ({} givens) into {}", a.givens, data.display());
    let train = sudoku::generate(3000, a.givens, a.seed, 0);
    let test = sudoku::generate(300, a.givens, a.seed, 1);
    sudoku::write_dataset(&data, &train, &test, 3, a.seed)?;

    println!("[2/5] training a small TRM on the CPU for {:.1} minutes (preset `demo`)", a.minutes);
    let cfg = config::resolve("demo", &[format!("seed={}", a.seed)])?;
    let job = trainer::TrainJob {
        config: cfg,
        data: data.clone(),
        out: run.clone(),
        resume: false,
        overrides: vec![],
        quiet: false,
        init_from: None,
        time_limit: Some(Duration::from_secs_f64(a.minutes * 60.0)),
    };
    let s = trainer::train::<CpuAutodiff>(&job, &Default::default())?;
    println!("      {} optimiser steps in {:.0}s", s.steps, s.seconds);

    println!("[3/5] evaluating on {} held-out puzzles", test.len());
    let args = super::train::EvalArgs {
        checkpoint: run.clone(),
        data: data.clone(),
        steps: None,
        limit: None,
        batch: 100,
        config: None,
        set: vec![],
        json: false,
        submission: None,
        device: super::device::DeviceSpec::Cpu,
        threads: None,
        views: None,
        view_steps: None,
        seed: None,
    };
    let r = super::train::eval_checkpoint::<super::device::Cpu>(&args, &Default::default())?;
    println!(
        "      token accuracy {:.3}, exact accuracy {:.3} (95% CI {:.3}-{:.3}); per step exact: {}",
        r.accuracy,
        r.exact_accuracy,
        r.exact_accuracy_ci95.0,
        r.exact_accuracy_ci95.1,
        r.per_step.iter().map(|(_, e)| format!("{e:.2}")).collect::<Vec<_>>().join(" ")
    );

    let split = format::read_dataset_split(&data, "test")?;
    let q: sudoku_solver::Grid = std::array::from_fn(|i| split.sets[0].1.example_input(0)[i] - 1);
    println!("[4/5] solving a held-out puzzle, step by step:\n      {}", sudoku_solver::format_grid(&q));
    super::solve::run(super::solve::SolveArgs {
        checkpoint: run.clone(),
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
    })?;
    let html = a.out.join("report.html");
    let o = crate::report::ReportOptions { run: run.clone(), out: html.clone(), data: Some(data), puzzles: 3, steps: None, png: true };
    crate::report::write_report(&o)?;
    println!("\n[5/5] report: {} (curves and puzzles step by step) and {}", html.display(), html.with_extension("png").display());
    println!("run folder: {} (metrics.jsonl, TensorBoard events, checkpoints/)", run.display());
    Ok(())
}
