//! Training configuration. Keys and meanings are the reference's (`config/cfg_pretrain.yaml` and
//! `config/arch/trm.yaml`), so reference command lines work unchanged as overrides:
//! `trm train --config sudoku-mlp --data DIR arch.L_cycles=6 ema=True lr=1e-4`.
//! Named presets live in `configs/` and are compiled into the binary (`presets.rs`).

pub use super::arc_evaluator::{ARC_EVALUATOR, ArcEvaluatorArgs};
pub use super::overrides::data_paths_value;
use super::overrides::{OPTIONAL_KEYS, arch_of};
use crate::model::architecture::Architecture;
use crate::model::config::ArchConfig;
use crate::step::optim::OptimizerKind;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: ArchConfig,
    /// The data set a run trains on, recorded from `--data` (for `--resume` and `trm report`). Given
    /// as a key, it must name the same folder as `--data`; several folders are refused (not
    /// implemented).
    pub data_paths: Vec<String>,
    /// The data set whose test split the run evaluates on: empty (the reference's default) is the
    /// training data set's `test/`, as is the training data set named here (a run records it
    /// empty). Another folder is refused (not implemented; `train::setup::named_test_set`).
    pub data_paths_test: Vec<String>,
    /// What scores each evaluation besides the loss and accuracies, by the reference's names:
    /// `arc@ARC` (the reference's default: ARC pass@k and a submission, on ARC data sets only) or
    /// none (`evaluators=[]`, as the reference's Sudoku and Maze commands give).
    pub evaluators: Vec<String>,
    /// The ARC evaluator's arguments (`aggregated_voting`, `submission_K`, `pass_Ks`), given in
    /// the list as the reference's are: `evaluators=[{name: arc@ARC, aggregated_voting: False}]`.
    /// A checkpoint of a trm version that did not record them reads as what that version did
    /// (`ArcEvaluatorArgs::unrecorded`); a new configuration has the reference's defaults.
    #[serde(default = "ArcEvaluatorArgs::unrecorded")]
    pub arc_evaluator: ArcEvaluatorArgs,
    /// What each evaluation saves of every test example, by the reference's names (`inputs`,
    /// `labels`, `puzzle_identifiers`, `preds`, `logits`, `q_halt_logits`, `q_continue_logits`):
    /// a torch.save file `step_<N>_all_preds.<rank>` in the run folder (`store::eval_outputs`).
    /// Empty (the default): nothing is saved.
    pub eval_save_outputs: Vec<String>,
    /// Rows per optimiser step over all ranks (the reference's G).
    pub global_batch_size: usize,
    /// Passes over the puzzle groups (one random augmentation of each original per epoch).
    pub epochs: usize,
    /// Epochs between evaluations; must divide `epochs` (None = only at the end).
    pub eval_interval: Option<usize>,
    /// First iteration index at which the iterations' evaluations and checkpoints happen (the
    /// run's end is evaluated and checkpointed all the same, as every trm run ends).
    pub min_eval_interval: usize,
    pub lr: f64,
    /// Cosine floor as a fraction of `lr` (1.0 = constant after warmup, the reference default).
    pub lr_min_ratio: f64,
    pub lr_warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    /// Decoupled weight decay of the network optimiser.
    pub weight_decay: f64,
    /// sign-SGD learning rate of the puzzle embeddings.
    pub puzzle_emb_lr: f64,
    pub puzzle_emb_weight_decay: f64,
    /// Evaluate and save the exponential moving average of the weights.
    pub ema: bool,
    pub ema_rate: f64,
    pub seed: u64,
    /// Train only the puzzle embeddings (test-time adaptation of new tasks).
    pub freeze_weights: bool,
    pub checkpoint_every_eval: bool,
    /// Run name (reference: `+run_name=...`); informational.
    pub run_name: Option<String>,
    /// Project name (reference: the wandb project); informational.
    pub project_name: Option<String>,

    // ---- trm additions (not in the reference) ----
    /// Network optimiser: `adam_atan2` (reference) or `adamw`.
    pub optimizer: OptimizerKind,
    /// Also checkpoint every N optimiser steps (0 = only at evaluations), so a kill loses little.
    pub checkpoint_interval_steps: u64,
    /// Stop after this many optimiser steps (None = the reference's total).
    pub max_steps: Option<u64>,
    /// Evaluate on at most this many test examples (None = the whole test split).
    pub eval_max_examples: Option<usize>,
    /// Global batch of evaluation (None = `global_batch_size`).
    pub eval_batch_size: Option<usize>,
    /// Rows of each forward and backward pass on a rank (None = the rank's whole share of
    /// `global_batch_size`). The micro-batches' gradients are summed before the one optimiser
    /// step, so the update is the whole batch's up to float summation order: the paper's batch
    /// in the memory of a smaller one. Must divide the rank's share.
    pub micro_batch_size: Option<usize>,
    /// Checkpoints kept on disk (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Replay a recorded sampler order instead of sampling: an int `.npy` of shape
    /// `[iterations, batches, global_batch, 2]` (example, puzzle), such as the reference's order
    /// written by bench/record_reference_order.py. For side-by-side comparisons.
    pub batch_order: Option<String>,
    /// Batches whose loss or gradient is not finite that may be skipped (weights, carry and
    /// randomness left as before the batch) before the run stops; 0 = stop at the first.
    pub skip_nonfinite_batches: u64,
    /// Progressive depth curriculum (CGAR, arXiv 2511.08653): training steps run a shallower
    /// recursion early on, `cgar` or `FROM:H_cycles:L_cycles,...` stages over the schedule's
    /// progress (`step::curriculum`); None = the model's depth throughout, as the reference.
    pub depth_curriculum: Option<String>,
    /// Hierarchical supervision weighting (CGAR): a row's loss at its t-th supervision step is
    /// weighted `supervision_decay^(t-1)`, normalised to average 1 over `halt_max_steps`
    /// (1.0 = every step alike, as the reference).
    pub supervision_decay: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: ArchConfig::default(),
            data_paths: vec![],
            data_paths_test: vec![],
            evaluators: vec![ARC_EVALUATOR.to_string()],
            arc_evaluator: ArcEvaluatorArgs::default(),
            eval_save_outputs: vec![],
            global_batch_size: 768,
            epochs: 100_000,
            eval_interval: Some(10_000),
            min_eval_interval: 0,
            lr: 1e-4,
            lr_min_ratio: 1.0,
            lr_warmup_steps: 2000,
            beta1: 0.9,
            beta2: 0.95,
            weight_decay: 0.1,
            puzzle_emb_lr: 1e-2,
            puzzle_emb_weight_decay: 0.1,
            ema: false,
            ema_rate: 0.999,
            seed: 0,
            freeze_weights: false,
            checkpoint_every_eval: true,
            run_name: None,
            project_name: None,
            optimizer: OptimizerKind::AdamAtan2,
            checkpoint_interval_steps: 0,
            max_steps: None,
            eval_max_examples: None,
            eval_batch_size: None,
            micro_batch_size: None,
            keep_checkpoints: 2,
            batch_order: None,
            skip_nonfinite_batches: 0,
            depth_curriculum: None,
            supervision_decay: 1.0,
        }
    }
}

/// All valid dotted keys (the top-level defaults and every architecture's `arch.*` keys), for
/// unknown-key errors.
pub fn known_keys() -> Vec<String> {
    let t = toml::Table::try_from(TrainConfig::default()).expect("config serialises");
    let mut out: Vec<String> = t.iter().filter(|(_, v)| !v.is_table()).map(|(k, _)| k.clone()).collect();
    for arch in Architecture::ALL {
        out.extend(arch.defaults_table().keys().map(|k| format!("arch.{k}")));
    }
    // Optional keys without a default value are not serialised: list them explicitly.
    out.extend(OPTIONAL_KEYS.map(String::from));
    out.push("arch".into());
    out.sort();
    out.dedup();
    out
}

/// Applies `key=value` overrides (`overrides::apply`) with every key trm knows.
pub fn apply_overrides(base: &mut toml::Table, overrides: &[String]) -> Result<Vec<String>> {
    super::overrides::apply(base, overrides, &known_keys())
}

/// Integers given where floats are expected (e.g. `lr=1`) are widened before deserialising.
fn widen_numbers(t: &mut toml::Table, defaults: &toml::Table) {
    for (k, v) in t.iter_mut() {
        match (&mut *v, defaults.get(k)) {
            (toml::Value::Integer(i), Some(toml::Value::Float(_))) => {
                let f = *i as f64;
                *v = toml::Value::Float(f);
            }
            (toml::Value::Table(sub), Some(toml::Value::Table(dsub))) => widen_numbers(sub, dsub),
            _ => {}
        }
    }
}

/// Builds the final config from a preset/file and overrides.
pub fn resolve(preset_or_file: &str, overrides: &[String]) -> Result<TrainConfig> {
    let (mut base, row) = super::presets::load_base(preset_or_file)?;
    apply_overrides(&mut base, &row).with_context(|| format!("paper row {preset_or_file}"))?;
    for note in apply_overrides(&mut base, overrides)? {
        eprintln!("note: {note}");
    }
    from_table(base).with_context(|| {
        // An override of any length is named, but only its start is quoted.
        let shown: Vec<String> = overrides
            .iter()
            .map(|o| match o.char_indices().nth(80) {
                Some((cut, _)) => format!("{}… ({} characters)", &o[..cut], o.chars().count()),
                None => o.clone(),
            })
            .collect();
        format!("configuration `{preset_or_file}` with overrides {shown:?}")
    })
}

pub fn from_table(mut t: toml::Table) -> Result<TrainConfig> {
    // The arch block: the architecture's defaults with the given keys on top. A key that is not
    // one of that architecture's is refused, never ignored.
    let arch = arch_of(&t)?;
    let given = match t.remove("arch") {
        Some(toml::Value::Table(a)) => a,
        None => toml::Table::new(),
        Some(v) => bail!(
            "arch = {v}: in a config file the architecture is a table, `[arch]` with `name = \"hrm\"` (or another name) and its \
             keys; `arch=NAME` selects one on the command line"
        ),
    };
    let keys = arch.defaults_table();
    let mut foreign: Vec<&String> = given.keys().filter(|k| !keys.contains_key(*k)).collect();
    foreign.sort();
    if let Some(k) = foreign.first() {
        let mut own: Vec<&String> = keys.keys().collect();
        own.sort();
        let elsewhere: Vec<&str> = Architecture::ALL.iter().filter(|a| a.defaults_table().contains_key(*k)).map(|a| a.name()).collect();
        bail!(
            "arch.{k} does not apply to arch={}{}; its keys are {}",
            arch.name(),
            if elsewhere.is_empty() { String::new() } else { format!(" (it is a key of {})", elsewhere.join(", ")) },
            own.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    t.insert("arch".into(), toml::Value::Table(arch.full_table(&given)));
    let defaults = toml::Table::try_from(TrainConfig::default())?;
    // A new configuration's evaluator arguments are the reference's defaults (only a state.json
    // without them reads as `unrecorded`).
    if !t.contains_key("arc_evaluator") {
        t.insert("arc_evaluator".into(), defaults["arc_evaluator"].clone());
    }
    widen_numbers(&mut t, &defaults);
    // Through text, so that a value of the wrong type is reported with the key that holds it.
    let text = toml::to_string(&t).context("serialising the configuration")?;
    let cfg: TrainConfig = toml::from_str(&text).map_err(|e| anyhow!("{}", named_error(&text, &e)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// A deserialising error as `key: message`, the key (`arch.H_cycles`) read off the line of
/// `text` that the error points at.
fn named_error(text: &str, e: &toml::de::Error) -> String {
    let Some(at) = e.span().map(|s| s.start) else { return e.message().to_string() };
    let (mut table, mut key) = (String::new(), None);
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        if at < start + line.len() {
            key = l.split_once('=').map(|(k, _)| k.trim().to_string());
            break;
        }
        start += line.len();
    }
    match key {
        Some(k) if table.is_empty() => format!("{k}: {}", e.message()),
        Some(k) => format!("{table}.{k}: {}", e.message()),
        None => e.message().to_string(),
    }
}

impl TrainConfig {
    /// The run's ARC evaluations add their votes to one pool (`aggregated_voting`, the
    /// reference's default), whose `submission.json` no single evaluation can make again.
    pub fn pools_arc_votes(&self) -> bool {
        self.evaluators.iter().any(|e| e == ARC_EVALUATOR) && self.arc_evaluator.aggregated_voting
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.global_batch_size > 0, "global_batch_size must be positive");
        anyhow::ensure!(self.epochs > 0, "epochs must be positive");
        anyhow::ensure!(self.eval_batch_size != Some(0), "eval_batch_size must be positive");
        anyhow::ensure!(self.micro_batch_size != Some(0), "micro_batch_size must be positive (leave it unset for one pass per batch)");
        anyhow::ensure!(self.eval_max_examples != Some(0), "eval_max_examples must be positive (leave it unset for the whole test split)");
        if let Some(e) = self.eval_interval {
            anyhow::ensure!(
                e > 0,
                "eval_interval 0: evaluate every N epochs with N at least 1 (or drop the key for one evaluation at the end)"
            );
            anyhow::ensure!(self.epochs.is_multiple_of(e), "eval_interval {e} must divide epochs {}", self.epochs);
        }
        let nonneg = |key: &str, v: f64| {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{key} must be a finite number >= 0, not {v}");
            Ok(())
        };
        nonneg("lr", self.lr)?;
        nonneg("puzzle_emb_lr", self.puzzle_emb_lr)?;
        nonneg("weight_decay", self.weight_decay)?;
        nonneg("puzzle_emb_weight_decay", self.puzzle_emb_weight_decay)?;
        anyhow::ensure!((0.0..=1.0).contains(&self.lr_min_ratio), "lr_min_ratio must be in [0, 1], not {}", self.lr_min_ratio);
        for (key, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            anyhow::ensure!((0.0..1.0).contains(&v), "{key} must be in [0, 1), not {v}");
        }
        anyhow::ensure!((0.0..=1.0).contains(&self.ema_rate), "ema_rate must be in [0, 1], not {}", self.ema_rate);
        anyhow::ensure!(
            !(self.ema && self.ema_rate == 1.0),
            "ema=True with ema_rate=1: the average never moves from the initial weights, which every evaluation and checkpoint \
             would then hold; give a rate below 1 (the reference's is 0.999), or ema=False"
        );
        anyhow::ensure!(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1");
        for e in &self.evaluators {
            anyhow::ensure!(
                e == ARC_EVALUATOR,
                "evaluators: trm has no evaluator `{e}`; it has {ARC_EVALUATOR} (ARC pass@k and a submission, the reference's default), \
                 or none: evaluators=[]"
            );
        }
        anyhow::ensure!(
            self.evaluators.len() <= 1,
            "evaluators lists {ARC_EVALUATOR} {} times: each evaluation would score the same predictions again; list it once",
            self.evaluators.len()
        );
        self.arc_evaluator.validate()?;
        super::eval_outputs::Output::parse(&self.eval_save_outputs, "eval_save_outputs")?;
        anyhow::ensure!(
            self.data_paths_test.len() <= 1,
            "data_paths_test={}: evaluating on several data sets' test splits is not implemented; trm evaluates on the training \
             data set's test/ folder. Drop the key, and evaluate the run's checkpoints on each with `trm eval --checkpoint RUN --data DIR`",
            self.data_paths_test.join(",")
        );
        if let Some(spec) = &self.depth_curriculum {
            crate::step::curriculum::DepthCurriculum::parse(spec, &self.arch)?;
        }
        let decay = self.supervision_decay;
        anyhow::ensure!(decay > 0.0 && decay <= 1.0, "supervision_decay must be in (0, 1] (1 = every supervision step alike), not {decay}");
        anyhow::ensure!(
            decay == 1.0 || self.arch.halt_max_steps > 1,
            "supervision_decay={decay} weights the supervision steps against each other, and arch.halt_max_steps=1 has one: drop it"
        );
        anyhow::ensure!(
            decay == 1.0 || self.arch.wta_chains <= 1,
            "supervision_decay={decay} with arch.wta_chains={}: weighting the winner's loss by its step is not implemented; drop one of the two",
            self.arch.wta_chains
        );
        anyhow::ensure!(
            !(self.freeze_weights && self.arch.puzzle_emb_ndim == 0),
            "freeze_weights=True trains only the puzzle embeddings, and arch.puzzle_emb_ndim=0 has none: nothing would learn \
             (the reference then trains every weight instead); drop one of the two"
        );
        Ok(())
    }
    /// Epochs per iteration (between evaluations).
    pub fn epochs_per_iter(&self) -> usize {
        self.eval_interval.unwrap_or(self.epochs)
    }
    /// The config as a table, with only the keys of its architecture in `[arch]` (so that
    /// `from_table` reads it back).
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::try_from(self).expect("config serialises");
        let keys = self.arch.name.defaults_table();
        if let Some(toml::Value::Table(a)) = t.get_mut("arch") {
            a.retain(|k, _| keys.contains_key(k));
        }
        t
    }

    /// The config as TOML (`to_table`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.to_table()).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for name in super::super::presets::names() {
            resolve(&name, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn deeply_nested_lists_are_an_error_not_a_stack_overflow() {
        let deep = format!("lr={}1{}", "[".repeat(30_000), "]".repeat(30_000));
        let e = format!("{:#}", resolve("sudoku-tiny", &[deep]).unwrap_err());
        assert!(e.ends_with("lr: invalid type: sequence, expected f64") && e.contains("(60004 characters)") && e.len() < 400, "{e}");
        assert_eq!(super::super::overrides::parse_value("[[1, 2], [3]]").to_string(), "[[1, 2], [3]]");
    }

    #[test]
    fn reference_style_overrides() {
        let c = resolve(
            "sudoku-att",
            &[
                "arch.L_cycles=4".into(),
                "ema=True".into(),
                "lr=1".into(),
                "+run_name=x".into(),
                "arch.pos_encodings=none".into(),
                "arch.forward_dtype=float32".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.arch.l_cycles, 4);
        assert!(c.ema);
        assert_eq!(c.lr, 1.0);
        assert_eq!(c.run_name.as_deref(), Some("x"));
        assert_eq!(c.arch.pos_encodings, crate::model::config::PosEncoding::None);
    }

    #[test]
    fn the_reference_bookkeeping_keys_say_what_trm_does_instead() {
        resolve("sudoku-att", &["arch.loss.name=losses@ACTLossHead".into()]).unwrap();
        let e = format!("{:#}", resolve("sudoku-att", &["arch.loss.name=losses@Other".into()]).unwrap_err());
        assert!(e.contains("losses@ACTLossHead only"), "{e}");
        let e = format!("{:#}", resolve("sudoku-att", &["checkpoint_path=ckpt/x".into()]).unwrap_err());
        assert!(e.contains("pass --out instead"), "{e}");
        resolve("sudoku-att", &["checkpoint_path=null".into()]).unwrap();
    }

    /// The reference README's Sudoku-MLP command, its overrides as the shell hands them over
    /// (`evaluators="[]"` arrives as `evaluators=[]`), on the attention preset: the MLP preset's
    /// training, with no evaluator.
    #[test]
    fn the_reference_readme_sudoku_command_runs_verbatim() {
        let line = "arch=trm data_paths=[data/sudoku-extreme-1k-aug-1000] evaluators=[] epochs=50000 eval_interval=5000 lr=1e-4 \
                    puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.mlp_t=True arch.pos_encodings=none \
                    arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 +run_name=pretrain_mlp_t_sudoku ema=True";
        let ov: Vec<String> = line.split_whitespace().map(String::from).collect();
        let c = resolve("sudoku-att", &ov).unwrap();
        let preset = resolve("sudoku-mlp", &[]).unwrap();
        assert!(c.evaluators.is_empty());
        assert_eq!(c.data_paths, ["data/sudoku-extreme-1k-aug-1000"]);
        assert_eq!(c.arch, preset.arch);
        assert_eq!((c.epochs, c.eval_interval, c.lr, c.weight_decay, c.ema), (50000, Some(5000), 1e-4, 1.0, true));
    }

    #[test]
    fn arch_selects_an_architecture_with_its_defaults() {
        let c = resolve("sudoku-att", &["arch=hrm".into(), "arch.L_layers=2".into()]).unwrap();
        assert_eq!(c.arch.name, Architecture::Hrm);
        assert_eq!((c.arch.h_layers, c.arch.l_layers, c.arch.h_cycles, c.arch.l_cycles), (4, 2, 2, 2));
        assert!(!c.arch.no_act_continue && c.arch.one_step_grad);
        // The same architecture as the preset's keeps the preset's settings.
        let c = resolve("sudoku-mlp", &["arch=trm".into()]).unwrap();
        assert!(c.arch.mlp_t);
        // Order on the command line does not matter (hydra applies the group first).
        let c = resolve("sudoku-att", &["arch.H_layers=2".into(), "arch=hrm".into()]).unwrap();
        assert_eq!(c.arch.h_layers, 2);
        let e = format!("{:#}", resolve("sudoku-att", &["arch=hrmm".into()]).unwrap_err());
        assert!(e.contains("unknown architecture"), "{e}");
    }

    #[test]
    fn the_puzzle_embedding_follows_the_width_unless_given() {
        let c = resolve("sudoku-att", &["arch=hrm".into(), "arch.hidden_size=64".into()]).unwrap();
        assert_eq!(c.arch.puzzle_emb_ndim, 64);
        let c = resolve("sudoku-att", &["arch.hidden_size=64".into(), "arch.puzzle_emb_ndim=32".into()]).unwrap();
        assert_eq!(c.arch.puzzle_emb_ndim, 32);
    }

    #[test]
    fn keys_of_another_architecture_are_refused() {
        let e = format!("{:#}", resolve("sudoku-att", &["arch.act_inference=True".into()]).unwrap_err());
        assert!(e.contains("arch.act_inference does not apply to arch=trm") && e.contains("transformers_baseline"), "{e}");
        let e = format!("{:#}", resolve("sudoku-att", &["arch=hrm".into(), "arch.puzzle_emb_len=4".into()]).unwrap_err());
        assert!(e.contains("does not apply to arch=hrm"), "{e}");
        let e = format!("{:#}", resolve("sudoku-att", &["arch=transformers_baseline".into(), "arch.L_cycles=4".into()]).unwrap_err());
        assert!(e.contains("does not apply"), "{e}");
    }

    #[test]
    fn a_written_config_reads_back_for_every_architecture() {
        for arch in Architecture::ALL {
            let c = resolve("sudoku-att", &[format!("arch={}", arch.name())]).unwrap();
            let back = from_table(c.to_toml().parse().unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", arch.name()));
            assert_eq!(back, c);
        }
    }

    #[test]
    fn unknown_keys_list_close_matches() {
        let e = format!("{:#}", resolve("sudoku-att", &["arch.L_cycle=4".into()]).unwrap_err());
        assert!(e.contains("unknown configuration key `arch.L_cycle`") && e.contains("arch.L_cycles"), "{e}");
        let e = format!("{:#}", resolve("sudoku-att", &["globl_batch_size=4".into()]).unwrap_err());
        assert!(e.contains("global_batch_size"), "{e}");
        let e = format!("{:#}", resolve("sudoku-att", &["epochs=10".into(), "eval_interval=3".into()]).unwrap_err());
        assert!(e.contains("must divide"), "{e}");
    }

    #[test]
    fn null_empties_an_optional_key_and_is_refused_elsewhere() {
        let c =
            resolve("sudoku-tiny", &["max_steps=5".into(), "eval_max_examples=None".into(), "max_steps=null".into(), "+run_name=~".into()])
                .unwrap();
        assert_eq!((c.max_steps, c.eval_max_examples, c.run_name), (None, None, None));
        let e = format!("{:#}", resolve("sudoku-tiny", &["lr=null".into()]).unwrap_err());
        assert!(e.contains("lr=null") && e.contains("cannot be empty"), "{e}");
        let e = format!("{:#}", resolve("sudoku-tiny", &["eval_interval=null".into()]).unwrap_err());
        assert!(e.contains("equal to epochs"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let e = format!("{:#}", resolve("sudoku-tiny", &["arch.H_cycles=x".into()]).unwrap_err());
        assert!(e.contains("arch.H_cycles: invalid type: string \"x\""), "{e}");
        let e = format!("{:#}", resolve("sudoku-tiny", &["lr=abc".into()]).unwrap_err());
        assert!(e.contains("lr: invalid type: string \"abc\""), "{e}");
        // Past TOML's integers: the limit named, not "invalid type".
        let e = format!("{:#}", resolve("sudoku-tiny", &["max_steps=18446744073709551615".into()]).unwrap_err());
        assert!(e.contains("max_steps=18446744073709551615: past -9223372036854775808..=9223372036854775807"), "{e}");
        // Text keys keep digits as text.
        let c = resolve("sudoku-tiny", &["+run_name=18446744073709551615".into(), "project_name=2024.".into()]).unwrap();
        assert_eq!((c.run_name.as_deref(), c.project_name.as_deref()), (Some("18446744073709551615"), Some("2024.")));
        // Numbers as Python writes them.
        for (given, lr) in [("lr=.5e-3", 0.0005), ("lr=5.", 5.0), ("lr=1.e-4", 1e-4)] {
            let got = resolve("sudoku-tiny", &[given.into()]).map(|c| c.lr);
            assert!(got.as_ref().is_ok_and(|&l| l == lr), "{given}: {got:?}");
        }
    }

    #[test]
    fn an_average_that_never_moves_is_refused() {
        let e = format!("{:#}", resolve("sudoku-tiny", &["ema=True".into(), "ema_rate=1".into()]).unwrap_err());
        assert!(e.contains("never moves"), "{e}");
        resolve("sudoku-tiny", &["ema=False".into(), "ema_rate=1".into()]).unwrap();
        resolve("sudoku-tiny", &["ema=True".into(), "ema_rate=0.999".into()]).unwrap();
    }

    #[test]
    fn frozen_weights_without_puzzle_embeddings_are_refused() {
        let e = format!("{:#}", resolve("sudoku-tiny", &["freeze_weights=True".into(), "arch.puzzle_emb_ndim=0".into()]).unwrap_err());
        assert!(e.contains("nothing would learn"), "{e}");
        resolve("sudoku-tiny", &["freeze_weights=True".into()]).unwrap();
    }

    #[test]
    fn the_reference_evaluator_keys_are_read_as_its_commands_give_them() {
        // The reference's Sudoku and Maze commands: no evaluator, in every quoting.
        for ov in ["evaluators=[]", "evaluators=\"[]\"", "evaluators='[]'"] {
            assert!(resolve("sudoku-att", &[ov.into()]).unwrap().evaluators.is_empty(), "{ov}");
        }
        assert_eq!(resolve("sudoku-att", &[]).unwrap().evaluators, [ARC_EVALUATOR], "the reference's default");
        assert!(resolve("sudoku-att", &["evaluators=null".into()]).unwrap().evaluators.is_empty(), "null: none");
        for ov in [
            "evaluators=[arc@ARC]",
            "evaluators=\"[{name: arc@ARC}]\"",
            "evaluators=[{name: 'arc@ARC'}]",
            "evaluators=[{\"name\": \"arc@ARC\"}]",
            "+evaluators=arc@ARC",
        ] {
            assert_eq!(resolve("sudoku-att", &[ov.into()]).unwrap().evaluators, [ARC_EVALUATOR], "{ov}");
        }
        let refused = |ov: &str| format!("{:#}", resolve("sudoku-att", &[ov.into()]).unwrap_err());
        // The ARC evaluator's arguments: the reference's defaults unless the list gives them;
        // a state.json that lacks them (older trm) reads as what that version did.
        assert_eq!(resolve("sudoku-att", &[]).unwrap().arc_evaluator, ArcEvaluatorArgs::default());
        let c = resolve("sudoku-att", &["evaluators=[{name: arc@ARC, aggregated_voting: False, pass_Ks: [2]}]".into()]).unwrap();
        assert_eq!(c.arc_evaluator, ArcEvaluatorArgs { aggregated_voting: false, submission_k: 2, pass_ks: vec![2] });
        let mut old = serde_json::to_value(&c).unwrap();
        old.as_object_mut().unwrap().remove("arc_evaluator");
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.arc_evaluator, ArcEvaluatorArgs::unrecorded());
        assert!(!old.arc_evaluator.aggregated_voting);
        let e = refused("evaluators=[{name: arc@ARC, submission_K: 0}]");
        assert!(e.contains("submission_K must be from 1 to 1000"), "{e}");
        let e = refused("evaluators.0.aggregated_voting=False");
        assert!(e.contains("given with the list") && e.contains("aggregated_voting: False"), "{e}");
        let e = refused("evaluators=[sudoku@Exact]");
        assert!(e.contains("no evaluator `sudoku@Exact`") && e.contains("evaluators=[]"), "{e}");
        assert!(refused("evaluators=[arc@ARC,arc@ARC]").contains("list it once"));
        // data_paths_test: empty (the training set's test/) is the reference's default; another
        // folder is not implemented.
        for ov in ["data_paths_test=[]", "data_paths_test=\"[]\""] {
            assert!(resolve("sudoku-att", &[ov.into()]).unwrap().data_paths_test.is_empty(), "{ov}");
        }
        let e = refused("data_paths_test=[data/a,data/b]");
        assert!(e.contains("data_paths_test=data/a,data/b") && e.contains("not implemented") && e.contains("trm eval"), "{e}");
        // One folder is checked against the training data set when the run starts.
        assert_eq!(resolve("sudoku-att", &["data_paths_test=[d]".into()]).unwrap().data_paths_test, ["d"]);
    }
}
