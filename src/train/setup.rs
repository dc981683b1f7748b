//! What a training run needs before its first step: the data splits, the model configuration,
//! the starting state (fresh, from weights, or resumed from the newest intact checkpoint, with
//! this rank's rows of its carry); the batches' plan is `plan.rs`.

use super::collective;
use super::plan::{Plan, check_batches, zero_steps};
use crate::data::format::{self, Split};
use crate::data::loader::{Position, total_steps};
use crate::eval::arc_vote::Votes;
use crate::model::config::ModelConfig;
use crate::model::weights;
use crate::parallel::Reducer;
use crate::step::curriculum::DepthCurriculum;
use crate::step::optim::AdamState;
use crate::step::supervision::Ropes;
use crate::store::checkpoint::{self, TrainState};
use crate::store::config::ARC_EVALUATOR;
use crate::store::config::TrainConfig;
use crate::store::integrity;
use crate::store::puzzle_rows::{NewRows, start_table};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What `train` was asked to do.
pub struct TrainJob {
    pub config: TrainConfig,
    pub data: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// The KEY=VALUE overrides as given. A resumed run applies them to its checkpoint's config
    /// where that is safe and refuses the others (`store::resume::resume_config`); `config` is then
    /// not used.
    pub overrides: Vec<String>,
    /// Print no progress bar
    pub quiet: bool,
    /// Start from these weights (fine-tuning / adaptation).
    pub init_from: Option<InitFrom>,
    /// Stop (then evaluate and checkpoint) after this much wall time.
    pub time_limit: Option<std::time::Duration>,
    /// The flags given that chose how this run computes and are not saved in it (`--device`,
    /// `--precision`, `--deterministic`), as a resume must be given them again: " --device cuda".
    pub engine_flags: String,
    /// Refuse, before the first step, a run whose passes the CPU engine's memory estimate says
    /// do not fit the memory available (`train::memory_check`; `--no-memory-check` turns it off).
    pub memory_check: bool,
}

/// The weights a new run starts from, and how their puzzle-embedding rows map onto the data
/// set's identifiers (`store::puzzle_rows`).
#[derive(Debug, Clone)]
pub struct InitFrom {
    /// A model.safetensors file or a reference torch.save file.
    pub weights: PathBuf,
    /// The identifier map of the weights' puzzle table, when known.
    pub identifiers: Option<Vec<String>>,
    /// What rows the checkpoint has no value for start from.
    pub new_rows: NewRows,
}

impl InitFrom {
    /// Fine-tuning from `weights` (`trm train --init-from`): their identifier map from their
    /// checkpoint or beside them, new rows from the mean of the stored ones, as the reference.
    pub fn fine_tune(weights: PathBuf) -> Result<Self> {
        let identifiers = crate::store::puzzle_rows::identifiers_of(&weights)?;
        Ok(InitFrom { weights, identifiers, new_rows: NewRows::Mean })
    }
}

/// The model configuration for a data set.
pub fn model_config(cfg: &TrainConfig, split: &Split) -> Result<ModelConfig> {
    let m = ModelConfig {
        arch: cfg.arch.clone(),
        seq_len: split.metadata.seq_len,
        vocab_size: split.metadata.vocab_size,
        num_puzzle_identifiers: split.metadata.num_puzzle_identifiers,
    };
    m.validate()?;
    Ok(m)
}

/// The train split and, when the data set has a `test/` folder, the test split (present but
/// unreadable is an error: a long run must not silently skip its evaluations).
/// `lead`: this process is rank 0, which alone says what it finds.
pub fn read_splits(data: &Path, lead: bool) -> Result<(Arc<Split>, Option<Arc<Split>>)> {
    let train = Arc::new(format::read_dataset_split(data, "train")?);
    anyhow::ensure!(
        train.num_examples() > 0,
        "{}: the train split holds no examples: nothing to train on (rebuild the data set)",
        data.display()
    );
    let test = if data.join("test").exists() {
        let test = format::read_dataset_split(data, "test").context("the test split exists but cannot be read")?;
        if test.num_examples() == 0 {
            if lead {
                eprintln!("warning: {} holds no examples: training without evaluation", data.join("test").display());
            }
            return Ok((train, None));
        }
        Some(Arc::new(test))
    } else {
        if lead {
            eprintln!("warning: {} has no test split: training without evaluation", data.display());
        }
        None
    };
    Ok((train, test))
}

fn fresh_state<B: Backend>(
    cfg: &TrainConfig,
    model: &ModelConfig,
    device: &B::Device,
    init_from: Option<&InitFrom>,
    data: &Path,
    rank0: bool,
) -> Result<TrainState<B>> {
    let (params, table) = match init_from {
        Some(init) => {
            let file = &init.weights;
            let (params, table) = checkpoint::load_model_any_rows::<B>(file, model, device)
                .with_context(|| format!("cannot start from {}", file.display()))?;
            let table = match table {
                Some(stored) => {
                    let names = data.join("identifiers.json").is_file().then(|| format::read_identifiers(data)).transpose()?;
                    let n = model.num_puzzle_identifiers;
                    let (t, note) = start_table(stored, n, init.identifiers.as_deref(), names.as_deref(), init.new_rows)
                        .with_context(|| format!("the puzzle embeddings of {} for the data set {}", file.display(), data.display()))?;
                    if let (Some(note), true) = (note, rank0) {
                        eprintln!("note: {}: {note}", file.display());
                    }
                    Some(t)
                }
                None => None,
            };
            (params, table)
        }
        None => {
            let p = weights::init::<B>(model, &mut crate::util::rng::derive(cfg.seed, &[7]), device).into_named();
            let t =
                (model.arch.puzzle_emb_ndim > 0).then(|| Tensor::zeros([model.num_puzzle_identifiers, model.arch.puzzle_emb_ndim], device));
            (p, t)
        }
    };
    let adam = AdamState::new(&params);
    let ema = cfg.ema.then(|| params.clone());
    Ok(TrainState {
        params,
        table,
        adam,
        ema,
        carry: None,
        step: 0,
        position: Position::default(),
        skipped: 0,
        log_mark: None,
        evaluated_step: None,
        evaluated_off_schedule: false,
        arc_votes: None,
    })
}

/// The run's configuration and starting state on this rank, and the checkpoint it resumed from.
pub fn open_state<B: Backend>(
    job: &TrainJob,
    train: &Split,
    test: Option<&Split>,
    device: &B::Device,
    r: &mut dyn Reducer,
) -> Result<(TrainConfig, TrainState<B>, Option<PathBuf>)> {
    if job.resume {
        anyhow::ensure!(job.init_from.is_none(), "--init-from starts a new run; it cannot be combined with --resume");
        let ckpt = integrity::resolve_for_resume(&job.out, r.rank() == 0)?;
        let js = checkpoint::read_state_json(&ckpt)?;
        let here = model_config(&js.config, train)?;
        // The architecture state.json's config gives against the one it records for its weights:
        // a file edited by hand, not a question of the data set.
        anyhow::ensure!(
            here.arch == js.model.arch,
            "{}: its config's architecture differs from the one it records for its weights (`model.arch`): {}; the \
             file was edited or damaged. Restore it, or move that checkpoint's folder out of checkpoints/: --resume then \
             continues from the one before it",
            ckpt.join("state.json").display(),
            arch_difference(&here.arch, &js.model.arch)
        );
        anyhow::ensure!(
            here == js.model,
            "{} does not describe the data set this run trained on (seq_len/vocab/identifiers {}/{}/{} here, {}/{}/{} in {})",
            job.data.display(),
            here.seq_len,
            here.vocab_size,
            here.num_puzzle_identifiers,
            js.model.seq_len,
            js.model.vocab_size,
            js.model.num_puzzle_identifiers,
            ckpt.display()
        );
        let mut cfg = crate::store::resume::resume_config(&js.config, &job.overrides)?;
        // As a new run records (a checkpoint written before trm recorded its evaluators reads as
        // the default, arc@ARC).
        if !crate::eval::arc_vote::is_arc_data(&job.data) {
            cfg.evaluators.retain(|e| e != ARC_EVALUATOR);
        }
        // Before it is read: a checkpoint too large for this machine would be killed while read.
        if job.memory_check {
            super::memory_check::check_resumed::<B>(&ckpt, &js.model)?;
        }
        let (js, mut st) = checkpoint::load_state::<B>(&ckpt, device)?;
        if r.rank() == 0 {
            eprintln!("resuming from {} (step {})", ckpt.display(), js.step);
        }
        let recorded = js.config.data_paths.first().map(PathBuf::from);
        let given = std::path::absolute(&job.data).unwrap_or(job.data.clone());
        if r.rank() == 0 && recorded.as_ref().is_some_and(|p| p != &given) {
            eprintln!("note: resuming on {} (the run was started on {})", given.display(), recorded.unwrap().display());
        }
        st.carry = st.carry.map(|c| collective::local_carry(c, r.rank(), r.world())).transpose()?;
        // Read on rank 0 alone: agreed, so that a bad file stops every rank.
        let pool = (r.rank() == 0).then(|| vote_pool(&cfg, Some(&ckpt), st.evaluated_step.is_some()));
        st.arc_votes = collective::lead_result(pool, "read the checkpoint's ARC vote pool", r)?.flatten();
        return Ok((cfg, st, Some(ckpt)));
    }
    if job.out.join("checkpoints").join("latest").exists() || !integrity::checkpoints(&job.out).is_empty() {
        bail!("{} already holds a run; pass --resume to continue it or choose another --out", job.out.display());
    }
    // A new run writes config.toml, metrics.jsonl and more into --out: never over someone's files.
    // A folder that a run made and left without a checkpoint (it failed or was killed early) is
    // started over.
    let made_by_run = job.out.join(crate::util::fs::MADE_BY).is_file();
    let others: Vec<String> = std::fs::read_dir(&job.out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != crate::util::lock::LOCK_FILE && n != crate::util::fs::MADE_BY)
        .collect();
    if let (Some(first), false) = (others.iter().min(), made_by_run) {
        bail!(
            "{} holds files ({first}{}) but no checkpoint to resume: a new run starts in a new or empty folder, so that nothing \
             there is overwritten. Choose another --out, or empty this one",
            job.out.display(),
            if others.len() > 1 { format!(" and {} more", others.len() - 1) } else { String::new() }
        );
    }
    let mut cfg = job.config.clone();
    crate::store::idle_keys::refuse_idle(&cfg, &job.overrides)?;
    if let (Some(note), 0) = (crate::store::idle_keys::idle_default_note(&cfg), r.rank()) {
        eprintln!("note: {note}");
    }
    // Recorded, as an absolute path, so that `--resume` and `trm report` find the data again.
    named_data_set(&cfg.data_paths, Some(&job.data))?;
    named_test_set(&cfg.data_paths_test, &job.data)?;
    cfg.data_paths_test.clear(); // the training data set's, recorded as the reference's default
    cfg.data_paths = vec![std::path::absolute(&job.data).unwrap_or(job.data.clone()).display().to_string()];
    // The ARC evaluator scores ARC data sets only: on others the run records that none ran (the
    // preset's); one given on the command line is refused there, not dropped.
    if !crate::eval::arc_vote::is_arc_data(&job.data) {
        let given = job.overrides.iter().any(|o| crate::store::overrides::override_key(o) == "evaluators");
        if given && cfg.evaluators.iter().any(|e| e == ARC_EVALUATOR) {
            bail!(
                "evaluators lists {ARC_EVALUATOR}, which scores ARC tasks, and {} is not an ARC data set (made by `trm data arc`): \
                 drop the key, or give evaluators=[]",
                job.data.display()
            );
        }
        cfg.evaluators.retain(|e| e != ARC_EVALUATOR);
    }
    let model = model_config(&cfg, train)?;
    // Before the weights are made: a model whose state alone does not fit would be killed here
    // (after the batches are known to split, which a refusal's advice relies on).
    // A batch larger than all the data is refused as such (as `Plan::new` would), not sized down
    // by the memory check's advice to another still too large.
    if total_steps(train, cfg.epochs, cfg.global_batch_size) == 0 {
        return Err(zero_steps(&cfg, train));
    }
    if job.memory_check {
        check_batches(&cfg, test.is_some(), r.world())?;
        super::memory_check::check_state::<B>(&cfg, &model, test, r.world())?;
    }
    let mut st = fresh_state::<B>(&cfg, &model, device, job.init_from.as_ref(), &job.data, r.rank() == 0)?;
    collective::broadcast_weights(&mut st, r)?;
    st.ema = cfg.ema.then(|| st.params.clone()); // of the broadcast weights
    st.arc_votes = if r.rank() == 0 { vote_pool(&cfg, None, false)? } else { None };
    Ok((cfg, st, None))
}

/// Rank 0's ARC vote pool (no other rank keeps one), in a run whose ARC evaluations vote
/// together (`aggregated_voting`), starting from the one the checkpoint resumed from holds.
/// `evaluated`: the run evaluated before, so a pool it lacks starts now.
fn vote_pool(cfg: &TrainConfig, resumed: Option<&Path>, evaluated: bool) -> Result<Option<Arc<Votes>>> {
    let pools = cfg.pools_arc_votes();
    // Read only when kept: a pool that is dropped is only named.
    let held = resumed.is_some_and(|ckpt| ckpt.join(crate::store::arc_votes::FILE).exists());
    let saved = match resumed {
        Some(ckpt) if pools => checkpoint::read_arc_votes(ckpt)?,
        _ => None,
    };
    match (held, pools) {
        (true, false) => eprintln!(
            "note: the ARC evaluations of this run now vote alone (evaluators without aggregated_voting); the votes of the \
             evaluations before (the checkpoint's {}) are not kept, and pooling again later starts a new pool",
            crate::store::arc_votes::FILE
        ),
        (false, true) if evaluated => eprintln!(
            "note: the ARC evaluations vote together (aggregated_voting) from here on; the checkpoint resumed from holds no votes of \
             the evaluations before it, so the pool starts with the next one"
        ),
        _ => {}
    }
    Ok(pools.then(|| Arc::new(saved.unwrap_or_default())))
}

/// The test split fits the model built from the train split.
pub fn check_test_split(test: &Split, model: &ModelConfig, data: &Path) -> Result<()> {
    let m = &test.metadata;
    anyhow::ensure!(
        m.seq_len == model.seq_len && m.vocab_size <= model.vocab_size && m.num_puzzle_identifiers <= model.num_puzzle_identifiers,
        "{}: the test split (seq_len {}, vocab {}, {} identifiers) does not fit the model built from the train split (seq_len {}, vocab {}, {} identifiers)",
        data.join("test").display(),
        m.seq_len,
        m.vocab_size,
        m.num_puzzle_identifiers,
        model.seq_len,
        model.vocab_size,
        model.num_puzzle_identifiers
    );
    Ok(())
}

/// The keys in which two architectures differ: "arch.hidden_size 32 (config), 64 (model)".
fn arch_difference(config: &crate::model::config::ArchConfig, model: &crate::model::config::ArchConfig) -> String {
    let (a, b) = (serde_json::to_value(config).unwrap_or_default(), serde_json::to_value(model).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return String::new() };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let null = serde_json::Value::Null;
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("arch.{k} {} (config), {} (model)", a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `p` and `q` name the same folder (resolved where they exist, else as absolute paths).
fn same_folder(p: &Path, q: &Path) -> bool {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (p.canonicalize(), q.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => absolute(p) == absolute(q),
    }
}

/// The one data set a run trains on, from `--data` (`data`) and the reference's `data_paths`
/// (`given`); `None` when neither names one. Both given, they must name the same folder: a
/// different one would be recorded without being trained on. Several folders (the reference
/// trains on their concatenation) are not implemented.
pub fn named_data_set(given: &[String], data: Option<&Path>) -> Result<Option<PathBuf>> {
    let same = same_folder;
    match (given, data) {
        ([], d) => Ok(d.map(Path::to_path_buf)),
        ([one], None) => Ok(Some(PathBuf::from(one))),
        ([one], Some(d)) if same(Path::new(one), d) => Ok(Some(d.to_path_buf())),
        ([one], Some(d)) => bail!(
            "data_paths={one} names another data set than --data {}: trm trains on --data and records it; drop data_paths or make the two the same",
            d.display()
        ),
        (many, _) => bail!(
            "data_paths names {} data sets ({}); trm trains on one data set: training on several at once, as the reference can, is not implemented",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The reference's `data_paths_test` (`given`) for a run on `data`: empty, or `data` itself, is
/// its test split; another data set's is not implemented.
pub fn named_test_set(given: &[String], data: &Path) -> Result<()> {
    match given {
        [] => Ok(()),
        [one] if same_folder(Path::new(one), data) => Ok(()),
        _ => bail!(
            "data_paths_test={}: evaluating on another data set's test split than the training data set's ({}) is not \
             implemented; trm evaluates on {}. Drop the key, and evaluate the run's checkpoints on the other data set with \
             `trm eval --checkpoint RUN --data DIR`",
            given.join(","),
            data.display(),
            data.join("test").display()
        ),
    }
}

/// What stays the same over the steps of a run.
pub(super) struct StepContext<'a, AD: AutodiffBackend> {
    pub(super) model: &'a ModelConfig,
    pub(super) cfg: &'a TrainConfig,
    pub(super) ropes: &'a Ropes<AD>,
    pub(super) device: &'a AD::Device,
    pub(super) plan: &'a Plan,
    pub(super) job: &'a TrainJob,
    /// When and at which step this process started the run (a resumed run: its checkpoint's).
    pub(super) t0: Instant,
    pub(super) started_at: u64,
    /// `depth_curriculum`: the recursion depth of each training step.
    pub(super) curriculum: Option<DepthCurriculum>,
}
