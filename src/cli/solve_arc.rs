//! `trm solve --arc-task FILE`: one ARC task's test inputs, answered by every augmented copy the
//! model has an identifier for, un-augmented and voted; the trace shows the un-augmented copy.

use crate::data::arc_task::{Augmentation, Grid, MAX_SIDE, Pair, Task, from_canvas, parse_name, to_canvas};
use crate::eval::arc_vote::{Candidate, Votes};
use crate::infer::solve::solve_tokens;
use crate::model::config::ModelConfig;
use crate::model::weights::Weights;
use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct StepJson {
    step: usize,
    /// Decoded grid of the un-augmented copy after this step (null: no grid at the top-left).
    answer: Option<Value>,
    q_halt: f64,
    changed: usize,
}

#[derive(Serialize)]
struct CandidateJson {
    grid: Value,
    votes: usize,
    mean_q_halt: f64,
}

#[derive(Serialize)]
struct TestJson {
    test_index: usize,
    /// The top-voted grid (attempt 1).
    answer: Option<Value>,
    /// A grid was decoded (the predicted EOS border closes a non-empty rectangle).
    valid: bool,
    /// Known solution only: whether attempt 1 / attempt 1 or 2 are right.
    correct: Option<bool>,
    correct_in_two: Option<bool>,
    candidates: Vec<CandidateJson>,
    steps: Vec<StepJson>,
}

fn show(g: &Grid) -> String {
    g.cells.chunks(g.w).map(|r| r.iter().map(|c| (b'0' + c) as char).collect::<String>()).collect::<Vec<_>>().join("\n")
}

/// Solves every test input of `task` with the identifiers `ids` (name, id) of its augmented copies.
pub fn solve_task<B: Backend>(
    model: &ModelConfig,
    w: &Weights<B>,
    table: Option<&Tensor<B, 2>>,
    task: &Task,
    ids: &[(String, i32)],
    steps: usize,
    halt: bool,
    json: bool,
    known_solution: bool,
) -> Result<()> {
    // The trace shown is the un-augmented copy's, else the first copy's.
    let traced = ids.iter().position(|(n, _)| parse_name(n).is_ok_and(|(_, a)| a.is_identity())).unwrap_or(0);
    let mut out = Vec::new();
    for (ti, pair) in task.test.iter().enumerate() {
        let mut votes = Votes::default();
        let mut trace_json = Vec::new();
        for (k, (name, id)) in ids.iter().enumerate() {
            let (_, aug) = parse_name(name)?;
            let shown = pair.input.augment(&aug);
            let mut canvas = vec![0u8; MAX_SIDE * MAX_SIDE];
            to_canvas(&shown, 0, 0, &mut canvas);
            let trace = solve_tokens(model, w, table, &canvas, *id, steps, halt);
            let last = trace.last().expect("at least one step");
            votes.add(name, &canvas, &last.tokens, last.q_halt)?;
            if k == traced {
                trace_json = steps_json(&trace, &aug);
            }
        }
        let ranked = votes.ranked(&task.name, &pair.input);
        let top = ranked.first().map(|c| c.grid.clone());
        let known = known_solution.then_some(&pair.output);
        let t = TestJson {
            test_index: ti,
            answer: top.as_ref().map(Grid::to_json),
            valid: top.is_some(),
            correct: known.map(|o| top.as_ref() == Some(o)),
            correct_in_two: known.map(|o| ranked.iter().take(2).any(|c| &c.grid == o)),
            candidates: ranked
                .iter()
                .take(5)
                .map(|c| CandidateJson { grid: c.grid.to_json(), votes: c.votes, mean_q_halt: c.mean_q() })
                .collect(),
            steps: trace_json,
        };
        if !json {
            print_test(&t, pair, &ranked, ids.len(), votes.empty);
        }
        out.push(t);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"kind": "arc", "task": task.name, "tests": out}))?);
    }
    Ok(())
}

/// The traced copy's answer after each step, mapped back to the task's orientation and colours.
fn steps_json(trace: &[crate::infer::solve::StepTrace], aug: &Augmentation) -> Vec<StepJson> {
    trace
        .iter()
        .map(|s| StepJson {
            step: s.step,
            answer: from_canvas(&s.tokens).map(|g| g.unaugment(aug).to_json()),
            q_halt: s.q_halt,
            changed: s.changed,
        })
        .collect()
}

/// One test input as text: the input, the traced copy's steps, the two attempts and, where the
/// solution is known, whether they are right.
fn print_test(t: &TestJson, pair: &Pair, ranked: &[&Candidate], copies: usize, empty: usize) {
    let ti = t.test_index;
    println!("test input {ti} ({}x{}):\n{}", pair.input.h, pair.input.w, show(&pair.input));
    println!("step  halt-conf  changed  decoded size (un-augmented copy)");
    for s in &t.steps {
        let size = s.answer.as_ref().and_then(|g| g.as_array().map(|r| format!("{}x{}", r.len(), r[0].as_array().map_or(0, |c| c.len()))));
        println!("{:>4}  {:>9.3}  {:>7}  {}", s.step, s.q_halt, s.changed, size.unwrap_or_else(|| "no grid".into()));
    }
    for (k, c) in ranked.iter().take(2).enumerate() {
        println!("attempt {} ({} of {copies} votes, mean q {:.3}):\n{}", k + 1, c.votes, c.mean_q(), show(&c.grid));
    }
    match (t.correct, t.correct_in_two) {
        (Some(true), _) => println!("correct (attempt 1)"),
        (Some(false), Some(true)) => println!("correct (attempt 2)"),
        (Some(false), _) => println!("not correct; expected:\n{}", show(&pair.output)),
        _ => {}
    }
    if empty > 0 {
        println!("({empty} copies decoded to no grid)");
    }
}

/// Loads the task file and finds the model's identifiers for it.
pub fn run(
    source: &crate::store::arc_model::ArcModel,
    file: &std::path::Path,
    task_name: Option<&str>,
    steps: Option<usize>,
    halt: bool,
    json: bool,
    device: crate::backend::DeviceSpec,
) -> Result<()> {
    let (model, ckpt) = (&source.model, &source.label);
    let tasks = super::adapt::read_tasks(file, None)?;
    let task = match task_name {
        Some(n) => tasks.iter().find(|t| t.name == n).ok_or_else(|| anyhow::anyhow!("{}: no task named `{n}`", file.display()))?,
        None if tasks.len() == 1 => &tasks[0],
        None => bail!("{} holds {} tasks; choose one with --task NAME", file.display(), tasks.len()),
    };
    let names = &source.identifiers;
    let ids: Vec<(String, i32)> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| parse_name(n).is_ok_and(|(t, _)| t == task.name))
        .map(|(i, n)| (n.clone(), i as i32))
        .collect();
    if ids.is_empty() {
        bail!(
            "task `{}` is not among this model's {} puzzle identifiers, so it has no learned embedding: \
             run `trm adapt --checkpoint {} --tasks {} --out DIR` first, then solve with --checkpoint DIR/run",
            task.name,
            names.len(),
            ckpt.display(),
            file.display()
        );
    }
    let known = {
        let v: Value = crate::util::fs::read_json(file)?;
        let t = if v.get("test").is_some() { &v } else { &v[&task.name] };
        t["test"].as_array().is_some_and(|a| a.iter().all(|p| p.get("output").is_some()))
    };
    let steps = steps.unwrap_or(model.arch.halt_max_steps);
    if !json {
        println!("task {}: {} test input(s), voting over {} augmented copies", task.name, task.test.len(), ids.len());
    }
    crate::with_backend!(device, B, device => {
        let (params, table) = crate::store::checkpoint::load_model::<B>(&source.weights, model, &device)?;
        let w = Weights::from_named(model, params)?;
        solve_task(model, &w, table.as_ref(), task, &ids, steps, halt, json, known)
    })
}
