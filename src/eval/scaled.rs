//! Test-time-scaled accuracy (`trm eval --views K`): every test puzzle of a Sudoku or maze data
//! set is solved as `trm solve --views` solves it, then compared with its label. That means K
//! validity-preserving views, answers mapped back and checked against the rules and the givens
//! (never against the labels), and a stop at the first step where an answer checks. It is
//! reported beside the reference's plain accuracy, with the compute each used.

use crate::data::format::Split;
use crate::data::kind::PuzzleKind;
use crate::data::sudoku::grid_of_tokens;
use crate::infer::views::{SearchPlan, solve_maze, solve_sudoku};
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScaledResult {
    /// Views per puzzle and the most supervision steps each may run.
    pub views: usize,
    pub max_steps: usize,
    /// Puzzles evaluated.
    pub count: usize,
    /// Fraction whose chosen answer equals the label.
    pub exact_accuracy: f64,
    pub exact_accuracy_ci95: (f64, f64),
    /// Puzzles whose chosen answer passed the check (right or wrong: a check is not a label).
    pub checked: usize,
    /// Mean supervision steps run per puzzle (its views run together and stop together).
    pub mean_steps: f64,
    /// Mean model evaluations per puzzle, views x steps run (the plain evaluation: 1 x its steps).
    pub mean_view_steps: f64,
    /// Mean distinct views tried per puzzle: the K rows plus the fresh views that replaced
    /// spent ones (Sudoku with a view lifetime).
    pub mean_views_tried: f64,
    /// Steps a view ran without checking before a fresh one replaced it (None: never).
    pub view_lifetime: Option<usize>,
    /// Views after the first started from drawn latents (`--drawn-latents`).
    pub drawn_latents: bool,
    /// Wall time of the whole scaled evaluation.
    pub seconds: f64,
}

/// The kind of puzzle `model` solves, where `views` views of it can be searched (Sudoku, a maze of
/// at most 8 views); refused otherwise. `trm eval` asks before its plain evaluation runs.
pub fn scaled_kind(model: &ModelConfig, views: usize) -> Result<PuzzleKind> {
    let s = model.seq_len;
    let kind = match PuzzleKind::of(s, model.vocab_size) {
        k @ (PuzzleKind::Sudoku | PuzzleKind::Maze { .. }) => k,
        _ => bail!(
            "--views: test-time scaling is for Sudoku (vocabulary 11, 81 cells) and maze data (vocabulary 6, a square grid); \
             this model has vocabulary {} and {s} cells (ARC evaluation already votes over its augmentations)",
            model.vocab_size
        ),
    };
    if let PuzzleKind::Maze { .. } = kind {
        anyhow::ensure!(views <= 8, "--views {views}: a maze has 8 views (its dihedral transforms)");
    }
    Ok(kind)
}

/// Solves up to `limit` test puzzles with `views` views and up to `max_steps` steps each.
pub fn evaluate_scaled<B: Backend>(
    model: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    test: &Split,
    views: usize,
    seed: u64,
    plan: SearchPlan,
    limit: Option<usize>,
) -> Result<ScaledResult> {
    let max_steps = plan.max_steps;
    let s = model.seq_len;
    let kind = scaled_kind(model, views)?;
    let t0 = std::time::Instant::now();
    let (mut count, mut right, mut checked, mut steps, mut view_steps, mut tried) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    'sets: for (_, set) in &test.sets {
        for e in 0..set.num_examples() {
            if limit.is_some_and(|l| count >= l) {
                break 'sets;
            }
            let (input, label) = (&set.inputs[e * s..(e + 1) * s], &set.labels[e * s..(e + 1) * s]);
            let (ok, did_check, run, v) = match kind {
                PuzzleKind::Sudoku => {
                    let r = solve_sudoku(model, w, table, &grid_of_tokens(input), views, seed, plan);
                    tried += r.views_tried;
                    (r.answer == grid_of_tokens(label), r.checked, r.steps_run, r.views)
                }
                PuzzleKind::Maze { side } => {
                    let r = solve_maze(model, w, table, input, side, views, max_steps, true);
                    tried += r.views_tried;
                    (r.answer == label, r.checked, r.steps_run, r.views)
                }
                PuzzleKind::Arc | PuzzleKind::Other => unreachable!("refused before the first puzzle"),
            };
            count += 1;
            right += ok as usize;
            checked += did_check as usize;
            steps += run;
            view_steps += run * v;
        }
    }
    anyhow::ensure!(count > 0, "--views: the test split has no examples");
    let n = count as f64;
    Ok(ScaledResult {
        views,
        max_steps,
        count,
        exact_accuracy: right as f64 / n,
        exact_accuracy_ci95: super::interval::wilson95(right as f64, n),
        checked,
        mean_steps: steps as f64 / n,
        mean_view_steps: view_steps as f64 / n,
        mean_views_tried: tried as f64 / n,
        view_lifetime: if kind.has_fresh_views() { plan.lifetime } else { None },
        drawn_latents: plan.drawn_latents,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
