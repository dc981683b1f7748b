//! What a resumed run may change (`trm train --resume key=value ...`): the checkpoint's
//! configuration with the command line's overrides applied where that is safe. Keys that only
//! say how long a run goes, how often it checkpoints and evaluates, what it keeps and how it
//! splits its batch are the same training (`RESUME_SAFE`); a few change the training from there
//! on and say so (`RESUME_CHANGES_TRAINING`); every other key is refused, with its old and new
//! value.

use super::config::{TrainConfig, apply_overrides, from_table};
use anyhow::{Context, Result, bail};

/// Keys a resumed run may change: how long it runs, how often it checkpoints and evaluates, what it
/// keeps. The continued run is the same training as an uninterrupted one.
pub const RESUME_SAFE: [&str; 15] = [
    "max_steps",
    "micro_batch_size",
    "checkpoint_interval_steps",
    "keep_checkpoints",
    "checkpoint_every_eval",
    "eval_max_examples",
    "eval_batch_size",
    "eval_save_outputs",
    "evaluators",
    // Given with `evaluators=[{name: arc@ARC, ...}]`.
    "arc_evaluator.aggregated_voting",
    "arc_evaluator.submission_K",
    "arc_evaluator.pass_Ks",
    "min_eval_interval",
    "run_name",
    "project_name",
];

/// Keys a resumed run may change that change the training from there on (to recover from a
/// divergence, say); a note says so.
pub const RESUME_CHANGES_TRAINING: [&str; 5] = ["lr", "puzzle_emb_lr", "weight_decay", "puzzle_emb_weight_decay", "skip_nonfinite_batches"];

fn flatten(t: &toml::Table, prefix: &str, out: &mut std::collections::BTreeMap<String, toml::Value>) {
    for (k, v) in t {
        match v {
            toml::Value::Table(sub) => flatten(sub, &format!("{prefix}{k}."), out),
            v => {
                out.insert(format!("{prefix}{k}"), v.clone());
            }
        }
    }
}

/// The config of a resumed run: the checkpoint's, with the overrides given on the command line
/// applied where that is safe (`RESUME_SAFE`, `RESUME_CHANGES_TRAINING`); an override of any
/// other key that changes its value is refused.
pub fn resume_config(saved: &TrainConfig, overrides: &[String]) -> Result<TrainConfig> {
    let mut base = saved.to_table();
    for note in apply_overrides(&mut base, overrides)? {
        eprintln!("note: {note}");
    }
    let new = from_table(base).with_context(|| format!("overrides {overrides:?} on the resumed run's config"))?;
    let (mut a, mut b) = (Default::default(), Default::default());
    flatten(&saved.to_table(), "", &mut a);
    flatten(&new.to_table(), "", &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut refused = vec![];
    for k in keys {
        let (old, now) = (a.get(k), b.get(k));
        if old == now {
            continue;
        }
        let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
        if RESUME_SAFE.contains(&k.as_str()) {
            eprintln!("note: resuming with {k} = {} (was {})", show(now), show(old));
        } else if RESUME_CHANGES_TRAINING.contains(&k.as_str()) {
            eprintln!(
                "note: resuming with {k} = {} (was {}): from here on the run differs from an uninterrupted one",
                show(now),
                show(old)
            );
        } else {
            refused.push(format!("{k} ({} -> {})", show(old), show(now)));
        }
    }
    if !refused.is_empty() {
        bail!(
            "--resume continues the run with its saved configuration; these keys cannot change: {}. Keys that can: {}, {}",
            refused.join(", "),
            // The evaluator's arguments are given with `evaluators`, not by these names.
            RESUME_SAFE.iter().filter(|k| !k.starts_with("arc_evaluator.")).copied().collect::<Vec<_>>().join(", "),
            RESUME_CHANGES_TRAINING.join(", ")
        );
    }
    Ok(new)
}
