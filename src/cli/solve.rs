//! `trm solve`: one new puzzle from the command line, with its step-by-step trace.

use crate::backend::DeviceSpec;
use crate::data::{maze, sudoku_solver};
use crate::infer::solve::{StepTrace, solve_tokens};
use crate::model::weights::Weights;
use crate::store::checkpoint;
use anyhow::{Result, bail};
use clap::builder::TypedValueParser as _;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("puzzle").required(true).args(["sudoku", "maze", "arc_task"])))]
pub struct SolveArgs {
    /// Run or checkpoint folder of a trained model, or a bare weights file (.safetensors, or the
    /// reference's torch.save checkpoint, FILE#key for a nested state dict) with --config
    /// [default for --sudoku: the Sudoku model bundled in trm, models/sudoku/]
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Configuration of a bare weights file (preset or TOML), plus overrides with --set
    /// [default: the reference's all_config.yaml beside the file]
    #[arg(long)]
    pub config: Option<String>,
    /// Override an architecture key for a bare weights file (arch.*, loss_type), e.g.
    /// --set arch.halt_max_steps=32
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// An 81-character Sudoku, row by row, `.` or `0` for blanks (whitespace ignored), or a text
    /// file that holds one
    #[arg(long)]
    pub sudoku: Option<String>,
    /// A text file with a square maze of `# SGo` characters (one row per line)
    #[arg(long)]
    pub maze: Option<PathBuf>,
    /// An ARC task JSON (`{train, test}`, or a Kaggle challenges file with --task); the model must
    /// have identifiers for the task (trained on it, or `trm adapt`ed to it)
    #[arg(long)]
    pub arc_task: Option<PathBuf>,
    /// With --arc-task: the task's name in a challenges file
    #[arg(long)]
    pub task: Option<String>,
    /// With --arc-task and a bare weights file: the identifiers.json of the data the model was
    /// trained on [default: identifiers.json beside the file]
    #[arg(long)]
    pub identifiers: Option<PathBuf>,
    /// Supervision steps [default: the model's halt_max_steps]; more = test-time recursion
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub steps: Option<usize>,
    /// Stop as soon as the model's halting head says the answer is done
    #[arg(long)]
    pub halt: bool,
    /// Print JSON instead of grids
    #[arg(long)]
    pub json: bool,
    /// Test-time scaling: solve K validity-preserving views of the puzzle side by side (Sudoku:
    /// digits relabelled, transposed, bands/stacks and rows/columns permuted; maze: its 8 dihedral
    /// transforms; view 1 is the puzzle itself), map every answer back, check it (Sudoku: the
    /// rules and the givens; maze: a shortest S-G path; never a solution), and stop at the first
    /// step where one checks; else the views' majority [default: 1; with the bundled model and
    /// neither --views nor --steps given: 64 views, up to 16 steps]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_VIEWS).map(|v| v as usize))]
    pub views: Option<usize>,
    /// Seed of the views' random transforms (with --views) [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sudoku with --views: a view that has run this many steps without an answer that checks is
    /// replaced by a fresh view of the puzzle (the batch keeps K rows, so the compute is the
    /// same); 0 never replaces one [default: the model's halt_max_steps]
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub view_lifetime: Option<usize>,
    /// Sudoku with --views: every view but the first starts its latent z from a random draw of
    /// its own instead of the model's fixed start (as `arch.wta_chains` training starts its extra
    /// chains); the first view stays the plain model's
    #[arg(long)]
    pub drawn_latents: bool,
    /// The CPU engine's matrix products: float32, or bfloat16 operands with float32 sums (the
    /// rest stays float32) on Intel AMX tiles or with AVX512-BF16 (refused on a CPU with
    /// neither); auto takes bfloat16 where the CPU has AMX (the output names what ran)
    /// [default: auto]
    #[arg(long, value_enum)]
    pub precision: Option<super::Precision>,
    /// cpu, torch-cpu, cuda[:N] (libtorch), cubecl[:N] or cubecl-unfused[:N]
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Test-time scaling the bundled Sudoku model gets when `trm solve` is given neither --views nor
/// --steps (its model card measures this budget: with bfloat16 products on AMX it solves 90% of
/// Sudoku-Extreme's hardest test puzzles in under a second each on 2 cores; 16 views solved 73%).
pub const BUNDLED_VIEWS: usize = 64;
pub const BUNDLED_STEPS: usize = 16;

#[derive(Serialize)]
struct StepJson {
    step: usize,
    answer: String,
    q_halt: f64,
    changed: usize,
}

#[derive(Serialize)]
struct SolveJson {
    kind: &'static str,
    input: String,
    answer: String,
    valid: bool,
    problems: Vec<String>,
    steps: Vec<StepJson>,
}

/// Parses a Sudoku argument into model tokens: the puzzle itself, or a file that holds it.
pub fn sudoku_tokens(text: &str) -> Result<(sudoku_solver::Grid, Vec<u8>)> {
    let (g, from) = match sudoku_solver::parse_grid(text) {
        Ok(g) => (g, "--sudoku".to_string()),
        Err(_) if std::path::Path::new(text).is_file() => {
            let path = std::path::Path::new(text);
            // A Sudoku is 81 characters and some layout; a large file is refused before it is read.
            let file = crate::util::fs::read_text_capped(path, 64 << 10, "a Sudoku text file")?;
            let g = sudoku_solver::parse_grid(&file).map_err(|e| anyhow::anyhow!("--sudoku {}: {e}", path.display()))?;
            (g, format!("--sudoku {}", path.display()))
        }
        Err(e) => {
            let path = std::path::Path::new(text);
            let path_like = text.contains(['/', '\\'])
                || path.extension().is_some_and(|x| x.len() <= 4 && x.to_string_lossy().chars().all(char::is_alphabetic));
            match (path_like, path.exists()) {
                (_, true) => bail!("--sudoku {text}: not a regular file holding a puzzle (a folder, pipe or device)"),
                (true, false) => bail!("--sudoku {text}: no such file, and not a puzzle either ({e})"),
                _ => bail!("--sudoku: {e}"),
            }
        }
    };
    if let Some(v) = sudoku_solver::violations(&g).first() {
        bail!("{from}: the givens break the rules: {v}");
    }
    // Givens that break no rule may still leave a cell no digit fits: no answer could check.
    // (A search too long to settle it, past a million nodes, leaves the question to the model.)
    anyhow::ensure!(
        sudoku_solver::has_solution(&g, 1_000_000) != Some(false),
        "{from}: the puzzle has no solution (a complete search found none, though no two givens clash): there is no answer to find"
    );
    Ok((g, g.iter().map(|&d| d + 1).collect()))
}

/// Reads a maze text file into model tokens.
pub fn maze_tokens(path: &std::path::Path) -> Result<(usize, Vec<u8>)> {
    // A maze of 30 x 30 is under 1 KB; /dev/zero or a large file is refused before it is read.
    let text = crate::util::fs::read_text_capped(path, 64 << 10, "a maze text file")?;
    let rows: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect();
    if let Some((i, n)) = rows.iter().map(|r| r.chars().count()).enumerate().find(|&(_, n)| n != rows.len()) {
        bail!("{}: line {} has {n} characters; a maze of {} rows must be {} wide", path.display(), i + 1, rows.len(), rows.len());
    }
    let (side, tokens) = maze::parse(&rows.concat(), &path.display().to_string())?;
    maze::check_endpoints(&tokens, &path.display().to_string())?;
    if let Some(cell) = tokens.iter().position(|&t| t == maze::PATH) {
        bail!(
            "{}: row {}, column {} is `o`, a path cell: a maze to solve has walls `#`, open cells ` `, S and G only",
            path.display(),
            cell / side + 1,
            cell % side + 1
        );
    }
    anyhow::ensure!(
        maze::shortest_len(side, &tokens).is_some(),
        "{}: no path of open cells leads from S to G: there is no answer to find",
        path.display()
    );
    Ok((side, tokens))
}

fn sudoku_text(tokens: &[u8]) -> String {
    sudoku_solver::format_grid(&crate::data::sudoku::grid_of_tokens(tokens))
}

fn print_sudoku(question: &sudoku_solver::Grid, answer: &str) {
    let a: Vec<char> = answer.chars().collect();
    for r in 0..9 {
        if r % 3 == 0 {
            println!("+-------+-------+-------+");
        }
        let mut line = String::new();
        for c in 0..9 {
            if c % 3 == 0 {
                line += "| ";
            }
            let ch = a[r * 9 + c];
            line.push(ch);
            line.push(if question[r * 9 + c] == 0 { '\'' } else { ' ' });
        }
        println!("{line}|");
    }
    println!("+-------+-------+-------+   (digits with ' were filled in by the model)");
}

/// The model of a bare weights file: the configuration given, the puzzle's sequence and
/// vocabulary, and as many identifiers as the file's puzzle table has rows.
fn bare_model(file: &std::path::Path, a: &SolveArgs, seq_len: usize, vocab_size: usize) -> Result<crate::model::config::ModelConfig> {
    let cfg = crate::store::hydra_config::resolve_for_weights(file, a.config.as_deref(), &a.set)?;
    let (_, w) = checkpoint::read_weights(file)?;
    let ids = w.get("puzzle_emb.weights").map_or(1, |t| t.shape.first().copied().unwrap_or(1));
    let m = crate::model::config::ModelConfig { arch: cfg.arch, seq_len, vocab_size, num_puzzle_identifiers: ids };
    m.validate()?;
    Ok(m)
}

pub fn run(mut a: SolveArgs) -> Result<()> {
    anyhow::ensure!(
        a.task.is_none() || a.arc_task.is_some(),
        "--task names a task in the challenges file of --arc-task; it goes with --arc-task"
    );
    anyhow::ensure!(
        a.arc_task.is_none() || a.views.is_none(),
        "--views: test-time scaling is for Sudoku and mazes; an ARC task is voted over its augmented copies already"
    );
    anyhow::ensure!(
        a.maze.is_none() || a.seed.is_none(),
        "--seed: a maze's views are its 8 fixed transforms; there is nothing random to seed"
    );
    // From here on `a.precision` is what runs (None: not the CPU engine's choice).
    super::refuse_cpu_engine_flags(a.device, a.precision, false)?;
    a.precision = a.precision.unwrap_or(super::Precision::Auto).apply(a.device, false)?;
    // The bundled model's private folder, kept until the command ends.
    let mut _bundled = None;
    let spec = match &a.checkpoint {
        Some(c) => c.clone(),
        None => {
            anyhow::ensure!(
                a.sudoku.is_some(),
                "--checkpoint names the model; trm bundles only a Sudoku model, used when --sudoku has no --checkpoint"
            );
            anyhow::ensure!(a.config.is_none() && a.set.is_empty(), "--config/--set describe a weights file given with --checkpoint");
            // --halt asks for the plain model's own halting, which views do not combine with.
            if a.views.is_none() && a.steps.is_none() && !a.halt {
                (a.views, a.steps) = (Some(BUNDLED_VIEWS), Some(BUNDLED_STEPS));
            }
            if !a.json {
                println!("(the Sudoku model bundled in trm, models/sudoku/; --checkpoint picks another)");
            }
            let files = crate::infer::bundled::sudoku_model_file()?;
            let weights = files.weights.clone();
            _bundled = Some(files);
            weights
        }
    };
    let bare = checkpoint::is_weights_file(&spec);
    anyhow::ensure!(
        bare || (a.config.is_none() && a.set.is_empty()),
        "--config/--set describe a bare weights file; a run or checkpoint folder carries its own configuration"
    );
    anyhow::ensure!(a.seed.is_none() || a.views.is_some(), "--seed draws the transforms of --views; without --views it would do nothing");
    anyhow::ensure!(
        a.view_lifetime.is_none() || a.views.is_some(),
        "--view-lifetime replaces spent views of --views; without --views it would do nothing"
    );
    anyhow::ensure!(!a.drawn_latents || a.views.is_some(), "--drawn-latents starts views of --views; without --views it would do nothing");
    anyhow::ensure!(
        !(a.halt && a.views.is_some()),
        "--views stops when an answer checks; --halt (the model's own halting) does not combine with it"
    );
    if let Some(file) = &a.arc_task {
        let source = crate::store::arc_model::open_arc(&spec, a.config.as_deref(), &a.set, a.identifiers.as_deref())?;
        return super::solve_arc::run(&source, file, a.task.as_deref(), a.steps, a.halt, a.json, a.device);
    }
    anyhow::ensure!(a.identifiers.is_none(), "--identifiers names an ARC model's puzzle identifiers: it goes with --arc-task");
    let (puzzle, input) = if let Some(s) = &a.sudoku {
        (Puzzle::Sudoku, sudoku_tokens(s)?.1)
    } else {
        let (side, t) = maze_tokens(a.maze.as_ref().expect("one puzzle kind"))?;
        (Puzzle::Maze { side }, t)
    };
    let (model, file) = if bare {
        (bare_model(&spec, &a, input.len(), puzzle.vocab())?, spec.clone())
    } else {
        let ckpt = checkpoint::resolve(&spec)?;
        (checkpoint::read_state_json(&ckpt)?.model, ckpt.join("model.safetensors"))
    };
    crate::with_backend!(a.device, B, device => solve_on::<B>(&a, &model, &file, puzzle, &input, &device))
}

/// Loads the model on `device` and solves one Sudoku or maze, printing the answer's formation.
/// The kind of puzzle `trm solve` was given: how its tokens read and how an answer is checked.
#[derive(Clone, Copy)]
enum Puzzle {
    Sudoku,
    Maze { side: usize },
}

impl Puzzle {
    fn name(self) -> &'static str {
        match self {
            Puzzle::Sudoku => "sudoku",
            Puzzle::Maze { .. } => "maze",
        }
    }

    /// The vocabulary of the models that solve it.
    fn vocab(self) -> usize {
        match self {
            Puzzle::Sudoku => crate::data::sudoku::VOCAB,
            Puzzle::Maze { .. } => maze::VOCAB,
        }
    }

    /// Tokens as text: Sudoku digits row by row (`.` for a non-digit), maze characters.
    fn render(self, tokens: &[u8]) -> String {
        match self {
            Puzzle::Sudoku => sudoku_text(tokens),
            Puzzle::Maze { .. } => tokens.iter().map(|&x| maze::char_of(x)).collect(),
        }
    }

    /// The answer as text, whether it satisfies the rules, and what breaks them (never a
    /// comparison with a solution: the rules and the givens, or a shortest S-G path).
    fn check(self, input: &[u8], tokens: &[u8]) -> (String, bool, Vec<String>) {
        let text = self.render(tokens);
        let problems = match self {
            Puzzle::Sudoku => {
                let q: sudoku_solver::Grid = std::array::from_fn(|i| input[i] - 1);
                let g = sudoku_solver::parse_grid(&text).unwrap_or([0; 81]);
                let mut problems = sudoku_solver::violations(&g);
                if text.contains('.') {
                    problems.push("some cells are not digits".into());
                }
                for i in (0..81).filter(|&i| q[i] != 0 && g[i] != q[i]) {
                    problems.push(format!("given at row {}, column {} was changed", i / 9 + 1, i % 9 + 1));
                }
                problems
            }
            Puzzle::Maze { side } => maze::check_path(side, input, tokens).err().into_iter().collect(),
        };
        (text, problems.is_empty(), problems)
    }
}

/// A loaded model.
struct Loaded<'a, B: burn::prelude::Backend> {
    cfg: &'a crate::model::config::ModelConfig,
    w: &'a Weights<B>,
    table: Option<&'a burn::prelude::Tensor<B, 2>>,
}

fn solve_on<B: burn::prelude::Backend>(
    a: &SolveArgs,
    model: &crate::model::config::ModelConfig,
    file: &std::path::Path,
    puzzle: Puzzle,
    input: &[u8],
    device: &B::Device,
) -> Result<()> {
    if input.len() != model.seq_len || model.vocab_size != puzzle.vocab() {
        bail!(
            "{}: the model reads sequences of {} tokens from a vocabulary of {}, and a {} of this size is {} tokens from {} \
             (a model of another puzzle kind or size?)",
            file.display(),
            model.seq_len,
            model.vocab_size,
            puzzle.name(),
            input.len(),
            puzzle.vocab()
        );
    }
    let (params, table) = checkpoint::load_model::<B>(file, model, device)?;
    let w = Weights::from_named(model, params)?;
    let steps = a.steps.unwrap_or(model.arch.halt_max_steps);
    let m = Loaded { cfg: model, w: &w, table: table.as_ref() };
    match (a.views, puzzle) {
        (Some(k), Puzzle::Maze { side }) => maze_views(a, &m, input, side, k, steps),
        (Some(k), Puzzle::Sudoku) => sudoku_views(a, &m, input, k, steps),
        (None, _) => plain(a, &m, puzzle, input, steps),
    }
}

/// What a views search spent: views x steps, the products' precision, and the wall time.
fn compute_used(a: &SolveArgs, views: usize, steps: usize, secs: f64) -> String {
    format!("{views} views x {steps} steps = {} supervision steps, products: {}, {secs:.2} s", views * steps, products(a))
}

/// The products this `trm solve` runs (`a.precision` once `run` has resolved it).
fn products(a: &SolveArgs) -> &'static str {
    a.precision.map_or("the model's arch.forward_dtype", super::Precision::name)
}

/// A maze with up to 8 views (its dihedral transforms), the first checked answer.
fn maze_views<B: burn::prelude::Backend>(a: &SolveArgs, m: &Loaded<B>, input: &[u8], side: usize, k: usize, steps: usize) -> Result<()> {
    anyhow::ensure!(k <= 8, "--views {k}: a maze has 8 views (its dihedral transforms)");
    anyhow::ensure!(a.view_lifetime.is_none(), "--view-lifetime: a maze has no fresh views to replace a spent one with (Sudoku only)");
    anyhow::ensure!(!a.drawn_latents, "--drawn-latents: Sudoku only (a maze's views are its 8 transforms)");
    let t0 = std::time::Instant::now();
    let r = crate::infer::views::solve_maze(m.cfg, m.w, m.table, input, side, k, steps, true);
    let secs = t0.elapsed().as_secs_f64();
    let answer: String = r.answer.iter().map(|&t| maze::char_of(t)).collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"kind": "maze", "answer": answer, "valid": r.checked, "result": r, "precision": products(a), "seconds": secs})
            )?
        );
        return Ok(());
    }
    for row in answer.as_bytes().chunks(side) {
        println!("{}", String::from_utf8_lossy(row));
    }
    let compute = compute_used(a, r.views, r.steps_run, secs);
    if r.checked {
        println!(
            "checked: a shortest path from S to G, from view {} at step {} ({} of {} views agree); {compute}",
            r.view + 1,
            r.step,
            r.agreeing,
            r.views
        );
    } else {
        println!(
            "NOT checked: no view's answer is a shortest S-G path by step {}; the majority of {} views is shown; {compute}",
            r.step, r.views
        );
    }
    Ok(())
}

/// A Sudoku with `k` views (digits relabelled, transposed, rows and columns permuted), step by
/// step, the first checked answer.
fn sudoku_views<B: burn::prelude::Backend>(a: &SolveArgs, m: &Loaded<B>, input: &[u8], k: usize, steps: usize) -> Result<()> {
    let q: sudoku_solver::Grid = std::array::from_fn(|i| input[i] - 1);
    let t0 = std::time::Instant::now();
    let plan = crate::infer::views::SearchPlan::checked(steps, a.view_lifetime, m.cfg)?.drawing_latents(a.drawn_latents, m.cfg)?;
    plan.refuse_idle_draws(k, a.seed.is_some())?;
    let r = crate::infer::views::solve_sudoku(m.cfg, m.w, m.table, &q, k, a.seed.unwrap_or(0), plan);
    let secs = t0.elapsed().as_secs_f64();
    let text = sudoku_solver::format_grid;
    let answer = text(&r.answer);
    let trace: Vec<serde_json::Value> = r
        .trace
        .iter()
        .map(|t| serde_json::json!({"step": t.step, "answer": text(&t.answer), "q_halt": t.q_halt, "views_checked": t.views_checked}))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"kind": "sudoku", "answer": answer, "valid": r.checked, "result": r, "trace": trace, "precision": products(a), "seconds": secs})
            )?
        );
        return Ok(());
    }
    println!(
        "view {} ({} side by side, {} tried), step by step from its first step (mapped back to the puzzle as typed):",
        r.view + 1,
        r.views,
        r.views_tried
    );
    println!("step  checked  halt-conf  changed  answer");
    let mut prev: Option<&sudoku_solver::Grid> = None;
    for t in &r.trace {
        let changed = prev.map_or(81, |p| p.iter().zip(&t.answer).filter(|(x, y)| x != y).count());
        println!("{:>4}  {:>7}  {:>9.3}  {:>7}  {}", t.step, t.views_checked, t.q_halt, changed, text(&t.answer));
        prev = Some(&t.answer);
    }
    print_sudoku(&q, &answer);
    let compute = compute_used(a, r.views, r.steps_run, secs);
    if r.checked {
        println!(
            "checked: a valid completion of the givens, from view {} at step {} ({} of {} views agree; q_halt {:.3}); {compute}",
            r.view + 1,
            r.step,
            r.agreeing,
            r.views,
            r.q_halt
        );
    } else {
        println!(
            "NOT checked: no view's answer satisfies the rules by step {}; the majority of {} views is shown ({} agree); {compute}",
            r.step, r.views, r.agreeing
        );
    }
    Ok(())
}

/// The puzzle as given, one supervision step after another, the last answer checked.
fn plain<B: burn::prelude::Backend>(a: &SolveArgs, m: &Loaded<B>, puzzle: Puzzle, input: &[u8], steps: usize) -> Result<()> {
    let trace: Vec<StepTrace> = solve_tokens(m.cfg, m.w, m.table, input, 0, steps, a.halt);
    let last = trace.last().expect("at least one step");
    let (answer, valid, problems) = puzzle.check(input, &last.tokens);
    if a.json {
        let js = SolveJson {
            kind: puzzle.name(),
            input: puzzle.render(input),
            answer,
            valid,
            problems,
            steps: trace
                .iter()
                .map(|s| StepJson { step: s.step, answer: puzzle.render(&s.tokens), q_halt: s.q_halt, changed: s.changed })
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&js)?);
        return Ok(());
    }
    println!("step  halt-conf  changed  answer");
    for s in &trace {
        let shown = if let Puzzle::Sudoku = puzzle {
            puzzle.render(&s.tokens)
        } else {
            format!("({} path cells)", s.tokens.iter().filter(|&&t| t == 5).count())
        };
        println!("{:>4}  {:>9.3}  {:>7}  {}", s.step, s.q_halt, s.changed, shown);
    }
    match puzzle {
        Puzzle::Sudoku => print_sudoku(&std::array::from_fn(|i| input[i] - 1), &answer),
        Puzzle::Maze { side } => answer.as_bytes().chunks(side).for_each(|r| println!("{}", String::from_utf8_lossy(r))),
    }
    if valid {
        println!("valid: the answer satisfies every rule");
    } else {
        println!("NOT valid: {}", problems.iter().take(5).cloned().collect::<Vec<_>>().join("; "));
        if let Puzzle::Sudoku = puzzle {
            println!("(more views and steps often help: --views 16 --steps 16 runs 16 transformed copies and checks each answer)");
        }
    }
    Ok(())
}
