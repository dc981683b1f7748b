//! `trm info`: what a configuration builds, without training it: the architecture, its states and
//! networks, the parameter count, the recursion per supervision step (effective depth, network
//! applications run and differentiated), the forward passes per optimisation step, and, for a
//! row of the TRM paper's tables, the paper's numbers beside ours.

use crate::data::format;
use crate::model::config::{HaltRule, ModelConfig};
use crate::model::schedule::Schedule;
use crate::model::weights::count_params;
use crate::step::curriculum::DepthCurriculum;
use crate::store::{config, presets};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Preset name (trm info --list), paper row, or TOML file
    #[arg(long, default_value = "sudoku-mlp")]
    pub config: String,
    /// Overrides as the reference's hydra command line writes them: `arch=hrm arch.L_cycles=4`
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Override a configuration key, as the positional KEY=VALUE overrides do
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Data set folder (its sequence length, vocabulary and identifiers); else --shape
    #[arg(long, conflicts_with = "shape")]
    pub data: Option<PathBuf>,
    /// sudoku (81 cells, 11 tokens), maze or arc (900 cells; 6 / 12 tokens) [default: the preset's]
    #[arg(long)]
    pub shape: Option<String>,
    /// List the presets and the paper's rows
    #[arg(long, conflicts_with_all = ["config", "overrides", "set", "data", "shape"])]
    pub list: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// The counts `trm info` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub config: String,
    pub arch: String,
    pub seq_len: usize,
    pub vocab_size: usize,
    pub states: Vec<String>,
    pub networks: Vec<(String, usize)>,
    pub params: usize,
    pub h_cycles: usize,
    pub l_cycles: usize,
    /// Network applications per supervision step, and those the gradient flows through.
    pub applications: usize,
    pub differentiated_applications: usize,
    pub differentiated_blocks: usize,
    /// Blocks applied per supervision step: the paper's T(n+1)·layers.
    pub effective_depth: usize,
    /// Forward passes per optimisation step.
    pub nfp: usize,
    pub halt_max_steps: usize,
    /// `depth_curriculum`: (from, H_cycles, L_cycles) per stage, and the schedule's training work
    /// under it as a fraction of the fixed depth's.
    pub depth_curriculum: Option<Vec<(f64, usize, usize)>>,
    pub curriculum_work_ratio: Option<f64>,
    pub paper: Option<PaperComparison>,
    /// What a run of this configuration needs on the CPU engine (`model::memory`).
    pub memory: MemoryInfo,
    /// The weights a run starts from (the reference's `load_checkpoint=PATH`, as `trm train
    /// --init-from`).
    pub starts_from: Option<String>,
}

/// The CPU engine's memory estimate, in MiB: per row of a training and an evaluation pass, the
/// weights and puzzle-embedding table, the gradients and optimiser state, the carry a new run
/// hands from step to step for all of `global_batch_size`'s rows on one rank, and all of these
/// with a training pass at the configuration's batch (its `micro_batch_size` rows, else
/// `global_batch_size`): what `trm train` checks (`train::memory_check`), its weights counted.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryInfo {
    pub train_mib_per_row: f64,
    pub eval_mib_per_row: f64,
    pub weights_mib: f64,
    pub optimiser_mib: f64,
    pub carry_mib: f64,
    pub pass_rows: usize,
    pub train_pass_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PaperComparison {
    pub table: String,
    pub row: String,
    pub accuracy: Option<f64>,
    pub depth: Option<usize>,
    pub nfp: Option<usize>,
    pub params: Option<String>,
}

/// Sequence length and vocabulary of the shipped data sets.
fn shape_dims(shape: &str) -> Result<(usize, usize)> {
    Ok(match shape {
        "sudoku" => (81, 11),
        "maze" => (900, 6),
        "arc" => (900, 12),
        other => bail!("unknown --shape `{other}` (sudoku, maze or arc)"),
    })
}

/// The counts of a configuration at a data shape.
pub fn info(name: &str, cfg: &config::TrainConfig, seq_len: usize, vocab: usize, ids: usize) -> Result<Info> {
    let model = ModelConfig { arch: cfg.arch.clone(), seq_len, vocab_size: vocab, num_puzzle_identifiers: ids };
    model.validate()?;
    let s = Schedule::of(&model.arch);
    let curriculum = cfg.depth_curriculum.as_deref().map(|spec| DepthCurriculum::parse(spec, &model.arch)).transpose()?;
    let paper = presets::paper_rows().remove(name).map(|r| PaperComparison {
        table: r.table,
        row: r.row,
        accuracy: r.accuracy,
        depth: r.depth,
        nfp: r.nfp,
        params: r.params,
    });
    Ok(Info {
        config: name.to_string(),
        arch: model.arch.name.name().into(),
        seq_len,
        vocab_size: vocab,
        states: s.states.iter().map(|st| format!("{} ({})", st.name, st.key)).collect(),
        networks: s.nets.iter().map(|n| (n.name.to_string(), n.layers)).collect(),
        params: count_params(&model),
        h_cycles: model.arch.h_cycles,
        l_cycles: model.arch.l_cycles,
        applications: s.applications(),
        differentiated_applications: s.differentiated_applications(),
        differentiated_blocks: s.differentiated_blocks(),
        effective_depth: s.effective_depth(),
        nfp: Schedule::forward_passes(&model.arch),
        halt_max_steps: model.arch.halt_max_steps,
        depth_curriculum: curriculum.as_ref().map(|c| c.stages.iter().map(|s| (s.from, s.h_cycles, s.l_cycles)).collect()),
        curriculum_work_ratio: curriculum.as_ref().map(|c| c.work_ratio(&model.arch)),
        paper,
        memory: memory_info(&model, cfg),
        starts_from: None,
    })
}

fn memory_info(model: &ModelConfig, cfg: &config::TrainConfig) -> MemoryInfo {
    use crate::model::memory;
    const MIB: f64 = (1u64 << 20) as f64;
    let need = crate::train::memory_check::Need::of(model, cfg, cfg.global_batch_size, false, true);
    let weights = memory::weight_bytes(model).saturating_add(memory::table_bytes(model));
    let pass_rows = cfg.micro_batch_size.unwrap_or(cfg.global_batch_size);
    MemoryInfo {
        train_mib_per_row: need.train_row as f64 / MIB,
        eval_mib_per_row: need.eval_row as f64 / MIB,
        weights_mib: weights as f64 / MIB,
        optimiser_mib: need.optimiser as f64 / MIB,
        carry_mib: need.carry as f64 / MIB,
        pass_rows,
        train_pass_mib: weights.saturating_add(need.train(pass_rows)) as f64 / MIB,
    }
}

/// "5M"-style rounding, as the paper prints parameter counts.
pub fn millions(n: usize) -> String {
    format!("{}M", (n as f64 / 1e6).round() as usize)
}

/// 27275266 -> "27,275,266".
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.list && a.json {
        let presets: Vec<&str> = presets::PRESETS.iter().map(|(name, _)| *name).collect();
        let rows: Vec<serde_json::Value> = (presets::paper_rows().iter())
            .map(|(name, row)| serde_json::json!({"name": name, "table": row.table, "row": row.row}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"presets": presets, "paper_rows": rows}))?);
        return Ok(());
    }
    if a.list {
        println!("presets:");
        for (name, _) in presets::PRESETS {
            println!("  {name}");
        }
        println!("rows of the TRM paper's tables (arXiv 2510.04871 v1):");
        for (name, row) in presets::paper_rows() {
            println!("  {name:<28} Table {}: {}", row.table, row.row);
        }
        return Ok(());
    }
    let mut ov = a.set.clone();
    ov.extend(a.overrides.iter().cloned());
    // The reference's load_checkpoint=PATH (what `trm train` starts from): shown, not a key.
    let starts_from = crate::store::overrides::take_load_checkpoint(&mut ov).flatten().map(|p| p.display().to_string());
    let cfg = config::resolve(&a.config, &ov)?;
    crate::store::idle_keys::refuse_idle(&cfg, &ov)?;
    // --data, or the reference's data_paths=[DIR] given here (not a config file's record of
    // where a run's data was), as `trm train` reads them.
    let given = crate::store::overrides::given_data_paths(&ov);
    let data = crate::train::setup::named_data_set(&given.unwrap_or_default(), a.data.as_deref())?;
    anyhow::ensure!(
        data.is_none() || a.shape.is_none(),
        "--shape gives the sequence and vocabulary when no data set is named; data_paths=... names one, whose shape is read"
    );
    let (seq_len, vocab, ids) = match &data {
        Some(dir) => {
            let m = format::read_metadata(&dir.join("train")).with_context(|| format!("cannot read the metadata of {}", dir.display()))?;
            (m.seq_len, m.vocab_size, m.num_puzzle_identifiers)
        }
        None => {
            let shape = a
                .shape
                .clone()
                .or_else(|| presets::shape_of(&a.config))
                .with_context(|| format!("{} names no data set: pass --data DIR or --shape sudoku|maze|arc", a.config))?;
            let (s, v) = shape_dims(&shape)?;
            (s, v, 1)
        }
    };
    let i = Info { starts_from, ..info(&a.config, &cfg, seq_len, vocab, ids)? };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    let arch = &cfg.arch;
    println!("{} (arch={}), sequence {} tokens, vocabulary {}", i.config, i.arch, i.seq_len, i.vocab_size);
    println!("  states carried between supervision steps: {}", i.states.join(", "));
    let block = if arch.mlp_t { "mlp_t" } else { "attention" };
    let nets: Vec<String> = i.networks.iter().map(|(n, l)| format!("{n} ({l} {block} blocks)")).collect();
    println!("  networks: {}", nets.join(", "));
    println!("  parameters: {} ({}), puzzle-embedding table excluded", grouped(i.params), millions(i.params));
    if let Some(p) = &i.starts_from {
        let here = if std::path::Path::new(p.split('#').next().unwrap_or(p)).exists() { "" } else { "; no such file here" };
        println!("  starts from the weights in {p} (load_checkpoint: as trm train --init-from, at step 0 with a fresh optimiser{here})");
    }
    println!(
        "  per supervision step: T = {}, n = {}: {} network applications, {} differentiated ({} blocks)",
        i.h_cycles, i.l_cycles, i.applications, i.differentiated_applications, i.differentiated_blocks
    );
    println!("  effective depth per supervision step, T(n+1)·layers: {}", i.effective_depth);
    println!("  forward passes per optimisation step (NFP): {}", i.nfp);
    let halt = match (arch.halt_rule(), arch.continue_target()) {
        (HaltRule::Sign, _) => "q_halt > 0".to_string(),
        (HaltRule::VersusContinue, true) => "q_halt > q_continue, q_continue trained on a bootstrapped target".into(),
        (HaltRule::VersusContinue, false) => "q_halt > q_continue (q_continue untrained)".into(),
    };
    println!("  supervision steps: up to {}; halting in training: {halt}", i.halt_max_steps);
    if arch.wta_chains > 1 {
        println!(
            "  winner-take-all training: {} latent chains per example, the lowest-loss one backpropagated (about {}x the work of a plain step); evaluation runs chain 0",
            arch.wta_chains, arch.wta_chains
        );
    }
    if let (Some(stages), Some(ratio)) = (&i.depth_curriculum, i.curriculum_work_ratio) {
        let st: Vec<String> = stages.iter().map(|(from, t, n)| format!("T = {t}, n = {n} from {:.0}%", from * 100.0)).collect();
        println!(
            "  depth curriculum (training steps only; evaluation runs T = {}, n = {}): {}; training work over the schedule {ratio:.2}x the fixed depth's",
            i.h_cycles,
            i.l_cycles,
            st.join(", ")
        );
    }
    let m = &i.memory;
    let size = |mib: f64| crate::train::memory_check::size((mib * 1048576.0) as u64);
    println!(
        "  memory on the CPU engine (an estimate; docs/reliability.md, \"Memory\"): training {} a row, {} in all in passes of {} \
         (weights and puzzle table {}, gradients and optimiser state {}, carry {}); evaluation {} a row",
        size(m.train_mib_per_row),
        size(m.train_pass_mib),
        crate::train::memory_check::rows_of(m.pass_rows),
        size(m.weights_mib),
        size(m.optimiser_mib),
        size(m.carry_mib),
        size(m.eval_mib_per_row)
    );
    if let Some(p) = &i.paper {
        let mut parts = Vec::new();
        let ours = |same: bool, v: String| if same { format!("ours {v}") } else { format!("ours {v}, differs") };
        if let Some(acc) = p.accuracy {
            parts.push(format!("test accuracy {acc:.1}%"));
        }
        if let Some(d) = p.depth {
            parts.push(format!("depth {d} ({})", ours(d == i.effective_depth, i.effective_depth.to_string())));
        }
        if let Some(n) = p.nfp {
            parts.push(format!("NFP {n} ({})", ours(n == i.nfp, i.nfp.to_string())));
        }
        if let Some(pp) = &p.params {
            parts.push(format!("params {pp} ({})", ours(*pp == millions(i.params), millions(i.params))));
        }
        println!("  paper, Table {} \"{}\": {}", p.table, p.row, parts.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str) -> Info {
        let cfg = config::resolve(name, &[]).unwrap();
        let (s, v) = shape_dims(&presets::shape_of(name).unwrap()).unwrap();
        info(name, &cfg, s, v, 1).unwrap()
    }

    #[test]
    fn parameter_counts_match_the_reference_check_values() {
        // reference-spec §14: num_params of the reference's models.
        assert_eq!(of("sudoku-att").params, 6_828_034);
        assert_eq!(of("sudoku-mlp").params, 5_028_866);
        assert_eq!(of("maze").params, 6_822_914);
        assert_eq!(of("hrm-sudoku").params, 27_275_266);
        assert_eq!(of("hrm-maze").params, 27_270_146);
        assert_eq!(of("hrm-arc1").params, 27_276_290);
        let base = config::resolve("arc1", &["arch=transformers_baseline".into()]).unwrap();
        assert_eq!(info("x", &base, 900, 12, 1).unwrap().params, 27_145_218);
    }

    #[test]
    fn every_paper_row_has_the_papers_depth_nfp_and_parameter_count() {
        for (name, row) in presets::paper_rows() {
            let i = of(&name);
            if let Some(p) = &row.params {
                assert_eq!(*p, millions(i.params), "{name}: params {}", i.params);
            }
            if let Some(n) = row.nfp {
                assert_eq!(n, i.nfp, "{name}: NFP");
            }
            if let Some(d) = row.depth {
                // The paper's k = 1 row of Table 3 prints 9 and 7 where T(n+1)·layers is 8 and 6.
                let want = if name.contains("-k1-t1") { d - 1 } else { d };
                assert_eq!(want, i.effective_depth, "{name}: depth");
            }
        }
    }
}
