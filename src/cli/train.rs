//! `trm train`: a new run, or a resumed one, on one process or as one rank of several.

use crate::backend::{DeviceSpec, set_threads};
use crate::store::checkpoint;
use crate::store::config;
use crate::store::integrity;
use crate::store::overrides;
use crate::train::trainer::{self, TrainJob};
use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Preset name (sudoku-mlp, sudoku-att, maze, arc1, arc2, hrm-sudoku, hrm-maze, hrm-arc1, the
    /// paper's table rows paper-t1-* .. paper-t5-*, sudoku-tiny, demo: `trm info --list`) or a
    /// TOML file [default: sudoku-tiny; not read with --resume]
    #[arg(long)]
    pub config: Option<String>,
    /// Data set folder (train/ and test/ in the reference layout) [default: the reference's
    /// `data_paths=DIR` override if given; with --resume: the data set the run recorded]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder: config, metrics.jsonl, TensorBoard events, checkpoints/
    #[arg(long)]
    pub out: PathBuf,
    /// Override a configuration key with the reference's names, e.g. --set arch.L_cycles=4
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Overrides written as the reference's hydra command line does: `arch.L_cycles=6 ema=True`
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in --out from its newest intact checkpoint, with the configuration saved
    /// in it (--config is not read); KEY=VALUE overrides of keys that may change on resume apply
    /// (max_steps, checkpoint and evaluation settings, learning rates), others are refused
    #[arg(long)]
    pub resume: bool,
    /// Start from the weights of a checkpoint (a run or checkpoint folder, a model.safetensors, or
    /// a reference torch.save file), at step 0 with a fresh optimiser; the reference's
    /// `load_checkpoint=PATH` is the same
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// cpu, torch-cpu (libtorch on the CPU), cuda[:N] (libtorch on a GPU), cubecl[:N] or cubecl-unfused[:N] (burn's CUDA backend)
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this many minutes of wall time (then evaluate and checkpoint, as at the end)
    #[arg(long, value_name = "MINUTES")]
    pub time_limit: Option<f64>,
    /// The CPU engine's matrix products: float32, or bfloat16 operands with float32 sums on
    /// Intel AMX tiles or with AVX512-BF16 (as `trm solve --precision`) in the forward pass and
    /// the linear layers' backward; attention's backward, the optimiser and everything
    /// element-wise stay float32. An engine choice like --device: not recorded in the run, so
    /// give it again with --resume [default: float32]
    #[arg(long, value_enum)]
    pub precision: Option<super::Precision>,
    /// Make the run repeat bit for bit (same machine, build and --threads), so that a resumed run
    /// goes on exactly as the uninterrupted one would have: torch's deterministic algorithms on
    /// libtorch (docs/gpu.md; its cost on a GPU is what the GPU check measures), always so on
    /// `cpu`, refused on cubecl. An engine choice like --device: not recorded in the run, so
    /// give it again with --resume
    #[arg(long)]
    pub deterministic: bool,
    /// Run even when the memory estimate of the CPU engine says the training or evaluation
    /// pass does not fit the memory this machine has available (it is refused by default,
    /// naming the micro_batch_size or eval_batch_size that fits; docs/reliability.md, "Memory")
    #[arg(long)]
    pub no_memory_check: bool,
}

pub fn train(a: TrainArgs) -> Result<()> {
    // Under a launcher every rank does the same before the ranks meet: rank 0 alone says so (an
    // environment that does not read is refused below, where the ranks are set up).
    let speaks = crate::util::env::launch().ok().flatten().is_none_or(|l| l.rank == 0);
    if a.deterministic {
        let how = crate::backend::make_deterministic(a.device)?;
        if speaks {
            eprintln!("{how}");
        }
    }
    set_threads(a.threads);
    super::refuse_cpu_engine_flags(a.device, a.precision, a.no_memory_check)?;
    if let Some(p) = a.precision.unwrap_or(super::Precision::Float32).apply(a.device, true)?
        && p != super::Precision::Float32
        && speaks
    {
        eprintln!("products: {} in the forward pass and the linear layers' backward", p.name());
    }
    let mut ov = a.set.clone();
    ov.extend(a.overrides.iter().cloned());
    // On --resume, the reference's `data_paths=[DIR]` names the data as --data does (the run's
    // recorded path is not a key to change).
    let resume_paths = match a.resume {
        true => overrides::take_key(&mut ov, "data_paths").map(|v| config::data_paths_value(&v)),
        false => None,
    };
    let init_path = init_from_of(&a, &mut ov)?;
    // A resumed run takes its configuration from its checkpoint (overrides: store::resume::resume_config).
    if let (true, Some(c), true) = (a.resume, &a.config, speaks) {
        eprintln!("note: --config {c} is not read on --resume: the run continues with the configuration saved in its checkpoint");
    }
    let cfg = if a.resume { config::TrainConfig::default() } else { config::resolve(a.config.as_deref().unwrap_or("sudoku-tiny"), &ov)? };
    let init_from = match &init_path {
        Some(p) if p.is_dir() => Some(checkpoint::resolve(p)?.join("model.safetensors")),
        other => other.clone(),
    };
    let init_from = init_from.map(crate::train::setup::InitFrom::fine_tune).transpose()?;
    if let Some(m) = a.time_limit {
        anyhow::ensure!(m.is_finite() && m > 0.0, "--time-limit {m}: must be a positive number of minutes");
        std::time::Duration::try_from_secs_f64(m * 60.0).map_err(|_| anyhow::anyhow!("--time-limit {m:e}: too many minutes"))?;
    }
    anyhow::ensure!(!a.resume || a.out.is_dir(), "--resume: {} is not a run folder, so there is no run to continue", a.out.display());
    // --data, or the reference's `data_paths=[DIR]` (checked here, before a run folder is made);
    // on --resume without either, the data set the run recorded.
    let given = if a.resume { resume_paths.unwrap_or_default() } else { cfg.data_paths.clone() };
    let data = match crate::train::setup::named_data_set(&given, a.data.as_deref())? {
        Some(d) => d,
        None if a.resume => recorded_data(&a.out, speaks)?,
        None => bail!("which data set? pass --data DIR (a folder made by `trm data`), or the reference's data_paths=[DIR]"),
    };
    if !a.resume {
        crate::train::setup::named_test_set(&cfg.data_paths_test, &data)?;
    }
    crate::util::interrupt::install()?;
    let job = TrainJob {
        config: cfg,
        data,
        out: a.out.clone(),
        resume: a.resume,
        overrides: ov,
        quiet: a.quiet,
        init_from,
        time_limit: a.time_limit.map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        engine_flags: super::engine_flags(a.device, a.precision, a.deterministic, a.threads),
        memory_check: !a.no_memory_check,
    };
    // A folder this command made (and the parents it made for it) left holding only its lock
    // (the run failed before writing anything) is removed, so a failed start leaves nothing behind.
    let made = crate::util::fs::missing_folders(&a.out);
    let ran = run_job(&a, &job);
    if ran.is_err() {
        crate::util::fs::remove_made_folders(&made);
    }
    let (s, launch) = ran?;
    if launch.as_ref().is_some_and(|l| l.rank != 0) {
        return Ok(());
    }
    let trained = s.trained();
    println!(
        "trained {trained} step{} in {:.1}s{}; checkpoint {}",
        if trained == 1 { "" } else { "s" },
        s.seconds,
        if s.started_at > 0 { format!(" (resumed at step {}, now at step {})", s.started_at, s.steps) } else { String::new() },
        s.checkpoint.map(|p| p.display().to_string()).unwrap_or_default()
    );
    if s.skipped > 0 {
        eprintln!(
            "warning: {} batch{} skipped in this run (their loss or update was not finite; skip_nonfinite_batches): \
             skipped batches take no step, so the run can end short of max_steps; metrics.jsonl names each",
            s.skipped,
            if s.skipped == 1 { " was" } else { "es were" }
        );
    }
    if let Some((step, r)) = s.evals.last() {
        println!(
            "final eval (step {step}): token accuracy {:.4}, exact accuracy {:.4} on {} examples{}",
            r.accuracy,
            r.exact_accuracy,
            r.count,
            crate::train::trainer::arc_summary(r, s.arc_pooled)
        );
        if !r.lm_loss.is_finite() {
            eprintln!(
                "warning: the final evaluation's loss is {}: the weights are finite but the model's outputs are not (weights \
                 grown huge); these accuracies are not to be trusted",
                r.lm_loss
            );
        }
    }
    Ok(())
}

/// The weights a new run starts from: `--init-from`, or the reference's `load_checkpoint=PATH`
/// (taken out of `ov`), which is the same: the weights and the puzzle table (rows matched as
/// `store::puzzle_rows` says), step 0, fresh optimiser moments.
fn init_from_of(a: &TrainArgs, ov: &mut Vec<String>) -> Result<Option<PathBuf>> {
    let given = overrides::take_load_checkpoint(ov);
    let Some(Some(load)) = given else { return Ok(a.init_from.clone()) };
    if a.resume {
        bail!(
            "load_checkpoint={} starts a new run from those weights (as --init-from does), with a fresh optimiser; it cannot be \
             combined with --resume, which continues the run in --out exactly",
            load.display()
        );
    }
    // Compared as the weights files they name (a run folder names its newest checkpoint's).
    let weights = |p: &std::path::Path| -> Option<PathBuf> {
        let file = if p.is_dir() { checkpoint::resolve(p).ok()?.join("model.safetensors") } else { p.to_path_buf() };
        file.canonicalize().ok().or_else(|| std::path::absolute(&file).ok())
    };
    match &a.init_from {
        Some(p) if weights(p) != weights(&load) => {
            bail!("load_checkpoint={} and --init-from {} name two different starting weights; give one", load.display(), p.display())
        }
        _ => Ok(Some(load)),
    }
}

/// Trains `job` as `a` asks: one process, or one rank of a launcher's world over NCCL.
fn run_job(a: &TrainArgs, job: &TrainJob) -> Result<(trainer::TrainSummary, Option<crate::util::env::Launch>)> {
    // A launcher's world of one on the CPU is a plain run; on a GPU it still goes through NCCL.
    let launch = crate::util::env::launch()?.filter(|l| l.world > 1 || a.device.gpu().is_some());
    let s = match &launch {
        None => crate::with_backend!(a.device, B, device => trainer::train::<Autodiff<B>>(job, &device)?),
        Some(l) => {
            let Some(n) = a.device.gpu() else {
                bail!(
                    "the {} environment asks for {} ranks, but ranks in separate processes talk through NCCL, which needs CUDA GPUs \
                     (--device cuda and a trm built with --features libtorch). On the CPU one process already uses every core: run \
                     `trm train` without a launcher ({})",
                    l.source,
                    l.world,
                    if l.source == "slurm" { "outside srun, or in a step of one task" } else { "or unset WORLD_SIZE/RANK" }
                )
            };
            // One GPU per rank: cuda:LOCAL_RANK.
            if n != 0 && n != l.local_rank {
                bail!(
                    "--device {}: under a launcher each rank uses GPU LOCAL_RANK (here {}); pass the device without an index",
                    a.device,
                    l.local_rank
                );
            }
            let mut reducer = nccl_reducer(l)?;
            crate::with_backend!(a.device.on_gpu(l.local_rank), B, device => trainer::train_with::<Autodiff<B>>(job, &device, &mut *reducer)?)
        }
    };
    Ok((s, launch))
}

/// The data set a run recorded (`data_paths`, the same in all its checkpoints), for `--resume`
/// without `--data`, named on standard error if `speaks`. Only a state.json is read: the resume itself picks and verifies the
/// checkpoint (train::setup::open_state), once.
fn recorded_data(run: &std::path::Path, speaks: bool) -> Result<PathBuf> {
    let js = checkpoint::newest_state_json(run).with_context(|| {
        if integrity::holds_no_checkpoint(run) {
            format!("cannot resume {}: it holds no checkpoint to continue from{}", run.display(), integrity::start_over_hint(run))
        } else {
            format!(
                "cannot resume {}: none of its checkpoints has a state.json that reads, so the data set it trained on is unknown; \
                 pass --data DIR (the resume then verifies the checkpoints and names what is wrong)",
                run.display()
            )
        }
    })?;
    let data = js.config.data_paths.first().map(PathBuf::from);
    let data = data.with_context(|| format!("{}: the run recorded no data set; pass --data", run.display()))?;
    if speaks {
        eprintln!("data: {} (recorded by the run)", data.display());
    }
    Ok(data)
}

/// The NCCL reducer of a launched rank (a GPU engine's build), or a clear error.
fn nccl_reducer(l: &crate::util::env::Launch) -> Result<Box<dyn crate::parallel::Reducer>> {
    #[cfg(any(feature = "libtorch", feature = "cubecl"))]
    {
        use crate::parallel::watchdog::{Watchdog, end_process};
        let deadline = crate::util::env::collective_timeout()?;
        let nccl = Box::new(crate::parallel::nccl::NcclReducer::new(l, crate::util::env::rendezvous_timeout()?)?);
        // Every collective under the deadline, so that the ranks waiting for a dead or stalled
        // rank end.
        Ok(match deadline {
            Some(t) => Box::new(Watchdog::new(nccl, t, end_process())?),
            None => nccl,
        })
    }
    #[cfg(not(any(feature = "libtorch", feature = "cubecl")))]
    bail!("rank {}: NCCL needs a GPU engine: rebuild with --features libtorch", l.rank)
}
