//! ARC scoring: undo each augmentation of a prediction, vote across the augmented copies of a test
//! input, rank the candidates, and report pass@k and a Kaggle submission.
//!
//! Follows the reference evaluator (reference-spec §11.1): the predicted EOS placement decides the
//! output size (`from_canvas`), the inverse dihedral transform then the inverse colour map restore
//! the original frame, candidates are ranked by vote count with the mean Q-halt probability only
//! breaking ties, and a task with several test inputs earns fractional credit.
//! One deliberate difference: a prediction with no colour in its top-left cell (an empty grid) is
//! not a candidate, since it can never be right; the reference stores it as an empty grid.

use crate::data::arc_task::{Grid, Task};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Map, Value, json};

pub use crate::store::arc_votes::{Candidate, Votes};
use crate::store::config::ArcEvaluatorArgs;

/// pass@k over a task list.
#[derive(Debug, Clone, Serialize)]
pub struct ArcScore {
    pub tasks: usize,
    /// Tasks with a test input the evaluation never ran. A limited evaluation (`--limit`,
    /// `eval_max_examples`) leaves them out of the score; a full one scores those inputs as
    /// wrong, and its test split and `test_puzzles.json` do not match (`mismatch`).
    pub tasks_not_evaluated: usize,
    /// The first of them, in `test_puzzles.json`'s order.
    pub first_not_evaluated: Option<String>,
    /// Inputs evaluated that are no test input of any task: not scored.
    pub stray_inputs: usize,
    /// The evaluation was limited to part of the test split.
    pub limited: bool,
    pub test_inputs: usize,
    /// Test inputs that received at least one (non-empty) prediction.
    pub answered_inputs: usize,
    /// (k, score): mean over tasks of the fraction of the task's test outputs found in the top k.
    pub pass_at: Vec<(usize, f64)>,
    /// (k, score): the fraction of tasks with every test output in the top k, HRM's credit (its
    /// `arc_eval.ipynb`: no partial credit for a task with several test inputs).
    pub pass_at_every_input: Vec<(usize, f64)>,
    /// Per task: (name, fraction right at k = 2).
    pub per_task_pass2: Vec<(String, f64)>,
}

impl ArcScore {
    pub fn at(&self, k: usize) -> Option<f64> {
        self.pass_at.iter().find(|(kk, _)| *kk == k).map(|(_, s)| *s)
    }

    /// What says that the test split evaluated and `test_puzzles.json` (the tasks scored) do not
    /// describe the same test inputs, if anything does: a data set edited or assembled by hand.
    pub fn mismatch(&self) -> Option<String> {
        let mut parts = vec![];
        if !self.limited && self.tasks_not_evaluated > 0 {
            parts.push(format!(
                "{} task(s) of test_puzzles.json have a test input that is not in the test split (first: `{}`), scored as \
                 wrong",
                self.tasks_not_evaluated,
                self.first_not_evaluated.as_deref().unwrap_or("?")
            ));
        }
        if self.stray_inputs > 0 {
            parts.push(format!(
                "{} input(s) of the test split are no test input of test_puzzles.json, and are not scored",
                self.stray_inputs
            ));
        }
        (!parts.is_empty()).then(|| {
            format!("the ARC test split and test_puzzles.json do not match: {}. Rebuild the data set (`trm data arc`)", parts.join("; "))
        })
    }
}

/// Scores `votes` against the tasks' test outputs. A `limited` evaluation leaves out the tasks
/// it did not reach, and those it reached in part (a limit that falls between a task's test
/// inputs would otherwise score the inputs it never ran as failures); in a full evaluation every
/// task counts, and an input never run is wrong.
pub fn score(votes: &Votes, tasks: &[Task], ks: &[usize], limited: bool) -> ArcScore {
    let mut sums = vec![0.0; ks.len()];
    let mut whole = vec![0usize; ks.len()];
    let (mut n_tasks, mut n_inputs, mut answered, mut skipped) = (0, 0, 0, 0);
    let mut first_skipped = None;
    let mut per_task = Vec::new();
    for t in tasks {
        if !t.test.iter().all(|p| votes.evaluated(&t.name, &p.input)) {
            skipped += 1;
            first_skipped.get_or_insert_with(|| t.name.clone());
            if limited {
                continue;
            }
        }
        let pairs: Vec<_> = t.test.iter().map(|p| (&p.input, &p.output)).collect();
        if pairs.is_empty() {
            continue;
        }
        n_tasks += 1;
        n_inputs += pairs.len();
        let mut right = vec![0usize; ks.len()];
        for (input, output) in &pairs {
            let ranked = votes.ranked(&t.name, input);
            answered += !ranked.is_empty() as usize;
            if let Some(pos) = ranked.iter().position(|c| &c.grid == *output) {
                for (i, &k) in ks.iter().enumerate() {
                    right[i] += (pos < k) as usize;
                }
            }
        }
        for i in 0..ks.len() {
            sums[i] += right[i] as f64 / pairs.len() as f64;
            whole[i] += (right[i] == pairs.len()) as usize;
        }
        let k2 = ks.iter().position(|&k| k == 2);
        per_task.push((t.name.clone(), k2.map_or(0.0, |i| right[i] as f64 / pairs.len() as f64)));
    }
    let inputs: std::collections::HashSet<(&str, [u8; 32])> =
        tasks.iter().flat_map(|t| t.test.iter().map(|p| (t.name.as_str(), p.input.hash()))).collect();
    let stray_inputs = votes.evaluated_inputs().filter(|(name, h)| !inputs.contains(&(name.as_str(), *h))).count();
    let n = n_tasks.max(1) as f64;
    ArcScore {
        tasks: n_tasks,
        tasks_not_evaluated: skipped,
        first_not_evaluated: first_skipped,
        stray_inputs,
        limited,
        test_inputs: n_inputs,
        answered_inputs: answered,
        pass_at: ks.iter().zip(&sums).map(|(&k, &s)| (k, s / n)).collect(),
        pass_at_every_input: ks.iter().zip(&whole).map(|(&k, &w)| (k, w as f64 / n)).collect(),
        per_task_pass2: per_task,
    }
}

/// Kaggle submission: for every task, one `{"attempt_1", "attempt_2", ...}` object per test input
/// in order; missing attempts repeat the first, and an input with no prediction gets `[[0]]`.
pub fn submission(votes: &Votes, tasks: &[Task], attempts: usize) -> Value {
    let mut out = Map::new();
    for t in tasks {
        let entries: Vec<Value> = t
            .test
            .iter()
            .map(|p| {
                let ranked = votes.ranked(&t.name, &p.input);
                let fallback = Grid { h: 1, w: 1, cells: vec![0] };
                let first = ranked.first().map_or(&fallback, |c| &c.grid);
                let mut o = Map::new();
                for a in 0..attempts {
                    let g = ranked.get(a).map_or(first, |c| &c.grid);
                    o.insert(format!("attempt_{}", a + 1), g.to_json());
                }
                Value::Object(o)
            })
            .collect();
        out.insert(t.name.clone(), Value::Array(entries));
    }
    json!(out)
}

/// `data` is an ARC data set: it has the test tasks' answers (`test_puzzles.json`) to score on.
pub fn is_arc_data(data: &std::path::Path) -> bool {
    data.join("test_puzzles.json").exists()
}

/// Everything needed to score an ARC test split while it is evaluated: identifier names, the
/// tasks of `test_puzzles.json`, the evaluator's arguments, and this evaluation's votes.
pub struct ArcEval {
    names: Vec<String>,
    pub tasks: Vec<Task>,
    pub args: ArcEvaluatorArgs,
    pub votes: Votes,
    /// The evaluation runs on part of the test split (`--limit`, `eval_max_examples`).
    limited: bool,
}

impl ArcEval {
    /// Some(..) when `data` is an ARC data set (`is_arc_data`). `args`' aggregated_voting is the
    /// caller's: this evaluation's votes are its own. `limited`: the evaluation runs on part of
    /// the test split.
    pub fn open(data: &std::path::Path, args: &ArcEvaluatorArgs, limited: bool) -> Result<Option<ArcEval>> {
        if !is_arc_data(data) {
            return Ok(None);
        }
        // Checked against the splits' identifiers before any evaluation runs: a short list would
        // fail only at the first answer.
        let names = crate::data::format::read_identifiers(data)?;
        let tasks = crate::data::arc::read_test_puzzles(data)?;
        anyhow::ensure!(
            !tasks.is_empty(),
            "{}: no tasks to score the ARC test split on (rebuild the data set with `trm data arc`)",
            data.join("test_puzzles.json").display()
        );
        Ok(Some(ArcEval { names, tasks, args: args.clone(), votes: Votes::default(), limited }))
    }

    /// Takes the final predictions of one evaluation batch (`q_logits` = q_halt logits).
    pub fn on_batch(&mut self, batch: &crate::data::loader::Batch, preds: &[i64], q_logits: &[f32], real: usize) -> Result<()> {
        let s = batch.seq_len;
        anyhow::ensure!(s == crate::data::arc::SEQ_LEN, "ARC scoring needs 900-token examples, this data set has {s}");
        for r in 0..real {
            let id = batch.puzzle_identifiers[r];
            if id == 0 {
                continue; // padding row
            }
            let name = self.names.get(id as usize).with_context(|| format!("puzzle identifier {id} is not in identifiers.json"))?;
            let input: Vec<u8> = batch.inputs[r * s..(r + 1) * s].iter().map(|&t| t as u8).collect();
            let pred: Vec<u8> = preds[r * s..(r + 1) * s].iter().map(|&t| t.clamp(0, 255) as u8).collect();
            let q = 1.0 / (1.0 + (-(q_logits[r] as f64)).exp());
            self.votes.add(name, &input, &pred, q)?;
        }
        Ok(())
    }

    /// pass@k of `votes` (this evaluation's, or a pool they were merged into) on these tasks.
    pub fn score_of(&self, votes: &Votes) -> ArcScore {
        score(votes, &self.tasks, &self.args.pass_ks, self.limited)
    }
    /// The submission (`submission_K` attempts per test input) of `votes`.
    pub fn submission_of(&self, votes: &Votes) -> Value {
        submission(votes, &self.tasks, self.args.submission_k)
    }
    pub fn score(&self) -> ArcScore {
        self.score_of(&self.votes)
    }
    pub fn submission(&self) -> Value {
        self.submission_of(&self.votes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::arc_task::{Augmentation, Pair, to_canvas};
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn g(rows: &[&[u8]]) -> Grid {
        Grid { h: rows.len(), w: rows[0].len(), cells: rows.concat() }
    }
    fn task(name: &str, tests: Vec<(Grid, Grid)>) -> Task {
        Task {
            name: name.into(),
            train: vec![],
            test: tests.into_iter().map(|(i, o)| Pair { input: i, output: o }).collect(),
            test_first: false,
        }
    }
    fn key(t: &str, input: &Grid) -> (String, [u8; 32]) {
        (t.to_string(), input.hash())
    }

    #[test]
    fn an_augmented_prediction_is_voted_in_the_original_frame() {
        let input = g(&[&[1, 2, 0], &[3, 4, 5]]);
        let answer = g(&[&[5, 0], &[1, 7]]);
        let aug = Augmentation { tid: 5, colours: [0, 3, 9, 1, 2, 4, 8, 6, 5, 7] };
        let (mut ci, mut cp) = (vec![0u8; 900], vec![0u8; 900]);
        to_canvas(&input.augment(&aug), 0, 0, &mut ci);
        to_canvas(&answer.augment(&aug), 0, 0, &mut cp);
        let mut v = Votes::default();
        v.add(&aug.name("t1"), &ci, &cp, 0.9).unwrap();
        let r = v.ranked("t1", &input);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].grid, answer);
        // a canvas whose first cell is not a colour decodes to nothing and casts no vote
        v.add(&aug.name("t1"), &ci, &[0u8; 900], 0.9).unwrap();
        assert_eq!((v.empty, v.ranked("t1", &input)[0].votes), (1, 1));
        assert!(v.add("t1|||x|||0", &ci, &cp, 0.5).is_err());
    }

    #[test]
    fn votes_come_first_and_mean_q_breaks_ties() {
        let i = g(&[&[1]]);
        let (a, b, c) = (g(&[&[2]]), g(&[&[3]]), g(&[&[4]]));
        let mut v = Votes::default();
        // a: 2 votes, low confidence; b: 1 vote, q 0.9; c: 1 vote, q 0.6
        v.add_grid(key("t", &i), a.clone(), 0.1);
        v.add_grid(key("t", &i), a.clone(), 0.2);
        v.add_grid(key("t", &i), c.clone(), 0.6);
        v.add_grid(key("t", &i), b.clone(), 0.9);
        let r: Vec<_> = v.ranked("t", &i).iter().map(|c| c.grid.clone()).collect();
        assert_eq!(r, vec![a.clone(), b.clone(), c.clone()]);
        assert!((v.ranked("t", &i)[0].mean_q() - 0.15).abs() < 1e-12);
        // pass@1 needs the top candidate, pass@2 the top two
        let s = score(&v, &[task("t", vec![(i.clone(), b.clone())])], &[1, 2, 3], false);
        assert_eq!(s.pass_at, vec![(1, 0.0), (2, 1.0), (3, 1.0)]);
        let sub = submission(&v, &[task("t", vec![(i.clone(), b)])], 2);
        assert_eq!(sub["t"][0]["attempt_1"], a.to_json());
        assert_eq!(sub["t"][0]["attempt_2"], json!([[3]]));
    }

    #[test]
    fn pass_at_k_on_a_hand_built_case_with_fractional_credit() {
        // Task A has two test inputs: the first is right at rank 1, the second at rank 3.
        // Task B has one test input, right at rank 2. Task C has no prediction at all.
        let (ia1, ia2, ib, ic) = (g(&[&[1]]), g(&[&[2]]), g(&[&[3]]), g(&[&[4]]));
        let (x, y, z, w) = (g(&[&[5]]), g(&[&[6]]), g(&[&[7]]), g(&[&[8]]));
        let mut v = Votes::default();
        for (k, grid, n) in [(key("A", &ia1), x.clone(), 3), (key("A", &ia1), y.clone(), 1)] {
            (0..n).for_each(|_| v.add_grid(k.clone(), grid.clone(), 0.5));
        }
        for (k, grid, n) in [(key("A", &ia2), y.clone(), 3), (key("A", &ia2), z.clone(), 2), (key("A", &ia2), w.clone(), 1)] {
            (0..n).for_each(|_| v.add_grid(k.clone(), grid.clone(), 0.5));
        }
        for (k, grid, n) in [(key("B", &ib), x.clone(), 2), (key("B", &ib), y.clone(), 1)] {
            (0..n).for_each(|_| v.add_grid(k.clone(), grid.clone(), 0.5));
        }
        v.mark_evaluated(key("C", &ic)); // evaluated, but every copy decoded to no grid
        let tasks =
            vec![task("A", vec![(ia1, x.clone()), (ia2, w.clone())]), task("B", vec![(ib, y.clone())]), task("C", vec![(ic, x.clone())])];
        let s = score(&v, &tasks, &[1, 2, 3, 1000], false);
        // pass@1: A 1/2, B 0, C 0 -> 0.5/3; pass@2: A 1/2, B 1 -> 1.5/3; pass@3: A 1, B 1 -> 2/3
        let want = [(1, 0.5 / 3.0), (2, 1.5 / 3.0), (3, 2.0 / 3.0), (1000, 2.0 / 3.0)];
        assert_eq!(s.pass_at.len(), want.len());
        for ((k, got), (wk, w)) in s.pass_at.iter().zip(want) {
            assert_eq!(*k, wk);
            assert!((got - w).abs() < 1e-12, "pass@{k}: {got} vs {w}");
        }
        assert_eq!((s.tasks, s.test_inputs, s.answered_inputs, s.tasks_not_evaluated, s.stray_inputs), (3, 4, 3, 0, 0));
        assert_eq!(s.mismatch(), None);
        // HRM's credit: A counts only once both its inputs are right (from k = 3), B from k = 2.
        assert_eq!(s.pass_at_every_input, vec![(1, 0.0), (2, 1.0 / 3.0), (3, 2.0 / 3.0), (1000, 2.0 / 3.0)]);
        // A task a limited evaluation never reached is left out rather than scored 0.
        let with_d = [tasks.clone(), vec![task("D", vec![(g(&[&[9]]), x.clone())])]].concat();
        let s = score(&v, &with_d, &[1000], true);
        assert_eq!((s.tasks, s.tasks_not_evaluated), (3, 1));
        assert!((s.pass_at[0].1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.mismatch(), None);
        // In a full evaluation it counts, as wrong, and the mismatch is named.
        let s = score(&v, &with_d, &[1000], false);
        assert_eq!((s.tasks, s.tasks_not_evaluated, s.first_not_evaluated.as_deref()), (4, 1, Some("D")));
        assert!((s.pass_at[0].1 - 2.0 / 4.0).abs() < 1e-12);
        assert!(s.mismatch().is_some_and(|m| m.contains("(first: `D`)")), "{:?}", s.mismatch());
        // An input evaluated that no task lists (the test split's copy of an input edited in
        // test_puzzles.json) is named too.
        let mut stray = v.clone();
        stray.add_grid(key("B", &g(&[&[7]])), y.clone(), 0.5);
        let s = score(&stray, &tasks, &[1000], false);
        assert_eq!((s.tasks, s.stray_inputs), (3, 1));
        assert!(s.mismatch().is_some_and(|m| m.contains("1 input(s) of the test split")), "{:?}", s.mismatch());
        // So is a task reached in part: E's second test input was never run, and E is not scored
        // 1/2 for the input it got right.
        let ie = g(&[&[5]]);
        v.add_grid(key("E", &ie), y.clone(), 0.5);
        let e = task("E", vec![(ie, y.clone()), (g(&[&[8]]), x.clone())]);
        let s = score(&v, &[tasks.clone(), vec![e]].concat(), &[1000], true);
        assert_eq!((s.tasks, s.tasks_not_evaluated), (3, 1));
        assert!((s.pass_at[0].1 - 2.0 / 3.0).abs() < 1e-12);
        let sub = submission(&v, &tasks, 2);
        assert_eq!(sub["C"][0]["attempt_1"], json!([[0]]));
        assert_eq!(sub["A"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn ranking_and_scores_do_not_depend_on_the_order_of_votes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let inputs: Vec<Grid> = (0..4).map(|i| g(&[&[i as u8, 1]])).collect();
        let mut events = Vec::new();
        for _ in 0..300 {
            let i = rng.random_range(0..4);
            let answer = g(&[&[rng.random_range(0..4u8)]]);
            events.push((i, answer, (rng.random_range(0..8) as f64) / 8.0));
        }
        let tasks: Vec<Task> = (0..4).map(|i| task(&format!("t{i}"), vec![(inputs[i].clone(), g(&[&[1]]))])).collect();
        let run = |ev: &[(usize, Grid, f64)]| {
            let mut v = Votes::default();
            for (i, a, q) in ev {
                v.add_grid(key(&format!("t{i}"), &inputs[*i]), a.clone(), *q);
            }
            let ranks: Vec<Vec<(Grid, usize)>> =
                (0..4).map(|i| v.ranked(&format!("t{i}"), &inputs[i]).iter().map(|c| (c.grid.clone(), c.votes)).collect()).collect();
            (ranks, score(&v, &tasks, &ArcEvaluatorArgs::default().pass_ks, false).pass_at, submission(&v, &tasks, 2))
        };
        let base = run(&events);
        for _ in 0..10 {
            events.shuffle(&mut rng);
            let other = run(&events);
            assert_eq!(base.0, other.0);
            assert_eq!(base.2, other.2);
            for ((_, a), (_, b)) in base.1.iter().zip(&other.1) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
}
