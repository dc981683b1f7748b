//! Evaluation on a test split: every example once, `halt_max_steps` supervision steps (or more:
//! test-time recursion), metrics of the final step normalised by the number of real examples,
//! plus token and exact accuracy after every step.
//!
//! With adaptive halting in evaluation (the baseline's `act_inference`), each example's result is
//! taken at the step where it first halts and `steps` is its mean. The reference instead keeps
//! calling the model until every row of a batch halts on the same call, restarting the rows that
//! halted earlier; evaluation is deterministic, so a restarted row halts again at the same step
//! with the same answer and both report the same numbers.

use crate::data::format::Split;
use crate::data::loader::{Batch, IGNORE_LABEL, test_batches};
use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::model::layers::Rope;
use crate::model::weights::Weights;
use crate::parallel::Reducer;
use crate::step::loss::Metrics;
use crate::step::supervision::eval_forward;
use crate::store::eval_outputs::{BatchOutputs, Recorder};
use anyhow::Result;
use burn::prelude::*;
use serde::Serialize;
use std::sync::Arc;

/// Refuses a data set the model cannot read: another sequence length or vocabulary, or puzzle
/// identifiers (including the blank one that pads batches) beyond the model's puzzle table.
pub fn check_data_fits(data: &std::path::Path, test: &Split, model: &ModelConfig) -> Result<()> {
    let m = &test.metadata;
    if m.seq_len != model.seq_len || m.vocab_size != model.vocab_size {
        anyhow::bail!(
            "{}: seq_len {} / vocab {} do not match the model's {} / {} (a data set of another puzzle kind?)",
            data.display(),
            m.seq_len,
            m.vocab_size,
            model.seq_len,
            model.vocab_size
        );
    }
    let ids = test.sets.iter().flat_map(|(_, s)| s.puzzle_identifiers.iter().copied());
    let max_id = ids.chain([m.blank_identifier_id]).max().unwrap_or(0);
    if max_id as usize >= model.num_puzzle_identifiers.max(1) {
        anyhow::bail!(
            "{}: puzzle identifier {max_id} is beyond the model's {} (a data set built for another model? `trm adapt` makes one for new tasks)",
            data.display(),
            model.num_puzzle_identifiers
        );
    }
    Ok(())
}

/// Refuses a data set whose puzzle identifiers name other puzzles than the model's rows do: an ARC
/// data set built from other tasks, in another order or with another seed has identifiers of the
/// same range, and every embedding row would then serve the wrong puzzle without a word.
/// `ckpt` is the model's checkpoint folder (its identifier map, or its run's), `model` its
/// configuration: the map must name each of its rows.
pub fn check_identifiers(data: &std::path::Path, ckpt: &std::path::Path, model: &ModelConfig) -> Result<()> {
    // Without names on either side only the range check (`check_data_fits`) applies; the data
    // set's list, when there, must read (and name each of its identifiers once).
    let data_names = match data.join("identifiers.json").exists() {
        true => crate::data::format::read_identifiers(data)?,
        false => return Ok(()),
    };
    let Ok(model_names) = crate::store::checkpoint::read_identifiers(ckpt) else { return Ok(()) };
    anyhow::ensure!(
        model_names.len() == model.num_puzzle_identifiers,
        "{}: its identifier map names {} puzzle identifiers, the model has {} rows: the map belongs to another model \
         (a run folder written by two commands at once?)",
        ckpt.display(),
        model_names.len(),
        model.num_puzzle_identifiers
    );
    if let Some(i) = (0..data_names.len().min(model_names.len())).find(|&i| data_names[i] != model_names[i]) {
        anyhow::bail!(
            "{}: identifier {i} is `{}`, but the model's ({}) is `{}`: the data set was built from other tasks, \
             in another order or with another seed than the model's, so its puzzles would get other puzzles' embeddings \
             (evaluate on the data set the run trained with, rebuild this one with the same command, or make one for new tasks with `trm adapt`)",
            data.join("identifiers.json").display(),
            data_names[i],
            ckpt.display(),
            model_names[i]
        );
    }
    Ok(())
}

/// Normalised evaluation metrics.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    /// Real (non-padding) examples evaluated.
    pub count: usize,
    /// Mean per-example token accuracy at the final step.
    pub accuracy: f64,
    /// Fraction of examples entirely right at the final step (the headline number).
    pub exact_accuracy: f64,
    /// Wilson 95% interval of `exact_accuracy`.
    pub exact_accuracy_ci95: (f64, f64),
    pub lm_loss: f64,
    pub q_halt_loss: f64,
    pub q_halt_accuracy: f64,
    pub steps: f64,
    /// (token accuracy, exact accuracy) after each supervision step.
    pub per_step: Vec<(f64, f64)>,
    /// Fraction of examples whose halting rule (q_halt > 0, or q_halt > q_continue) first fired at
    /// step k (index k-1); the last entry counts the ones where it never did: where adaptive
    /// halting would have stopped.
    pub halt_step_histogram: Vec<f64>,
    /// Wall time of this evaluation in seconds (all examples, batched).
    pub seconds: f64,
    /// ARC data only: pass@k after undoing augmentations and voting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arc: Option<super::arc_vote::ArcScore>,
    /// `trm eval --views K`: the test-time-scaled accuracy beside this plain one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled: Option<super::scaled::ScaledResult>,
    /// `trm eval --precision`, as it ran: the CPU engine's products, float32 or bfloat16 (absent
    /// on other devices, which follow the model's `arch.forward_dtype`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<&'static str>,
}

pub use super::interval::wilson95;

/// Per-row correctness of predictions against labels: (rows with labels, token-acc sum, exact).
fn score(preds: &[i64], labels: &[i32], rows: usize, s: usize) -> (usize, f64, usize) {
    let (mut n, mut acc, mut exact) = (0, 0.0, 0);
    for r in 0..rows {
        let (mut v, mut right) = (0, 0);
        for k in 0..s {
            let l = labels[r * s + k];
            if l != IGNORE_LABEL {
                v += 1;
                right += (preds[r * s + k] == l as i64) as usize;
            }
        }
        if v > 0 {
            n += 1;
            acc += right as f64 / v as f64;
            exact += (right == v) as usize;
        }
    }
    (n, acc, exact)
}

/// Evaluates `weights` on `split`, this rank's share of every window of `global_batch` examples
/// (all of it with one rank); sums are reduced over the ranks, so every rank returns the whole
/// split's numbers. `on_batch` sees each window's final predictions on rank 0 (gathered from the
/// ranks: ARC voting, report pictures). Returns None when a stop was asked for (a signal) before
/// the end; the ranks agree on it.
pub fn evaluate<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    split: Arc<Split>,
    global_batch: usize,
    max_steps: usize,
    max_examples: Option<usize>,
    reducer: &mut dyn Reducer,
    mut outputs: Option<&mut Recorder>,
    mut on_batch: impl FnMut(&Batch, &[i64], &[f32], usize),
) -> Result<Option<EvalResult>> {
    let t0 = std::time::Instant::now();
    let (rank, world) = (reducer.rank(), reducer.world());
    // No padding rows beyond what the split holds or a limit lets through (a window of 256 rows
    // for 6 puzzles would cost 40 times their time).
    let rows = max_examples.map_or(split.num_examples(), |m| m.min(split.num_examples()));
    let global_batch = global_batch.min(rows.max(1).next_multiple_of(world));
    anyhow::ensure!(global_batch.is_multiple_of(world), "the evaluation batch {global_batch} does not split over {world} ranks");
    let b = global_batch / world;
    let rope = Rope::<B>::new(cfg, &w.device());
    let mut tally = Tally::new(max_steps);
    let mut seen = 0usize; // over all ranks
    for mut batch in crate::data::loader::prefetch(test_batches(split, global_batch, rank, world), 2) {
        let mut stop = [(max_examples.is_some_and(|m| seen >= m) as u8 as f32), crate::util::interrupt::requested() as u8 as f32];
        if !reducer.is_single() {
            reducer.all_reduce_sum(&mut stop)?;
        }
        if stop[1] > 0.0 {
            return Ok(None);
        }
        if stop[0] > 0.0 {
            break;
        }
        // Real rows: of the window (all ranks), then this rank's, cut at the limit.
        let window = max_examples.map_or(batch.global_effective, |m| batch.global_effective.min(m - seen));
        let real = window.saturating_sub(rank * b).min(b);
        if real < batch.global_effective.saturating_sub(rank * b).min(b) {
            // Rows past a limit become padding (unsupervised, not counted).
            batch.labels[real * batch.seq_len..].fill(IGNORE_LABEL);
        }
        batch.global_effective = window;
        let keep_logits = outputs.as_ref().is_some_and(|o| o.wants_logits());
        let a = run_batch(cfg, w, table, &rope, &batch, max_steps, real, keep_logits, &mut tally);
        if let Some(o) = outputs.as_deref_mut() {
            let logits = a.logits.as_deref();
            o.add(&BatchOutputs { batch: &batch, real, preds: &a.preds, q_halt: &a.q_halt, q_continue: &a.q_continue, logits })?;
        }
        hand_over(&batch, &a.preds, &a.q_halt, real, window, reducer, &mut on_batch)?;
        seen += window;
    }
    if !reducer.is_single() {
        tally.all_reduce(reducer)?;
    }
    Ok(Some(tally.result(seen, t0.elapsed().as_secs_f64())))
}

/// The sums an evaluation collects over its batches.
struct Tally {
    total: Metrics,
    /// (token accuracy, exact accuracy) sums per supervision step.
    per_step: Vec<(f64, f64)>,
    /// Rows by the step at which the halting head first fired (the last bin: never).
    halt_hist: Vec<f64>,
}

impl Tally {
    fn new(max_steps: usize) -> Self {
        Tally { total: Metrics::default(), per_step: vec![(0.0, 0.0); max_steps], halt_hist: vec![0.0; max_steps + 1] }
    }

    /// Sums over the ranks.
    fn all_reduce(&mut self, reducer: &mut dyn Reducer) -> Result<()> {
        let max_steps = self.per_step.len();
        let mut sums = self.total.to_array().to_vec();
        sums.extend(self.per_step.iter().flat_map(|&(a, e)| [a, e]));
        sums.extend(&self.halt_hist);
        let mut flat: Vec<f32> = sums.iter().map(|&v| v as f32).collect();
        reducer.all_reduce_sum(&mut flat)?;
        let v: Vec<f64> = flat.iter().map(|&x| x as f64).collect();
        // The layout packed above: the totals, then (token, exact) per step, then the histogram.
        let (totals, rest) = v.split_at(Metrics::LEN);
        let (steps, hist) = rest.split_at(2 * max_steps);
        self.total = Metrics::from_array(totals);
        for (p, pair) in self.per_step.iter_mut().zip(steps.chunks_exact(2)) {
            *p = (pair[0], pair[1]);
        }
        self.halt_hist.copy_from_slice(hist);
        Ok(())
    }

    /// The means, over `seen` rows, of an evaluation that took `seconds`.
    fn result(&self, seen: usize, seconds: f64) -> EvalResult {
        let total = &self.total;
        let n = total.count.max(1.0);
        EvalResult {
            count: total.count as usize,
            accuracy: total.accuracy / n,
            exact_accuracy: total.exact_accuracy / n,
            exact_accuracy_ci95: wilson95(total.exact_accuracy, total.count),
            lm_loss: total.lm_loss / n,
            q_halt_loss: total.q_halt_loss / n,
            q_halt_accuracy: total.q_halt_accuracy / n,
            steps: total.steps / n,
            per_step: self.per_step.iter().map(|(a, e)| (a / n, e / n)).collect(),
            halt_step_histogram: self.halt_hist.iter().map(|h| h / (seen.max(1) as f64)).collect(),
            seconds,
            arc: None,
            scaled: None,
            precision: None,
        }
    }
}

/// Each row's answer and the model's values with it.
struct Answers {
    /// `[rows, seq_len]`
    preds: Vec<i64>,
    q_halt: Vec<f32>,
    q_continue: Vec<f32>,
    /// `[rows, seq_len, vocab]`, when asked for.
    logits: Option<Vec<f32>>,
}

/// Up to `max_steps` supervision steps on one batch, tallied; returns each row's answer with its
/// q logits (and logits, with `keep_logits`), taken at the row's first halt and then left alone
/// where evaluation halts adaptively, else at the last step.
#[allow(clippy::too_many_arguments)]
fn run_batch<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    rope: &Rope<B>,
    batch: &Batch,
    max_steps: usize,
    real: usize,
    keep_logits: bool,
    tally: &mut Tally,
) -> Answers {
    let (adaptive, rule) = (cfg.arch.adaptive_in_eval(), cfg.arch.halt_rule());
    let (n, s) = (batch.batch_size, batch.seq_len);
    let mut carry = Carry::<B>::new(cfg, n, &w.device());
    let mut first_halt = vec![0usize; n];
    let mut last = None;
    let (mut done, mut at_halt) = (vec![false; n], Metrics::default());
    let (mut answers, mut answer_q, mut answer_qc) = (vec![0i64; n * s], vec![0f32; n], vec![0f32; n]);
    let vocab = cfg.vocab_size;
    let mut answer_logits = keep_logits.then(|| vec![0f32; n * s * vocab]);
    for k in 0..max_steps {
        let (loss, out) = eval_forward(cfg, w, table, &mut carry, batch, rope, max_steps);
        let q = crate::backend::to_host_f32(&out.q_halt);
        let qc = crate::backend::to_host_f32(&out.q_continue);
        // Off the device only when some row may still take them: every step where rows halt
        // adaptively, else the last step alone.
        let logits = (answer_logits.is_some() && (adaptive || k + 1 == max_steps)).then(|| crate::backend::to_host_f32(&out.logits));
        for r in 0..n {
            if first_halt[r] == 0 && rule.fires(q[r], qc[r]) {
                first_halt[r] = k + 1;
            }
            if !done[r] {
                answers[r * s..(r + 1) * s].copy_from_slice(&loss.preds[r * s..(r + 1) * s]);
                answer_q[r] = q[r];
                answer_qc[r] = qc[r];
                if let (Some(all), Some(now)) = (answer_logits.as_mut(), logits.as_ref()) {
                    let row = r * s * vocab..(r + 1) * s * vocab;
                    all[row.clone()].copy_from_slice(&now[row]);
                }
            }
            if adaptive && carry.halted[r] && !done[r] {
                done[r] = true;
                if r < real {
                    at_halt.add(&loss.rows[r]);
                }
                carry.halted[r] = false; // not restarted on the next call
            }
        }
        let (_, acc, exact) = score(&answers, &carry.labels, n, s);
        let all_answered = adaptive && done.iter().all(|&d| d);
        // Once every row has answered, later steps would report the same answers.
        let steps = if all_answered { k..max_steps } else { k..k + 1 };
        tally.per_step[steps].iter_mut().for_each(|p| *p = (p.0 + acc, p.1 + exact as f64));
        last = Some(loss);
        if all_answered {
            break;
        }
    }
    let loss = last.expect("at least one step");
    if !adaptive {
        // Every row halts at the last step. The batch's own sums would add the padding rows'
        // losses (a padding row has no labels, so its q_halt target is 1), which made the
        // reported q_halt_loss depend on the evaluation's batch size.
        (0..real).filter(|&r| carry.halted[r]).for_each(|r| at_halt.add(&loss.rows[r]));
    }
    tally.total.add(&at_halt);
    for &h in &first_halt[..real] {
        tally.halt_hist[if h == 0 { max_steps } else { h - 1 }] += 1.0;
    }
    Answers { preds: answers, q_halt: answer_q, q_continue: answer_qc, logits: answer_logits }
}

/// Gives the batch's answers to `on_batch`: this rank's alone, or with several ranks the whole
/// window gathered on rank 0 (rank order is row order: real rows first, then padding).
fn hand_over(
    batch: &Batch,
    answers: &[i64],
    answer_q: &[f32],
    real: usize,
    window: usize,
    reducer: &mut dyn Reducer,
    on_batch: &mut impl FnMut(&Batch, &[i64], &[f32], usize),
) -> Result<()> {
    if reducer.is_single() {
        on_batch(batch, answers, answer_q, real);
        return Ok(());
    }
    let as_i32: Vec<i32> = answers.iter().map(|&v| v as i32).collect();
    let (inputs, ids) = (reducer.all_gather_i32(&batch.inputs)?, reducer.all_gather_i32(&batch.puzzle_identifiers)?);
    let (preds, q) = (reducer.all_gather_i32(&as_i32)?, reducer.all_gather(answer_q)?);
    if reducer.rank() == 0 {
        let (n, s) = (ids.len(), batch.seq_len);
        let whole = Batch {
            set: batch.set,
            batch_size: n,
            seq_len: s,
            inputs,
            labels: vec![IGNORE_LABEL; n * s],
            puzzle_identifiers: ids,
            global_effective: window,
        };
        on_batch(&whole, &preds.iter().map(|&v| v as i64).collect::<Vec<_>>(), &q, window);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn wilson_interval_check_values() {
        let (lo, hi) = super::wilson95(87.0, 100.0);
        assert!((lo - 0.7907).abs() < 1e-3 && (hi - 0.9221).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(super::wilson95(0.0, 0.0), (0.0, 0.0));
    }
}
