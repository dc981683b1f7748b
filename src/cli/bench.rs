//! `trm bench`: step timings at the presets' shapes.

use crate::backend::{DeviceSpec, set_threads};
use crate::bench;
use crate::model::config::ForwardDtype;
use anyhow::Result;
use clap::builder::TypedValueParser as _;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// sudoku-att, sudoku-mlp, maze-att or arc-att
    #[arg(long, default_value = "sudoku-att")]
    pub shape: String,
    /// Architecture run at that shape: trm, hrm, trm_singlez, trm_hier6, transformers_baseline
    /// (its reference defaults; the shape's mlp_t and positions kept where it has them)
    #[arg(long, default_value = "trm")]
    pub arch: String,
    /// Rows per step
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_BATCH).map(|v| v as usize))]
    pub batch: usize,
    /// cpu, torch-cpu, cuda[:N] (libtorch), cubecl[:N] or cubecl-unfused[:N] (burn's CUDA backend)
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// `train` (forward + backward + optimisers) or `eval` (forward only)
    #[arg(long, default_value = "train")]
    pub mode: String,
    /// Untimed steps first
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_BENCH_STEPS).map(|v| v as usize))]
    pub warmup: usize,
    /// Timed steps
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_BENCH_STEPS).map(|v| v as usize))]
    pub reps: usize,
    /// Forward dtype: float32, or bfloat16 as the reference trains (on --device cpu bfloat16 is
    /// only emulated: refused unless TRM_CPU_BF16=1 asks for the emulation)
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// On --device cpu: the CPU engine's products, float32 or bfloat16 on Intel AMX tiles or with
    /// AVX512-BF16 (as `trm solve --precision`; in --mode train as `trm train --precision`)
    /// [default: float32]
    #[arg(long, value_enum)]
    pub precision: Option<super::Precision>,
    /// Peak TFLOP/s of the device, for the model FLOP utilisation
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// --mode train: run each step's batch in passes of this many rows, gradients summed before
    /// the update (as `trm train micro_batch_size=M`): less memory, the same update; must divide
    /// --batch
    #[arg(long, value_name = "M")]
    pub micro_batch: Option<usize>,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
    /// Time the steps as `trm train --deterministic` runs them (torch's deterministic
    /// algorithms on libtorch): what reproducibility costs
    #[arg(long)]
    pub deterministic: bool,
    /// After the timed steps, profile 2 more with libtorch's profiler (--device torch-cpu or
    /// cuda[:N]), write its raw events to this file, and add where the time went to the result:
    /// kernel time and launches by kind, the busiest kernels, operators per step
    #[arg(long, value_name = "EVENTS_FILE")]
    pub profile: Option<std::path::PathBuf>,
    /// Run even when the step's memory estimate exceeds the memory available (CPU engine)
    #[arg(long)]
    pub no_memory_check: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.deterministic {
        eprintln!("{}", crate::backend::make_deterministic(a.device)?);
    }
    set_threads(a.threads);
    let dt = match a.dtype.as_str() {
        "float32" => ForwardDtype::Float32,
        "bfloat16" => ForwardDtype::Bfloat16,
        other => anyhow::bail!("unknown --dtype `{other}` (float32 or bfloat16)"),
    };
    let arch = crate::model::architecture::Architecture::parse(&a.arch).ok_or_else(|| anyhow::anyhow!("unknown --arch `{}`", a.arch))?;
    anyhow::ensure!(a.reps >= 1, "--reps {}: at least one timed step", a.reps);
    if let Some(p) = a.peak_tflops {
        anyhow::ensure!(p.is_finite() && p > 0.0, "--peak-tflops {p}: the device's peak, a positive number of TFLOP/s");
    }
    let spec = bench::BenchSpec {
        shape: a.shape.clone(),
        arch,
        dtype: dt,
        batch: a.batch,
        warmup: a.warmup,
        reps: a.reps,
        peak_tflops: a.peak_tflops,
        profile: a.profile.clone(),
        micro_batch: a.micro_batch,
    };
    if let Some(m) = a.micro_batch {
        anyhow::ensure!(a.mode == "train", "--micro-batch splits training steps: it needs --mode train");
        anyhow::ensure!(m > 0 && a.batch.is_multiple_of(m), "--micro-batch {m} must divide --batch {}", a.batch);
    }
    // Refused before the timed steps rather than after them.
    anyhow::ensure!(a.profile.is_none() || a.device.feature() == Some("libtorch"), crate::backend::PROFILE_NEEDS_LIBTORCH);
    anyhow::ensure!(["train", "eval"].contains(&a.mode.as_str()), "unknown --mode `{}` (train or eval)", a.mode);
    super::refuse_cpu_engine_flags(a.device, a.precision, a.no_memory_check)?;
    let products = match a.precision {
        Some(p) => p.apply(a.device, a.mode == "train")?,
        None => None,
    };
    // The CPU engine runs a bfloat16 forward in float32 unless asked to emulate it: a benchmark
    // of bfloat16 would time float32.
    anyhow::ensure!(
        !(dt == ForwardDtype::Bfloat16 && a.device == DeviceSpec::Cpu && !crate::util::env::cpu_bf16()),
        "--dtype bfloat16 on --device cpu: the CPU engine runs a bfloat16 forward in float32 (bfloat16 is only emulated there), so \
         this would time float32. For bfloat16 products give --precision bfloat16; to time the emulation, set TRM_CPU_BF16=1"
    );
    // On the CPU engine, a step that does not fit would be killed by the system without a word
    // (the other engines report a failed allocation themselves).
    if !a.no_memory_check && a.device == DeviceSpec::Cpu {
        let mut model = bench::shape_for(&a.shape, arch)?;
        model.arch.forward_dtype = dt;
        crate::train::memory_check::check_bench::<crate::backend::Cpu>(&model, a.mode == "train", a.batch, a.micro_batch)?;
    }
    let mut r = match a.mode.as_str() {
        "train" => crate::with_backend!(a.device, B, device => bench::bench_train::<burn::backend::Autodiff<B>>(&spec, &device)?),
        "eval" => crate::with_backend!(a.device, B, device => bench::bench_eval::<B>(&spec, &device)?),
        m => anyhow::bail!("unknown --mode `{m}` (train or eval)"),
    };
    r.products = products.map(super::Precision::name);
    r.deterministic = a.deterministic;
    // The process ran nothing but this bench, so the peaks since it started are the bench's.
    match crate::backend::device_memory(a.device) {
        Some(Ok(m)) => r.device_memory = Some(m),
        Some(Err(e)) => eprintln!("bench: no GPU memory counters: {e:#}"),
        None => {}
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} {} {}{} batch {}{} on {} ({}, {} blocks): median {:.4} s/step (min {:.4}), {:.1} examples/s, {:.0} tokens/s, {:.3} TFLOP/s{}, peak RSS {:.0} MiB{}",
            r.shape,
            r.mode,
            r.dtype,
            r.products.map(|p| format!(" ({p} products)")).unwrap_or_default(),
            r.batch,
            r.micro_batch.map(|m| format!(" (passes of {m})")).unwrap_or_default(),
            r.device,
            r.engine,
            r.block,
            r.median_step_s,
            r.min_step_s,
            r.examples_per_s,
            r.tokens_per_s,
            r.achieved_tflops,
            r.mfu.map(|m| format!(" (MFU {:.1}%)", m * 100.0)).unwrap_or_default(),
            r.peak_bytes.unwrap_or(0) as f64 / (1 << 20) as f64,
            r.device_memory
                .map(|m| format!(
                    ", GPU peak {:.0} MiB allocated ({:.0} MiB reserved)",
                    m.peak_allocated_bytes as f64 / (1 << 20) as f64,
                    m.peak_reserved_bytes as f64 / (1 << 20) as f64
                ))
                .unwrap_or_default()
        );
        if let Some(p) = &r.profile {
            println!("profile ({} steps): {:.0} operators per step", p.steps, p.ops_per_step);
            if let (Some(k), Some(t), Some(busy)) = (p.kernels_per_step, p.kernel_s_per_step, p.gpu_busy_share) {
                println!("  GPU: {k:.0} kernels per step, {t:.4} s of kernel time per step, busy {:.0}% of the time", busy * 100.0);
                for (kind, v) in &p.kernel_kinds {
                    println!("  {kind:<12} {:.4} s/step ({:.0}%), {:.0} launches", v.s_per_step, v.share * 100.0, v.launches_per_step);
                }
            }
            for op in p.top_ops.iter().take(10) {
                println!("  {:<40} {:>6.0} calls/step", op.op, op.calls_per_step);
            }
        }
    }
    Ok(())
}
