//! Before the first step: whether the run's passes fit the memory this machine has left. On the
//! CPU engine a pass that does not fit is not an error the process sees: the system kills it
//! (on Linux, the OOM killer) with no message, after the data set was read. So a run whose
//! estimate (`model::memory`) exceeds the memory available (`util::host_memory`) is refused
//! with the setting that fits: `micro_batch_size` for the training pass (the same update in
//! smaller passes), `eval_batch_size` for the evaluation pass, `global_batch_size` when the carry
//! the run hands from step to step is what does not fit. `--no-memory-check` runs it anyway.
//! Engines without an estimate (libtorch, which reports a failed allocation itself,
//! `util::out_of_memory`; cubecl; bfloat16 emulation) are not checked.
//!
//! Three checks: `check_state`, before a new run makes its weights (a model whose state alone
//! does not fit); `check_resumed`, before a resumed run reads its checkpoint (a run resumed on a
//! machine too small to hold it); `check`, once the run's state is in memory, for its passes.
//! `check_eval` and `check_bench` do the same for `trm eval` and `trm bench` (`eval_and_bench.rs`).

use crate::data::format::Split;
use crate::model::config::ModelConfig;
use crate::model::memory;
use crate::store::config::TrainConfig;
use crate::util::host_memory::Available;
use anyhow::{Result, bail};
use burn::prelude::Backend;
use std::path::Path;

mod eval_and_bench;
pub use eval_and_bench::{check_bench, check_eval, check_outputs};

/// What a run asks of the machine beyond what it holds when it is checked (its weights, puzzle
/// table and a resumed carry are in memory by then), in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// Gradients, and a new run's Adam moments and EMA copy (a resumed run has read its own by
    /// the time it is checked): held for the whole run.
    pub optimiser: u64,
    /// `optimiser` is the gradients alone: the run was resumed.
    pub resumed: bool,
    /// A new run's carry for all of the rank's rows and chains (0 when the run holds its carry):
    /// held for the whole run.
    pub carry: u64,
    /// The carry of the rank's rows, new or resumed, and the rows: a step in passes of fewer
    /// rows puts the passes' new carries together into a copy of that size at its end.
    pub share_carry: u64,
    pub share: usize,
    /// One row of the training pass (all of its `arch.wta_chains` latent chains) and one row of
    /// the evaluation pass (chain 0 only).
    pub train_row: u64,
    pub eval_row: u64,
}

impl Need {
    /// `resumed`: the run's moments and EMA were read from its checkpoint (they are out of the
    /// memory available already); `new_carry`: the run makes its carry at its first step.
    pub fn of(model: &ModelConfig, cfg: &TrainConfig, share: usize, resumed: bool, new_carry: bool) -> Need {
        let chains = model.arch.wta_chains.max(1) as u64;
        let share_carry = memory::carry_bytes_per_row(model).saturating_mul(chains.saturating_mul(share as u64));
        Need {
            optimiser: if resumed { memory::weight_bytes(model) } else { memory::optimiser_bytes(model, cfg.ema) },
            resumed,
            carry: if new_carry { share_carry } else { 0 },
            share_carry,
            share,
            train_row: memory::train_bytes_per_row(model).saturating_mul(chains),
            eval_row: memory::eval_bytes_per_row(model),
        }
    }
    /// A resumed run with no step left: no gradients are made, and the moments and EMA it read
    /// are out of the memory available already.
    pub fn with_no_step_left(self) -> Need {
        Need { optimiser: 0, carry: 0, ..self }
    }
    /// Held for the whole run, whatever the passes.
    pub fn fixed(&self) -> u64 {
        self.optimiser.saturating_add(self.carry)
    }
    /// A training pass of `rows` rows, with the carry's copy when they are fewer than the share.
    pub fn train(&self, rows: usize) -> u64 {
        let joined = if rows < self.share { self.share_carry } else { 0 };
        self.fixed().saturating_add(self.train_row.saturating_mul(rows as u64)).saturating_add(joined)
    }
    fn eval(&self, rows: usize) -> u64 {
        self.fixed().saturating_add(self.eval_row.saturating_mul(rows as u64))
    }
}

/// The rows of one pass on this rank, from what the configuration sets: training
/// (`micro_batch_size` or the rank's share of `global_batch_size`; `None` when no step is left
/// to run), and evaluation (`eval_batch_size`'s share, at most the examples an evaluation takes:
/// the test split's, capped by `eval_max_examples`; `None` when the run evaluates nothing).
#[derive(Debug, Clone, Copy)]
pub struct Passes {
    pub world: usize,
    pub share: usize,
    /// A step is left to run.
    pub trains: bool,
    /// `micro_batch_size` as set (a suggested batch must be a multiple of it).
    pub micro_set: Option<usize>,
    /// `eval_batch_size`'s share of the ranks, as set (else the evaluation takes the batch).
    pub eval_set: Option<usize>,
    /// The examples one evaluation gives this rank at most (`None`: the run evaluates nothing).
    pub eval_cap: Option<usize>,
}

impl Passes {
    fn of(cfg: &TrainConfig, trains: bool, test: Option<&Split>, world: usize) -> Passes {
        Passes {
            world,
            share: cfg.global_batch_size / world,
            trains,
            micro_set: cfg.micro_batch_size,
            eval_set: cfg.eval_batch_size.map(|b| b / world),
            eval_cap: test.map(|t| cfg.eval_max_examples.map_or(t.num_examples(), |m| m.min(t.num_examples())).div_ceil(world)),
        }
    }
    fn micro_batch(&self) -> Option<usize> {
        self.trains.then(|| self.micro_set.unwrap_or(self.share))
    }
    fn eval_rows(&self) -> Option<usize> {
        // `eval::evaluate` does not pad a small split to the batch.
        self.eval_cap.map(|cap| self.eval_set.unwrap_or(self.share).min(cap).max(1))
    }
}

/// Before a new run makes its weights: whether its state (weights, puzzle table, gradients,
/// optimiser state and carry) and one row of its training pass fit at all, on backend `B` when
/// this engine has an estimate and this platform reports the memory. Else a model too large for
/// the machine would be killed while its weights are made, before `check` could say so.
/// The caller has checked that the batches split (`plan::check_batches`).
pub fn check_state<B: Backend>(cfg: &TrainConfig, model: &ModelConfig, test: Option<&Split>, world: usize) -> Result<()> {
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    let passes = Passes::of(cfg, true, test, world);
    state_verdict(Need::of(model, cfg, passes.share, false, true), weights_and_table(model), passes, available)
}

fn weights_and_table(model: &ModelConfig) -> u64 {
    memory::weight_bytes(model).saturating_add(memory::table_bytes(model))
}

fn state_verdict(need: Need, weights: u64, p: Passes, available: Available) -> Result<()> {
    let total = weights.saturating_add(need.train(1));
    if total <= available.bytes {
        return Ok(());
    }
    bail!(
        "this run would run out of memory before its first step ({}): its weights and puzzle-embedding table ({}), gradients and \
         optimiser state ({}) and carry ({}) with one row of its training pass ({}) need about {}, and {}\n{}\n({HOW_SURE})",
        available.past_it(),
        size(weights),
        size(need.optimiser),
        size(need.carry),
        size(need.train_row),
        size(total),
        available.said(&size(available.bytes)),
        one_row_advice(need, weights, p, available)
    )
}

/// What to change when not even one row at a time fits: a smaller batch, whose carry (which
/// grows with the batch) leaves room for a pass, else the model or the machine.
fn one_row_advice(need: Need, weights: u64, p: Passes, available: Available) -> String {
    let Some(batch) = smaller_batch(need, weights, p, available) else {
        return "even one row at a time does not fit: train a smaller model or on a machine with more memory".into();
    };
    let whose = if p.world > 1 { "the rank's" } else { "the batch's" };
    format!(
        "the carry that each of {whose} {} hands from one supervision step to the next takes {} ({} a row): a smaller batch \
         fits: add {} (a different update: the learning rate was tuned for the batch it was given)",
        rows_of(p.share),
        size(need.carry),
        size(need.carry / p.share.max(1) as u64),
        settings(&batch)
    )
}

/// The largest global batch (a multiple of the ranks and of `micro_batch_size` where it is set)
/// whose carry leaves room, within 90% of the memory available, for a training pass, with the
/// `micro_batch_size` and `eval_batch_size` that then fit where the configuration leaves them
/// unset or too large; `None` when the carry is not what keeps the run from fitting.
fn smaller_batch(need: Need, weights: u64, p: Passes, available: Available) -> Option<Vec<(&'static str, usize)>> {
    let carry_row = need.carry / p.share.max(1) as u64; // 0 when the run holds its carry already
    if carry_row == 0 {
        return None;
    }
    // Passes of fewer rows than the batch also make the joined copy of the carry.
    let per_row = carry_row.saturating_add(need.share_carry / p.share.max(1) as u64);
    let room = suggestion_room(available);
    let base = weights.saturating_add(need.optimiser);
    let pass = p.micro_set.unwrap_or(1) as u64;
    let rows = room.checked_sub(base.saturating_add(need.train_row.saturating_mul(pass)))? / per_row;
    let rows = (rows / pass * pass) as usize; // a multiple of a micro_batch_size that is set
    if rows == 0 || rows >= p.share {
        return None;
    }
    let left = room - base - per_row * rows as u64; // what the passes may take
    let mut out = vec![("global_batch_size", rows * p.world)];
    if p.micro_set.is_none() {
        let m = (1..=rows).rev().find(|&m| rows.is_multiple_of(m) && need.train_row.saturating_mul(m as u64) <= left)?;
        if m < rows {
            out.push(("micro_batch_size", m));
        }
    }
    if let Some(eval_rows) = (Passes { share: rows, ..p }).eval_rows()
        && need.eval_row.saturating_mul(eval_rows as u64) > left
    {
        let r = (left / need.eval_row.max(1)) as usize;
        if r == 0 {
            return None;
        }
        out.push(("eval_batch_size", r * p.world));
    }
    Some(out)
}

/// Before a resumed run reads its checkpoint `ckpt` (whose model is `model`): whether reading it
/// fits, on backend `B` when this engine has an estimate and this platform reports the memory.
/// Each of its two files is held twice while it is read (the file's mapping and its values
/// first, then the values and the tensors made from them): first `model.safetensors` (the
/// weights and the puzzle-embedding table; only the table is kept), then `state.safetensors`
/// (weights, Adam moments, EMA and carry, float32) beside the table. Measured: 785 MB peak
/// resident for a 387 MB state file, the process and its data set included. Else a run resumed
/// on a smaller machine than the one it was trained on would be killed while it reads its
/// checkpoint. A missing or unreadable file is left to the reading, which names it.
pub fn check_resumed<B: Backend>(ckpt: &Path, model: &ModelConfig) -> Result<()> {
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    let size_of = |name: &str| std::fs::metadata(ckpt.join(name)).map(|m| m.len());
    let (Ok(weights), Ok(state)) = (size_of("model.safetensors"), size_of("state.safetensors")) else { return Ok(()) };
    resumed_verdict(CheckpointFiles { weights, state, table: memory::table_bytes(model) }, ckpt, available)
}

/// The sizes, in bytes, of a checkpoint's two files and of the puzzle table it keeps.
struct CheckpointFiles {
    weights: u64,
    state: u64,
    table: u64,
}

impl CheckpointFiles {
    /// The peak of reading them: the larger of the two phases.
    fn peak(&self) -> u64 {
        self.weights.saturating_mul(2).max(self.table.saturating_add(self.state.saturating_mul(2)))
    }
}

fn resumed_verdict(f: CheckpointFiles, ckpt: &Path, available: Available) -> Result<()> {
    let need = f.peak();
    if need <= available.bytes {
        return Ok(());
    }
    bail!(
        "resuming from {} would run out of memory while the checkpoint is read ({}): its files, each held twice while it is \
         read (model.safetensors, the weights and puzzle-embedding table: {}, of which the table, {}, is kept; then \
         state.safetensors, the training state: weights, optimiser state, EMA and carry: {}), need about {}, and {}; resume \
         it on a machine with more memory (its weights alone, model.safetensors, are what trm eval and trm solve read)\n(an \
         estimate from the checkpoint's sizes; --no-memory-check reads it anyway)",
        ckpt.display(),
        available.past_it(),
        size(f.weights),
        size(f.table),
        size(f.state),
        size(need),
        available.said(&size(available.bytes))
    )
}

/// Checks a run of `cfg` on backend `B` against the memory available, when this engine has an
/// estimate and this platform reports the memory (`util::host_memory`). `trains`: a step is left
/// to run; `test`: the test split when the run will evaluate. `resumed`: the run read its state
/// from a checkpoint; `new_carry`: the run has no carry yet (a new run makes it at its first
/// step). The caller's `plan::Plan` has checked that the batches split.
pub fn check<B: Backend>(
    cfg: &TrainConfig,
    model: &ModelConfig,
    trains: bool,
    test: Option<&Split>,
    world: usize,
    resumed: bool,
    new_carry: bool,
) -> Result<()> {
    let passes = Passes::of(cfg, trains, test, world);
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    let mut need = Need::of(model, cfg, passes.share, resumed, new_carry);
    if !trains {
        need = need.with_no_step_left();
    }
    verdict(need, passes, available)
}

/// The memory available, where `model` on backend `B` runs on the engine the estimate is for
/// (the fused float32 CPU block) and this platform reports it; else None: nothing to check.
fn available_to<B: Backend>(model: &ModelConfig) -> Option<Available> {
    crate::model::cpu::covers::<B>(model).then(crate::util::host_memory::available).flatten()
}

/// A setting to add, as trm train takes it (KEY=VALUE, with or without --resume) and trm adapt.
fn setting(key: &str, value: usize) -> String {
    settings(&[(key, value)])
}

/// Settings to add together, as `setting` writes one.
fn settings(pairs: &[(&str, usize)]) -> String {
    let train: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let adapt: Vec<String> = train.iter().map(|kv| format!("--set {kv}")).collect();
    format!("`{}` (trm adapt: `{}`)", train.join(" "), adapt.join(" "))
}

/// "1 row", "768 rows".
pub fn rows_of(n: usize) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// A size in bytes to three significant figures in the unit that keeps it at 1 or more:
/// "717 MiB", "4.18 MiB", "37.9 GiB" (so that two sizes a message compares never print alike
/// while they differ by more than 1%).
pub fn size(bytes: u64) -> String {
    // Where a sum saturated: the true size is past what a u64 counts.
    if bytes == u64::MAX {
        return "16 EiB or more".into();
    }
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let (mut v, mut unit) = (bytes as f64, 0);
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    // Rounded first, so that 99.96 prints as "100", not "100.0".
    let digits = if unit == 0 || (v * 10.0).round() >= 1000.0 {
        0
    } else if (v * 100.0).round() >= 1000.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// What the estimate is and how to run anyway, said once at the end of every refusal.
const HOW_SURE: &str = "an estimate from what the blocks keep, measured from 1% below to 16% above trm's real peaks in training, \
    up to 41% above in evaluation (docs/reliability.md, \"Memory\"); --no-memory-check runs it anyway";

/// What a suggested setting may take: 90% of the memory available (the rest is headroom for the
/// estimate's error and for other processes), in whole bytes.
fn suggestion_room(available: Available) -> u64 {
    available.bytes / 10 * 9
}

fn fits_suggestion(bytes: u64, available: Available) -> bool {
    bytes <= suggestion_room(available)
}

/// The decision on numbers alone: Ok, a note when the run comes within 10% of what is
/// available, or the refusal.
fn verdict(need: Need, p: Passes, available: Available) -> Result<()> {
    let train = p.micro_batch().map(|m| need.train(m));
    let eval = p.eval_rows().map(|r| need.eval(r));
    let peak = train.unwrap_or(0).max(eval.unwrap_or(0));
    let have = size(available.bytes);
    if peak <= available.bytes {
        if peak > suggestion_room(available) {
            eprintln!(
                "note: this run needs about {} where {} (an estimate; docs/reliability.md, \"Memory\")",
                size(peak),
                available.said(&have)
            );
        }
        return Ok(());
    }
    let mut lines = Vec::new();
    let ranks = if p.world > 1 { format!(" on each of {} ranks", p.world) } else { String::new() };
    if let (Some(m), Some(t)) = (p.micro_batch(), train)
        && t > available.bytes
    {
        lines.push(format!(
            "its training pass of {}{ranks} needs about {} ({} a row, and {} of gradients{}{}), and {}",
            rows_of(m),
            size(t),
            size(need.train_row),
            size(need.optimiser),
            if need.resumed { "" } else { " and optimiser state" },
            if need.carry > 0 { format!(", {} of carry", size(need.carry)) } else { String::new() },
            available.said(&have)
        ));
        // The largest divisor of the rank's share that fits: micro-batches must divide it.
        match (1..m).rev().find(|&r| p.share.is_multiple_of(r) && fits_suggestion(need.train(r), available)) {
            Some(r) => lines.push(format!(
                "the same update in passes of {} needs about {}: add {} (each pass's gradients are summed; only the time per step grows)",
                rows_of(r),
                size(need.train(r)),
                setting("micro_batch_size", r)
            )),
            // The weights are in memory already, out of what is available.
            None => lines.push(one_row_advice(need, 0, p, available)),
        }
    }
    if let (Some(rows), Some(e)) = (p.eval_rows(), eval)
        && e > available.bytes
    {
        lines.push(format!(
            "its evaluation pass of {}{ranks} needs about {} ({} a row), and {}",
            rows_of(rows),
            size(e),
            size(need.eval_row),
            available.said(&have)
        ));
        // eval_batch_size is the global batch, split over the ranks.
        match (1..rows).rev().find(|&r| fits_suggestion(need.eval(r), available)) {
            Some(r) => lines.push(format!(
                "evaluating {} at a time needs about {}: add {}",
                rows_of(r),
                size(need.eval(r)),
                setting("eval_batch_size", r * p.world)
            )),
            None => lines.push("even one row at a time does not fit in the evaluation: train on a machine with more memory".into()),
        }
    }
    bail!(
        "this run would run out of memory in {} ({}):\n{}\n({HOW_SURE})",
        if train.is_some_and(|t| t > available.bytes) { "its first step" } else { "its first evaluation" },
        available.past_it(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::eval_and_bench::eval_verdict;
    use super::*;
    use crate::util::host_memory::Bound;

    pub(super) const MB: u64 = 1 << 20;

    pub(super) fn need() -> Need {
        Need { optimiser: 100 * MB, resumed: false, carry: 0, share_carry: 0, share: 768, train_row: 50 * MB, eval_row: 4 * MB }
    }

    /// One rank of 768 rows in passes of `micro_batch`, evaluating `eval_rows` examples.
    fn passes(micro_batch: usize, eval_rows: Option<usize>) -> Passes {
        let micro_set = (micro_batch != 768).then_some(micro_batch);
        Passes { world: 1, share: 768, trains: true, micro_set, eval_set: None, eval_cap: eval_rows }
    }

    pub(super) fn machine(bytes: u64) -> Available {
        Available { bytes, bound: Bound::Machine }
    }

    #[test]
    fn a_run_that_fits_passes() {
        // 100 + 64 x 50 = 3300 MiB; eval 100 + 256 x 4 = 1124 MiB.
        verdict(need(), passes(64, Some(256)), machine(4000 * MB)).unwrap();
    }

    #[test]
    fn a_training_pass_too_large_names_the_largest_micro_batch_that_fits() {
        // 768 rows: 37.6 GiB; 21 GiB available -> 384 rows (18.8 GiB, within 90% of it) fit;
        // no divisor of 768 lies between 384 and 768.
        let e = verdict(need(), passes(768, Some(64)), machine(21 << 30)).unwrap_err().to_string();
        assert!(e.contains("its first step (the system would end it with no message)"), "{e}");
        assert!(e.contains("training pass of 768 rows needs about 37.6 GiB (50.0 MiB a row"), "{e}");
        assert!(e.contains("and this machine has 21.0 GiB available"), "{e}");
        assert!(e.contains("add `micro_batch_size=384`"), "{e}");
        assert!(!e.contains("eval_batch_size"), "{e}");
        assert!(e.contains("--no-memory-check"), "{e}");
        assert!(e.contains("trm adapt: `--set micro_batch_size=384`"), "{e}");
    }

    #[test]
    fn the_suggested_micro_batch_divides_the_share() {
        // 670 MiB (603 within 90%): 100 + 10 x 50 fits, but 10 does not divide 768: 8 does.
        let e = verdict(need(), passes(768, None), machine(670 * MB)).unwrap_err().to_string();
        assert!(e.contains("`micro_batch_size=8`"), "{e}");
        // One row is "1 row".
        let e = verdict(need(), passes(768, None), machine(170 * MB)).unwrap_err().to_string();
        assert!(e.contains("passes of 1 row needs about 150 MiB"), "{e}");
    }

    #[test]
    fn an_evaluation_too_large_names_an_eval_batch_that_fits_and_splits_over_the_ranks() {
        // Training 100 + 16 x 50 = 900 MiB fits 2000 MiB; eval 100 + 768 x 4 = 3172 does not.
        let p = Passes { world: 2, share: 16, trains: true, micro_set: None, eval_set: Some(768), eval_cap: Some(768) };
        let e = verdict(need(), p, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("its first evaluation"), "{e}");
        assert!(e.contains("evaluation pass of 768 rows on each of 2 ranks"), "{e}");
        // (0.9 x 2000 - 100) / 4 = 425 rows a rank -> eval_batch_size 850.
        assert!(e.contains("add `eval_batch_size=850`"), "{e}");
        assert!(!e.contains("micro_batch_size"), "{e}");
    }

    #[test]
    fn a_run_with_no_step_left_checks_only_its_evaluation() {
        // A resumed run at its last step: a training pass that would not fit is not refused.
        let p = Passes { trains: false, ..passes(768, None) };
        let n = Need { carry: 768 * MB, ..need() }.with_no_step_left();
        verdict(n, p, machine(120 * MB)).unwrap();
        // Its final evaluation is checked without gradients, optimiser state or a new carry:
        // 768 x 4 = 3072 MiB does not fit 2000 MiB; 450 rows (1800 MiB, 90% of it) do.
        let p = Passes { eval_cap: Some(768), ..p };
        let e = verdict(n, p, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("its first evaluation") && !e.contains("training pass"), "{e}");
        assert!(e.contains("evaluation pass of 768 rows needs about 3.00 GiB") && e.contains("eval_batch_size=450"), "{e}");
    }

    #[test]
    fn a_process_limit_is_named_as_what_sets_the_figure() {
        let limited = Available { bytes: 500 * MB, bound: Bound::ProcessLimit("-v") };
        let e = eval_verdict("this evaluation", 4 * MB, 10 * MB, 256, None, limited).unwrap_err().to_string();
        assert!(e.contains("`ulimit -v` leaves this process 500 MiB"), "{e}");
        assert!(e.contains("an allocation would fail and end it") && !e.contains("this machine"), "{e}");
        let cgroup = Available { bytes: 500 * MB, bound: Bound::Cgroup };
        let e = verdict(need(), passes(768, None), cgroup).unwrap_err().to_string();
        assert!(e.contains("memory cgroup (its container's limit) leaves it 500 MiB"), "{e}");
    }

    #[test]
    fn sizes_past_u64_saturate_instead_of_overflowing() {
        let huge =
            Need { optimiser: 1, resumed: false, carry: 0, share_carry: 0, share: 768, train_row: u64::MAX / 2, eval_row: u64::MAX / 2 };
        let e = verdict(huge, passes(768, Some(768)), machine(1 << 40)).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
        let e = eval_verdict("this evaluation", u64::MAX / 2, u64::MAX / 2, 65_536, None, machine(1 << 40)).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
        assert!(e.contains("16 EiB or more"), "{e}");
    }

    #[test]
    fn a_model_whose_single_row_does_not_fit_says_so() {
        let e = verdict(need(), passes(768, None), machine(120 * MB)).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
    }

    /// The settings a refusal suggests, as (key, value).
    fn suggested(e: &str) -> Vec<(String, usize)> {
        let add = e.split("add `").nth(1).and_then(|r| r.split('`').next()).expect(e);
        add.split(' ').map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.parse().unwrap())).expect(e)).collect()
    }

    /// `p` and `n` with the suggested settings applied, as `Passes::of` and `Need::of` would make them.
    fn with(e: &str, n: Need, p: Passes) -> (Need, Passes) {
        let mut q = p;
        for (k, v) in suggested(e) {
            match k.as_str() {
                "global_batch_size" => q.share = v / p.world,
                "micro_batch_size" => q.micro_set = Some(v),
                "eval_batch_size" => q.eval_set = Some(v / p.world),
                _ => panic!("{k} in {e}"),
            }
        }
        let scaled = |bytes: u64| bytes / p.share as u64 * q.share as u64;
        (Need { carry: scaled(n.carry), share_carry: scaled(n.share_carry), share: q.share, ..n }, q)
    }

    #[test]
    fn a_carry_too_large_names_a_smaller_batch_that_then_fits() {
        // 768 rows of carry at 10 MiB: 7680 MiB; with 100 of optimiser state and one 50 MiB row,
        // nothing fits 2000 MiB; (0.9 x 2000 - 150) / 10 = 165 rows of carry do, in passes of one
        // row, evaluating (1800 - 100 - 1650) / 4 = 12 rows at a time.
        let n = Need { carry: 768 * 10 * MB, ..need() };
        let p = passes(768, Some(256));
        let e = verdict(n, p, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("the carry that each of the batch's 768 rows") && e.contains("(10.0 MiB a row)"), "{e}");
        assert!(e.contains("add `global_batch_size=165 micro_batch_size=1 eval_batch_size=12`"), "{e}");
        assert!(e.contains("(trm adapt: `--set global_batch_size=165 --set micro_batch_size=1 --set eval_batch_size=12`)"), "{e}");
        let (n2, p2) = with(&e, n, p);
        verdict(n2, p2, machine(2000 * MB)).unwrap();

        // A micro_batch_size that is set is kept: the batch is a multiple of it (4 rows: 200 MiB a
        // pass; (1800 - 300) / 10 = 150 rows, 148 the multiple of 4). No test split: no eval batch.
        let p = Passes { micro_set: Some(4), eval_cap: None, ..p };
        let e = verdict(n, p, machine(2000 * MB)).unwrap_err().to_string();
        assert_eq!(suggested(&e), [("global_batch_size".to_string(), 148)], "{e}");
        let (n2, p2) = with(&e, n, p);
        verdict(n2, p2, machine(2000 * MB)).unwrap();

        // A carry that is not most of the need is still what a smaller batch saves: 1 GiB of
        // weights and optimiser state, 1 GiB of carry, 1.8 GiB available.
        let n = Need { optimiser: 768 * MB, carry: 768 * 4 / 3 * MB, ..need() };
        let e = verdict(n, passes(768, None), machine(1843 * MB)).unwrap_err().to_string();
        let (n2, p2) = with(&e, n, passes(768, None));
        verdict(n2, p2, machine(1843 * MB)).unwrap();
    }

    #[test]
    fn a_smaller_batch_before_the_weights_are_made_counts_them_and_splits_over_the_ranks() {
        // 200 MiB of weights: (1800 - 350) / 10 = 145 rows a rank.
        let n = Need { carry: 768 * 10 * MB, ..need() };
        let e = state_verdict(n, 200 * MB, passes(768, None), machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("before its first step"), "{e}");
        assert!(e.contains("`global_batch_size=145 micro_batch_size=1`"), "{e}");
        // Over 2 ranks the global batch is twice the rank's rows.
        let p = Passes { world: 2, ..passes(768, None) };
        let e = state_verdict(n, 200 * MB, p, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("each of the rank's 768 rows") && e.contains("`global_batch_size=290 micro_batch_size=1`"), "{e}");
        // A resumed run holds its carry: no smaller batch is suggested.
        let e = verdict(need(), passes(768, None), machine(120 * MB)).unwrap_err().to_string();
        assert!(!e.contains("global_batch_size"), "{e}");
    }

    #[test]
    fn a_model_whose_weights_do_not_fit_is_refused_before_they_are_made() {
        let e = state_verdict(need(), 5 << 30, passes(768, None), machine(4 << 30)).unwrap_err().to_string();
        assert!(e.contains("weights and puzzle-embedding table (5.00 GiB)"), "{e}");
        assert!(e.contains("train a smaller model"), "{e}");
        state_verdict(need(), 1 << 30, passes(768, None), machine(4 << 30)).unwrap();
    }

    #[test]
    fn a_checkpoint_too_large_to_read_is_refused_before_it_is_read() {
        // 1 GiB of training state, held twice while read, beside a 100 MiB table: 2.10 GiB.
        let ckpt = Path::new("run/checkpoints/step_00000100");
        let files = || CheckpointFiles { weights: 130 * MB, state: 1 << 30, table: 100 * MB };
        resumed_verdict(files(), ckpt, machine(2200 * MB)).unwrap();
        let e = resumed_verdict(files(), ckpt, machine(2 << 30)).unwrap_err().to_string();
        assert!(e.starts_with("resuming from run/checkpoints/step_00000100 would run out of memory while the checkpoint is read"), "{e}");
        assert!(
            e.contains("table: 130 MiB, of which the table, 100 MiB, is kept") && e.contains("carry: 1.00 GiB), need about 2.10 GiB"),
            "{e}"
        );
        assert!(e.contains("this machine has 2.00 GiB available; resume it on a machine with more memory"), "{e}");
        assert!(e.contains("--no-memory-check"), "{e}");
        // A large table (ARC's) makes the weights file the larger phase: 2 x 1.8 GiB.
        let arc = CheckpointFiles { weights: 1843 * MB, state: 300 * MB, table: 1800 * MB };
        assert_eq!(arc.peak(), 2 * 1843 * MB);
        let e = resumed_verdict(arc, ckpt, machine(3 << 30)).unwrap_err().to_string();
        assert!(e.contains("need about 3.60 GiB"), "{e}");
        let e = resumed_verdict(CheckpointFiles { weights: 1, state: u64::MAX, table: 1 }, ckpt, machine(1 << 40)).unwrap_err().to_string();
        assert!(e.contains("need about 16 EiB or more"), "{e}");
    }

    #[test]
    fn a_resumed_run_counts_its_gradients_but_not_the_moments_and_ema_it_has_read() {
        let model = ModelConfig { arch: Default::default(), seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 };
        let cfg = TrainConfig { ema: true, ..Default::default() };
        let weights = memory::weight_bytes(&model);
        assert_eq!(Need::of(&model, &cfg, 768, false, true).optimiser, 4 * weights);
        assert_eq!(Need::of(&model, &cfg, 768, true, false).optimiser, weights);
        assert_eq!(Need::of(&model, &cfg, 768, true, false).carry, 0);
        // Its refusal says what the figure is.
        let e = verdict(Need { resumed: true, ..need() }, passes(768, None), machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("and 100 MiB of gradients), and"), "{e}");
        let e = verdict(need(), passes(768, None), machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("and 100 MiB of gradients and optimiser state), and"), "{e}");
    }

    #[test]
    fn sizes_keep_three_figures_in_the_unit_that_fits() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1000), "1000 B");
        assert_eq!(size(4_383_000), "4.18 MiB");
        assert_eq!(size(717 * MB), "717 MiB");
        assert_eq!(size(1023 * MB + MB / 4), "1023 MiB");
        assert_eq!(size(38500 * MB), "37.6 GiB");
        assert_eq!(size(MB * 1024 * 99 + MB * 1023), "100 GiB");
        // A saturated sum is past counting, not 16 EiB.
        assert_eq!(size(u64::MAX), "16 EiB or more");
        assert_eq!(size(u64::MAX - (1 << 20)), "16.0 EiB");
    }
}
