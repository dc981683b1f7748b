//! Test-time scaling for Sudoku: K validity-preserving views of one puzzle (view 0 is the puzzle
//! itself) run side by side as one batch for up to N supervision steps. After every step each
//! view's answer is mapped back to the puzzle's frame and checked against the rules and the
//! givens (never against a solution); the first step at which some answer checks ends the
//! search. The result is the checked answer (the most frequent one among those that check at
//! that step, q_halt breaking ties); when nothing checks by step N, the majority of the views'
//! final answers.
//!
//! A view that has run `lifetime` steps without an answer that checks is replaced by a fresh
//! view of the puzzle, which starts from the beginning in the same batch row, while at least
//! `MIN_STEPS_FOR_A_FRESH_VIEW` steps remain. The batch stays K rows wide, so the compute (views
//! x steps) is the same, spent on more distinct views: measured on Sudoku-Extreme, a view gains
//! less from steps past the model's `halt_max_steps` than a fresh view does (docs/benchmarks.md).
//!
//! A checked answer is a valid completion of the givens: for a puzzle with one solution, the
//! solution.

use super::model_run::ModelRun;
use crate::data::sudoku::{SudokuView, grid_of_tokens, tokens};
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
    /// The view that gave it (its number in `view_number`'s sequence; 0 = the puzzle as typed)
    /// and the step it was read at.
    pub view: usize,
    pub step: usize,
    /// Views run side by side (the batch's rows) and supervision steps run: the compute used is
    /// views x steps_run.
    pub views: usize,
    pub steps_run: usize,
    /// Distinct views tried: `views` plus the fresh views that replaced spent ones.
    pub views_tried: usize,
    /// Views whose answer (at the deciding step) equals the chosen one.
    pub agreeing: usize,
    /// sigmoid(q_halt) of the chosen view at that step.
    pub q_halt: f64,
    /// How the answer formed: for every step the chosen view ran, its answer (in the puzzle's
    /// frame) and its sigmoid(q_halt), and how many views' answers checked at that step.
    #[serde(skip)]
    pub trace: Vec<TraceStep<A>>,
}

/// One supervision step of the chosen view (`ViewsResult::trace`).
#[derive(Debug, Clone)]
pub struct TraceStep<A> {
    /// The supervision step of the search (a fresh view's first step is not the search's first).
    pub step: usize,
    pub answer: A,
    pub q_halt: f64,
    pub views_checked: usize,
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

/// View number `k` of a search: view 0 the identity, the others drawn from `seed`.
pub fn view_number(k: usize, seed: u64) -> SudokuView {
    if k == 0 { SudokuView::IDENTITY } else { SudokuView::random(&mut crate::util::rng::derive(seed, &[13, k as u64])) }
}

/// The first `n` views of a search (`view_number` 0..n).
pub fn views_of(n: usize, seed: u64) -> Vec<SudokuView> {
    (0..n.max(1)).map(|k| view_number(k, seed)).collect()
}

/// A fresh view is started only while at least this many steps remain: the models here need
/// several steps to reach an answer.
pub const MIN_STEPS_FOR_A_FRESH_VIEW: usize = 4;

/// How a search runs: its steps, whether answers are checked, and when a view is replaced by a
/// fresh one (`lifetime`: the steps a view runs without checking; `None`: never, as for a maze,
/// whose 8 views are all there are).
#[derive(Debug, Clone, Copy)]
pub struct SearchPlan {
    pub max_steps: usize,
    pub check: bool,
    pub lifetime: Option<usize>,
    /// Sudoku: views after the first start their latent z from a truncated-normal draw of their
    /// own instead of the model's `L_init` (as winner-take-all training starts chains 1..K).
    pub drawn_latents: bool,
}

impl SearchPlan {
    /// The search `trm solve` and `trm eval` run: answers checked, up to `max_steps` steps, and
    /// `--view-lifetime` (`lifetime`) as given, by default the model's own `halt_max_steps` (the
    /// steps it was trained to answer in); 0 never replaces a view. A lifetime given that could
    /// never end within `max_steps` (a fresh view starts only while `MIN_STEPS_FOR_A_FRESH_VIEW`
    /// steps remain) is refused: it would be accepted and do nothing.
    pub fn checked(max_steps: usize, lifetime: Option<usize>, model: &ModelConfig) -> anyhow::Result<Self> {
        let latest = max_steps.saturating_sub(MIN_STEPS_FOR_A_FRESH_VIEW);
        if let Some(life) = lifetime.filter(|&l| l > latest) {
            anyhow::bail!(
                "--view-lifetime {life} never replaces a view in {max_steps} steps: a fresh view starts only while \
                 {MIN_STEPS_FOR_A_FRESH_VIEW} steps remain, so {}",
                if latest == 0 {
                    "no lifetime can (give more steps, or drop the flag)".to_string()
                } else {
                    format!("give at most {latest} (or more steps)")
                }
            );
        }
        let lifetime = match lifetime.unwrap_or(model.arch.halt_max_steps) {
            0 => None,
            p => Some(p),
        };
        Ok(SearchPlan { max_steps, check: true, lifetime, drawn_latents: false })
    }

    /// Whether a search of `views` Sudoku views draws anything at random: a transformed view (every
    /// view but the first, the puzzle itself), or a fresh view replacing a spent one. Where it
    /// draws nothing, `--seed` and `--drawn-latents` would do nothing, and `refuse_idle_draws`
    /// says so.
    pub fn draws(&self, views: usize) -> bool {
        views > 1 || self.lifetime.is_some_and(|l| l <= self.max_steps.saturating_sub(MIN_STEPS_FOR_A_FRESH_VIEW))
    }

    /// Refuses `--seed` and `--drawn-latents` (`seed_given`, `self.drawn_latents`) with a search of
    /// `views` views that draws nothing.
    pub fn refuse_idle_draws(&self, views: usize, seed_given: bool) -> anyhow::Result<()> {
        if self.draws(views) || !(seed_given || self.drawn_latents) {
            return Ok(());
        }
        anyhow::bail!(
            "{}: with --views {views} the one view is the puzzle itself and none is replaced within {} steps, so nothing \
             is drawn at random; give --views 2 or more",
            match (seed_given, self.drawn_latents) {
                (true, true) => "--seed and --drawn-latents",
                (true, false) => "--seed",
                _ => "--drawn-latents",
            },
            self.max_steps
        )
    }

    /// The same plan with views starting from drawn latents (`--drawn-latents`); refused for a
    /// model that carries no latent z.
    pub fn drawing_latents(self, on: bool, model: &ModelConfig) -> anyhow::Result<Self> {
        let has_z = crate::model::schedule::Schedule::of(&model.arch).states.iter().any(|s| s.name == "z");
        anyhow::ensure!(!on || has_z, "--drawn-latents: arch={} carries no latent z to draw", model.arch.name.row().name);
        Ok(SearchPlan { drawn_latents: on, ..self })
    }
}

/// One batch row of a search: the view it runs and the step that view started at.
#[derive(Debug, Clone)]
struct Row {
    view: usize,
    start: usize,
}

/// The search over steps, for any puzzle kind: `step(n, fresh)` first starts each `(row, view
/// number)` of `fresh` over on that view, then runs supervision step n and returns every row's
/// answer already mapped back to the puzzle's frame, and its q_halt logit; `checks` says whether
/// an answer is right by the puzzle's rules alone. Stops at the first step where one checks
/// (with `plan.check`); else the majority at the last step.
pub fn search_views<A: PartialEq + Clone>(
    plan: SearchPlan,
    mut step: impl FnMut(usize, &[(usize, usize)]) -> Vec<(A, f32)>,
    checks: impl Fn(&A) -> bool,
) -> ViewsResult<A> {
    // Every step's answers per row, and how many checked, for the chosen view's trace.
    let mut history: Vec<(Vec<(A, f64)>, usize)> = vec![];
    let mut rows: Vec<Row> = vec![];
    let mut fresh: Vec<(usize, usize)> = vec![];
    let mut tried = 0;
    for k in 1..=plan.max_steps {
        let last: Vec<(A, f64)> = step(k, &fresh).into_iter().map(|(a, q)| (a, 1.0 / (1.0 + (-(q as f64)).exp()))).collect();
        if rows.is_empty() {
            rows = (0..last.len()).map(|v| Row { view: v, start: 1 }).collect();
            tried = rows.len();
        }
        for &(r, view) in &fresh {
            rows[r] = Row { view, start: k };
        }
        let ok: Vec<(usize, A, f64)> = if plan.check {
            last.iter().enumerate().filter(|(_, (a, _))| checks(a)).map(|(r, (a, q))| (r, a.clone(), *q)).collect()
        } else {
            vec![]
        };
        history.push((last, ok.len()));
        if let Some((i, agree)) = majority(&ok) {
            let (r, answer, q_halt) = ok[i].clone();
            return finish(history, &rows, r, answer, true, k, agree, q_halt, tried);
        }
        fresh.clear();
        if let Some(life) = plan.lifetime.filter(|_| plan.max_steps - k >= MIN_STEPS_FOR_A_FRESH_VIEW) {
            for (r, row) in rows.iter().enumerate() {
                if k + 1 - row.start >= life.max(1) {
                    fresh.push((r, tried));
                    tried += 1;
                }
            }
        }
    }
    let last: Vec<(usize, A, f64)> =
        history.last().expect("at least one step").0.iter().enumerate().map(|(r, (a, q))| (r, a.clone(), *q)).collect();
    let (i, agree) = majority(&last).expect("at least one view");
    let (r, answer, q_halt) = last[i].clone();
    let checked = checks(&answer);
    finish(history, &rows, r, answer, checked, plan.max_steps, agree, q_halt, tried)
}

/// The result read from row `r` at step `step`, with the trace of the view that row ran.
fn finish<A: Clone>(
    history: Vec<(Vec<(A, f64)>, usize)>,
    rows: &[Row],
    r: usize,
    answer: A,
    checked: bool,
    step: usize,
    agreeing: usize,
    q_halt: f64,
    views_tried: usize,
) -> ViewsResult<A> {
    let start = rows[r].start;
    let trace = history
        .into_iter()
        .enumerate()
        .skip(start - 1)
        .map(|(i, (mut all, views_checked))| {
            let (answer, q_halt) = all.swap_remove(r);
            TraceStep { step: i + 1, answer, q_halt, views_checked }
        })
        .collect();
    ViewsResult { answer, checked, view: rows[r].view, step, views: rows.len(), steps_run: step, views_tried, agreeing, q_halt, trace }
}

/// The Sudoku search over `views` rows: `step(n, views, fresh)` gets every row's current view
/// and the rows that start over on a fresh view before step n, and returns every row's answer
/// tokens in its view's frame; they are mapped back with the view's inverse and checked against
/// the rules and the givens only.
pub fn search(
    puzzle: &Grid,
    views: usize,
    seed: u64,
    plan: SearchPlan,
    mut step: impl FnMut(usize, &[SudokuView], &[usize]) -> Vec<(Vec<i64>, f32)>,
) -> ViewsResult<Grid> {
    let mut current = views_of(views, seed);
    let rows_step = |k: usize, fresh: &[(usize, usize)]| -> Vec<(Grid, f32)> {
        for &(r, v) in fresh {
            current[r] = view_number(v, seed);
        }
        let restarted: Vec<usize> = fresh.iter().map(|&(r, _)| r).collect();
        let answers = step(k, &current, &restarted);
        answers.into_iter().enumerate().map(|(r, (tokens, q))| (current[r].invert(&grid_of_tokens(&tokens)), q)).collect()
    };
    search_views(plan, rows_step, |a| solves(puzzle, a))
}

/// Solves `puzzle` with `views` views side by side (`views_of`, one batch) for up to
/// `plan.max_steps` supervision steps of the model, spent views replaced per `plan.lifetime`.
/// With checking off nothing stops early and the answer is the majority at the last step (with
/// one view: exactly the plain answer of `solve::solve_tokens`).
pub fn solve_sudoku<B: Backend>(
    cfg: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    puzzle: &Grid,
    views: usize,
    seed: u64,
    plan: SearchPlan,
) -> ViewsResult<Grid> {
    let first = views_of(views, seed);
    let n = first.len();
    let input = |v: &SudokuView| -> Vec<i32> { tokens(&v.apply(puzzle)).iter().map(|&t| t as i32).collect() };
    let inputs: Vec<i32> = first.iter().flat_map(input).collect();
    // No labels: the model never sees a solution, and neither does the check.
    let mut run = ModelRun::new(cfg, w, table, inputs, vec![0; n], plan.max_steps);
    // With drawn latents, every view but the first starts z from its own draw (view number v).
    let mut tried = n as u64;
    if plan.drawn_latents {
        for r in 1..n {
            run.draw_latent(r, seed, r as u64);
        }
    }
    search(puzzle, n, seed, plan, |_, current, fresh| {
        for &r in fresh {
            run.start_over(r, &input(&current[r]));
            if plan.drawn_latents {
                run.draw_latent(r, seed, tried);
            }
            tried += 1;
        }
        let a = run.step();
        (0..n).map(|k| (a.tokens(k).to_vec(), a.q_halt[k])).collect()
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
    let step = |_: usize, _: &[(usize, usize)]| -> Vec<(Vec<u8>, f32)> {
        let a = run.step();
        (0..n)
            .map(|k| {
                let tokens: Vec<u8> = a.tokens(k).iter().map(|&t| t.clamp(0, 255) as u8).collect();
                (inverse(&tokens, side, side, k as u8), a.q_halt[k])
            })
            .collect()
    };
    // A maze has no views beyond its 8, so none is ever replaced.
    let plan = SearchPlan { max_steps, check, lifetime: None, drawn_latents: false };
    search_views(plan, step, |a| crate::data::maze::solves(side, question, a))
}
