//! What a resumed run may change (`trm train --resume key=value ...`): the checkpoint's
//! configuration with the command line's overrides applied where that is safe. Keys that only
//! say how long a run goes, how often it checkpoints and evaluates, what it keeps and how it
//! splits its batch are the same training (`RESUME_SAFE`); a few change the training from there
//! on and say so (`RESUME_CHANGES_TRAINING`); every other key is refused, with its old and new
//! value.

use super::config::{TrainConfig, apply_overrides, from_table};
use super::idle_keys::refuse_idle;
use super::overrides::override_key;
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
    let mut changed = std::collections::BTreeSet::new();
    for k in keys {
        let (old, now) = (a.get(k), b.get(k));
        if old == now {
            continue;
        }
        changed.insert(k.as_str());
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
    // A key repeated at its saved value changes nothing and is passed over, whatever it is.
    let changing: Vec<String> = overrides.iter().filter(|o| changed.contains(override_key(o))).cloned().collect();
    refuse_idle(&new, &changing)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::super::config::resolve;
    use super::*;

    fn resumed(saved: &TrainConfig, ov: &[String]) -> Result<TrainConfig, String> {
        resume_config(saved, ov).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn a_resume_changes_only_what_may_change_and_refuses_idle_changes() {
        let saved = resolve("sudoku-att", &["freeze_weights=True".into()]).unwrap();
        // A key that may change: changed.
        assert_eq!(resumed(&saved, &["max_steps=7".into()]).unwrap().max_steps, Some(7));
        // One that may not: refused, naming old and new values.
        let e = resumed(&saved, &["arch.hidden_size=8".into()]).unwrap_err();
        assert!(e.contains("arch.hidden_size (512 -> 8)"), "{e}");
        // lr may change on resume, but frozen weights do not use it.
        let e = resumed(&saved, &["lr=0.5".into()]).unwrap_err();
        assert!(e.starts_with("lr=0.5 would change nothing: freeze_weights=True"), "{e}");
        let e = resumed(&saved, &["+lr=0.5".into()]).unwrap_err();
        assert!(e.starts_with("+lr=0.5 would change nothing"), "{e}");
        // The same lr repeated at its saved value (as a rerun of the first command line gives
        // it) changes nothing, so it is not refused.
        let again = format!("lr={}", saved.lr);
        assert_eq!(resumed(&saved, &[again.clone(), "+run_name=x".into()]).unwrap().lr, saved.lr);
    }
}
