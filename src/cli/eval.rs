//! `trm eval`: one evaluation of a run, a checkpoint or a weights file on a data set's test split.

use crate::backend::{DeviceSpec, set_threads};
use crate::data::format;
use crate::eval::arc_vote::ArcEval;
use crate::eval::evaluate::{EvalResult, evaluate};
use crate::model::weights::Weights;
use crate::store::checkpoint;
use crate::store::config::ArcEvaluatorArgs;
use crate::store::eval_outputs::{Output, Recorder};
use crate::util::fs::{Protected, check_output};
use anyhow::{Context, Result};
use burn::prelude::*;
use clap::builder::TypedValueParser as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[arg(long, value_parser = super::limits::at_least_one)]
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
    super::refuse_cpu_engine_flags(a.device, a.precision, a.no_memory_check)?;
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
        a.seed.is_none() || !matches!(crate::data::kind::PuzzleKind::of_split(&test), crate::data::kind::PuzzleKind::Maze { .. }),
        "--seed: a maze's views are its 8 fixed transforms; there is nothing random to seed ({} is maze data)",
        a.data.display()
    );
    anyhow::ensure!(
        (a.view_lifetime.is_none() && !a.drawn_latents) || crate::data::kind::PuzzleKind::of_split(&test).has_fresh_views(),
        "--view-lifetime and --drawn-latents: Sudoku only (fresh views, drawn latents); {} is not Sudoku data",
        a.data.display()
    );
    let m = EvalModel::open(a, &test)?;
    crate::eval::evaluate::check_data_fits(&a.data, &test, &m.model)?;
    let steps = a.steps.unwrap_or(m.model.arch.halt_max_steps);
    // The test-time-scaled search, checked before any evaluation runs (a refusal after the plain
    // evaluation threw its work away).
    let views_plan = match a.views {
        Some(k) => {
            crate::eval::scaled::scaled_kind(&m.model, k)?;
            let plan = crate::infer::views::SearchPlan::checked(a.view_steps.unwrap_or(steps), a.view_lifetime, &m.model)?
                .drawing_latents(a.drawn_latents, &m.model)?;
            plan.refuse_idle_draws(k, a.seed.is_some())?;
            Some((k, plan))
        }
        None => None,
    };
    if !checkpoint::is_weights_file(&m.spec) {
        crate::eval::evaluate::check_identifiers(&a.data, m.file.parent().expect("a checkpoint folder"), &m.model)?;
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
    // One evaluation (its votes alone), with the run's pass@k list and attempts.
    let mut arc = ArcEval::open(&a.data, &m.arc_args, a.limit.is_some_and(|l| l < test.num_examples()))?;
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
    if let Some((k, plan)) = views_plan {
        let seed = a.seed.unwrap_or(0);
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
        let run = crate::store::integrity::run_holding(&m.spec);
        check_output(&path, "--submission", &inputs(&m.spec, run.as_deref(), &a.data), a.force)?;
    }
    crate::util::fs::write_json(&path, &v.submission())?;
    eprintln!("wrote {} ({} tasks, {} attempts per test input)", path.display(), v.tasks.len(), v.args.submission_k);
    let score = v.score();
    if let Some(m) = score.mismatch() {
        eprintln!("warning: {m}");
    }
    Ok(score)
}

/// What an output of `trm eval` never replaces: the model, the run around it (`run`, where the
/// model is a checkpoint of one) and the data set.
fn inputs<'a>(model: &'a Path, run: Option<&'a Path>, data: &'a Path) -> Vec<Protected<'a>> {
    let mut p = vec![Protected { path: model, what: "the model being evaluated" }];
    p.extend(run.map(|path| Protected { path, what: "the run of the model being evaluated" }));
    p.push(Protected { path: data, what: "the data set" });
    p
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
    let model = a.checkpoint.clone().unwrap_or_default();
    let run = crate::store::integrity::run_holding(&model);
    let protected = inputs(&model, run.as_deref(), &a.data);
    if let Some(path) = &a.save_outputs {
        output_keys(&a)?;
        anyhow::ensure!(
            a.views.is_none(),
            "--save-outputs with --views: saving the outputs of test-time-scaled evaluation is not implemented; the plain \
             evaluation's are saved without --views"
        );
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
        let own = model.is_dir() && std::path::absolute(path).ok() == std::path::absolute(model.join("submission.json")).ok();
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
    if !r.lm_loss.is_finite() {
        eprintln!(
            "warning: the model's loss on this data is {}: its weights are finite, but its outputs are not (weights grown huge \
             by a diverging run, or an input the model overflows on); its accuracies are not to be trusted",
            r.lm_loss
        );
    }
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
            if s.limited && s.tasks_not_evaluated > 0 {
                println!("  ({} tasks not reached within --limit are left out)", s.tasks_not_evaluated);
            }
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
