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

use super::model_run::ModelRun;
use crate::data::sudoku::{SudokuView, tokens};
use crate::data::sudoku_solver::{Grid, solves};
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use burn::prelude::*;
use serde::Serialize;

/// What the views found. `A` is the answer in the puzzle's frame: a Sudoku grid (0 where a cell
/// is not a digit) or a maze's tokens.
#[derive(Debug, Clone, Serialize)]
pub struct ViewsResult<A> {
    #[serde(skip)]
    pub answer: A,
    /// Whether it checks (Sudoku: every rule and every given; maze: a shortest S-G path).
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
    /// How the answer formed: for every step run, the chosen view's answer (in the puzzle's
    /// frame) and its sigmoid(q_halt), and how many views' answers checked at that step.
    #[serde(skip)]
    pub trace: Vec<TraceStep<A>>,
}

/// One supervision step of the chosen view (`ViewsResult::trace`).
#[derive(Debug, Clone)]
pub struct TraceStep<A> {
    pub answer: A,
    pub q_halt: f64,
    pub views_checked: usize,
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

/// The search over steps, for any puzzle kind: `step(n)` returns, for supervision step n, every
/// view's answer already mapped back to the puzzle's frame, and its q_halt logit; `checks` says
/// whether an answer is right by the puzzle's rules alone. Stops at the first step where one
/// checks (with `check`); else the majority at the last step.
pub fn search_views<A: PartialEq + Clone>(
    max_steps: usize,
    check: bool,
    mut step: impl FnMut(usize) -> Vec<(A, f32)>,
    checks: impl Fn(&A) -> bool,
) -> ViewsResult<A> {
    // Every step's answers, and how many checked, for the chosen view's trace.
    let mut history: Vec<(Vec<(usize, A, f64)>, usize)> = vec![];
    let trace_of = |history: Vec<(Vec<(usize, A, f64)>, usize)>, view: usize| -> Vec<TraceStep<A>> {
        history
            .into_iter()
            .map(|(mut all, views_checked)| {
                let (_, answer, q_halt) = all.swap_remove(view);
                TraceStep { answer, q_halt, views_checked }
            })
            .collect()
    };
    for k in 1..=max_steps {
        let last: Vec<(usize, A, f64)> =
            step(k).into_iter().enumerate().map(|(v, (a, q))| (v, a, 1.0 / (1.0 + (-(q as f64)).exp()))).collect();
        let ok: Vec<(usize, A, f64)> = if check { last.iter().filter(|(_, a, _)| checks(a)).cloned().collect() } else { vec![] };
        history.push((last, ok.len()));
        if let Some((i, agree)) = majority(&ok) {
            let (view, answer, q_halt) = ok[i].clone();
            let views = history[0].0.len();
            let trace = trace_of(history, view);
            return ViewsResult { answer, checked: true, view, step: k, views, steps_run: k, agreeing: agree, q_halt, trace };
        }
    }
    let last = &history.last().expect("at least one step").0;
    let (i, agree) = majority(last).expect("at least one view");
    let (view, answer, q_halt) = last[i].clone();
    let checked = checks(&answer);
    let views = last.len();
    let trace = trace_of(history, view);
    ViewsResult { answer, checked, view, step: max_steps, views, steps_run: max_steps, agreeing: agree, q_halt, trace }
}

/// The Sudoku search: `step(n)` returns every view's answer tokens in the view's frame; they are
/// mapped back with the view's inverse and checked against the rules and the givens only.
pub fn search(
    puzzle: &Grid,
    views: &[SudokuView],
    max_steps: usize,
    check: bool,
    mut step: impl FnMut(usize) -> Vec<(Vec<i64>, f32)>,
) -> ViewsResult<Grid> {
    let back = |k: usize| -> Vec<(Grid, f32)> {
        step(k).into_iter().enumerate().map(|(v, (tokens, q))| (views[v].invert(&grid_of(&tokens)), q)).collect()
    };
    search_views(max_steps, check, back, |a| solves(puzzle, a))
}

/// Solves `puzzle` with `views` views (`views_of`) for up to `max_steps` supervision steps of the
/// model, all views in one batch. With `check` off nothing stops early and the answer is the
/// majority at the last step (with one view: exactly the plain answer of `solve::solve_tokens`).
pub fn solve_sudoku<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    puzzle: &Grid,
    views: usize,
    max_steps: usize,
    seed: u64,
    check: bool,
) -> ViewsResult<Grid> {
    let all = views_of(views, seed);
    let views = all.len();
    let inputs: Vec<i32> = all.iter().flat_map(|v| tokens(&v.apply(puzzle)).map(|t| t as i32)).collect();
    // No labels: the model never sees a solution, and neither does the check.
    let mut run = ModelRun::new(cfg, w, table, inputs, vec![0; views], max_steps);
    search(puzzle, &all, max_steps, check, |_| {
        let a = run.step();
        (0..views).map(|k| (a.tokens(k).to_vec(), a.q_halt[k])).collect()
    })
}

/// Test-time scaling for a maze: up to 8 views (the dihedral transforms; view 0 the maze itself),
/// one batch, answers mapped back with the inverse transform and checked as a shortest S-G path
/// through the maze's open cells (`maze::solves`); stops at the first step where one checks.
pub fn solve_maze<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    question: &[u8],
    side: usize,
    views: usize,
    max_steps: usize,
    check: bool,
) -> ViewsResult<Vec<u8>> {
    use crate::data::dihedral::{inverse, transform};
    let n = views.clamp(1, 8);
    let inputs: Vec<i32> = (0..n as u8).flat_map(|tid| transform(question, side, side, tid)).map(|t| t as i32).collect();
    let mut run = ModelRun::new(cfg, w, table, inputs, vec![0; n], max_steps);
    let step = |_: usize| -> Vec<(Vec<u8>, f32)> {
        let a = run.step();
        (0..n)
            .map(|k| {
                let tokens: Vec<u8> = a.tokens(k).iter().map(|&t| t.clamp(0, 255) as u8).collect();
                (inverse(&tokens, side, side, k as u8), a.q_halt[k])
            })
            .collect()
    };
    search_views(max_steps, check, step, |a| crate::data::maze::solves(side, question, a))
}
