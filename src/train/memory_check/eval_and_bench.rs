//! The checks of `trm eval` (its evaluation, and the outputs `--save-outputs` holds) and of
//! `trm bench` (a step of the benchmarked shape), as `memory_check` checks a training run.

use super::{HOW_SURE, Need, available_to, fits_suggestion, rows_of, size, weights_and_table};
use crate::model::config::ModelConfig;
use crate::model::memory;
use crate::store::config::TrainConfig;
use crate::util::host_memory::Available;
use anyhow::{Result, bail};
use burn::prelude::Backend;

/// `trm eval --save-outputs`'s check: the outputs of `examples` examples (`per_example` bytes
/// each, held until written) beside the weights of `model` and the evaluation of `batch` rows at
/// a time, refused when they do not fit, naming the --limit that does (and the logits, when
/// `with_logits`). Returns the bytes they hold, for the evaluation's own check (`check_eval`'s
/// `held`).
pub fn check_outputs<B: Backend>(model: &ModelConfig, examples: usize, batch: usize, per_example: u64, with_logits: bool) -> Result<u64> {
    let held = per_example.saturating_mul(examples as u64);
    let Some(available) = available_to::<B>(model) else { return Ok(held) };
    let held_by = Outputs { examples, per: per_example, with_logits };
    outputs_verdict(weights_and_table(model), memory::eval_bytes_per_row(model), batch, held_by, available)?;
    Ok(held)
}

/// The saved outputs an evaluation holds.
struct Outputs {
    examples: usize,
    /// Bytes an example.
    per: u64,
    with_logits: bool,
}

fn outputs_verdict(weights: u64, row: u64, batch: usize, o: Outputs, available: Available) -> Result<()> {
    let (examples, per, with_logits) = (o.examples, o.per, o.with_logits);
    // n examples' outputs, beside the evaluation of at most `batch` of them at a time.
    let eval = |n: usize| weights.saturating_add(row.saturating_mul(batch.min(n).max(1) as u64));
    let need = |n: usize| eval(n).saturating_add(per.saturating_mul(n as u64));
    if need(examples) <= available.bytes {
        return Ok(());
    }
    // The most examples whose outputs fit (the need grows with them).
    let (mut lo, mut hi) = (0usize, examples);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits_suggestion(need(mid), available) { lo = mid } else { hi = mid - 1 }
    }
    let logits = if with_logits { ", or leave logits out of --outputs (a token's logits are a float per vocabulary entry)" } else { "" };
    let advice = match lo {
        0 => format!("not even one example's fits beside the model: run it on a machine with more memory{logits}"),
        n => format!("pass --limit {n} (about {}){logits}", size(need(n))),
    };
    bail!(
        "saving the outputs of {examples} examples would run out of memory ({}): they are held until the file is written, about {} \
         ({} an example), beside the model and its evaluation of {} at a time ({}), and {}; {advice}\n({HOW_SURE})",
        available.past_it(),
        size(per.saturating_mul(examples as u64)),
        size(per),
        rows_of(batch.min(examples).max(1)),
        size(eval(examples)),
        available.said(&size(available.bytes))
    )
}

/// `trm eval`'s check: an evaluation of `batch` rows at a time (its --batch, at most the examples
/// it evaluates) and, with --views K, of a puzzle's K views together, with the weights of `model`
/// on backend `B`, refused when the larger does not fit, naming the --batch or --views that does.
/// `held`: bytes the evaluation keeps besides (its saved outputs, `check_outputs`).
pub fn check_eval<B: Backend>(model: &ModelConfig, batch: usize, views: Option<usize>, held: u64) -> Result<()> {
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    // The weights and the puzzle table are read after this check.
    let fixed = weights_and_table(model).saturating_add(held);
    eval_verdict("this evaluation", memory::eval_bytes_per_row(model), fixed, batch, views, available)
}

/// `what`: "this evaluation", as the refusal names it.
pub(super) fn eval_verdict(what: &str, row: u64, weights: u64, batch: usize, views: Option<usize>, available: Available) -> Result<()> {
    let need = |r: usize| weights.saturating_add(row.saturating_mul(r as u64));
    let rows = batch.max(views.unwrap_or(0));
    if need(rows) <= available.bytes {
        return Ok(());
    }
    let advice = match (1..rows).rev().find(|&r| fits_suggestion(need(r), available)) {
        Some(r) => {
            // Whichever of the two asks for more rows than fit.
            let flags: Vec<String> = [("--batch", Some(batch)), ("--views", views)]
                .into_iter()
                .filter_map(|(flag, v)| v.filter(|&v| v > r).map(|_| format!("{flag} {r}")))
                .collect();
            format!("pass {} (about {})", flags.join(" "), size(need(r)))
        }
        None => "even one row at a time does not fit: run it on a machine with more memory".into(),
    };
    bail!(
        "{what} would run out of memory ({}): {} at a time need about {} ({} a row), and {}; {advice}\n({HOW_SURE})",
        available.past_it(),
        rows_of(rows),
        size(need(rows)),
        size(row),
        available.said(&size(available.bytes))
    )
}

/// `trm bench`'s check: a step of `batch` rows with the weights, puzzle table, Adam moments and
/// carry it makes (`train`: forward, backward and the optimiser, in passes of `micro_batch`
/// rows; else forward only), refused when it does not fit, naming the --micro-batch or --batch
/// that does.
pub fn check_bench<B: Backend>(model: &ModelConfig, train: bool, batch: usize, micro_batch: Option<usize>) -> Result<()> {
    let Some(available) = available_to::<B>(model) else { return Ok(()) };
    let weights = weights_and_table(model);
    if !train {
        return eval_verdict("this benchmark's forward pass", memory::eval_bytes_per_row(model), weights, batch, None, available);
    }
    let cfg = TrainConfig { ema: false, ..Default::default() }; // bench keeps no EMA
    bench_verdict(|rows| Need::of(model, &cfg, rows, false, true), weights, batch, micro_batch, available)
}

fn bench_verdict(
    need_of: impl Fn(usize) -> Need,
    weights: u64,
    batch: usize,
    micro_batch: Option<usize>,
    available: Available,
) -> Result<()> {
    // A step of `b` rows in passes of `m`.
    let need = |b: usize, m: usize| weights.saturating_add(need_of(b).train(m));
    let m = micro_batch.unwrap_or(batch);
    if need(batch, m) <= available.bytes {
        return Ok(());
    }
    let n = need_of(batch);
    let advice = match (1..m).rev().find(|&r| batch.is_multiple_of(r) && fits_suggestion(need(batch, r), available)) {
        Some(r) => format!("pass --micro-batch {r} (about {}: the same step in passes of {})", size(need(batch, r)), rows_of(r)),
        // The largest smaller batch whose carry leaves room for a pass: a multiple of a
        // --micro-batch that is set, else in the largest passes that then fit.
        None => {
            let pass = micro_batch.unwrap_or(1);
            match (1..batch / pass).rev().map(|i| i * pass).find(|&b| fits_suggestion(need(b, pass), available)) {
                Some(b) => {
                    let m = micro_batch.unwrap_or_else(|| {
                        (1..=b).rev().find(|&m| b.is_multiple_of(m) && fits_suggestion(need(b, m), available)).unwrap_or(1)
                    });
                    let flags =
                        if micro_batch.is_none() && m < b { format!("--batch {b} --micro-batch {m}") } else { format!("--batch {b}") };
                    format!("the carry of its rows leaves no room for a pass: pass {flags} (about {})", size(need(b, m)))
                }
                None => "even one row does not fit: benchmark a smaller shape or on a machine with more memory".into(),
            }
        }
    };
    bail!(
        "this benchmark would run out of memory ({}): a training step of {}{} needs about {} ({} a row, {} of weights, \
         gradients and optimiser state, {} of carry), and {}; {advice}\n({HOW_SURE})",
        available.past_it(),
        rows_of(batch),
        if m < batch { format!(" in passes of {}", rows_of(m)) } else { String::new() },
        size(need(batch, m)),
        size(n.train_row),
        size(weights.saturating_add(n.optimiser)),
        size(n.carry),
        available.said(&size(available.bytes))
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MB, machine, need};
    use super::*;

    #[test]
    fn an_evaluation_batch_too_large_names_the_batch_that_fits() {
        // 10 + 256 x 4 = 1034 MiB; 500 MiB available, 450 within 90% -> 110 rows (450 MiB).
        eval_verdict("this evaluation", 4 * MB, 10 * MB, 100, None, machine(500 * MB)).unwrap();
        let e = eval_verdict("this evaluation", 4 * MB, 10 * MB, 256, None, machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("256 rows at a time need about 1.01 GiB (4.00 MiB a row)"), "{e}");
        assert!(e.contains("pass --batch 110 (about 450 MiB)"), "{e}");
        assert!(e.contains("--no-memory-check"), "{e}");
        let e = eval_verdict("this evaluation", 4 * MB, 10 * MB, 256, None, machine(12 * MB)).unwrap_err().to_string();
        assert!(e.contains("even one row at a time does not fit"), "{e}");
        // With --views K the K views of a puzzle run together: the views are what to lower, and
        // the batch too where it asks for more than fit.
        eval_verdict("this evaluation", 4 * MB, 10 * MB, 100, Some(64), machine(500 * MB)).unwrap();
        let e = eval_verdict("this evaluation", 4 * MB, 10 * MB, 8, Some(256), machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("256 rows at a time") && e.contains("pass --views 110 (about 450 MiB)"), "{e}");
        let e = eval_verdict("this evaluation", 4 * MB, 10 * MB, 200, Some(256), machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("pass --batch 110 --views 110 (about 450 MiB)"), "{e}");
    }

    #[test]
    fn saved_outputs_too_large_for_memory_name_the_limit_that_fits() {
        let outputs = |examples: usize, with_logits: bool| Outputs { examples, per: MB, with_logits };
        // 9 MiB of model, 1 MiB a row one at a time, 1 MiB an example: 1000 examples need 1010
        // MiB; 500 MiB available, 450 within 90% -> 440 examples.
        outputs_verdict(9 * MB, MB, 1, outputs(400, false), machine(500 * MB)).unwrap();
        let e = outputs_verdict(9 * MB, MB, 1, outputs(1000, false), machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("saving the outputs of 1000 examples") && e.contains("about 1000 MiB (1.00 MiB an example)"), "{e}");
        assert!(e.contains("evaluation of 1 row at a time (10.0 MiB)"), "{e}");
        assert!(e.contains("pass --limit 440 (about 450 MiB)") && !e.contains("logits"), "{e}");
        let e = outputs_verdict(9 * MB, MB, 1, outputs(1000, true), machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("pass --limit 440 (about 450 MiB), or leave logits out of --outputs"), "{e}");
        let e = outputs_verdict(9 * MB, MB, 1, outputs(1000, false), machine(10 * MB)).unwrap_err().to_string();
        assert!(e.contains("not even one example's fits"), "{e}");
        // Evaluated 100 at a time, the batch's rows count too: 9 + 100 + n <= 450 -> 341.
        let e = outputs_verdict(9 * MB, MB, 100, outputs(1000, false), machine(500 * MB)).unwrap_err().to_string();
        assert!(e.contains("pass --limit 341 (about 450 MiB)"), "{e}");
    }

    #[test]
    fn a_benchmark_too_large_names_the_micro_batch_or_the_batch_that_fits() {
        // 10 MiB of weights; 100 MiB of optimiser state; 1 MiB of carry and 50 MiB of pass a row;
        // passes of fewer rows than the batch join their carries into a copy of it.
        let need_of = |rows: usize| Need { carry: rows as u64 * MB, share_carry: rows as u64 * MB, share: rows, ..need() };
        bench_verdict(need_of, 10 * MB, 32, None, machine(2000 * MB)).unwrap();
        // 64 rows: 110 + 64 + 3200 MiB; 2000 available (1800 within 90%): passes of 32 rows
        // (110 + 64 + 1600 + 64 = 1838) do not fit, passes of 16 (1038 MiB) do.
        let e = bench_verdict(need_of, 10 * MB, 64, None, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.starts_with("this benchmark would run out of memory"), "{e}");
        assert!(e.contains("a training step of 64 rows needs about 3.29 GiB"), "{e}");
        assert!(e.contains("pass --micro-batch 16 (about 1.01 GiB: the same step in passes of 16 rows)"), "{e}");
        // 4096 rows of carry (4 GiB) leave no room for any pass: in passes of the 8 rows set,
        // 110 + 400 + 2 x b <= 1800 gives b = 645, 640 the multiple of 8.
        let e = bench_verdict(need_of, 10 * MB, 4096, Some(8), machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("in passes of 8 rows") && e.contains("pass --batch 640 (about"), "{e}");
        // With none set: 110 + 50 + 2 x b <= 1800 gives 820 rows, in passes of 1 (a pass of 2
        // would not fit beside their carry).
        let e = bench_verdict(need_of, 10 * MB, 4096, None, machine(2000 * MB)).unwrap_err().to_string();
        assert!(e.contains("pass --batch 820 --micro-batch 1 (about 1.76 GiB)"), "{e}");
        let e = bench_verdict(need_of, 10 * MB, 4096, None, machine(100 * MB)).unwrap_err().to_string();
        assert!(e.contains("even one row does not fit"), "{e}");
    }
}
