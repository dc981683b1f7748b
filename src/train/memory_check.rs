//! Before the first step: whether the run's passes fit the memory this machine has left. On the
//! CPU engine a pass that does not fit is not an error the process sees: the system kills it
//! (on Linux, the OOM killer) with no message, after the data set was read. So a run whose
//! estimate (`model::memory`) exceeds the memory available (`util::host_memory`) is refused
//! with the setting that fits: `micro_batch_size` for the training pass (the same update in
//! smaller passes), `eval_batch_size` for the evaluation pass. `--no-memory-check` runs it
//! anyway. Engines without an estimate (libtorch, which reports a failed allocation itself,
//! `util::out_of_memory`; cubecl; bfloat16 emulation) are not checked.

use crate::data::format::Split;
use crate::model::config::ModelConfig;
use crate::model::memory;
use crate::store::config::TrainConfig;
use anyhow::{Result, bail};
use burn::prelude::Backend;

/// What a run asks of the machine beyond what it holds when it is checked (its weights, puzzle
/// table and a resumed carry are in memory by then), in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// Gradients, Adam moments and the EMA copy (counted even when a resumed run has read its
    /// moments already), and a new run's carry for all of the rank's rows: held for the whole run.
    pub fixed: u64,
    /// One row of the training pass (all of its `arch.wta_chains` latent chains) and one row of
    /// the evaluation pass (chain 0 only).
    pub train_row: u64,
    pub eval_row: u64,
}

impl Need {
    pub fn of(model: &ModelConfig, cfg: &TrainConfig, share: usize, new_carry: bool) -> Need {
        let chains = model.arch.wta_chains.max(1) as u64;
        let carry = if new_carry { memory::carry_bytes_per_row(model).saturating_mul(chains * share as u64) } else { 0 };
        Need {
            fixed: memory::optimiser_bytes(model, cfg.ema).saturating_add(carry),
            train_row: memory::train_bytes_per_row(model).saturating_mul(chains),
            eval_row: memory::eval_bytes_per_row(model),
        }
    }
    fn train(&self, rows: usize) -> u64 {
        self.fixed.saturating_add(self.train_row.saturating_mul(rows as u64))
    }
    fn eval(&self, rows: usize) -> u64 {
        self.fixed.saturating_add(self.eval_row.saturating_mul(rows as u64))
    }
}

/// The rows of one pass on this rank: training (`micro_batch_size` or the rank's share of
/// `global_batch_size`), and evaluation (`eval_batch_size`'s share, at most the examples an
/// evaluation takes: the test split's, capped by `eval_max_examples`; `None` without a test
/// split).
#[derive(Debug, Clone, Copy)]
pub struct Passes {
    pub world: usize,
    pub share: usize,
    pub micro_batch: usize,
    pub eval_rows: Option<usize>,
}

impl Passes {
    fn of(cfg: &TrainConfig, test: Option<&Split>, world: usize) -> Passes {
        let share = cfg.global_batch_size / world;
        // `eval::evaluate` does not pad a small split to the batch.
        let eval_rows = test.map(|t| {
            let batch = cfg.eval_batch_size.unwrap_or(cfg.global_batch_size) / world;
            let examples = cfg.eval_max_examples.map_or(t.num_examples(), |m| m.min(t.num_examples()));
            batch.min(examples.div_ceil(world)).max(1)
        });
        Passes { world, share, micro_batch: cfg.micro_batch_size.unwrap_or(share), eval_rows }
    }
}

/// Checks a run of `cfg` on backend `B` against the memory available, when this engine has an
/// estimate and this platform reports the memory (`util::host_memory`). `new_carry`: the run has
/// no carry yet (a new run makes it at its first step). Batches that do not split as they must
/// are left to `setup::Plan`, which says so.
pub fn check<B: Backend>(cfg: &TrainConfig, model: &ModelConfig, test: Option<&Split>, world: usize, new_carry: bool) -> Result<()> {
    let passes = Passes::of(cfg, test, world);
    if passes.micro_batch == 0 || !passes.share.is_multiple_of(passes.micro_batch) {
        return Ok(());
    }
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    verdict(Need::of(model, cfg, passes.share, new_carry), passes, available)
}

/// The memory available, where `model` on backend `B` runs on the engine the estimate is for
/// (the fused float32 CPU block) and this platform reports it; else None: nothing to check.
fn available_to<B: Backend>(model: &ModelConfig) -> Option<u64> {
    crate::model::cpu::covers::<B>(model).then(crate::util::host_memory::available).flatten()
}

/// `trm eval`'s check: an evaluation of `rows` rows at a time (its --batch, at most the examples
/// it evaluates) with the weights of `model` on backend `B`, refused when it does not fit, naming
/// the --batch that does.
pub fn check_eval<B: Backend>(model: &ModelConfig, rows: usize) -> Result<()> {
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    // The weights and the puzzle table are read after this check.
    let weights = memory::weight_bytes(model).saturating_add(memory::table_bytes(model));
    eval_verdict(memory::eval_bytes_per_row(model), weights, rows, available)
}

fn eval_verdict(row: u64, weights: u64, rows: usize, available: u64) -> Result<()> {
    let need = |r: usize| weights.saturating_add(row.saturating_mul(r as u64));
    if need(rows) <= available {
        return Ok(());
    }
    let advice = match (1..rows).rev().find(|&r| fits_suggestion(need(r), available)) {
        Some(r) => format!("pass --batch {r} (about {})", gib(need(r))),
        None => "even one row at a time does not fit: evaluate on a machine with more memory".into(),
    };
    bail!(
        "this evaluation would run out of memory (the system would end it with no message): {rows} rows at a time need about {} ({:.0} MiB a row), and this machine has {} available; {advice}\n({HOW_SURE})",
        gib(need(rows)),
        row as f64 / MIB,
        gib(available)
    )
}

/// A setting to add, as trm train takes it (KEY=VALUE, with or without --resume) and trm adapt.
fn setting(key: &str, value: usize) -> String {
    format!("`{key}={value}` (trm adapt: `--set {key}={value}`)")
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / GIB)
}

/// What the estimate is and how to run anyway, said once at the end of every refusal.
const HOW_SURE: &str = "an estimate from what the blocks keep, measured from 1% below to 16% above trm's real peaks in training, \
    up to 41% above in evaluation (docs/reliability.md, \"Memory\"); --no-memory-check runs it anyway";

/// The share of the memory available that a suggested setting may take: the rest is headroom
/// for the estimate's error and for other processes.
const SUGGEST_WITHIN: f64 = 0.9;

fn fits_suggestion(bytes: u64, available: u64) -> bool {
    bytes as f64 <= SUGGEST_WITHIN * available as f64
}

/// The decision on numbers alone: Ok, a note when the run comes within 10% of what is
/// available, or the refusal.
fn verdict(need: Need, p: Passes, available: u64) -> Result<()> {
    let train = need.train(p.micro_batch);
    let eval = p.eval_rows.map(|r| need.eval(r));
    let peak = train.max(eval.unwrap_or(0));
    if peak <= available {
        if peak as f64 > 0.9 * available as f64 {
            eprintln!(
                "note: this run needs about {} of the {} this machine has available (an estimate; docs/reliability.md, \"Memory\")",
                gib(peak),
                gib(available)
            );
        }
        return Ok(());
    }
    let mut lines = Vec::new();
    let ranks = if p.world > 1 { format!(" on each of {} ranks", p.world) } else { String::new() };
    if train > available {
        lines.push(format!(
            "its training pass of {} rows{ranks} needs about {} ({:.0} MiB a row, and {} of gradients, optimiser state and carry), and this machine has {} available",
            p.micro_batch,
            gib(train),
            need.train_row as f64 / MIB,
            gib(need.fixed),
            gib(available)
        ));
        // The largest divisor of the rank's share that fits: micro-batches must divide it.
        match (1..p.micro_batch).rev().find(|&m| p.share.is_multiple_of(m) && fits_suggestion(need.train(m), available)) {
            Some(m) => lines.push(format!(
                "the same update in passes of {m} rows needs about {}: add {} (each pass's gradients are summed; only the time per step grows)",
                gib(need.train(m)),
                setting("micro_batch_size", m)
            )),
            None => lines.push("even one row at a time does not fit: train a smaller model or on a machine with more memory".into()),
        }
    }
    if let (Some(rows), Some(e)) = (p.eval_rows, eval)
        && e > available
    {
        lines.push(format!(
            "its evaluation pass of {rows} rows{ranks} needs about {} ({:.0} MiB a row), and this machine has {} available",
            gib(e),
            need.eval_row as f64 / MIB,
            gib(available)
        ));
        // eval_batch_size is the global batch, split over the ranks.
        match (1..rows).rev().find(|&r| fits_suggestion(need.eval(r), available)) {
            Some(r) => lines.push(format!(
                "evaluating {r} rows at a time needs about {}: add {}",
                gib(need.eval(r)),
                setting("eval_batch_size", r * p.world)
            )),
            None => lines.push("even one row at a time does not fit in the evaluation: train on a machine with more memory".into()),
        }
    }
    bail!(
        "this run would run out of memory in {} (the system would end it with no message):\n{}\n({HOW_SURE})",
        if train > available { "its first step" } else { "its first evaluation" },
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn need() -> Need {
        Need { fixed: 100 * MB, train_row: 50 * MB, eval_row: 4 * MB }
    }

    fn passes(micro_batch: usize, eval_rows: Option<usize>) -> Passes {
        Passes { world: 1, share: 768, micro_batch, eval_rows }
    }

    #[test]
    fn a_run_that_fits_passes() {
        // 100 + 64 x 50 = 3300 MiB; eval 100 + 256 x 4 = 1124 MiB.
        verdict(need(), passes(64, Some(256)), 4000 * MB).unwrap();
    }

    #[test]
    fn a_training_pass_too_large_names_the_largest_micro_batch_that_fits() {
        // 768 rows: 37.6 GiB; 21 GiB available -> 384 rows (18.8 GiB, within 90% of it) fit;
        // no divisor of 768 lies between 384 and 768.
        let e = verdict(need(), passes(768, Some(64)), 21 << 30).unwrap_err().to_string();
        assert!(e.contains("its first step"), "{e}");
        assert!(e.contains("training pass of 768 rows needs about 37.6 GiB"), "{e}");
        assert!(e.contains("add `micro_batch_size=384`"), "{e}");
        assert!(!e.contains("eval_batch_size"), "{e}");
        assert!(e.contains("--no-memory-check"), "{e}");
        assert!(e.contains("trm adapt: `--set micro_batch_size=384`"), "{e}");
    }

    #[test]
    fn the_suggested_micro_batch_divides_the_share() {
        // 670 MiB (603 within 90%): 100 + 10 x 50 fits, but 10 does not divide 768: 8 does.
        let e = verdict(need(), passes(768, None), 670 * MB).unwrap_err().to_string();
        assert!(e.contains("`micro_batch_size=8`"), "{e}");
    }

    #[test]
    fn an_evaluation_too_large_names_an_eval_batch_that_fits_and_splits_over_the_ranks() {
        // Training 100 + 16 x 50 = 900 MiB fits 2000 MiB; eval 100 + 768 x 4 = 3172 does not.
        let p = Passes { world: 2, share: 16, micro_batch: 16, eval_rows: Some(768) };
        let e = verdict(need(), p, 2000 * MB).unwrap_err().to_string();
        assert!(e.contains("its first evaluation"), "{e}");
        assert!(e.contains("evaluation pass of 768 rows on each of 2 ranks"), "{e}");
        // (0.9 x 2000 - 100) / 4 = 425 rows a rank -> eval_batch_size 850.
        assert!(e.contains("add `eval_batch_size=850`"), "{e}");
        assert!(!e.contains("micro_batch_size"), "{e}");
    }

    #[test]
    fn an_evaluation_batch_too_large_names_the_batch_that_fits() {
        // 10 + 256 x 4 = 1034 MiB; 500 MiB available, 450 within 90% -> 110 rows (450 MiB).
        eval_verdict(4 * MB, 10 * MB, 100, 500 * MB).unwrap();
        let e = eval_verdict(4 * MB, 10 * MB, 256, 500 * MB).unwrap_err().to_string();
        assert!(e.contains("256 rows at a time need about 1.0 GiB (4 MiB a row)"), "{e}");
        assert!(e.contains("pass --batch 110 (about 0.4 GiB)"), "{e}");
        assert!(e.contains("--no-memory-check"), "{e}");
        let e = eval_verdict(4 * MB, 10 * MB, 256, 12 * MB).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
    }

    #[test]
    fn sizes_past_u64_saturate_instead_of_overflowing() {
        let huge = Need { fixed: 1, train_row: u64::MAX / 2, eval_row: u64::MAX / 2 };
        let e = verdict(huge, passes(768, Some(768)), 1 << 40).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
        let e = eval_verdict(u64::MAX / 2, u64::MAX / 2, 65_536, 1 << 40).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
    }

    #[test]
    fn a_model_whose_single_row_does_not_fit_says_so() {
        let e = verdict(need(), passes(768, None), 120 * MB).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
    }
}
