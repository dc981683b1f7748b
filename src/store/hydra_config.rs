//! The reference's `all_config.yaml`, written beside its checkpoints (`yaml.dump` of the
//! resolved hydra config), read as trm configuration overrides: a reference checkpoint then
//! evaluates and solves without `--config`.
//!
//! The reader takes what PyYAML's `yaml.dump` writes for that config: block mappings indented by
//! two spaces, block sequences (`- item`, also `- key: value` items), the empty flow collections
//! `[]` and `{}`, plain, single- and double-quoted scalars and `null`. Anything else (anchors,
//! multi-line scalars, flow collections with items) is an error naming the line, never a guess.
//!
//! Keys map to trm's own through the usual override path, so an unknown key is refused with its
//! name. `arch.name` (`recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1`) picks the
//! architecture; the reference's run bookkeeping (paths, checkpoint loading) is left out, with a
//! note. Its `evaluators` list is read (the ARC evaluator's arguments are how `trm eval` scores the
//! weights); evaluators trm does not have are left out, with a note.
//!
//! `to_yaml` writes the same file for a trm run (`trm export --format torch` puts it beside the
//! weights), so an exported model carries its configuration as the reference's do.

use super::config::{ARC_EVALUATOR, TrainConfig};
use crate::model::architecture::Architecture;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// One scalar of the file, by its dotted key: `None` for `null`.
type Entry = (String, Option<String>);

/// Keys of the reference's run bookkeeping: where data and checkpoints were, what was saved.
/// They do not describe the model or its training, and trm takes them from its own options.
/// (`evaluators` is read apart: its ARC evaluator's arguments are how the weights' run scored
/// them, which `trm eval` scores them with.)
const BOOKKEEPING: [&str; 5] = ["checkpoint_path", "data_paths", "data_paths_test", "eval_save_outputs", "load_checkpoint"];

/// Largest `all_config.yaml` read (the reference's are about 2 KB).
pub const MAX_YAML_BYTES: u64 = 1 << 20;
/// Deepest nesting of mappings and sequences (the reference's is 3).
pub const MAX_YAML_DEPTH: usize = 16;

/// Reads `path` into trm overrides (`key=value`) and notes on what was left out.
pub fn overrides_from_file(path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let text = crate::util::fs::read_text_capped(path, MAX_YAML_BYTES, "a config file")?;
    let entries = parse(&text).with_context(|| format!("{}: not a config trm can read", path.display()))?;
    to_overrides(&entries).with_context(|| path.display().to_string())
}

/// The configuration of a bare weights file: `--config` when given, else the reference's
/// `all_config.yaml` beside the file (`hydra_config`); `set` applies on top of either.
pub fn resolve_for_weights(file: &std::path::Path, preset: Option<&str>, set: &[String]) -> Result<TrainConfig> {
    // Only the model's keys describe weights; a training key here would be accepted and ignored.
    for ov in set {
        let key = super::overrides::override_key(ov);
        if !(key == "arch" || key.starts_with("arch.") || key == "loss_type") || TRAINING_ONLY_ARCH_KEYS.contains(&key) {
            bail!(
                "--set {ov}: only the model's keys (arch=NAME, arch.*) describe a weights file; `{key}` is a training setting and \
                 would change nothing here (the evaluation's own settings are flags: --limit, --batch, --steps, see --help)"
            );
        }
    }
    let cfg = resolve_weights_config(file, preset, set)?;
    super::idle_keys::refuse_idle(&cfg, set).context("--set")?;
    Ok(cfg)
}

/// `arch.*` keys that only training reads: halting exploration, winner-take-all chains, the
/// gradient's cut, adaptive halting in training.
const TRAINING_ONLY_ARCH_KEYS: [&str; 4] = ["arch.halt_exploration_prob", "arch.wta_chains", "arch.one_step_grad", "arch.act_enabled"];

fn resolve_weights_config(file: &std::path::Path, preset: Option<&str>, set: &[String]) -> Result<TrainConfig> {
    if let Some(p) = preset {
        return super::config::resolve(p, set);
    }
    let yaml = file.parent().unwrap_or(std::path::Path::new(".")).join("all_config.yaml");
    if !yaml.is_file() {
        bail!(
            "{}: a bare weights file needs its configuration: --config PRESET (or a TOML file), or the reference's all_config.yaml beside it (there is none)",
            file.display()
        );
    }
    let (mut overrides, notes) = overrides_from_file(&yaml)?;
    eprintln!("note: configuration from {}", yaml.display());
    for note in notes {
        eprintln!("note: {note}");
    }
    overrides.extend(set.iter().cloned());
    // Every key of the reference's config is in the file; the preset only fills trm's own.
    super::config::resolve("arc1", &overrides).with_context(|| format!("configuration from {}", yaml.display()))
}

fn to_overrides(entries: &[Entry]) -> Result<(Vec<String>, Vec<String>)> {
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    let (evaluators, mut notes) = evaluators_override(entries);
    out.extend(evaluators);
    for (key, value) in entries {
        let top = key.split(['.', '[']).next().unwrap_or(key);
        if top == "evaluators" {
            continue;
        }
        if BOOKKEEPING.contains(&top) {
            if !skipped.iter().any(|s| s == top) {
                skipped.push(top.to_string());
            }
            continue;
        }
        let Some(value) = value else {
            // `project_name: null` and the like: the default is already "none".
            continue;
        };
        match key.as_str() {
            "arch.name" => out.insert(0, format!("arch={}", architecture(value)?)),
            "arch.loss.name" if value == "losses@ACTLossHead" => {}
            "arch.loss.name" => bail!("arch.loss.name `{value}`: trm implements the reference's losses@ACTLossHead only"),
            _ => out.push(format!("{key}={value}")),
        }
    }
    // The model's shape and recursion come from the file alone, never from a preset: every key of
    // the architecture's reference config must be there (yaml.dump of a resolved config has them all).
    let name = entries.iter().find(|(k, _)| k == "arch.name").and_then(|(_, v)| v.as_deref());
    let name = name.ok_or_else(|| anyhow!("no arch.name: the file does not say which model it configures"))?;
    let arch = Architecture::parse(&architecture(name)?).ok_or_else(|| anyhow!("arch.name `{name}`"))?;
    // Keys the reference writes for every model of its family but whose model ignores them
    // (`H_layers` of trm_singlez): not trm's keys for that architecture either, so left out.
    let (own, written) = (arch.defaults_table(), arch.row().reference_keys);
    let ignored = |k: &str| written.contains(&k) && !own.contains_key(k);
    out.retain(|o| o.strip_prefix("arch.").and_then(|o| o.split_once('=')).is_none_or(|(k, _)| !ignored(k)));
    let missing: Vec<String> = arch
        .row()
        .reference_keys
        .iter()
        .map(|k| format!("arch.{k}"))
        .filter(|k| !entries.iter().any(|(e, v)| e == k && v.is_some()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "lacks {}: the reference writes every key of the model's configuration, and trm will not take the model's shape or \
             recursion from a preset; add the key(s) with the values the weights were trained with",
            missing.join(", ")
        );
    }
    if !skipped.is_empty() {
        notes.insert(0, format!("left out the reference's run bookkeeping: {}", skipped.join(", ")));
    }
    Ok((out, notes))
}

/// The file's `evaluators` list as one `evaluators=` override, in hydra's syntax
/// (`[{name: arc@ARC, submission_K: 3, pass_Ks: [1, 2]}]`), and notes on what was left out:
/// evaluators trm does not have, or the whole list when trm cannot take it (the ARC evaluator's
/// arguments are then the reference's defaults). The list is how the weights' run scored them,
/// which only `trm eval` uses, so a list trm cannot take never keeps the model from loading.
/// None when the file has no list; `null` is none, as in an override.
fn evaluators_override(entries: &[Entry]) -> (Option<String>, Vec<String>) {
    let left_out = |e: anyhow::Error| format!("left out the evaluators list ({e:#}): ARC is scored with the reference's default arguments");
    let (value, others) = match evaluators_list(entries) {
        Ok(Some(list)) => list,
        Ok(None) => return (None, vec![]),
        Err(e) => return (None, vec![left_out(e)]),
    };
    let mut notes = vec![];
    if !others.is_empty() {
        notes.push(format!("left out the evaluators trm does not have: {} (it has {ARC_EVALUATOR})", others.join(", ")));
    }
    // Checked as the configuration checks the override, so that it cannot fail there.
    let checked = super::arc_evaluator::parse_evaluators(&value).and_then(|(names, _)| {
        anyhow::ensure!(names.len() <= 1, "it lists {ARC_EVALUATOR} {} times", names.len());
        Ok(())
    });
    match checked {
        Ok(()) => (Some(format!("evaluators={value}")), notes),
        Err(e) => {
            notes.push(left_out(e));
            (None, notes)
        }
    }
}

/// The file's `evaluators` entries as an override's value (`[...]`; `[]` for none, `null`
/// included), with the names of the evaluators trm does not have, which it leaves out.
fn evaluators_list(entries: &[Entry]) -> Result<Option<(String, Vec<String>)>> {
    // Per item: its name, its `key: value` arguments and its lists, in the file's order.
    #[derive(Default)]
    struct Item {
        name: Option<String>,
        args: Vec<(String, String)>,
        lists: Vec<(String, Vec<String>)>,
    }
    let mut items: BTreeMap<usize, Item> = BTreeMap::new();
    let mut listed = false;
    for (key, value) in entries {
        let Some(rest) = key.strip_prefix("evaluators").filter(|r| r.is_empty() || r.starts_with(['.', '['])) else { continue };
        listed = true;
        if rest.is_empty() {
            // `evaluators: []`, or `null`: none.
            continue;
        }
        let bad = || anyhow!("{key}: the evaluators are a list (`- name: {ARC_EVALUATOR}`), as the reference writes them");
        let (index, field) = rest.strip_prefix('[').and_then(|r| r.split_once(']')).ok_or_else(bad)?;
        let item = items.entry(index.parse().map_err(|_| bad())?).or_default();
        let value = value.clone().unwrap_or_else(|| "null".into());
        match field.strip_prefix('.') {
            None if field.is_empty() => item.name = Some(value),
            Some("name") => item.name = Some(value),
            Some(f) => match f.split_once('[') {
                None => item.args.push((f.to_string(), value)),
                Some((list, _)) => match item.lists.iter_mut().find(|(k, _)| k == list) {
                    Some((_, l)) => l.push(value),
                    None => item.lists.push((list.to_string(), vec![value])),
                },
            },
            None => return Err(bad()),
        }
    }
    if !listed {
        return Ok(None);
    }
    let (mut kept, mut others) = (vec![], vec![]);
    for item in items.into_values() {
        match item.name {
            Some(n) if n != ARC_EVALUATOR => others.push(n),
            name => {
                let name = name.map(|n| format!("name: {n}"));
                let args = item.args.into_iter().map(|(k, v)| format!("{k}: {v}"));
                let lists = item.lists.into_iter().map(|(k, l)| format!("{k}: [{}]", l.join(", ")));
                kept.push(format!("{{{}}}", name.into_iter().chain(args).chain(lists).collect::<Vec<_>>().join(", ")));
            }
        }
    }
    Ok(Some((format!("[{}]", kept.join(", ")), others)))
}

/// `recursive_reasoning.<module>@<class>` -> trm's architecture name.
fn architecture(name: &str) -> Result<String> {
    let known = Architecture::from_class_path(name).ok_or_else(|| {
        let runs: Vec<&str> = Architecture::ALL.iter().map(|a| a.name()).collect();
        anyhow!("arch.name `{name}`: an architecture trm does not run (it runs {})", runs.join(", "))
    })?;
    Ok(known.name().to_string())
}

/// Flattens the file into (dotted key, scalar) entries; list items get `key[i]`.
fn parse(text: &str) -> Result<Vec<Entry>> {
    let lines: Vec<(usize, usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| (n + 1, l.len() - l.trim_start().len(), l.trim()))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    mapping(&lines, &mut i, 0, "", &mut out, 0)?;
    if let Some((n, _, l)) = lines.get(i) {
        bail!("line {n}: `{l}` is not part of the top-level mapping");
    }
    Ok(out)
}

/// A block mapping whose keys sit at column `indent`, `depth` levels in.
fn mapping(lines: &[(usize, usize, &str)], i: &mut usize, indent: usize, prefix: &str, out: &mut Vec<Entry>, depth: usize) -> Result<()> {
    if let Some(&(n, _, _)) = lines.get(*i).filter(|_| depth > MAX_YAML_DEPTH) {
        bail!("line {n}: nested more than {MAX_YAML_DEPTH} levels deep; a config is not");
    }
    while let Some(&(n, ind, line)) = lines.get(*i) {
        if ind < indent {
            return Ok(());
        }
        if ind > indent || line.starts_with("- ") || line == "-" {
            bail!("line {n}: unexpected indentation or list item `{line}`");
        }
        let (key, rest) = line.split_once(':').ok_or_else(|| anyhow!("line {n}: `{line}` is not `key: value`"))?;
        let key = format!("{prefix}{}", unquote(key.trim(), n)?);
        let rest = rest.trim();
        *i += 1;
        if !rest.is_empty() {
            out.push((key, scalar(rest, n)?));
            continue;
        }
        match lines.get(*i) {
            // A nested mapping, or a sequence at the key's own column (PyYAML's style).
            Some(&(_, next, l)) if next > indent && !l.starts_with('-') => mapping(lines, i, next, &format!("{key}."), out, depth + 1)?,
            Some(&(_, next, l)) if next >= indent && l.starts_with('-') => sequence(lines, i, next, &key, out, depth + 1)?,
            _ => out.push((key, None)),
        }
    }
    Ok(())
}

/// A block sequence whose dashes sit at column `indent`.
fn sequence(lines: &[(usize, usize, &str)], i: &mut usize, indent: usize, key: &str, out: &mut Vec<Entry>, depth: usize) -> Result<()> {
    let mut k = 0;
    while let Some(&(n, ind, line)) = lines.get(*i) {
        if ind != indent || !line.starts_with('-') {
            return Ok(());
        }
        let item = line[1..].trim();
        let at = format!("{key}[{k}]");
        if let Some((ik, iv)) = item.split_once(": ").filter(|_| !item.starts_with(['\'', '"'])) {
            // `- key: value`, more keys of the same item two columns in.
            out.push((format!("{at}.{}", unquote(ik.trim(), n)?), scalar(iv.trim(), n)?));
            *i += 1;
            mapping(lines, i, indent + 2, &format!("{at}."), out, depth + 1)?;
        } else {
            out.push((at, scalar(item, n)?));
            *i += 1;
        }
        k += 1;
    }
    Ok(())
}

/// One scalar: `null`, an empty flow collection (kept as text), quoted or plain.
fn scalar(s: &str, n: usize) -> Result<Option<String>> {
    match s {
        "null" | "~" => Ok(None),
        "[]" | "{}" => Ok(Some(s.to_string())),
        _ if s.starts_with(['[', '{', '&', '*', '|', '>', '!']) => bail!("line {n}: `{s}`: YAML beyond what yaml.dump writes for a config"),
        _ => unquote(s, n).map(Some),
    }
}

fn unquote(s: &str, n: usize) -> Result<String> {
    if let Some(inner) = s.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'').ok_or_else(|| anyhow!("line {n}: unterminated quote in `{s}`"))?;
        Ok(inner.replace("''", "'"))
    } else if s.starts_with('"') {
        serde_json::from_str(s).map_err(|_| anyhow!("line {n}: `{s}`: a double-quoted string trm cannot read"))
    } else {
        Ok(s.to_string())
    }
}

/// Equal values, integers and floats compared as numbers.
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Integer(i), toml::Value::Float(f)) | (toml::Value::Float(f), toml::Value::Integer(i)) => *i as f64 == *f,
        _ => a == b,
    }
}

/// A YAML node as PyYAML writes a config: scalars already in their written form.
enum Node {
    Scalar(String),
    List(Vec<Node>),
    Map(BTreeMap<String, Node>),
}

fn node(v: &toml::Value) -> Node {
    match v {
        toml::Value::String(s) => Node::Scalar(yaml_string(s)),
        toml::Value::Integer(i) => Node::Scalar(i.to_string()),
        toml::Value::Float(f) => Node::Scalar(yaml_float(*f)),
        toml::Value::Boolean(b) => Node::Scalar(b.to_string()),
        toml::Value::Array(a) => Node::List(a.iter().map(node).collect()),
        toml::Value::Table(t) => Node::Map(t.iter().map(|(k, v)| (k.clone(), node(v))).collect()),
        toml::Value::Datetime(d) => Node::Scalar(yaml_string(&d.to_string())),
    }
}

/// PyYAML's float: Python's repr, with `.0` before an exponent that has no point (`1.0e-05`).
fn yaml_float(f: f64) -> String {
    let r = crate::util::pyjson::python_float(f);
    match r.as_str() {
        "Infinity" => ".inf".into(),
        "-Infinity" => "-.inf".into(),
        "NaN" => ".nan".into(),
        _ if r.contains('e') && !r.contains('.') => r.replacen('e', ".0e", 1),
        _ => r,
    }
}

/// A string plain where PyYAML writes it plain (no indicator first, no `: ` or ` #` inside, not
/// readable as a number, bool or null), else single-quoted.
fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && s.trim() == s
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && s.parse::<f64>().is_err()
        && !["true", "false", "null", "yes", "no", "on", "off", "~"].contains(&s.to_ascii_lowercase().as_str());
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', "''")) }
}

fn emit(map: &BTreeMap<String, Node>, indent: usize, out: &mut String) -> Result<()> {
    let pad = " ".repeat(indent);
    for (k, v) in map {
        match v {
            Node::Scalar(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
            Node::List(items) if items.is_empty() => out.push_str(&format!("{pad}{k}: []\n")),
            Node::Map(m) if m.is_empty() => out.push_str(&format!("{pad}{k}: {{}}\n")),
            Node::Map(m) => {
                out.push_str(&format!("{pad}{k}:\n"));
                emit(m, indent + 2, out)?;
            }
            Node::List(items) => {
                out.push_str(&format!("{pad}{k}:\n"));
                for item in items {
                    match item {
                        Node::Scalar(s) => out.push_str(&format!("{pad}- {s}\n")),
                        // A map of scalars and lists of scalars (an evaluator): its first key on
                        // the item's line, a list's items below its key, as PyYAML indents them.
                        Node::Map(m) if !m.is_empty() => {
                            for (i, (mk, mv)) in m.iter().enumerate() {
                                let lead = if i == 0 { "- " } else { "  " };
                                match mv {
                                    Node::Scalar(mv) => out.push_str(&format!("{pad}{lead}{mk}: {mv}\n")),
                                    Node::List(l) if !l.is_empty() && l.iter().all(|x| matches!(x, Node::Scalar(_))) => {
                                        out.push_str(&format!("{pad}{lead}{mk}:\n"));
                                        for x in l {
                                            if let Node::Scalar(x) = x {
                                                out.push_str(&format!("{pad}  - {x}\n"));
                                            }
                                        }
                                    }
                                    _ => bail!("{k}.{mk}: a table, or an empty list, in a list's table, which all_config.yaml never holds"),
                                }
                            }
                        }
                        // Nested lists, and maps of more than scalars, do not occur in a trm config.
                        _ => bail!("{k}: a list of lists or nested tables, which all_config.yaml never holds"),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `cfg` as the reference's `all_config.yaml`: its keys only (trm's own, such as `optimizer` or
/// `max_steps`, are left out), sorted, in PyYAML's block style; bookkeeping the reference keeps
/// and trm does not (checkpoint paths) is written as its defaults.
pub fn to_yaml(cfg: &TrainConfig) -> Result<String> {
    let t = toml::Table::try_from(cfg).context("serialising the configuration")?;
    let defaults = cfg.arch.name.defaults_table();
    let mut arch = BTreeMap::new();
    for (k, v) in t["arch"].as_table().context("arch is a table")? {
        // The reference's own keys for this architecture, and trm's additions where they differ
        // from trm's default (the reference's model classes take such extra fields too).
        let keep = cfg.arch.name.row().reference_keys.contains(&k.as_str()) || defaults.get(k).is_some_and(|d| !same(d, v));
        if keep && k != "name" && k != "loss_type" {
            // Integral numbers as the reference's files write them (`expansion: 4`).
            let v = match v {
                toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => toml::Value::Integer(*f as i64),
                _ => v.clone(),
            };
            arch.insert(k.clone(), node(&v));
        }
    }
    arch.insert("name".into(), Node::Scalar(cfg.arch.name.row().class_path.into()));
    let loss_type = t["arch"].get("loss_type").map_or(Node::Scalar("stablemax_cross_entropy".into()), node);
    arch.insert(
        "loss".into(),
        Node::Map(BTreeMap::from([("loss_type".into(), loss_type), ("name".into(), Node::Scalar("losses@ACTLossHead".into()))])),
    );
    let mut top = BTreeMap::from([("arch".to_string(), Node::Map(arch))]);
    let from_cfg = [
        "beta1",
        "beta2",
        "checkpoint_every_eval",
        "data_paths",
        "ema",
        "ema_rate",
        "epochs",
        "eval_interval",
        "freeze_weights",
        "global_batch_size",
        "lr",
        "lr_min_ratio",
        "lr_warmup_steps",
        "min_eval_interval",
        "project_name",
        "puzzle_emb_lr",
        "puzzle_emb_weight_decay",
        "run_name",
        "seed",
        "weight_decay",
    ];
    for key in from_cfg {
        top.insert(key.into(), t.get(key).map_or(Node::Scalar("null".into()), node));
    }
    // The reference's evaluators are maps: `- name: arc@ARC`, with the arguments that differ
    // from its defaults.
    let evaluators = cfg
        .evaluators
        .iter()
        .map(|e| {
            let (args, default) = (&cfg.arc_evaluator, super::arc_evaluator::ArcEvaluatorArgs::default());
            let mut m = BTreeMap::from([("name".to_string(), Node::Scalar(e.clone()))]);
            if args.aggregated_voting != default.aggregated_voting {
                m.insert("aggregated_voting".into(), Node::Scalar(args.aggregated_voting.to_string()));
            }
            if args.submission_k != default.submission_k {
                m.insert("submission_K".into(), Node::Scalar(args.submission_k.to_string()));
            }
            if args.pass_ks != default.pass_ks {
                m.insert("pass_Ks".into(), Node::List(args.pass_ks.iter().map(|k| Node::Scalar(k.to_string())).collect()));
            }
            Node::Map(m)
        })
        .collect();
    top.insert("evaluators".into(), Node::List(evaluators));
    top.insert("data_paths_test".into(), Node::List(cfg.data_paths_test.iter().map(|p| Node::Scalar(p.clone())).collect()));
    top.insert("eval_save_outputs".into(), Node::List(cfg.eval_save_outputs.iter().map(|k| Node::Scalar(k.clone())).collect()));
    for key in ["checkpoint_path", "load_checkpoint"] {
        top.insert(key.into(), Node::Scalar("null".into()));
    }
    let mut out = String::new();
    emit(&top, 0, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_yaml_dump_writes() {
        let keys = "  H_layers: 0\n  L_cycles: 6\n  L_layers: 2\n  expansion: 4\n  forward_dtype: bfloat16\n  halt_exploration_prob: 0.1\n  halt_max_steps: 16\n  hidden_size: 512\n  mlp_t: false\n  no_ACT_continue: true\n  num_heads: 8\n  pos_encodings: rope\n  puzzle_emb_len: 16\n  puzzle_emb_ndim: 512\n";
        let text = "arch:\n  H_cycles: 3\n  loss:\n    loss_type: stablemax_cross_entropy\n    name: losses@ACTLossHead\n  name: recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1\nbeta1: 0.9\ndata_paths:\n- data/x\ndata_paths_test: []\nevaluators:\n- name: arc@ARC\n  submission_K: 2\nload_checkpoint: null\nrun_name: 'a: b'\n";
        let text = text.replacen("  loss:", &format!("{keys}  loss:"), 1);
        let e = parse(&text).unwrap();
        let get = |k: &str| e.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("arch.H_cycles"), Some(Some("3".into())));
        assert_eq!(get("arch.loss.name"), Some(Some("losses@ACTLossHead".into())));
        assert_eq!(get("data_paths[0]"), Some(Some("data/x".into())));
        assert_eq!(get("evaluators[0].submission_K"), Some(Some("2".into())));
        assert_eq!(get("load_checkpoint"), Some(None));
        assert_eq!(get("run_name"), Some(Some("a: b".into())));
        let (ov, notes) = to_overrides(&e).unwrap();
        assert_eq!(ov[0], "arch=trm");
        assert!(ov.contains(&"arch.loss.loss_type=stablemax_cross_entropy".to_string()) && ov.contains(&"beta1=0.9".to_string()));
        assert!(!ov.iter().any(|o| o.starts_with("data_paths")));
        assert!(ov.contains(&"evaluators=[{name: arc@ARC, submission_K: 2}]".to_string()), "{ov:?}");
        assert!(notes[0].contains("data_paths") && !notes[0].contains("evaluators"), "{notes:?}");
        // A key the model needs, missing: named, never taken from a preset.
        let e = parse(&text.replace("  L_cycles: 6\n", "")).unwrap();
        let err = to_overrides(&e).unwrap_err().to_string();
        assert!(err.contains("lacks arch.L_cycles"), "{err}");
    }

    /// PyYAML's own dumps of the reference's config (tests/fixtures/all_config, made by its
    /// pretrain.PretrainConfig and yaml.dump): read into trm's config and written back, byte for
    /// byte.
    #[test]
    fn round_trips_the_references_own_files() {
        for name in ["trm", "hrm"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/all_config").join(format!("{name}.yaml"));
            let (mut ov, _) = overrides_from_file(&path).unwrap();
            // Bookkeeping, not read from the file; the run's own (a Sudoku run: no evaluator).
            ov.push("data_paths=[data/sudoku-extreme-1k-aug-1000]".into());
            ov.push("evaluators=[]".into());
            let cfg = super::super::config::resolve("arc1", &ov).unwrap();
            assert_eq!(to_yaml(&cfg).unwrap(), std::fs::read_to_string(&path).unwrap(), "{name}");
        }
    }

    /// trm's own `all_config.yaml` (as `trm export` writes it) reads back for every architecture,
    /// including the reference's keys that a model ignores (trm_singlez's `H_layers: 0`).
    #[test]
    fn every_architecture_round_trips_through_its_yaml() {
        for arch in Architecture::ALL {
            let cfg = super::super::config::resolve("sudoku-att", &[format!("arch={}", arch.name()), "data_paths=[d]".into()]).unwrap();
            let text = to_yaml(&cfg).unwrap();
            let (mut ov, _) = to_overrides(&parse(&text).unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", arch.name()));
            ov.push("data_paths=[d]".into());
            let back = super::super::config::resolve("sudoku-att", &ov).unwrap_or_else(|e| panic!("{}: {e:#}", arch.name()));
            assert_eq!(back.arch, cfg.arch, "{}", arch.name());
        }
    }

    /// The run's evaluators are written as the reference writes its default, a list of maps, and
    /// read back by the same parser.
    #[test]
    fn the_evaluators_are_written_as_the_references() {
        let cfg = super::super::config::resolve("arc1", &["data_paths=[d]".into()]).unwrap();
        let text = to_yaml(&cfg).unwrap();
        assert!(text.contains("\nevaluators:\n- name: arc@ARC\nfreeze_weights:"), "{text}");
        let e = parse(&text).unwrap();
        assert!(e.contains(&("evaluators[0].name".to_string(), Some("arc@ARC".to_string()))), "{e:?}");
        // Arguments other than the reference's defaults are written, in PyYAML's block style,
        // and read back.
        let ov = "evaluators=[{name: arc@ARC, aggregated_voting: False, pass_Ks: [1,3]}]";
        let args = super::super::config::resolve("arc1", &["data_paths=[d]".into(), ov.into()]).unwrap();
        let text = to_yaml(&args).unwrap();
        assert!(
            text.contains("\nevaluators:\n- aggregated_voting: false\n  name: arc@ARC\n  pass_Ks:\n  - 1\n  - 3\nfreeze_weights:"),
            "{text}"
        );
        let e = parse(&text).unwrap();
        for (k, v) in [("evaluators[0].aggregated_voting", "false"), ("evaluators[0].pass_Ks[1]", "3"), ("evaluators[0].name", "arc@ARC")] {
            assert!(e.contains(&(k.to_string(), Some(v.to_string()))), "{k} in {e:?}");
        }
        let none = super::super::config::resolve("arc1", &["data_paths=[d]".into(), "evaluators=[]".into()]).unwrap();
        assert!(to_yaml(&none).unwrap().contains("\nevaluators: []\n"));
    }

    /// The file's evaluators are read back as the run's: `trm eval` on the bare weights scores
    /// them with the run's pass@k and attempts. Evaluators trm does not have are left out, with a
    /// note; so is a list trm cannot take (an argument the ARC evaluator does not have, the
    /// evaluator listed twice), which must not keep the model from loading for `trm solve`.
    #[test]
    fn the_evaluators_are_read_back_with_their_arguments() {
        let back = |text: &str| -> Result<(TrainConfig, Vec<String>)> {
            let (mut ov, notes) = to_overrides(&parse(text)?)?;
            ov.push("data_paths=[d]".into());
            Ok((super::super::config::resolve("arc1", &ov)?, notes))
        };
        let ov = "evaluators=[{name: arc@ARC, aggregated_voting: False, submission_K: 3, pass_Ks: [1,3]}]";
        let cfg = super::super::config::resolve("arc1", &["data_paths=[d]".into(), ov.into()]).unwrap();
        let (read, notes) = back(&to_yaml(&cfg).unwrap()).unwrap();
        assert_eq!(read.evaluators, [ARC_EVALUATOR]);
        assert_eq!(read.arc_evaluator, cfg.arc_evaluator);
        assert_eq!((read.arc_evaluator.submission_k, read.arc_evaluator.pass_ks.clone()), (3, vec![1, 3]));
        assert!(!notes.iter().any(|n| n.contains("evaluators")), "{notes:?}");
        // The model's keys alone (`arch:` comes first, `beta1` after it), then each list.
        let model = to_yaml(&cfg).unwrap().split("\nbeta1").next().unwrap().to_string() + "\n";
        assert!(model.starts_with("arch:\n") && !model.contains("evaluators"), "{model}");
        for (evaluators, names, k) in [
            ("evaluators: []\n", vec![], 2),
            ("evaluators:\n- arc@ARC\n", vec![ARC_EVALUATOR], 2),
            ("evaluators: null\n", vec![], 2),
            ("evaluators:\n- name: other@X\n- name: arc@ARC\n  submission_K: 5\n", vec![ARC_EVALUATOR], 5),
        ] {
            let (read, notes) = back(&format!("{model}{evaluators}")).unwrap_or_else(|e| panic!("{evaluators}: {e:#}"));
            assert_eq!((read.evaluators, read.arc_evaluator.submission_k), (names.iter().map(|s| s.to_string()).collect(), k));
            assert_eq!(notes.iter().any(|n| n.contains("other@X")), evaluators.contains("other@X"), "{notes:?}");
        }
        for (evaluators, why) in [
            ("evaluators:\n- name: arc@ARC\n  votes: 3\n", "no argument `votes`"),
            ("evaluators:\n- name: arc@ARC\n  submission_K: 5\n- name: arc@ARC\n", "lists arc@ARC 2 times"),
            ("evaluators:\n- name: arc@ARC\n  submission_K: 0\n", "submission_K"),
            ("evaluators:\n  name: arc@ARC\n", "are a list"),
        ] {
            let (read, notes) = back(&format!("{model}{evaluators}")).unwrap_or_else(|e| panic!("{evaluators}: {e:#}"));
            assert_eq!((read.evaluators, read.arc_evaluator), (vec![ARC_EVALUATOR.to_string()], Default::default()), "{evaluators}");
            assert!(notes.iter().any(|n| n.contains("left out the evaluators list") && n.contains(why)), "{evaluators}: {notes:?}");
        }
    }

    #[test]
    fn a_weights_file_takes_only_model_keys() {
        let f = Path::new("w.safetensors");
        resolve_for_weights(f, Some("sudoku-att"), &["arch.L_cycles=4".into(), "arch=hrm".into()]).unwrap();
        for ov in ["eval_max_examples=100", "lr=1e-3", "+run_name=x"] {
            let e = format!("{:#}", resolve_for_weights(f, Some("sudoku-att"), &[ov.into()]).unwrap_err());
            assert!(e.contains("only the model's keys"), "{ov}: {e}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (text, what) in [
            ("a: [1, 2]\n", "line 1"),
            ("a:\n    b: 1\n  c: 2\n", "line 3"),
            ("arch:\n  name: recursive_reasoning.other@X\n", "does not run"),
            ("arch:\n  loss:\n    name: losses@Other\n", "losses@ACTLossHead only"),
            ("a: 'open\n", "unterminated"),
        ] {
            let e = parse(text).and_then(|e| to_overrides(&e).map(|_| ()));
            let msg = format!("{:#}", e.unwrap_err());
            assert!(msg.contains(what), "{text:?}: {msg}");
        }
    }

    /// `--set` on a weights file: a key only training reads, or one the model would not use, is
    /// refused rather than accepted and ignored.
    #[test]
    fn set_on_weights_refuses_what_would_change_nothing() {
        let weights = Path::new("no-such-dir/model.safetensors");
        let e = |set: &str| format!("{:#}", resolve_for_weights(weights, Some("sudoku-tiny"), &[set.to_string()]).unwrap_err());
        for key in TRAINING_ONLY_ARCH_KEYS {
            assert!(e(&format!("{key}=1")).contains("is a training setting"), "{key}");
        }
        assert!(e("lr=1").contains("is a training setting"));
        assert!(e("arch.num_heads=2").contains("arch.mlp_t=True"));
        let cfg = resolve_for_weights(weights, Some("sudoku-tiny"), &["arch.halt_max_steps=4".into()]).unwrap();
        assert_eq!(cfg.arch.halt_max_steps, 4);
    }
}
