//! Test-time scaling for Sudoku: K validity-preserving views of one puzzle (view 0 is the puzzle
//! itself) run side by side as one batch for up to N supervision steps. After every step each
//! view's answer is mapped back to the puzzle's frame and checked against the rules and the
//! givens (never against a solution); the first step at which some answer checks ends the
//! search. The result is the checked answer (the most frequent one among those that check at
//! that step, q_halt breaking ties); when nothing checks by step N, the majority of the views'
//! final answers.
//!
//! A checked answer is a valid completion of the givens: for a puzzle with one solution, the
//! solution.

use crate::data::loader::{Batch, IGNORE_LABEL};
use crate::data::sudoku::{SudokuView, tokens};
use crate::data::sudoku_solver::{Grid, solves};
use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::model::layers::Rope;
use crate::model::weights::Weights;
use crate::train::step::{eval_forward, to_host_f32};
use burn::prelude::*;
use serde::Serialize;

/// What the views found.
#[derive(Debug, Clone, Serialize)]
pub struct ViewsResult {
    /// The chosen answer in the puzzle's frame (0 where a cell is not a digit).
    #[serde(skip)]
    pub answer: Grid,
    /// Whether it satisfies every rule and keeps every given.
    pub checked: bool,
    /// The view that gave it (0 = the puzzle as typed) and the step it was read at.
    pub view: usize,
    pub step: usize,
    /// Views run and supervision steps run: the compute used is views x steps_run.
    pub views: usize,
    pub steps_run: usize,
    /// Views whose answer (at the deciding step) equals the chosen one.
    pub agreeing: usize,
    /// sigmoid(q_halt) of the chosen view at that step.
    pub q_halt: f64,
}

/// An answer's tokens (digit d = token d + 1) as a grid; anything else becomes 0.
fn grid_of(tokens: &[i64]) -> Grid {
    std::array::from_fn(|i| match tokens[i] {
        t @ 2..=10 => (t - 1) as u8,
        _ => 0,
    })
}

/// The most frequent of `answers` (index, count), ties to the higher q.
fn majority<T: PartialEq>(answers: &[(usize, T, f64)]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize, f64)> = None;
    for (i, (_, a, q)) in answers.iter().enumerate() {
        let n = answers.iter().filter(|(_, b, _)| b == a).count();
        if best.is_none_or(|(_, bn, bq)| n > bn || (n == bn && *q > bq)) {
            best = Some((i, n, *q));
        }
    }
    best.map(|(i, n, _)| (i, n))
}

/// The views of a search: view 0 the identity, the others drawn from `seed`.
pub fn views_of(n: usize, seed: u64) -> Vec<SudokuView> {
    (0..n.max(1))
        .map(|k| if k == 0 { SudokuView::IDENTITY } else { SudokuView::random(&mut crate::util::rng::derive(seed, &[13, k as u64])) })
        .collect()
}

/// The search over steps, whatever produces the answers: `step(n)` returns, for supervision step
/// n, every view's answer tokens (in the view's frame) and q_halt logit. Only the puzzle's givens
/// and the rules are consulted.
pub fn search(
    puzzle: &Grid,
    views: &[SudokuView],
    max_steps: usize,
    check: bool,
    mut step: impl FnMut(usize) -> Vec<(Vec<i64>, f32)>,
) -> ViewsResult {
    let n = views.len();
    let mut last: Vec<(usize, Grid, f64)> = vec![];
    for k in 1..=max_steps {
        // Every view's answer, back in the puzzle's frame.
        last = step(k)
            .into_iter()
            .enumerate()
            .map(|(v, (tokens, q))| (v, views[v].invert(&grid_of(&tokens)), 1.0 / (1.0 + (-(q as f64)).exp())))
            .collect();
        if check {
            let ok: Vec<(usize, Grid, f64)> = last.iter().filter(|(_, a, _)| solves(puzzle, a)).cloned().collect();
            if let Some((i, agree)) = majority(&ok) {
                let (view, answer, q_halt) = ok[i];
                return ViewsResult { answer, checked: true, view, step: k, views: n, steps_run: k, agreeing: agree, q_halt };
            }
        }
    }
    let (i, agree) = majority(&last).expect("at least one view and one step");
    let (view, answer, q_halt) = last[i];
    ViewsResult { answer, checked: solves(puzzle, &answer), view, step: max_steps, views: n, steps_run: max_steps, agreeing: agree, q_halt }
}

/// Solves `puzzle` with `views` views (`views_of`) for up to `max_steps` supervision steps of the
/// model, all views in one batch. With `check` off nothing stops early and the answer is the
/// majority at the last step (with one view: exactly the plain answer of `solve::solve_tokens`).
#[allow(clippy::too_many_arguments)]
pub fn solve_sudoku<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    puzzle: &Grid,
    views: usize,
    max_steps: usize,
    seed: u64,
    check: bool,
) -> ViewsResult {
    let all = views_of(views, seed);
    let views = all.len();
    let device = w.device();
    let rope = Rope::<B>::new(cfg, &device);
    let s = 81;
    let inputs: Vec<i32> = all.iter().flat_map(|v| tokens(&v.apply(puzzle)).map(|t| t as i32)).collect();
    // No labels: the model never sees a solution, and neither does the check.
    let batch = Batch {
        set: 0,
        batch_size: views,
        seq_len: s,
        inputs,
        labels: vec![IGNORE_LABEL; views * s],
        puzzle_identifiers: vec![0; views],
        global_effective: views,
    };
    let mut carry = Carry::<B>::new(cfg, views, &device);
    search(puzzle, &all, max_steps, check, |_| {
        let (loss, out) = eval_forward(cfg, w, table, &mut carry, &batch, &rope, max_steps);
        let q = to_host_f32(&out.q_halt);
        (0..views).map(|k| (loss.preds[k * s..(k + 1) * s].to_vec(), q[k])).collect()
    })
}

/// What the maze views found (tokens in the maze's frame).
#[derive(Debug, Clone, Serialize)]
pub struct MazeViewsResult {
    pub answer: Vec<u8>,
    /// A valid path from S to G, and a shortest one.
    pub checked: bool,
    pub view: usize,
    pub step: usize,
    pub views: usize,
    pub steps_run: usize,
    pub agreeing: usize,
    pub q_halt: f64,
}

/// Test-time scaling for a maze: up to 8 views (the dihedral transforms; view 0 the maze itself),
/// one batch, answers mapped back with the inverse transform and checked as a shortest S-G path
/// through the maze's open cells (`maze::solves`); stops at the first step where one checks.
#[allow(clippy::too_many_arguments)]
pub fn solve_maze<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    question: &[u8],
    side: usize,
    views: usize,
    max_steps: usize,
    check: bool,
) -> MazeViewsResult {
    use crate::data::dihedral::{inverse, transform};
    let n = views.clamp(1, 8);
    let s = side * side;
    let inputs: Vec<i32> = (0..n as u8).flat_map(|tid| transform(question, side, side, tid)).map(|t| t as i32).collect();
    let batch = Batch {
        set: 0,
        batch_size: n,
        seq_len: s,
        inputs,
        labels: vec![IGNORE_LABEL; n * s],
        puzzle_identifiers: vec![0; n],
        global_effective: n,
    };
    let device = w.device();
    let rope = Rope::<B>::new(cfg, &device);
    let mut carry = Carry::<B>::new(cfg, n, &device);
    let mut last: Vec<(usize, Vec<u8>, f64)> = vec![];
    for step in 1..=max_steps {
        let (loss, out) = eval_forward(cfg, w, table, &mut carry, &batch, &rope, max_steps);
        let q = to_host_f32(&out.q_halt);
        last = (0..n)
            .map(|k| {
                let tokens: Vec<u8> = loss.preds[k * s..(k + 1) * s].iter().map(|&t| t.clamp(0, 255) as u8).collect();
                (k, inverse(&tokens, side, side, k as u8), 1.0 / (1.0 + (-(q[k] as f64)).exp()))
            })
            .collect();
        if check {
            let ok: Vec<(usize, Vec<u8>, f64)> =
                last.iter().filter(|(_, a, _)| crate::data::maze::solves(side, question, a)).cloned().collect();
            if let Some((i, agree)) = majority(&ok) {
                let (view, answer, q_halt) = ok[i].clone();
                return MazeViewsResult { answer, checked: true, view, step, views: n, steps_run: step, agreeing: agree, q_halt };
            }
        }
    }
    let (i, agree) = majority(&last).expect("at least one view");
    let (view, answer, q_halt) = last[i].clone();
    let checked = crate::data::maze::solves(side, question, &answer);
    MazeViewsResult { answer, checked, view, step: max_steps, views: n, steps_run: max_steps, agreeing: agree, q_halt }
}
