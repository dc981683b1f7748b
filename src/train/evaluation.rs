//! A training run's evaluation: the evaluation weights (EMA if enabled) on the test split, every
//! rank its share; ARC scoring and the run's vote pool; the outputs the run asked to keep; the
//! logged line.

use super::logging::MetricsLog;
use crate::data::format::Split;
use crate::eval::arc_vote::{ArcEval, Votes};
use crate::eval::evaluate::{EvalResult, evaluate};
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use crate::parallel::Reducer;
use crate::store::checkpoint::TrainState;
use crate::store::config::{ARC_EVALUATOR, TrainConfig};
use crate::store::eval_outputs::Recorder;
use anyhow::Result;
use burn::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// Evaluates the current evaluation weights (EMA if enabled) on the test split (every rank its
/// share), logs on rank 0. None when a signal stopped it (nothing is logged; a resumed run
/// evaluates again).
pub fn eval_and_log<B: Backend>(
    model: &ModelConfig,
    cfg: &TrainConfig,
    st: &mut TrainState<B>,
    test: &Arc<Split>,
    data: &Path,
    out: &Path,
    log: Option<&mut MetricsLog>,
    r: &mut dyn Reducer,
    keep_votes: bool,
) -> Result<Option<EvalResult>> {
    let t_eval = std::time::Instant::now();
    let w_eval = Weights::from_named(model, st.ema.clone().unwrap_or_else(|| st.params.clone()))?;
    let eb = cfg.eval_batch_size.unwrap_or(cfg.global_batch_size);
    // ARC: this evaluation's votes, on rank 0 (merged into the run's pool below when it keeps one).
    let scores_arc = cfg.evaluators.iter().any(|e| e == ARC_EVALUATOR);
    // Rank 0's alone, so a failure is a warning: an error there would leave the other ranks
    // waiting in the evaluation's collectives.
    let mut arc = match (r.rank() == 0 && scores_arc)
        .then(|| ArcEval::open(data, &cfg.arc_evaluator, cfg.eval_max_examples.is_some_and(|m| m < test.num_examples())))
    {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            eprintln!("warning: ARC scoring skipped at step {}: {e:#}", st.step);
            None
        }
        None => None,
    };
    let mut arc_err = Ok(());
    let table = st.table.as_ref();
    let keys = crate::store::eval_outputs::Output::parse(&cfg.eval_save_outputs, "eval_save_outputs")?;
    let mut outputs = (!keys.is_empty()).then(|| Recorder::new(keys, model.seq_len, model.vocab_size));
    if let Some(o) = outputs.as_mut() {
        // This rank's share of the examples evaluated, and a batch's share more for each set (the
        // last batch of a set may give this rank more than its share).
        let examples = cfg.eval_max_examples.map_or(test.num_examples(), |m| m.min(test.num_examples()));
        let w = r.world();
        let room = examples.div_ceil(w) + if w > 1 { test.sets.len() * eb.div_ceil(w) } else { 0 };
        if let Err(e) = o.reserve(room) {
            // Bookkeeping, as the file's writing below: the run goes on without it.
            eprintln!("warning: the evaluation's outputs (eval_save_outputs) at step {} are not saved: {e:#}", st.step);
            outputs = None;
        }
    }
    let (steps, limit) = (model.arch.halt_max_steps, cfg.eval_max_examples);
    let done = evaluate(model, &w_eval, table, test.clone(), eb, steps, limit, r, outputs.as_mut(), |b, p, q, n| {
        if let (Some(a), Ok(())) = (arc.as_mut(), &arc_err) {
            arc_err = a.on_batch(b, p, q, n);
        }
    })?;
    let Some(mut res) = done else { return Ok(None) };
    if let Some(o) = outputs {
        // Every rank its own examples, named as the reference names them. Bookkeeping, as the
        // ARC scoring: a full disk here must not end a long run (its checkpoint comes next).
        let file = out.join(format!("step_{}_all_preds.{}", st.step, r.rank()));
        if let Err(e) = o.write(&file) {
            eprintln!(
                "warning: the evaluation's outputs (eval_save_outputs) at step {} were not saved to {}: {e:#}",
                st.step,
                file.display()
            );
        }
    }
    if let Err(e) = arc_err {
        // Scoring is bookkeeping: a bad identifier name must not end a long training run.
        eprintln!("warning: ARC scoring skipped at step {}: {e:#}", st.step);
        arc = None;
    }
    // The evaluation's wall time (the ARC scoring below aside).
    let eval_seconds = t_eval.elapsed().as_secs_f64();
    // pass@k and the submission: of the run's pool with this evaluation's votes in it, when it
    // keeps one (the reference's aggregated_voting), else of this evaluation's alone. Votes of an
    // evaluation off the schedule (`keep_votes` false: the last one of a run stopped between
    // evaluations) count in its score but are not kept, so a resumed run votes as one never stopped.
    let mut arc_fields = vec![];
    if let Some(a) = &arc {
        let this = a.score();
        if let Some(m) = this.mismatch() {
            eprintln!("warning: step {}: {m}", st.step);
        }
        let (score, submission) = match st.arc_votes.as_mut() {
            Some(pool) => {
                let mut scratch;
                let pool = if keep_votes {
                    Arc::make_mut(pool)
                } else {
                    scratch = Votes::clone(pool);
                    &mut scratch
                };
                pool.merge(&a.votes);
                arc_fields.extend(this.pass_at.iter().map(|(k, v)| (format!("ARC/this_evaluation/pass@{k}"), *v)));
                (a.score_of(pool), a.submission_of(pool))
            }
            None => (this, a.submission()),
        };
        arc_fields.extend(score.pass_at.iter().map(|(k, v)| (format!("ARC/pass@{k}"), *v)));
        // Bookkeeping too: the next evaluation writes it again (a full disk stops the run at its
        // checkpoint, with that error).
        let file = out.join("submission.json");
        if let Err(e) = crate::util::fs::write_json(&file, &submission) {
            eprintln!("warning: the ARC submission at step {} was not written to {}: {e:#}", st.step, file.display());
        }
        res.arc = Some(score);
    }
    let Some(log) = log else { return Ok(Some(res)) };
    let mut fields = vec![
        ("accuracy".to_string(), res.accuracy),
        ("exact_accuracy".to_string(), res.exact_accuracy),
        ("lm_loss".to_string(), res.lm_loss),
        ("q_halt_accuracy".to_string(), res.q_halt_accuracy),
        ("q_halt_loss".to_string(), res.q_halt_loss),
        ("steps".to_string(), res.steps),
        ("count".to_string(), res.count as f64),
        ("eval_seconds".to_string(), eval_seconds),
    ];
    fields.extend(arc_fields);
    let refs: Vec<(&str, f64)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    log.log(st.step, "eval", &refs)?;
    Ok(Some(res))
}
