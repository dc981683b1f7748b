//! `trm bench`: timing of training steps (forward + backward + optimisers, one supervision step)
//! and evaluation steps at the presets' shapes, with achieved FLOP/s and peak memory.

use crate::data::loader::Batch;
use crate::model::act::{Carry, Exploration};
use crate::model::architecture::Architecture;
use crate::model::config::{ArchConfig, ForwardDtype, ModelConfig, PosEncoding};
use crate::model::layers::Rope;
use crate::model::precision::activation_dtype;
use crate::model::weights::{self, Weights};
use crate::parallel::Single;
use crate::step::optim::{AdamHyper, AdamState, OptimizerKind};
use crate::step::supervision::{MicroBatches, Ropes, eval_forward, micro_batch_step};
use crate::step::update::{Learner, StepHyper, apply_gradients};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// The benchmark shapes: the presets' architectures at their data sets' sizes.
pub fn shape(name: &str) -> anyhow::Result<ModelConfig> {
    let mut arch = ArchConfig::default();
    let (seq_len, vocab, ids) = match name {
        "sudoku-att" => (81, 11, 1),
        "sudoku-mlp" => {
            arch.mlp_t = true;
            arch.pos_encodings = PosEncoding::None;
            (81, 11, 1)
        }
        "maze-att" => {
            arch.l_cycles = 4;
            (900, 6, 1)
        }
        "arc-att" => {
            arch.l_cycles = 4;
            (900, 12, 4096)
        }
        _ => anyhow::bail!("unknown shape `{name}` (sudoku-att, sudoku-mlp, maze-att, arc-att)"),
    };
    arch.forward_dtype = crate::model::config::ForwardDtype::Float32;
    Ok(ModelConfig { arch, seq_len, vocab_size: vocab, num_puzzle_identifiers: ids })
}

/// A benchmark shape run by another architecture: its reference defaults at the shape's sequence
/// and vocabulary (the shape's mlp_t / positions kept where the architecture has them).
pub fn shape_for(name: &str, arch: Architecture) -> anyhow::Result<ModelConfig> {
    let mut c = shape(name)?;
    if arch != Architecture::Trm {
        let mut a = arch.defaults();
        if arch != Architecture::TransformersBaseline {
            (a.mlp_t, a.pos_encodings) = (c.arch.mlp_t, c.arch.pos_encodings);
        }
        a.forward_dtype = c.arch.forward_dtype;
        c.arch = a;
    }
    c.validate()?;
    Ok(c)
}

/// Matmul FLOPs of one block on `b` rows.
fn block_flops(c: &ModelConfig, b: usize) -> f64 {
    let (t, d, i) = (c.total_len() as f64, c.d() as f64, c.mlp_inner() as f64);
    let rows = b as f64 * t;
    let mlp = 2.0 * rows * d * 3.0 * i; // gate, up, down
    let mixer = if c.arch.mlp_t {
        let it = c.mlp_t_inner() as f64;
        2.0 * b as f64 * d * t * 3.0 * it
    } else {
        let aw = c.attention_width() as f64;
        2.0 * rows * d * 4.0 * aw + 2.0 * 2.0 * b as f64 * t * t * aw // qkv + o, QK^T and PV
    };
    mlp + mixer
}

/// (forward FLOPs of one supervision step, training FLOPs = forward + backward of the
/// differentiated updates + the bootstrap pass of the Q-continue target when there is one).
pub fn step_flops(c: &ModelConfig, b: usize) -> (f64, f64) {
    let s = crate::model::schedule::Schedule::of(&c.arch);
    let heads = 2.0 * b as f64 * c.total_len() as f64 * c.d() as f64 * c.vocab_size as f64;
    let blocks = block_flops(c, b);
    let fwd = s.effective_depth() as f64 * blocks + heads;
    let bootstrap = if c.arch.continue_target() { fwd } else { 0.0 };
    (fwd, fwd + bootstrap + 2.0 * (s.differentiated_blocks() as f64 * blocks + heads))
}

/// What to time: a benchmark shape run by an architecture, its dtype, batch and repetitions.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub shape: String,
    pub arch: Architecture,
    pub dtype: ForwardDtype,
    pub batch: usize,
    pub warmup: usize,
    pub reps: usize,
    /// Peak TFLOP/s of the device, for the model FLOP utilisation.
    pub peak_tflops: Option<f64>,
    /// Profile two more steps after the timed ones and write the profiler's events here
    /// (libtorch only, `crate::backend::profile_steps`).
    pub profile: Option<std::path::PathBuf>,
    /// Training: rows per forward and backward pass (None = the whole batch in one).
    pub micro_batch: Option<usize>,
}

/// Steps profiled after the timed ones (`BenchSpec::profile`).
const PROFILED_STEPS: usize = 2;

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub shape: String,
    pub mode: String,
    /// The activations' dtype the step really ran in (`float32` or `bfloat16`).
    pub dtype: String,
    pub batch: usize,
    /// Training in passes of this many rows (`BenchSpec::micro_batch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
    pub device: String,
    pub repetitions: usize,
    pub median_step_s: f64,
    pub min_step_s: f64,
    pub examples_per_s: f64,
    pub tokens_per_s: f64,
    pub flops_per_step: f64,
    pub achieved_tflops: f64,
    /// Model FLOP utilisation against `peak_tflops`, when a peak is known.
    pub mfu: Option<f64>,
    pub peak_tflops: Option<f64>,
    /// Peak resident memory of the process (CPU) in bytes.
    pub peak_bytes: Option<u64>,
    /// GPU memory as the CUDA caching allocator counts it (libtorch on a GPU only): its peak
    /// allocated compares with the reference's `torch.cuda.max_memory_allocated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_memory: Option<crate::backend::DeviceMemory>,
    /// The widest vector instructions trm's CPU kernels (gemm, the fused block) use in this build
    /// on this CPU: `avx512`, `avx2` or `baseline` (burn-flex's own element-wise ops, a small
    /// share, dispatch on their own and may use AVX-512 even in an `avx2` build).
    pub cpu_isa: &'static str,
    /// `trm bench --precision`, as it ran: the CPU engine's products (float32,
    /// bfloat16-amx or bfloat16-avx512); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<&'static str>,
    /// Run with `--deterministic` (torch's deterministic algorithms on libtorch).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deterministic: bool,
    /// The first step alone (a new device's kernel compilation, allocator growth, autotune).
    pub first_step_s: f64,
    /// The engine that ran it (`crate::backend::Capabilities::engine`).
    pub engine: &'static str,
    /// The form the transformer blocks ran in (`crate::model::layers::block_form`): `fused-cpu`,
    /// `fused-libtorch`, `generic+sdpa` or `generic`.
    pub block: &'static str,
    /// Where the time of `PROFILED_STEPS` more steps went (`trm bench --profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::backend::profile::Profile>,
    /// Why the profile is missing when it was asked for (the timings stand without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_error: Option<String>,
}

/// A profile asked for, or why there is none: a profiler that fails (no CUPTI in a sandbox,
/// say) costs the profile, not the timings.
fn profile_or_error(
    r: Option<anyhow::Result<crate::backend::profile::Profile>>,
) -> (Option<crate::backend::profile::Profile>, Option<String>) {
    match r {
        None => (None, None),
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => {
            eprintln!("bench: no profile: {e:#}");
            (None, Some(format!("{e:#}")))
        }
    }
}

/// See `BenchResult::cpu_isa`.
pub fn cpu_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "baseline"
}

/// A batch of random tokens and labels at a shape (for timing and numerics checks).
pub fn random_batch(c: &ModelConfig, b: usize, rng: &mut impl Rng) -> Batch {
    let s = c.seq_len;
    let inputs: Vec<i32> = (0..b * s).map(|_| rng.random_range(1..c.vocab_size as i32)).collect();
    let labels: Vec<i32> = (0..b * s).map(|_| rng.random_range(1..c.vocab_size as i32)).collect();
    let ids = (0..b).map(|_| rng.random_range(0..c.num_puzzle_identifiers as i32)).collect();
    Batch { set: 0, batch_size: b, seq_len: s, inputs, labels, puzzle_identifiers: ids, global_effective: b }
}

fn summarise<B: Backend>(
    shape: &str,
    mode: &str,
    dtype: DType,
    c: &ModelConfig,
    b: usize,
    device: String,
    all: Vec<f64>,
    warmup: usize,
    flops: f64,
    peak: Option<f64>,
) -> BenchResult {
    let first = all[0];
    let times = &all[warmup.min(all.len() - 1)..];
    let med = crate::eval::interval::median(times).expect("at least one timed step");
    let tflops = flops / med / 1e12;
    BenchResult {
        shape: shape.into(),
        mode: mode.into(),
        dtype: if dtype == DType::BF16 { "bfloat16".into() } else { "float32".into() },
        batch: b,
        micro_batch: None,
        device,
        repetitions: times.len(),
        median_step_s: med,
        min_step_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        examples_per_s: b as f64 / med,
        tokens_per_s: (b * c.seq_len) as f64 / med,
        flops_per_step: flops,
        achieved_tflops: tflops,
        mfu: peak.map(|p| tflops / p),
        peak_tflops: peak,
        peak_bytes: crate::util::alloc::peak_rss(),
        device_memory: None,
        cpu_isa: cpu_isa(),
        products: None,
        deterministic: false,
        first_step_s: first,
        engine: crate::backend::capabilities::<B>().engine,
        block: crate::model::layers::block_form::<B>(c),
        profile: None,
        profile_error: None,
    }
}

/// One line per step on stderr: a first step on a new device compiles its kernels and can take
/// long, so a slow start shows as such instead of as silence.
fn progress(i: usize, warmup: usize, reps: usize, secs: f64) {
    let kind = if i < warmup { "warm-up" } else { "timed" };
    eprintln!("bench: step {}/{} ({kind}) {secs:.3} s", i + 1, warmup + reps);
}

/// Times `reps` training steps after `warmup` on backend `AD`.
pub fn bench_train<AD: AutodiffBackend>(spec: &BenchSpec, device: &AD::Device) -> anyhow::Result<BenchResult> {
    let BenchSpec { shape: shape_name, arch, dtype, batch: b, warmup, reps, peak_tflops: peak, profile, micro_batch } = spec.clone();
    let shape_name = shape_name.as_str();
    let mut c = shape_for(shape_name, arch)?;
    c.arch.forward_dtype = dtype;
    let mut rng = crate::util::rng::derive(0, &[]);
    let mut params = weights::init::<AD::InnerBackend>(&c, &mut rng, device).into_named();
    let mut table = Some(Tensor::<AD::InnerBackend, 2>::zeros([c.num_puzzle_identifiers, c.arch.puzzle_emb_ndim], device));
    let mut adam = AdamState::new(&params);
    let ropes = Ropes::<AD>::new(&c, device);
    let mut carry = Some(Carry::for_training(&c, b, device));
    let batch = random_batch(&c, b, &mut rng);
    let rows = MicroBatches { size: micro_batch.unwrap_or(b), global: b, supervision_decay: None };
    let adam_h = AdamHyper { lr: 1e-4, beta1: 0.9, beta2: 0.95, weight_decay: 0.1, kind: OptimizerKind::AdamAtan2 };
    let h = StepHyper { adam: adam_h, puzzle_lr: 1e-2, puzzle_weight_decay: 0.1, ema_rate: 0.999, freeze_weights: false };
    let mut step = |i: usize| {
        let explore = |a: usize| Exploration::of(&c.arch, 0, i as u64 + 1, a);
        let whole = carry.take().expect("the carry is put back every step");
        let (_, grads, whole) = micro_batch_step::<AD>(&c, &params, table.as_ref(), whole, &batch, &ropes, explore, rows);
        carry = Some(whole);
        let learner = Learner { params: &mut params, table: &mut table, adam: &mut adam, ema: None };
        apply_gradients(learner, grads, &h, &mut Single)?;
        // Wait for the device: reading one value forces all queued work to finish.
        let _ = crate::backend::to_host_f32(&params[0].tensor.clone().slice([0..1, 0..1]));
        Ok(())
    };
    let times = time_steps(warmup, reps, &mut step)?;
    // Summarised before profiling: the profiler's buffers would count in the peak memory.
    let timed = summarise::<AD>(
        &label_of(shape_name, arch),
        "train",
        activation_dtype::<AD>(&c),
        &c,
        b,
        format!("{device:?}"),
        times,
        warmup,
        step_flops(&c, b).1,
        peak,
    );
    let timed = BenchResult { micro_batch, ..timed };
    let mut i = warmup + reps;
    let (profile, profile_error) = profile_or_error(profile.map(|events| {
        crate::backend::profile_steps::<AD>(PROFILED_STEPS, &events, || {
            i += 1;
            step(i - 1)
        })
    }));
    Ok(BenchResult { profile, profile_error, ..timed })
}

/// Runs `step(i)` for `warmup + reps` steps and returns each one's wall time, showing progress.
fn time_steps(warmup: usize, reps: usize, mut step: impl FnMut(usize) -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for i in 0..warmup + reps {
        let t = Instant::now();
        step(i)?;
        let secs = t.elapsed().as_secs_f64();
        progress(i, warmup, reps, secs);
        times.push(secs);
    }
    Ok(times)
}

/// A result row's name: the shape, and the architecture when it is not TRM.
fn label_of(shape: &str, arch: Architecture) -> String {
    if arch == Architecture::Trm { shape.to_string() } else { format!("{shape}/{}", arch.name()) }
}

/// Times `reps` evaluation (inference) supervision steps after `warmup` on backend `B`.
pub fn bench_eval<B: Backend>(spec: &BenchSpec, device: &B::Device) -> anyhow::Result<BenchResult> {
    let BenchSpec { shape: shape_name, arch, dtype, batch: b, warmup, reps, peak_tflops: peak, profile, .. } = spec.clone();
    let shape_name = shape_name.as_str();
    let mut c = shape_for(shape_name, arch)?;
    c.arch.forward_dtype = dtype;
    let mut rng = crate::util::rng::derive(0, &[]);
    let w: Weights<B> = weights::init::<B>(&c, &mut rng, device);
    let table = Some(Tensor::<B, 2>::zeros([c.num_puzzle_identifiers, c.arch.puzzle_emb_ndim], device));
    let rope = Rope::<B>::new(&c, device);
    let mut carry = Carry::new(&c, b, device);
    let batch = random_batch(&c, b, &mut rng);
    let mut step = |_: usize| {
        let _ = eval_forward(&c, &w, table.as_ref(), &mut carry, &batch, &rope, usize::MAX);
        Ok(())
    };
    let times = time_steps(warmup, reps, &mut step)?;
    let timed = summarise::<B>(
        &label_of(shape_name, arch),
        "eval",
        activation_dtype::<B>(&c),
        &c,
        b,
        format!("{device:?}"),
        times,
        warmup,
        step_flops(&c, b).0,
        peak,
    );
    let (profile, profile_error) =
        profile_or_error(profile.map(|events| crate::backend::profile_steps::<B>(PROFILED_STEPS, &events, || step(0))));
    Ok(BenchResult { profile, profile_error, ..timed })
}

#[cfg(test)]
mod tests {
    use crate::model::architecture::Architecture;
    use crate::model::config::ModelConfig;

    /// The CPU engine's memory estimate (`model::memory`) against the per-row slopes of peak RSS
    /// measured with `trm bench --warmup 1 --reps 1` at two batch sizes (2026-12-06;
    /// bench/results/2026-12-06-memory-estimate-cpu): never more than 2% below a measurement, at
    /// most `over` above it.
    fn estimate_bounds_measurements(estimate: fn(&ModelConfig) -> u64, over: f64, cases: &[(&str, Architecture, f64)]) {
        for &(name, arch, measured) in cases {
            let est = estimate(&super::shape_for(name, arch).unwrap()) as f64 / (1u64 << 20) as f64;
            let ratio = est / measured;
            eprintln!("{name} {arch:?}: estimate {est:.2} MiB/row, measured {measured} ({ratio:.3}x)");
            assert!((0.98..=over).contains(&ratio), "{name} {arch:?}: estimate {est:.2} MiB/row, measured {measured} ({ratio:.2}x)");
        }
    }

    #[test]
    fn training_memory_estimates_bound_the_measured_peaks() {
        estimate_bounds_measurements(
            crate::model::memory::train_bytes_per_row,
            1.25,
            &[
                ("sudoku-att", Architecture::Trm, 47.3),
                ("sudoku-att", Architecture::TrmSinglez, 46.9),
                ("sudoku-mlp", Architecture::Trm, 54.9),
                ("sudoku-att", Architecture::Hrm, 26.25),
                ("sudoku-att", Architecture::TransformersBaseline, 23.3),
                ("arc-att", Architecture::Trm, 548.5),
                ("maze-att", Architecture::Hrm, 498.0),
            ],
        );
    }

    /// Evaluation passes: 64 and 256 rows (ARC 4 and 16).
    #[test]
    fn evaluation_memory_estimates_bound_the_measured_peaks() {
        estimate_bounds_measurements(
            crate::model::memory::eval_bytes_per_row,
            1.5,
            &[
                ("sudoku-att", Architecture::Trm, 3.98),
                ("sudoku-mlp", Architecture::Trm, 3.17),
                ("sudoku-att", Architecture::Hrm, 3.30),
                ("arc-att", Architecture::Trm, 72.2),
            ],
        );
    }

    #[test]
    fn flop_count_of_the_sudoku_attention_block() {
        // One attention block on 97 tokens at D = 512: 3.4M params -> 2 * 97 * 3.41M matmul FLOPs
        // plus the attention products 4 * 97^2 * 512.
        let c = super::shape("sudoku-att").unwrap();
        let per_block = super::block_flops(&c, 1);
        let want = 2.0 * 97.0 * 3_407_872.0 + 4.0 * 97.0 * 97.0 * 512.0;
        assert!((per_block - want).abs() < 1.0, "{per_block} vs {want}");
    }
}
