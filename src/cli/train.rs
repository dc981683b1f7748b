//! `trm train` and `trm eval`.

use crate::backend::{DeviceSpec, set_threads};
use crate::data::format;
use crate::eval::arc_vote::ArcEval;
use crate::eval::evaluate::{EvalResult, evaluate};
use crate::model::weights::Weights;
use crate::store::checkpoint;
use crate::store::config;
use crate::store::config::ArcEvaluatorArgs;
use crate::store::eval_outputs::{Output, Recorder};
use crate::store::integrity;
use crate::train::trainer::{self, TrainJob};
use crate::util::fs::{Protected, check_output};
use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::prelude::*;
use clap::builder::TypedValueParser as _;
use std::path::PathBuf;
use std::sync::Arc;

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
    let is_data_paths = |o: &String| o.split_once('=').is_some_and(|(k, _)| k.trim().trim_start_matches('+') == "data_paths");
    let resume_paths = match a.resume {
        true => ov.iter().rfind(|o| is_data_paths(o)).map(|o| config::data_paths_value(o.split_once('=').unwrap().1)),
        false => None,
    };
    if a.resume {
        ov.retain(|o| !is_data_paths(o));
    }
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
    if let Some((step, r)) = s.evals.last() {
        println!(
            "final eval (step {step}): token accuracy {:.4}, exact accuracy {:.4} on {} examples{}",
            r.accuracy,
            r.exact_accuracy,
            r.count,
            crate::train::trainer::arc_summary(r, s.arc_pooled)
        );
    }
    Ok(())
}

/// The weights a new run starts from: `--init-from`, or the reference's `load_checkpoint=PATH`
/// (taken out of `ov`), which is the same: the weights and the puzzle table (rows matched as
/// `store::puzzle_rows` says), step 0, fresh optimiser moments.
fn init_from_of(a: &TrainArgs, ov: &mut Vec<String>) -> Result<Option<PathBuf>> {
    let key = |o: &String| o.split_once('=').map(|(k, _)| k.trim().trim_start_matches('+').to_string());
    let given = ov.iter().rfind(|o| key(o).as_deref() == Some("load_checkpoint")).map(|o| {
        let v = o.split_once('=').map_or("", |(_, v)| v).trim().trim_matches(['"', '\'']);
        (!matches!(v, "" | "null" | "None" | "~")).then(|| PathBuf::from(v))
    });
    ov.retain(|o| key(o).as_deref() != Some("load_checkpoint"));
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
                     `trm train` without a launcher (or unset WORLD_SIZE/RANK)",
                    l.source,
                    l.world
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

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run folder, checkpoint folder, or a weights file: .safetensors or the reference's torch.save
    /// checkpoint, FILE#ema to pick a nested state dict (then --config is needed)
    /// [default for Sudoku data: the Sudoku model bundled in trm, models/sudoku/]
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Data set folder; its test split is evaluated
    #[arg(long)]
    pub data: PathBuf,
    /// Supervision steps to run [default: the model's halt_max_steps]; more = test-time recursion
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub steps: Option<usize>,
    /// Evaluate at most N test examples (the first N)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..).map(|v| v as usize))]
    pub limit: Option<usize>,
    /// Also report test-time-scaled accuracy (Sudoku and maze data): K validity-preserving views
    /// per puzzle, answers checked against the rules and the givens (never the labels), stopping
    /// at the first step an answer checks; as `trm solve --views`
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_VIEWS).map(|v| v as usize))]
    pub views: Option<usize>,
    /// With --views: the most supervision steps per puzzle [default: --steps]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub view_steps: Option<usize>,
    /// With --views: the seed of the Sudoku views' transforms [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// With --views on Sudoku data: the steps a view runs without an answer that checks before a
    /// fresh view replaces it (0: never); as `trm solve --view-lifetime` [default: the model's
    /// halt_max_steps]
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub view_lifetime: Option<usize>,
    /// With --views on Sudoku data: every view but the first starts its latent z from a draw of
    /// its own; as `trm solve --drawn-latents`
    #[arg(long)]
    pub drawn_latents: bool,
    /// Rows per batch
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_BATCH).map(|v| v as usize))]
    pub batch: usize,
    /// Configuration for a bare weights file (preset or TOML), plus overrides with --set: a
    /// .safetensors, or the reference's torch.save checkpoint (FILE#key picks a nested state dict)
    /// [default: the reference's all_config.yaml beside the file]
    #[arg(long)]
    pub config: Option<String>,
    /// Override an architecture key for a bare weights file (arch.*, loss_type), e.g.
    /// --set arch.halt_max_steps=32
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the metrics as JSON
    #[arg(long)]
    pub json: bool,
    /// ARC data: where to write the Kaggle submission (the run's submission_K attempts per test input, two by default)
    /// [default: submission.json in the run folder, or beside a bare .safetensors; replaced there.
    /// eval_submission.json in a run that pooled its votes, whose submission.json is the pool's and kept]
    #[arg(long)]
    pub submission: Option<PathBuf>,
    /// Save every evaluated example's outputs to FILE, a torch.save dict as the reference's
    /// `eval_save_outputs` writes (`torch.load(FILE)` in Python; docs/evaluation.md); --outputs
    /// picks them
    #[arg(long, value_name = "FILE")]
    pub save_outputs: Option<PathBuf>,
    /// With --save-outputs: the outputs, comma-separated, of inputs, labels, puzzle_identifiers,
    /// preds, logits, q_halt_logits, q_continue_logits (logits are seq_len x vocab floats an
    /// example) [default: all but logits]
    #[arg(long, value_delimiter = ',', requires = "save_outputs")]
    pub outputs: Vec<String>,
    /// Replace the existing files named by --submission and --save-outputs (both, when both are
    /// given)
    #[arg(long)]
    pub force: bool,
    /// The CPU engine's matrix products: float32, or bfloat16 operands with float32 sums on
    /// Intel AMX tiles or with AVX512-BF16 (refused on a CPU with neither); auto takes bfloat16
    /// where the CPU has AMX; as `trm solve --precision` [default: float32]
    #[arg(long, value_enum)]
    pub precision: Option<super::Precision>,
    /// cpu, torch-cpu, cuda[:N] (libtorch), cubecl[:N] or cubecl-unfused[:N]
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
    /// Run even when the CPU engine's memory estimate says --batch rows at a time do not fit the
    /// memory this machine has available (refused by default, naming the --batch that fits;
    /// docs/reliability.md, "Memory")
    #[arg(long)]
    pub no_memory_check: bool,
}

/// Evaluates a checkpoint on a data set's test split: plainly, then with views if asked, then
/// ARC's voting and submission on ARC data.
pub fn eval_checkpoint<B: Backend>(a: &EvalArgs, device: &B::Device) -> Result<EvalResult> {
    let precision = a.precision.unwrap_or(super::Precision::Float32).apply(a.device, false)?;
    let test = Arc::new(format::read_dataset_split(&a.data, "test")?);
    anyhow::ensure!(
        test.num_examples() > 0,
        "{}: the test split holds no examples: there is nothing to evaluate",
        a.data.join("test").display()
    );
    anyhow::ensure!(
        a.views.is_some() || (a.view_steps.is_none() && a.seed.is_none() && a.view_lifetime.is_none() && !a.drawn_latents),
        "--view-steps, --seed, --view-lifetime and --drawn-latents go with --views (test-time scaling); without it they would do nothing"
    );
    anyhow::ensure!(
        (a.view_lifetime.is_none() && !a.drawn_latents) || crate::data::kind::PuzzleKind::of_split(&test).has_fresh_views(),
        "--view-lifetime and --drawn-latents: Sudoku only (fresh views, drawn latents); {} is not Sudoku data",
        a.data.display()
    );
    let m = EvalModel::open(a, &test)?;
    crate::eval::evaluate::check_data_fits(&a.data, &test, &m.model)?;
    if !checkpoint::is_weights_file(&m.spec) {
        crate::eval::evaluate::check_identifiers(&a.data, m.file.parent().expect("a checkpoint folder"))?;
    }
    let examples = a.limit.map_or(test.num_examples(), |l| l.min(test.num_examples()));
    // Made once: its size an example is what the memory check counts; its room is reserved after.
    let mut outputs = match &a.save_outputs {
        Some(_) => Some(Recorder::new(output_keys(a)?, m.model.seq_len, m.model.vocab_size)),
        None => None,
    };
    if !a.no_memory_check {
        let held = match &outputs {
            Some(o) => {
                let (per, batch) = (o.bytes_per_example() as u64, a.batch.min(examples));
                crate::train::memory_check::check_outputs::<B>(&m.model, examples, batch, per, o.wants_logits())?
            }
            None => 0,
        };
        crate::train::memory_check::check_eval::<B>(&m.model, a.batch.min(examples), a.views, held)?;
    }
    let (params, table) = checkpoint::load_model::<B>(&m.file, &m.model, device)?;
    let w = Weights::from_named(&m.model, params)?;
    let steps = a.steps.unwrap_or(m.model.arch.halt_max_steps);
    // One evaluation (its votes alone), with the run's pass@k list and attempts.
    let mut arc = ArcEval::open(&a.data, &m.arc_args)?;
    let mut arc_err = Ok(());
    let mut single = crate::parallel::Single;
    if let Some(o) = outputs.as_mut() {
        o.reserve(examples).context("--save-outputs")?;
    }
    if let Some(o) = &outputs {
        eprintln!(
            "note: the outputs of {examples} examples are kept in memory until written: about {}",
            crate::train::memory_check::size((examples * o.bytes_per_example()) as u64)
        );
    }
    let mut r =
        evaluate(&m.model, &w, table.as_ref(), test.clone(), a.batch, steps, a.limit, &mut single, outputs.as_mut(), |b, p, q, n| {
            if let (Some(v), Ok(())) = (arc.as_mut(), &arc_err) {
                arc_err = v.on_batch(b, p, q, n);
            }
        })?
        .context("the evaluation was interrupted")?;
    arc_err?;
    if let (Some(o), Some(path)) = (outputs, &a.save_outputs) {
        let rows = o.rows();
        o.write(path).with_context(|| format!("--save-outputs {}", path.display()))?;
        eprintln!(
            "wrote {} ({} examples: {})",
            path.display(),
            rows,
            output_keys(a)?.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(k) = a.views {
        let view_steps = a.view_steps.unwrap_or(steps);
        let seed = a.seed.unwrap_or(0);
        let plan =
            crate::infer::views::SearchPlan::checked(view_steps, a.view_lifetime, &m.model).drawing_latents(a.drawn_latents, &m.model)?;
        r.scaled = Some(crate::eval::scaled::evaluate_scaled(&m.model, &w, table.as_ref(), &test, k, seed, plan, a.limit)?);
    }
    if let Some(v) = arc {
        r.arc = Some(write_arc_submission(a, &m, v)?);
    }
    r.precision = precision.map(super::Precision::name);
    Ok(r)
}

/// The model `trm eval` evaluates: a run, checkpoint or weights file, or the bundled Sudoku model.
struct EvalModel {
    /// What the user named (the bundled model's weights file when they named none).
    spec: PathBuf,
    model: crate::model::config::ModelConfig,
    /// Its model.safetensors (or torch file).
    file: PathBuf,
    /// The ARC evaluator's pass@k list and attempts: the run's (`evaluators=[{name: arc@ARC,
    /// pass_Ks: ..., submission_K: ...}]`); a bare weights file's from the `all_config.yaml`
    /// beside it, or from `--config`.
    arc_args: ArcEvaluatorArgs,
    /// A run (or its checkpoint) whose training pooled its ARC votes: its `submission.json` is the
    /// pool's, which no single evaluation can make again, so `trm eval` writes beside it.
    pooled_run: bool,
    /// The bundled model's private folder, kept until the command ends.
    _bundled: Option<crate::infer::bundled::BundledFiles>,
}

impl EvalModel {
    fn open(a: &EvalArgs, test: &format::Split) -> Result<Self> {
        let mut bundled = None;
        let spec = match &a.checkpoint {
            Some(c) => c.clone(),
            None => {
                anyhow::ensure!(
                    crate::data::kind::PuzzleKind::of_split(test) == crate::data::kind::PuzzleKind::Sudoku,
                    "{}: not Sudoku data; trm bundles only a Sudoku model, so name a model with --checkpoint",
                    a.data.display()
                );
                anyhow::ensure!(a.config.is_none() && a.set.is_empty(), "--config/--set describe a weights file given with --checkpoint");
                eprintln!("note: no --checkpoint: evaluating the Sudoku model bundled in trm (models/sudoku/)");
                let files = crate::infer::bundled::sudoku_model_file()?;
                let weights = files.weights.clone();
                bundled = Some(files);
                weights
            }
        };
        let bare = checkpoint::is_weights_file(&spec);
        anyhow::ensure!(
            bare || (a.config.is_none() && a.set.is_empty()),
            "--config/--set describe a bare weights file; a run or checkpoint folder carries its own configuration"
        );
        let (model, file, arc_args, pooled_run) = if bare {
            let cfg = crate::store::hydra_config::resolve_for_weights(&spec, a.config.as_deref(), &a.set)?;
            (crate::train::setup::model_config(&cfg, test)?, spec.clone(), cfg.arc_evaluator, false)
        } else {
            let ckpt = checkpoint::resolve(&spec)?;
            let js = checkpoint::read_state_json(&ckpt)?;
            let pooled = js.config.pools_arc_votes();
            (js.model, ckpt.join("model.safetensors"), js.config.arc_evaluator, pooled)
        };
        Ok(Self { spec, model, file, arc_args, pooled_run, _bundled: bundled })
    }
}

/// The test split speaks the model's vocabulary and has no puzzle the model has no embedding for.
/// ARC: writes the two-attempt submission (beside the model unless --submission names a file)
/// and returns the voted pass@k. Beside a run that pooled its votes the file is
/// `eval_submission.json`: the run's `submission.json` is the pool's, and is never replaced.
fn write_arc_submission(a: &EvalArgs, m: &EvalModel, v: ArcEval) -> Result<crate::eval::arc_vote::ArcScore> {
    let dir = if checkpoint::is_weights_file(&m.spec) { m.file.parent().map(PathBuf::from).unwrap_or_default() } else { m.spec.clone() };
    let default = dir.join(if m.pooled_run { "eval_submission.json" } else { "submission.json" });
    let path = a.submission.clone().unwrap_or_else(|| default.clone());
    // The default file is `trm eval`'s own output beside the model, and is replaced (also when
    // --submission names it); a file the user named only with --force, and never one of the
    // model's (a pooled run's submission.json among them). Never the data's files.
    let data = Protected { path: &a.data, what: "the data set" };
    let same = |p: &std::path::Path, q: &std::path::Path| std::path::absolute(p).ok() == std::path::absolute(q).ok();
    if same(&path, &default) {
        check_output(&path, "--submission", &[data], true)?;
    } else {
        check_output(&path, "--submission", &[Protected { path: &m.spec, what: "the model being evaluated" }, data], a.force)?;
    }
    crate::util::fs::write_json(&path, &v.submission())?;
    eprintln!("wrote {} ({} tasks, {} attempts per test input)", path.display(), v.tasks.len(), v.args.submission_k);
    Ok(v.score())
}

/// The outputs `trm eval --save-outputs` saves: `--outputs`, else all but the logits.
fn output_keys(a: &EvalArgs) -> Result<Vec<Output>> {
    if a.outputs.is_empty() {
        return Ok(Output::ALL.into_iter().filter(|&o| o != Output::Logits).collect());
    }
    Output::parse(&a.outputs, "--outputs")
}

pub fn eval(a: EvalArgs) -> Result<()> {
    set_threads(a.threads);
    anyhow::ensure!(
        !a.force || a.submission.is_some() || a.save_outputs.is_some(),
        "--force replaces the file that --submission or --save-outputs names; without either it would do nothing"
    );
    if let Some(path) = &a.save_outputs {
        output_keys(&a)?;
        anyhow::ensure!(
            a.views.is_none(),
            "--save-outputs with --views: saving the outputs of test-time-scaled evaluation is not implemented; the plain \
             evaluation's are saved without --views"
        );
        let model = a.checkpoint.clone().unwrap_or_default();
        let protected = [Protected { path: &model, what: "the model being evaluated" }, Protected { path: &a.data, what: "the data set" }];
        check_output(path, "--save-outputs", &protected, a.force)?;
        // On ARC data the submission is written after the outputs: never into the same file.
        let same = |p: &std::path::Path| std::path::absolute(p).ok() == std::path::absolute(path).ok();
        anyhow::ensure!(
            !crate::eval::arc_vote::is_arc_data(&a.data)
                || !(a.submission.as_deref().is_some_and(same) || path.file_name().is_some_and(|n| n == "submission.json")),
            "--save-outputs {}: that is where the ARC submission goes; name the outputs' file otherwise",
            path.display()
        );
    }
    if let Some(path) = &a.submission {
        // Checked before the evaluation too, so a wrong path fails at once, not after it.
        // (The run's own submission.json, named explicitly, is checked with the model, below.)
        let model = a.checkpoint.clone().unwrap_or_default();
        let own = model.is_dir() && std::path::absolute(path).ok() == std::path::absolute(model.join("submission.json")).ok();
        let protected = [Protected { path: &model, what: "the model being evaluated" }, Protected { path: &a.data, what: "the data set" }];
        if !own {
            check_output(path, "--submission", &protected, a.force)?;
        }
        // A submission is ARC's only: on other data the flag would do nothing.
        anyhow::ensure!(
            a.data.join("test_puzzles.json").exists(),
            "--submission {}: a Kaggle submission is written for ARC data only (a data set with test_puzzles.json); {} is not ARC data",
            path.display(),
            a.data.display()
        );
    }
    let r = crate::with_backend!(a.device, B, device => eval_checkpoint::<B>(&a, &device)?);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("examples         {}", r.count);
        println!("token accuracy   {:.4}", r.accuracy);
        println!("exact accuracy   {:.4}  (95% CI {:.4}-{:.4})", r.exact_accuracy, r.exact_accuracy_ci95.0, r.exact_accuracy_ci95.1);
        println!("q_halt accuracy  {:.4}", r.q_halt_accuracy);
        println!("lm_loss          {:.4}", r.lm_loss);
        println!(
            "compute          1 view x {:.1} steps per puzzle; {:.3} s per puzzle (batches of {}; products: {})",
            r.steps,
            r.seconds / r.count.max(1) as f64,
            a.batch,
            r.precision.unwrap_or("the model's arch.forward_dtype")
        );
        println!("per step (token / exact accuracy):");
        for (k, (acc, ex)) in r.per_step.iter().enumerate() {
            println!("  step {:>3}: {:.4} / {:.4}", k + 1, acc, ex);
        }
        if let Some(s) = &r.arc {
            println!(
                "ARC: {} tasks, {} test inputs ({} with a prediction), after voting over augmentations:",
                s.tasks, s.test_inputs, s.answered_inputs
            );
            for ((k, v), (_, every)) in s.pass_at.iter().zip(&s.pass_at_every_input) {
                println!("  pass@{k:<5} {v:.4}   (every test input of the task right, HRM's credit: {every:.4})");
            }
        }
        if let Some(s) = &r.scaled {
            println!(
                "test-time scaling: {} views, up to {} steps, answers checked against the rules and givens (never the labels):",
                s.views, s.max_steps
            );
            println!("  puzzles          {}", s.count);
            println!(
                "  exact accuracy   {:.4}  (95% CI {:.4}-{:.4}; plain, above: {:.4})",
                s.exact_accuracy, s.exact_accuracy_ci95.0, s.exact_accuracy_ci95.1, r.exact_accuracy
            );
            println!("  answers checked  {} of {}", s.checked, s.count);
            if s.drawn_latents {
                println!("  latents          drawn: every view but the first started z from a draw of its own");
            }
            if let Some(life) = s.view_lifetime {
                println!(
                    "  views tried      {:.1} per puzzle (a view that ran {life} steps without checking was replaced)",
                    s.mean_views_tried
                );
            }
            println!(
                "  compute          {:.1} steps x {} views = {:.1} view-steps per puzzle (plain: 1 view x {:.1} steps); {:.2} s per puzzle",
                s.mean_steps,
                s.views,
                s.mean_view_steps,
                r.steps,
                s.seconds / s.count as f64
            );
        }
    }
    Ok(())
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
