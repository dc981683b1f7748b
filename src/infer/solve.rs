//! Solving one new puzzle with a trained model, keeping the answer after every supervision step
//! so a person can watch it form (`trm solve`).

use super::model_run::ModelRun;
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use burn::prelude::*;
use serde::Serialize;

/// The state of the answer after one supervision step.
#[derive(Debug, Clone, Serialize)]
pub struct StepTrace {
    pub step: usize,
    /// Decoded tokens `[S]` (argmax of the logits).
    pub tokens: Vec<u8>,
    /// sigmoid(q_halt): the model's confidence that this answer is right.
    pub q_halt: f64,
    /// Cells that changed since the previous step.
    pub changed: usize,
    /// Whether the model's own halting rule stops here (q_halt > 0, or q_halt > q_continue for
    /// HRM, TRM "w/ ACT" and the baseline).
    pub halts: bool,
}

/// Runs up to `max_steps` supervision steps on one input; with `halt`, stops at the first step
/// where the model's own halting rule fires.
pub fn solve_tokens<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    input: &[u8],
    puzzle_id: i32,
    max_steps: usize,
    halt: bool,
) -> Vec<StepTrace> {
    let s = input.len();
    let mut run = ModelRun::new(cfg, w, table, input.iter().map(|&t| t as i32).collect(), vec![puzzle_id], max_steps);
    let mut trace: Vec<StepTrace> = Vec::new();
    for step in 1..=max_steps {
        let answers = run.step();
        let tokens: Vec<u8> = answers.tokens(0).iter().map(|&p| p as u8).collect();
        let (q, qc) = (answers.q_halt[0], answers.q_continue[0]);
        let halts = cfg.arch.halt_rule().fires(q, qc);
        let q = q as f64;
        let changed = trace.last().map_or(s, |prev| prev.tokens.iter().zip(&tokens).filter(|(a, b)| a != b).count());
        trace.push(StepTrace { step, tokens, q_halt: 1.0 / (1.0 + (-q).exp()), changed, halts });
        if halt && halts {
            break;
        }
    }
    trace
}
