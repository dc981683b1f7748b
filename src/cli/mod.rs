//! The `trm` command line: subcommands grouped by job.

pub mod adapt;
pub mod bench;
pub mod data;
pub mod data_show;
pub mod demo;
pub mod eval;
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

/// Upper limits of the flags that size work, far above any real use and below what exhausts a
/// machine (docs/reliability.md): a value past them is refused by the parser, with the range.
pub mod limits {
    /// --views: test-time views solved side by side (the benchmarks use up to 32).
    pub const MAX_VIEWS: u64 = 256;
    /// --steps / --view-steps: supervision steps at test time (the models use 16).
    pub const MAX_STEPS: u64 = 1024;
    /// --batch: rows per batch at evaluation.
    pub const MAX_BATCH: u64 = 65_536;
    /// trm adapt --steps: optimiser steps of test-time training.
    pub const MAX_ADAPT_STEPS: u64 = 1_000_000;
    /// trm report --puzzles: puzzles drawn step by step.
    pub const MAX_PUZZLES: u64 = 100;
    /// trm data --num-aug: augmentations per puzzle or task (the reference uses 1000).
    pub const MAX_AUG: u64 = 1_000_000;
    /// trm bench --warmup / --reps: untimed and timed steps.
    pub const MAX_BENCH_STEPS: u64 = 1_000_000;

    /// A count of 1 or more with no upper limit of its own (`--limit`): clap's range would print
    /// 2^64 - 1 as the bound.
    pub fn at_least_one(s: &str) -> Result<usize, String> {
        match s.trim().parse::<usize>() {
            Ok(0) => Err("must be at least 1".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("{e} (a whole number, at least 1)")),
        }
    }
}

/// `--precision` of `trm solve`, `eval`, `train` and `bench`: the CPU engine's matrix products.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bfloat16 on AMX tiles where the device is `cpu` and the CPU has them, float32 elsewhere
    Auto,
    /// float32 products (AVX-512 or AVX2 gemm)
    Float32,
    /// bfloat16 operands and float32 sums on the fastest unit here: AMX tiles, else AVX512-BF16
    Bfloat16,
    /// bfloat16 on Intel AMX tiles (Sapphire Rapids and later)
    Bfloat16Amx,
    /// bfloat16 with AVX512-BF16 (AMD Zen 4 and 5, Intel Cooper Lake and later; on Intel no
    /// faster than float32)
    Bfloat16Avx512,
}

impl Precision {
    /// Applies it for this process and returns what runs (float32, bfloat16-amx or
    /// bfloat16-avx512) on `--device cpu`, None on other devices (libtorch and cubecl follow the
    /// model's `arch.forward_dtype`). `training`: the weights change between calls.
    pub fn apply(self, device: crate::backend::DeviceSpec, training: bool) -> Result<Option<Precision>> {
        use crate::model::cpu::{Bf16Unit, bf16_auto_unit, bf16_fastest};
        let cpu = device == crate::backend::DeviceSpec::Cpu;
        anyhow::ensure!(
            matches!(self, Precision::Auto | Precision::Float32) || cpu,
            "--precision {} is the CPU engine's (--device cpu); libtorch and cubecl follow the model's arch.forward_dtype",
            self.name()
        );
        let unit = match self {
            Precision::Auto if cpu => bf16_auto_unit(),
            Precision::Auto | Precision::Float32 => None,
            Precision::Bfloat16 => Some(bf16_fastest()?),
            Precision::Bfloat16Amx => Some(Bf16Unit::Amx),
            Precision::Bfloat16Avx512 => Some(Bf16Unit::Avx512Bf16),
        };
        if training {
            crate::model::cpu::bf16_products_while_training(unit)?;
        } else {
            crate::model::cpu::bf16_products(unit)?;
        }
        Ok(cpu.then_some(match unit {
            None => Precision::Float32,
            Some(Bf16Unit::Amx) => Precision::Bfloat16Amx,
            Some(Bf16Unit::Avx512Bf16) => Precision::Bfloat16Avx512,
        }))
    }

    /// Its name in output and JSON (the `--precision` value).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::Float32 => "float32",
            Precision::Bfloat16 => "bfloat16",
            Precision::Bfloat16Amx => "bfloat16-amx",
            Precision::Bfloat16Avx512 => "bfloat16-avx512",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "trm",
    version,
    about = "Tiny Recursive Models: build data sets, train, evaluate and solve puzzles",
    before_help = "Start here: `trm demo` (the whole pipeline in 4 to 14 minutes on a 2-core CPU), or \
`trm solve --sudoku '53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79'` (the bundled model).",
    after_help = "Environment variables (all optional): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RUN_ID (torchrun, trm launch); \
SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_JOB_ID, SLURM_STEP_ID (srun); TRM_RENDEZVOUS_PORT, TRM_RENDEZVOUS_TIMEOUT, TRM_RENDEZVOUS_TOKEN, TRM_COLLECTIVE_TIMEOUT, TRM_NCCL_LIB, \
LD_LIBRARY_PATH (docs/distributed.md); CUBLAS_WORKSPACE_CONFIG (--deterministic, docs/gpu.md); TRM_CPU_BF16, TRM_FUSED_CPU, TRM_FUSED_TORCH, TRM_FUSED_ATTENTION, \
TRM_MALLOC_DEFAULT, TRM_NO_FONT, MALLOC_ARENA_MAX, GLIBC_TUNABLES (src/util/env.rs)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build data sets in the reference on-disk layout (Sudoku-Extreme, Maze-Hard, ARC, generated Sudoku)
    #[command(
        subcommand,
        after_help = "Example: trm data generate --out data/sudoku-gen --train 1000 --test 200 --givens 30-40 --num-aug 3"
    )]
    Data(data::DataCommand),
    /// Train a model: TRM, HRM, their ablations or the baseline (presets or TOML; reference-style
    /// key=value overrides, `arch=hrm` selects an architecture)
    #[command(
        after_help = "Example (after the `trm data generate` example): trm train --config sudoku-tiny --data data/sudoku-gen --out runs/tiny max_steps=300\n\
Devices: --device cpu (default), torch-cpu and cuda[:N] with a libtorch build (docs/gpu.md)."
    )]
    Train(train::TrainArgs),
    /// Start N training ranks on this machine, one per GPU (NCCL): `trm launch --nproc 4 -- train --device cuda ...`
    #[command(after_help = "Example (a libtorch build on a machine with 4 GPUs): \
trm launch --nproc 4 -- train --device cuda --config arc1 --data data/arc1 --out runs/arc1")]
    Launch(launch::LaunchArgs),
    /// Write a trained model in the reference's torch.save format (its own scripts load it)
    #[command(after_help = "Example (after the `trm train` example): trm export --checkpoint runs/tiny --out exported/tiny")]
    Export(export::ExportArgs),
    /// Evaluate a checkpoint on a data set's test split
    #[command(
        after_help = "Examples: trm eval --data data/sudoku-gen --views 8   (the bundled Sudoku model, after the `trm data generate` example)\n\
          trm eval --checkpoint runs/tiny --data data/sudoku-gen   (a run of yours)"
    )]
    Eval(eval::EvalArgs),
    /// Solve one new puzzle and show how the answer forms step by step
    #[command(after_help = "Example (the bundled Sudoku model, no download or training): \
trm solve --sudoku '53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79'")]
    Solve(solve::SolveArgs),
    /// Test-time training on new ARC tasks from a trained checkpoint, then voting and a submission
    #[command(after_help = "Example (an ARC model trained with `trm train --config arc1 ...`): \
trm adapt --checkpoint runs/arc1 --tasks new_challenges.json --out runs/adapt")]
    Adapt(adapt::AdaptArgs),
    /// The whole pipeline on a laptop CPU: generate Sudoku, train for minutes, evaluate, solve one
    #[command(after_help = "Example: trm demo   (4 to 14 minutes on a quiet 2-core machine, by its speed; everything goes to runs/demo)")]
    Demo(demo::DemoArgs),
    /// Write an HTML report of a run: curves, and test puzzles solved step by step (+ PNG charts)
    #[command(after_help = "Example (after `trm demo`): trm report --run runs/demo/run --out runs/demo/report-again.html")]
    Report(report::ReportArgs),
    /// Time training or evaluation steps at the presets' shapes
    #[command(after_help = "Example: trm bench --shape sudoku-mlp --batch 8 --warmup 1 --reps 3")]
    Bench(bench::BenchArgs),
    /// What a configuration builds: parameters, effective depth, forward passes, the paper's numbers
    #[command(after_help = "Example: trm info --config paper-t1-hrm   (trm info --list names every preset)")]
    Info(info::InfoArgs),
    /// Compare against a golden fixture from the reference PyTorch code (exit 1 on any mismatch)
    #[command(long_about = parity::LONG_ABOUT, after_help = "Example (from the repository's root): trm parity tests/fixtures/hrm-small")]
    Parity(parity::ParityArgs),
}

/// `--threads N`: 1 to 4096 CPU threads (0 would silently mean "all cores", and more threads than
/// that only thrash).
fn threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a thread count in 1..=4096 (leave --threads out for all cores)")),
    }
}

/// The engine flags of a training command, as its resume must be given them again (they choose
/// how the run computes and are not saved in it): "" for the defaults, else " --device cuda ...".
/// Refuses the CPU engine's own flags given for another device, where they would do nothing:
/// `--precision` (libtorch and cubecl follow the model's `arch.forward_dtype`: `--precision
/// float32` there ran bfloat16) and `--no-memory-check` (those engines make no estimate; they
/// report a failed allocation themselves).
fn refuse_cpu_engine_flags(device: crate::backend::DeviceSpec, precision: Option<Precision>, no_memory_check: bool) -> Result<()> {
    if device == crate::backend::DeviceSpec::Cpu {
        return Ok(());
    }
    if let Some(p) = precision {
        anyhow::bail!(
            "--precision {} is the CPU engine's (--device cpu); --device {device} follows the model's arch.forward_dtype",
            p.name()
        );
    }
    anyhow::ensure!(
        !no_memory_check,
        "--no-memory-check turns off the CPU engine's memory estimate, which --device {device} does not make (its engine reports a \
         failed allocation itself)"
    );
    Ok(())
}

fn engine_flags(device: crate::backend::DeviceSpec, precision: Option<Precision>, deterministic: bool, threads: Option<usize>) -> String {
    let mut flags = String::new();
    if device != crate::backend::DeviceSpec::Cpu {
        // GPU 0 as `cuda`, the form a launcher's ranks need too.
        let name = device.to_string();
        flags += &format!(" --device {}", name.strip_suffix(":0").unwrap_or(&name));
    }
    if let Some(p) = precision {
        flags += &format!(" --precision {}", p.name());
    }
    if deterministic {
        flags += " --deterministic";
    }
    // A deterministic run repeats bit for bit with the same thread count.
    if let Some(n) = threads {
        flags += &format!(" --threads {n}");
    }
    flags
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
        Command::Eval(a) => eval::eval(a),
    }
}

#[cfg(test)]
mod tests {

    /// `--precision` and `--no-memory-check` are the CPU engine's: off it they did nothing
    /// (`--precision float32` on cuda ran the model's bfloat16), and are refused.
    #[test]
    fn cpu_engine_flags_are_refused_on_other_engines() {
        for device in [DeviceSpec::TorchCpu, DeviceSpec::Cuda(0), DeviceSpec::Cubecl(1)] {
            let e = format!("{:#}", super::refuse_cpu_engine_flags(device, Some(super::Precision::Float32), false).unwrap_err());
            assert!(e.starts_with("--precision float32 is the CPU engine's") && e.contains(&format!("--device {device}")), "{e}");
            let e = format!("{:#}", super::refuse_cpu_engine_flags(device, None, true).unwrap_err());
            assert!(e.contains("--no-memory-check turns off the CPU engine's memory estimate"), "{e}");
            super::refuse_cpu_engine_flags(device, None, false).unwrap();
        }
        super::refuse_cpu_engine_flags(DeviceSpec::Cpu, Some(super::Precision::Bfloat16), true).unwrap();
    }
    use super::*;
    use crate::backend::DeviceSpec;

    #[test]
    fn the_engine_flags_a_resume_needs_again() {
        assert_eq!(engine_flags(DeviceSpec::Cpu, None, false, None), "");
        assert_eq!(engine_flags(DeviceSpec::Cuda(0), None, false, None), " --device cuda");
        assert_eq!(
            engine_flags(DeviceSpec::Cuda(2), Some(Precision::Bfloat16), true, None),
            " --device cuda:2 --precision bfloat16 --deterministic"
        );
        assert_eq!(engine_flags(DeviceSpec::TorchCpu, None, true, None), " --device torch-cpu --deterministic");
        assert_eq!(engine_flags(DeviceSpec::Cpu, None, true, Some(4)), " --deterministic --threads 4");
        // Each parses back to the same device.
        for d in [DeviceSpec::Cuda(0), DeviceSpec::Cuda(3), DeviceSpec::Cubecl(0), DeviceSpec::TorchCpu] {
            let f = engine_flags(d, None, false, None);
            assert_eq!(f.trim_start().strip_prefix("--device ").unwrap().parse::<DeviceSpec>(), Ok(d));
        }
    }
}
