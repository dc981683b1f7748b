//! The `trm` command line: subcommands grouped by job.

pub mod data;
pub mod device;
pub mod parity;
pub mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "trm", version, about = "Tiny Recursive Models: build data sets, train, evaluate and solve puzzles", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build data sets in the reference on-disk layout (Sudoku-Extreme, Maze-Hard, ARC, generated Sudoku)
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a TRM (presets or TOML; reference-style key=value overrides)
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on a data set's test split
    Eval(train::EvalArgs),
    /// Compare against a golden fixture from the reference PyTorch code (exit 1 on any mismatch)
    Parity(parity::ParityArgs),
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Parity(a) => parity::run(a),
        Command::Train(a) => train::train(a),
        Command::Eval(a) => train::eval(a),
    }
}
