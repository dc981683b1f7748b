//! Test-time scaling for Sudoku (`trm solve --views`): every view and its inverse round-trip and
//! keep solutions valid; answers are mapped back to the puzzle's frame; the check consults the
//! rules and the givens only; a view that checks ends the search; one view without checking is
//! the plain answer.

mod common;

use trm::data::sudoku::{SudokuView, generate};
use trm::data::sudoku_solver::{Grid, is_valid_solution, solves};
use trm::infer::views::{MIN_STEPS_FOR_A_FRESH_VIEW, SearchPlan, search, solve_sudoku, view_number, views_of};

type B = burn::backend::Flex;
type AD = burn::backend::Autodiff<B>;

fn tokens_of(g: &Grid) -> Vec<i64> {
    g.iter().map(|&d| d as i64 + 1).collect()
}

#[test]
fn views_round_trip_and_keep_solutions_valid() {
    let puzzles = generate(20, 30, 3, 0);
    for (k, p) in puzzles.iter().enumerate() {
        for v in views_of(12, k as u64) {
            assert_eq!(v.invert(&v.apply(&p.question)), p.question);
            assert_eq!(v.invert(&v.apply(&p.answer)), p.answer);
            assert!(is_valid_solution(&v.apply(&p.answer)), "{v:?}");
            assert!(solves(&v.apply(&p.question), &v.apply(&p.answer)));
        }
    }
    assert_eq!(SudokuView::IDENTITY.apply(&puzzles[0].question), puzzles[0].question);
    // Views differ from each other (the seed matters) but the first is always the puzzle itself.
    let (a, b) = (views_of(4, 1), views_of(4, 2));
    assert_eq!((a[0], b[0]), (SudokuView::IDENTITY, SudokuView::IDENTITY));
    assert_ne!(a[1], b[1]);
}

#[test]
fn a_view_that_checks_ends_the_search_in_the_puzzles_frame() {
    let p = &generate(1, 28, 7, 0)[0];
    let views = views_of(5, 3);
    // A stand-in for the model: view 3 finds the solution (in its own frame) at step 4, the
    // others answer with the givens only. The search sees tokens, never the solution.
    let mut calls = 0;
    let plan = SearchPlan { max_steps: 16, check: true, lifetime: None, drawn_latents: false };
    let r = search(&p.question, 5, 3, plan, |step, current, _| {
        assert_eq!(current, &views[..]);
        calls += 1;
        (0..views.len())
            .map(|k| {
                let g = if k == 3 && step >= 4 { views[k].apply(&p.answer) } else { views[k].apply(&p.question) };
                (tokens_of(&g), 0.0)
            })
            .collect()
    });
    assert!(r.checked && r.answer == p.answer, "mapped back to the puzzle's frame");
    assert_eq!((r.view, r.step, r.steps_run, calls, r.agreeing), (3, 4, 4, 4, 1), "stopped at the first checked step");
    // The trace is the chosen view's answer at every step, in the puzzle's frame.
    assert_eq!(r.trace.len(), 4);
    assert!(r.trace[..3].iter().all(|t| t.answer == p.question && t.views_checked == 0));
    assert_eq!((r.trace[3].answer, r.trace[3].views_checked), (p.answer, 1));
    // An answer that breaks a rule, or changes a given, never checks: the majority is returned.
    let mut wrong = p.answer;
    let i = (0..81).find(|&i| p.question[i] == 0).unwrap();
    wrong[i] = wrong[i] % 9 + 1;
    let plan = SearchPlan { max_steps: 3, check: true, lifetime: None, drawn_latents: false };
    let r = search(&p.question, 5, 3, plan, |_, _, _| views.iter().map(|v| (tokens_of(&v.apply(&wrong)), 1.0)).collect());
    assert!(!r.checked && r.answer == wrong && r.agreeing == 5 && r.steps_run == 3);
}

#[test]
fn a_view_that_ran_its_lifetime_without_checking_is_replaced_by_a_fresh_one() {
    let p = &generate(1, 28, 11, 0)[0];
    let seed = 4;
    // A stand-in for the model: every view answers with the givens only, except view number 6,
    // which finds the solution on its third step.
    let solver = view_number(6, seed);
    let mut started = [1usize; 4];
    let mut fresh_seen = vec![];
    let plan = SearchPlan { max_steps: 16, check: true, lifetime: Some(3), drawn_latents: false };
    let r = search(&p.question, 4, seed, plan, |step, current, fresh| {
        for &row in fresh {
            started[row] = step;
            fresh_seen.push((step, row));
        }
        (0..4)
            .map(|row| {
                let solved = current[row] == solver && step >= started[row] + 2;
                (tokens_of(&current[row].apply(if solved { &p.answer } else { &p.question })), 0.0)
            })
            .collect()
    });
    // Steps 1-3 answer the givens, so after its third step every row takes a fresh view (4..7)
    // at step 4; view 6 (row 2) solves at its third step, step 6.
    assert_eq!(fresh_seen, vec![(4, 0), (4, 1), (4, 2), (4, 3)]);
    assert!(r.checked && r.answer == p.answer, "mapped back with the fresh view's inverse");
    assert_eq!((r.view, r.step, r.views, r.views_tried, r.steps_run), (6, 6, 4, 8, 6));
    // The trace is the fresh view's own: its three steps, numbered as the search's steps.
    assert_eq!(r.trace.iter().map(|t| t.step).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert!(r.trace[..2].iter().all(|t| t.answer == p.question) && r.trace[2].answer == p.answer);

    // No fresh view once fewer than MIN_STEPS_FOR_A_FRESH_VIEW steps remain, and none without a
    // lifetime: the search then runs the first views to its end.
    for (max_steps, lifetime) in [(MIN_STEPS_FOR_A_FRESH_VIEW + 2, Some(3)), (16, None)] {
        let plan = SearchPlan { max_steps, check: true, lifetime, drawn_latents: false };
        let mut replaced = 0;
        let r = search(&p.question, 4, seed, plan, |_, current, fresh| {
            replaced += fresh.len();
            current.iter().map(|v| (tokens_of(&v.apply(&p.question)), 0.0)).collect()
        });
        assert_eq!((replaced, r.views_tried, r.checked, r.steps_run), (0, 4, false, max_steps), "{max_steps} steps, {lifetime:?}");
    }
}

/// A small untrained model at a puzzle's shape: enough to show that two paths compute the same.
fn small_model(
    seq_len: usize,
    vocab: usize,
    seed: u64,
) -> (trm::model::config::ModelConfig, trm::model::weights::Weights<B>, burn::tensor::Tensor<B, 2>) {
    let mut c = trm::bench::shape("sudoku-att").unwrap();
    (c.seq_len, c.vocab_size) = (seq_len, vocab);
    c.arch.hidden_size = 32;
    c.arch.num_heads = 2;
    c.arch.puzzle_emb_ndim = 32;
    c.arch.h_cycles = 1;
    c.arch.l_cycles = 1;
    let device = Default::default();
    let w = trm::model::weights::init::<B>(&c, &mut trm::util::rng::derive(seed, &[]), &device);
    let table = burn::tensor::Tensor::<B, 2>::zeros([c.num_puzzle_identifiers, c.arch.puzzle_emb_ndim], &device);
    (c, w, table)
}

#[test]
fn one_view_without_checking_is_the_plain_answer() {
    let (c, w, table) = small_model(81, 11, 1);
    let p = &generate(1, 30, 9, 0)[0];
    let input = trm::data::sudoku::tokens(&p.question);
    let plain = trm::infer::solve::solve_tokens(&c, &w, Some(&table), &input, 0, 3, false);
    let r = solve_sudoku(
        &c,
        &w,
        Some(&table),
        &p.question,
        1,
        0,
        SearchPlan { max_steps: 3, check: false, lifetime: None, drawn_latents: false },
    );
    let last: Grid = std::array::from_fn(|i| match plain.last().unwrap().tokens[i] {
        t @ 2..=10 => t - 1,
        _ => 0,
    });
    assert_eq!(r.answer, last);
    assert_eq!((r.views, r.steps_run), (1, 3));
    // Step by step too: the views trace of one view is the plain trace.
    assert_eq!(r.trace.len(), plain.len());
    for (t, s) in r.trace.iter().zip(&plain) {
        let g: Grid = std::array::from_fn(|i| match s.tokens[i] {
            t @ 2..=10 => t - 1,
            _ => 0,
        });
        assert_eq!(t.answer, g, "step {}", s.step);
        assert!((t.q_halt - s.q_halt).abs() < 1e-6, "step {}: q_halt {} vs {}", s.step, t.q_halt, s.q_halt);
    }
}

#[test]
fn maze_views_round_trip_keep_shortest_paths_and_one_view_is_plain() {
    use trm::data::dihedral::{inverse, transform};
    use trm::data::maze;
    // A 4x4 maze: S (0,0) along the top and down the right to G (3,3), 6 moves.
    let q = maze::parse("S   ###      ##G", "q").unwrap().1;
    let best = maze::shortest_len(4, &q).unwrap();
    assert_eq!(best, 6);
    for tid in 0..8u8 {
        let tq = transform(&q, 4, 4, tid);
        assert_eq!(inverse(&tq, 4, 4, tid), q);
        assert_eq!(maze::shortest_len(4, &tq), Some(best), "a view keeps the shortest length");
    }
    // One view without checking computes the plain answer.
    let (c, w, table) = small_model(16, 6, 2);
    let plain = trm::infer::solve::solve_tokens(&c, &w, Some(&table), &q, 0, 3, false);
    let r = trm::infer::views::solve_maze(&c, &w, Some(&table), &q, 4, 1, 3, false);
    assert_eq!(r.answer, plain.last().unwrap().tokens);
    let r = trm::infer::views::solve_maze(&c, &w, Some(&table), &q, 4, 8, 2, true);
    assert_eq!((r.views, r.answer.len()), (8, 16));
    assert_eq!(r.checked, maze::solves(4, &q, &r.answer), "checked means a shortest path");
}

/// `trm eval --views K` beside the plain evaluation: a model trained for a few steps on generated
/// puzzles (every one with a unique solution), through the CLI. Whatever it gets right passes the
/// check (a label is a valid solution), and whatever passes the check is right (the solution is
/// unique), so right and checked are equal; the compute adds up; misuse is refused.
#[test]
fn eval_reports_scaled_accuracy_beside_the_plain_one() {
    let (data, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::tiny_data(data.path());
    let ov: Vec<String> = ["max_steps=4", "epochs=4", "eval_interval=4", "eval_max_examples=8"].map(String::from).to_vec();
    trm::train::trainer::train::<AD>(&common::tiny_job(data.path(), run.path(), &ov, false), &Default::default()).unwrap();
    let eval = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(["eval", "--json", "--limit", "6", "--checkpoint"])
            .arg(run.path())
            .arg("--data")
            .arg(data.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let o = eval(&["--views", "3", "--view-steps", "5", "--seed", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &r["scaled"];
    assert_eq!((s["views"].as_u64(), s["max_steps"].as_u64(), s["count"].as_u64()), (Some(3), Some(5), Some(6)), "{s}");
    let right = (s["exact_accuracy"].as_f64().unwrap() * 6.0).round() as u64;
    assert_eq!(right, s["checked"].as_u64().unwrap(), "{s}");
    let (steps, view_steps) = (s["mean_steps"].as_f64().unwrap(), s["mean_view_steps"].as_f64().unwrap());
    assert!((1.0..=5.0).contains(&steps) && (view_steps - 3.0 * steps).abs() < 1e-9, "{s}");
    assert_eq!(r["count"].as_u64(), Some(6), "the plain evaluation beside it counts the same puzzles");
    // Without --views, no scaled block; --seed alone is refused (it would do nothing).
    let plain: serde_json::Value = serde_json::from_slice(&eval(&[]).stdout).unwrap();
    assert!(plain.get("scaled").is_none() && plain["exact_accuracy"] == r["exact_accuracy"]);
    for alone in [["--seed", "2"], ["--view-lifetime", "3"]] {
        let o = eval(&alone);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--views"), "{alone:?}");
    }
    // A lifetime that cannot end within the steps (a fresh view needs 4 steps left) would do nothing.
    let o = eval(&["--views", "3", "--view-steps", "5", "--view-lifetime", "2"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("give at most 1"), "{}", String::from_utf8_lossy(&o.stderr));
    // One view, never replaced in 4 steps: nothing to seed (refused before the plain evaluation
    // runs, which it used to finish first).
    let o = eval(&["--views", "1", "--view-steps", "4", "--seed", "5"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing is drawn at random"));
    // The same through the bundled model (no --checkpoint), which solves some of these puzzles:
    // right equals checked when neither is 0.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["eval", "--json", "--limit", "6", "--views", "3", "--view-steps", "5", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["scaled"].clone();
    let right = (s["exact_accuracy"].as_f64().unwrap() * 6.0).round() as u64;
    assert!(right > 0 && right == s["checked"].as_u64().unwrap(), "{s}");
}

/// `trm solve --sudoku` without a checkpoint: the bundled model, with its default test-time
/// scaling, solves an ordinary published puzzle (Wikipedia's example, 30 givens). The answer is
/// compared with the exact solver's; the search itself only checks rules and givens.
#[test]
fn the_bundled_model_solves_a_published_puzzle() {
    let (c, w, table) = trm::infer::bundled::load::<B>(&Default::default()).unwrap();
    let q = trm::data::sudoku_solver::parse_grid(trm::cli::demo::PUBLISHED).unwrap();
    let plan = SearchPlan::checked(trm::cli::solve::BUNDLED_STEPS, None, &c).unwrap();
    let r = solve_sudoku(&c, &w, table.as_ref(), &q, trm::cli::solve::BUNDLED_VIEWS, 0, plan);
    let truth = trm::data::sudoku_solver::solve(&q, 2);
    assert_eq!(truth.count, 1);
    assert!(r.checked, "not solved: {r:?}");
    assert_eq!(Some(r.answer), truth.solution);
}

/// `--drawn-latents`: a view started from a drawn latent differs from one started from the
/// model's L_init, the draw is reproducible, the other rows are untouched, and one view stays
/// the plain answer.
#[test]
fn drawn_latents_change_only_the_drawn_rows_and_one_view_stays_plain() {
    use trm::infer::model_run::ModelRun;
    let (c, w, table) = small_model(81, 11, 1);
    let p = &generate(1, 30, 9, 0)[0];
    let input: Vec<i32> = trm::data::sudoku::tokens(&p.question).iter().map(|&t| t as i32).collect();
    let run = |draw: Option<u64>| {
        let mut m = ModelRun::new(&c, &w, Some(&table), [input.clone(), input.clone()].concat(), vec![0, 0], 3);
        if let Some(seed) = draw {
            m.draw_latent(1, seed, 1);
        }
        let a = m.step();
        (a.tokens(0).to_vec(), a.tokens(1).to_vec())
    };
    let (plain, drawn, again, other) = (run(None), run(Some(5)), run(Some(5)), run(Some(6)));
    assert_eq!(drawn, again, "the draw is reproducible");
    assert_eq!(plain.0, drawn.0, "row 0 is untouched");
    assert_eq!(plain.0, plain.1, "without a draw both rows are the same puzzle and start");
    assert_ne!(plain.1, drawn.1, "the drawn row starts elsewhere");
    assert_ne!(drawn.1, other.1, "another seed draws another start");
    let plan = SearchPlan { max_steps: 3, check: false, lifetime: None, drawn_latents: true };
    let one = solve_sudoku(&c, &w, Some(&table), &p.question, 1, 0, plan);
    let plain_one = solve_sudoku(&c, &w, Some(&table), &p.question, 1, 0, SearchPlan { drawn_latents: false, ..plan });
    assert_eq!(one.answer, plain_one.answer);
}

/// A model that halts adaptively in evaluation (the baseline with `act_inference`) goes on
/// refining the same answer after its halting head fires, as every other model does: solving
/// once restarted such a row from the initial state at every step after its first halt, so its
/// last step showed a one-step answer. The trace equals the same weights' trace without
/// adaptive halting, and still marks where the model halts.
#[test]
fn a_trace_goes_on_refining_after_the_model_halts() {
    let (mut c, _, table) = small_model(81, 11, 3);
    c.arch.name = trm::model::architecture::Architecture::TransformersBaseline;
    (c.arch.h_layers, c.arch.l_layers, c.arch.l_cycles, c.arch.act_inference) = (2, 0, 0, true);
    c.validate().unwrap();
    let device = Default::default();
    let mut w = trm::model::weights::init::<B>(&c, &mut trm::util::rng::derive(3, &[]), &device);
    // q_halt 5 > q_continue -5: the baseline's rule halts at every step.
    w.q_head.bias = Some(burn::tensor::Tensor::<B, 1>::from_floats([5.0, -5.0], &device));
    let input = trm::data::sudoku::tokens(&generate(1, 30, 9, 0)[0].question);
    let adaptive = trm::infer::solve::solve_tokens(&c, &w, Some(&table), &input, 0, 4, false);
    c.arch.act_inference = false;
    let plain = trm::infer::solve::solve_tokens(&c, &w, Some(&table), &input, 0, 4, false);
    assert_eq!(adaptive.len(), 4);
    assert!(adaptive.iter().all(|s| s.halts), "the halting head fires at every step");
    for (a, p) in adaptive.iter().zip(&plain) {
        assert_eq!(a.tokens, p.tokens, "step {}", a.step);
    }
    // The steps do refine: a restarted run would repeat step 1's answer.
    assert!(adaptive.iter().skip(1).any(|s| s.tokens != adaptive[0].tokens), "the answer never changed after step 1");
}
