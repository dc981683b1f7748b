//! The `trm` command line: subcommands grouped by job.

pub mod adapt;
pub mod bench;
pub mod data;
pub mod demo;
pub mod export;
pub mod info;
pub mod launch;
pub mod parity;
pub mod report;
pub mod solve;
pub mod solve_arc;
pub mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "trm",
    version,
    about = "Tiny Recursive Models: build data sets, train, evaluate and solve puzzles",
    after_help = "Environment variables (all optional): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun, trm launch); \
SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID (srun); TRM_RENDEZVOUS_PORT, TRM_RENDEZVOUS_TIMEOUT, TRM_NCCL_LIB (docs/distributed.md); TRM_CPU_BF16, \
TRM_FUSED_CPU, TRM_MALLOC_DEFAULT, TRM_NO_FONT (src/util/env.rs)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build data sets in the reference on-disk layout (Sudoku-Extreme, Maze-Hard, ARC, generated Sudoku)
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model: TRM, HRM, their ablations or the baseline (presets or TOML; reference-style
    /// key=value overrides, `arch=hrm` selects an architecture)
    Train(train::TrainArgs),
    /// Start N training ranks on this machine, one per GPU (NCCL): `trm launch --nproc 4 -- train --device cuda ...`
    Launch(launch::LaunchArgs),
    /// Write a trained model in the reference's torch.save format (its own scripts load it)
    Export(export::ExportArgs),
    /// Evaluate a checkpoint on a data set's test split
    Eval(train::EvalArgs),
    /// Solve one new puzzle and show how the answer forms step by step
    Solve(solve::SolveArgs),
    /// Test-time training on new ARC tasks from a trained checkpoint, then voting and a submission
    Adapt(adapt::AdaptArgs),
    /// The whole pipeline on a laptop CPU: generate Sudoku, train for minutes, evaluate, solve one
    Demo(demo::DemoArgs),
    /// Write an HTML report of a run: curves, and test puzzles solved step by step (+ PNG charts)
    Report(report::ReportArgs),
    /// Time training or evaluation steps at the presets' shapes
    Bench(bench::BenchArgs),
    /// What a configuration builds: parameters, effective depth, forward passes, the paper's numbers
    Info(info::InfoArgs),
    /// Compare against a golden fixture from the reference PyTorch code (exit 1 on any mismatch)
    #[command(long_about = parity::LONG_ABOUT)]
    Parity(parity::ParityArgs),
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Parity(a) => parity::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Solve(a) => solve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Adapt(a) => adapt::run(a),
        Command::Report(a) => report::run(a),
        Command::Train(a) => train::train(a),
        Command::Launch(a) => launch::run(a),
        Command::Export(a) => export::run(a),
        Command::Eval(a) => train::eval(a),
    }
}
