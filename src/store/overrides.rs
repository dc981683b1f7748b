//! `key=value` overrides as the reference's hydra command line writes them (`arch.L_cycles=6
//! ema=True`, `arch=hrm`, `+run_name=x`, `lr=null`), applied to a configuration table before it
//! is read (`config.rs`, which gives the known keys). Every key is checked against them; a near miss
//! is suggested.

use super::arc_evaluator::{ARC_EVALUATOR, ArcEvaluatorArgs, parse_evaluators};
use crate::model::architecture::Architecture;
use anyhow::{Result, anyhow, bail};

/// The keys whose value may be absent (`Option` fields); `KEY=null` (or `None`) empties one, except
/// `eval_interval`, whose default is not empty.
pub(super) const OPTIONAL_KEYS: [&str; 9] = [
    "run_name",
    "project_name",
    "max_steps",
    "eval_max_examples",
    "eval_batch_size",
    "micro_batch_size",
    "eval_interval",
    "batch_order",
    "depth_curriculum",
];

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + (a[i - 1] != b[j - 1]) as usize);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a hydra-style value: `True`/`False`, numbers, `[a,b]` lists, strings (`null`/`None`:
/// `apply_overrides`, before this).
pub(super) fn parse_value(raw: &str) -> toml::Value {
    parse_value_nested(raw, 0)
}

/// Lists nested deeper than this are kept as a string (which the key's type then refuses),
/// so that `[[[[…` of any depth costs neither the stack nor quadratic time.
const MAX_LIST_DEPTH: usize = 8;

fn parse_value_nested(raw: &str, depth: usize) -> toml::Value {
    let v = raw.trim();
    match v {
        "True" | "true" => return toml::Value::Boolean(true),
        "False" | "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if let Ok(t) = format!("x = {v}").parse::<toml::Table>() {
        return t["x"].clone();
    }
    if v.starts_with('[') && v.ends_with(']') && depth < MAX_LIST_DEPTH {
        let items =
            v[1..v.len() - 1].split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| parse_value_nested(s, depth + 1)).collect();
        return toml::Value::Array(items);
    }
    toml::Value::String(v.trim_matches('"').trim_matches('\'').to_string())
}

/// The key and value of a `key=value` override (`+key=value`, hydra's way to add a key its
/// configuration lacks, is the same here: trm knows every key); None where there is no `=`.
pub fn split_override(ov: &str) -> Option<(&str, &str)> {
    ov.split_once('=').map(|(k, v)| (k.trim().trim_start_matches('+'), v))
}

/// The key of an override, as `apply` reads it (the whole text where there is no `=`).
pub fn override_key(ov: &str) -> &str {
    split_override(ov).map_or_else(|| ov.trim().trim_start_matches('+'), |(k, _)| k)
}

/// The value given last for `key` among `overrides` (the last one wins, as in `apply`).
pub fn last_value<'a>(overrides: &'a [String], key: &str) -> Option<&'a str> {
    overrides.iter().rev().find_map(|o| split_override(o).filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// Takes every `key=...` out of `overrides`, returning the value given last.
pub fn take_key(overrides: &mut Vec<String>, key: &str) -> Option<String> {
    let last = last_value(overrides, key).map(str::to_string);
    overrides.retain(|o| split_override(o).is_none_or(|(k, _)| k != key));
    last
}

/// Takes the reference's `load_checkpoint=PATH` out of `overrides` (the weights a new run starts
/// from, as `trm train --init-from`): Some(None) where it is given empty (`null`, `None`, `~`).
pub fn take_load_checkpoint(overrides: &mut Vec<String>) -> Option<Option<std::path::PathBuf>> {
    take_key(overrides, "load_checkpoint").map(|v| {
        let v = v.trim().trim_matches(['"', '\'']);
        (!matches!(v, "" | "null" | "None" | "~")).then(|| std::path::PathBuf::from(v))
    })
}

/// The folders a `data_paths=[...]` given among `overrides` names (the reference's way to name
/// the data, which trm's commands read as `--data`); None where none is given.
pub fn given_data_paths(overrides: &[String]) -> Option<Vec<String>> {
    last_value(overrides, "data_paths").map(data_paths_value)
}

/// The folders a `data_paths=...` value names (`[a,b]`, `"[a]"` or a bare `a`).
pub fn data_paths_value(raw: &str) -> Vec<String> {
    let v = raw.trim().trim_matches('"').trim_matches('\'');
    match parse_value(v) {
        toml::Value::Array(items) => items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)).collect(),
        toml::Value::String(s) => vec![s],
        other => vec![other.to_string()],
    }
}

/// The architecture an `arch` table names (`trm` when it names none).
pub(super) fn arch_of(t: &toml::Table) -> Result<Architecture> {
    match t.get("arch").and_then(|a| a.get("name")) {
        None => Ok(Architecture::Trm),
        Some(toml::Value::String(n)) => Architecture::parse(n)
            .ok_or_else(|| anyhow!("unknown architecture `{n}` (arch= one of {})", Architecture::ALL.map(|a| a.name()).join(", "))),
        Some(v) => bail!("arch.name must be a string, not {v}"),
    }
}

/// Applies `key=value` overrides (reference names; `+key=value` as hydra's append is accepted).
/// `arch=NAME` selects an architecture as hydra's config group does: when it differs from the
/// preset's, the preset's `[arch]` block is replaced by NAME's defaults (a note lists what was
/// dropped); `arch.*` overrides apply after it, wherever they stand on the command line.
/// Returns notes for the user (what `arch=` replaced). `known`: every valid key
/// (`config::known_keys`).
pub fn apply(base: &mut toml::Table, overrides: &[String], known: &[String]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut pairs = Vec::new();
    for ov in overrides {
        pairs.push(split_override(ov).ok_or_else(|| anyhow!("override `{ov}` is not key=value"))?);
    }
    // Group selection first.
    for (_, value) in pairs.iter().filter(|(k, _)| *k == "arch") {
        let name = value.trim().trim_matches('"').trim_matches('\'');
        let arch = Architecture::parse(name)
            .ok_or_else(|| anyhow!("unknown architecture `arch={name}` (one of {})", Architecture::ALL.map(|a| a.name()).join(", ")))?;
        if arch_of(base)? != arch {
            let dropped: Vec<String> = base
                .get("arch")
                .and_then(|a| a.as_table())
                .map(|a| a.iter().filter(|(k, _)| *k != "name").map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            if !dropped.is_empty() {
                notes.push(format!(
                    "arch={} replaces the preset's arch settings ({}) with its own defaults",
                    arch.name(),
                    dropped.join(", ")
                ));
            }
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(arch.name().into()));
            base.insert("arch".into(), toml::Value::Table(t));
        }
    }
    for (key, value) in pairs.into_iter().filter(|(k, _)| *k != "arch") {
        if key == "arch.loss.loss_type" || key == "loss_type" {
            set(base, "arch.loss_type", parse_value(value));
            continue;
        }
        if key == "arch.loss.name" {
            // The reference's loss head, which is trm's one: the key says what trm does.
            let name = value.trim().trim_matches(['"', '\'']);
            anyhow::ensure!(name == "losses@ACTLossHead", "arch.loss.name={name}: trm implements the reference's losses@ACTLossHead only");
            continue;
        }
        let null = matches!(value.trim(), "null" | "None" | "~");
        if key == "checkpoint_path" {
            // The reference's default: its own folder naming, which --out replaces.
            if null {
                continue;
            }
            bail!(
                "checkpoint_path={}: trm writes a run (its checkpoints, metrics and config) to --out DIR; pass --out instead",
                value.trim()
            );
        }
        if key == "evaluators" {
            // The whole list, as hydra replaces it: the arguments it leaves out are the defaults.
            let (names, args) = if null { (vec![], ArcEvaluatorArgs::default()) } else { parse_evaluators(value)? };
            set(base, key, toml::Value::Array(names.into_iter().map(toml::Value::String).collect()));
            base.insert("arc_evaluator".into(), toml::Value::try_from(args)?);
            continue;
        }
        if key == "data_paths_test" || key == "eval_save_outputs" {
            // `null` is the reference's "none" for these lists.
            let items = if null { vec![] } else { data_paths_value(value) };
            set(base, key, toml::Value::Array(items.into_iter().map(toml::Value::String).collect()));
            continue;
        }
        if key.starts_with("evaluators.") || key.starts_with("evaluators[") || key.starts_with("arc_evaluator") {
            bail!(
                "{key}: the ARC evaluator's arguments are given with the list, as the reference's command line gives them: \
                 evaluators=\"[{{name: {ARC_EVALUATOR}, aggregated_voting: False, submission_K: 2, pass_Ks: [1,2,5]}}]\""
            );
        }
        if !known.iter().any(|k| k == key) {
            let mut close: Vec<(usize, &String)> = known.iter().map(|k| (edit_distance(k, key), k)).collect();
            close.sort();
            let sugg: Vec<&str> = close.iter().take(3).filter(|(d, _)| *d <= key.len() / 2 + 2).map(|(_, k)| k.as_str()).collect();
            bail!(
                "unknown configuration key `{key}`{}",
                if sugg.is_empty() { String::new() } else { format!(" (did you mean {}?)", sugg.join(", ")) }
            );
        }
        if matches!(value.trim(), "null" | "None" | "~") {
            // Hydra's empty value, for the keys that are empty by default (the table then lacks them).
            if key == "eval_interval" {
                bail!("eval_interval={}: to evaluate only at the end of the run, give eval_interval equal to epochs", value.trim());
            }
            if !OPTIONAL_KEYS.contains(&key) {
                bail!("{key}={}: `{key}` cannot be empty; give it a value", value.trim());
            }
            base.remove(key);
            continue;
        }
        let mut v = match TEXT_KEYS.contains(&key) {
            // A name or path that looks like a number stays text.
            true if !value.trim().starts_with('[') => toml::Value::String(value.trim().trim_matches(['"', '\'']).to_string()),
            true => parse_value(value),
            false => number_or_value(key, value)?,
        };
        // `data_paths=dir` is a one-element list; numbers where floats are expected stay numbers.
        if key == "data_paths" && !v.is_array() {
            v = toml::Value::Array(vec![v]);
        }
        set(base, key, v);
    }
    Ok(notes)
}

/// Keys whose values are text (names, paths, specs), never numbers.
const TEXT_KEYS: [&str; 8] =
    ["run_name", "project_name", "data_paths", "data_paths_test", "eval_save_outputs", "batch_order", "depth_curriculum", "arch.loss_type"];

/// A value of a key that is not text: numbers as Python and hydra write them that TOML does not
/// read (`.5e-3`, `5.`), and an integer past TOML's named as such; anything else as `parse_value`.
fn number_or_value(key: &str, value: &str) -> Result<toml::Value> {
    let v = value.trim();
    let digits = v.strip_prefix('-').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && v.parse::<i64>().is_err() {
        bail!("{key}={v}: past {}..={}, the integers a configuration holds", i64::MIN, i64::MAX);
    }
    let numeric = v.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b)) && v.bytes().any(|b| b.is_ascii_digit());
    if numeric
        && v.contains('.')
        && format!("x = {v}").parse::<toml::Table>().is_err()
        && let Ok(x) = v.parse::<f64>()
    {
        return Ok(toml::Value::Float(x));
    }
    Ok(parse_value(value))
}

fn set(t: &mut toml::Table, key: &str, v: toml::Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let sub = t.entry(head.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(sub) = sub {
                set(sub, rest, v);
            }
        }
        None => {
            t.insert(key.to_string(), v);
        }
    }
}
