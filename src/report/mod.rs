//! `trm report`: one self-contained HTML page for a run: training curves from `metrics.jsonl`
//! and test puzzles solved by the latest checkpoint, drawn after every supervision step with the
//! changed cells outlined and the halting confidence under each step. Also `charts.png` (the same
//! curves as a picture, for terminals and chat).

pub mod png;
pub mod svg;

use crate::data::format;
use crate::data::kind::PuzzleKind;
use crate::infer::solve::{StepTrace, solve_tokens};
use crate::model::weights::Weights;
use crate::store::checkpoint;
use anyhow::Result;
use burn::backend::Flex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{Cell, PALETTE, Series};

pub struct ReportOptions {
    pub run: PathBuf,
    pub out: PathBuf,
    /// Data set whose test split supplies the puzzles [default: the run's data_paths[0]].
    pub data: Option<PathBuf>,
    pub puzzles: usize,
    /// Supervision steps per puzzle [default: the model's halt_max_steps].
    pub steps: Option<usize>,
    /// Also write `<out stem>.png` with the curves.
    pub png: bool,
}

/// The speed and memory figures a training step logs beside its losses (`train::trainer`); they
/// are there whether or not a row halted.
const SYSTEM_KEYS: [&str; 5] =
    ["step_seconds", "examples_per_second", "host_peak_rss_mib", "gpu_peak_allocated_mib", "gpu_peak_reserved_mib"];

/// One curve: (step, value) points of `key` in rows of `split`.
pub struct Metrics {
    rows: Vec<Value>,
}

/// The largest metrics.jsonl `trm report` reads: a million steps logged at about 500 bytes each
/// is 500 MB.
const MAX_METRICS_BYTES: u64 = 4 << 30;

impl Metrics {
    pub fn read(run: &Path) -> Result<Metrics> {
        let path = run.join("metrics.jsonl");
        let bytes = crate::util::fs::read_bytes_capped(&path, MAX_METRICS_BYTES, "a run's metrics.jsonl")?;
        let mut rows = Vec::new();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            // A run killed mid-write may leave a torn line, a damaged disk bytes that are not
            // text: skip it and say so.
            match std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_str::<Value>(l).map_err(|e| e.to_string()))
            {
                Ok(v) => rows.push(v),
                Err(e) => eprintln!("warning: {}:{}: skipped a line that is not JSON ({e})", path.display(), i + 1),
            }
        }
        if !rows.iter().any(|r| r.get("step").is_some()) {
            eprintln!("warning: {} logs no step yet: the charts have no data", path.display());
        }
        Ok(Metrics { rows })
    }

    /// Points of `key` for `split`; train metrics that need halted rows are skipped where none halted.
    pub fn curve(&self, split: &str, key: &str) -> Vec<(f64, f64)> {
        let needs_count = split == "train" && !matches!(key, "lm_loss" | "q_halt_loss" | "lr") && !SYSTEM_KEYS.contains(&key);
        self.rows
            .iter()
            .filter(|r| r["split"] == split)
            .filter(|r| !needs_count || r["count"].as_f64().unwrap_or(0.0) > 0.0)
            .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
            .collect()
    }
}

/// Moving mean over a window that keeps about 200 points visible.
fn smooth(p: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let k = (p.len() / 100).max(1);
    p.chunks(k).map(|c| (c[c.len() - 1].0, c.iter().map(|x| x.1).sum::<f64>() / c.len() as f64)).collect()
}

/// The charts of a run: (title, series).
pub fn chart_specs(m: &Metrics) -> Vec<(String, Vec<Series>)> {
    let s = |label: &str, i: usize, points: Vec<(f64, f64)>| Series { label: label.into(), colour: PALETTE[i], points };
    let mut out = vec![
        ("LM loss".to_string(), vec![s("train", 0, smooth(&m.curve("train", "lm_loss"))), s("test", 1, m.curve("eval", "lm_loss"))]),
        (
            "token accuracy".to_string(),
            vec![s("train", 0, smooth(&m.curve("train", "accuracy"))), s("test", 1, m.curve("eval", "accuracy"))],
        ),
        (
            "exact accuracy".to_string(),
            vec![s("train", 0, smooth(&m.curve("train", "exact_accuracy"))), s("test", 1, m.curve("eval", "exact_accuracy"))],
        ),
        ("supervision steps used (train)".to_string(), vec![s("train", 0, smooth(&m.curve("train", "steps")))]),
        ("learning rate".to_string(), vec![s("lr", 2, m.curve("train", "lr"))]),
        (
            "Q-halt accuracy".to_string(),
            vec![s("train", 0, smooth(&m.curve("train", "q_halt_accuracy"))), s("test", 1, m.curve("eval", "q_halt_accuracy"))],
        ),
    ];
    // Speed and memory (runs logged before these keys existed have neither chart).
    let step_time = m.curve("train", "step_seconds");
    if !step_time.is_empty() {
        out.push(("seconds per optimiser step (train)".to_string(), vec![s("train", 0, smooth(&step_time))]));
    }
    let memory: Vec<Series> = [
        ("host peak RSS", "host_peak_rss_mib"),
        ("GPU peak allocated", "gpu_peak_allocated_mib"),
        ("GPU peak reserved", "gpu_peak_reserved_mib"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (label, key))| s(label, i, m.curve("train", key)))
    .filter(|x| !x.points.is_empty())
    .collect();
    if !memory.is_empty() {
        out.push(("peak memory, MiB".to_string(), memory));
    }
    let mut arc: Vec<Series> =
        [1, 2, 10].iter().enumerate().map(|(i, k)| s(&format!("pass@{k}"), i + 2, m.curve("eval", &format!("ARC/pass@{k}")))).collect();
    // A run that pools its evaluations' votes: pass@2 of each evaluation's own votes beside it.
    let own = m.curve("eval", "ARC/this_evaluation/pass@2");
    if !own.is_empty() {
        arc.iter_mut().for_each(|x| x.label = format!("{} (pooled)", x.label));
        arc.push(s("pass@2 (this evaluation)", 5, own));
    }
    if arc.iter().any(|x| !x.points.is_empty()) {
        out.push(("ARC pass@k (test)".to_string(), arc));
    }
    out
}

const ARC_COLOURS: [&str; 10] =
    ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25"];

fn cell(kind: PuzzleKind, t: u8, given: bool) -> Cell {
    let (fill, text) = match kind {
        PuzzleKind::Sudoku => (if given { "#e4e4e4" } else { "#ffffff" }, (t >= 2).then(|| (b'0' + t - 1) as char)),
        PuzzleKind::Maze { .. } => {
            (["#ffffff", "#333333", "#ffffff", "#2ca02c", "#d62728", "#1f77b4"].get(t as usize).copied().unwrap_or("#fff"), None)
        }
        PuzzleKind::Arc => match t {
            0 => ("#f2f2f2", None),
            1 => ("#c8c8c8", None),
            c => (ARC_COLOURS.get(c as usize - 2).copied().unwrap_or("#fff"), None),
        },
        PuzzleKind::Other => ("#ffffff", char::from_digit(t as u32 % 36, 36)),
    };
    Cell { fill, text, changed: false, wrong: false }
}

/// The square region worth drawing: the whole board, or for ARC the box holding the input and
/// target (plus the EOS border).
fn view(kind: PuzzleKind, input: &[u8], label: &[u8]) -> (usize, usize) {
    let side = (input.len() as f64).sqrt() as usize;
    if kind != PuzzleKind::Arc {
        return (side, side);
    }
    let mut n = 1;
    for i in 0..input.len() {
        if input[i] >= 2 || label[i] >= 2 {
            n = n.max(i / side + 2).max(i % side + 2);
        }
    }
    (side, n.min(side))
}

fn draw(kind: PuzzleKind, tokens: &[u8], input: &[u8], label: Option<&[u8]>, prev: Option<&[u8]>, side: usize, n: usize) -> String {
    let mut cells = Vec::with_capacity(n * n);
    for r in 0..n {
        for c in 0..n {
            let i = r * side + c;
            let mut x = cell(kind, tokens[i], kind == PuzzleKind::Sudoku && input[i] >= 2);
            x.changed = prev.is_some_and(|p| p[i] != tokens[i]);
            x.wrong = label.is_some_and(|l| l[i] != 0 && l[i] != tokens[i]);
            cells.push(x);
        }
    }
    let px = (170.0 / n as f64).clamp(5.0, 20.0);
    svg::grid(&cells, n, px, (kind == PuzzleKind::Sudoku).then_some(3))
}

fn figure(svg: &str, caption: &str, class: &str) -> String {
    format!(r#"<figure class="{class}">{svg}<figcaption>{caption}</figcaption></figure>"#)
}

/// HTML for one solved puzzle: input, the answer after each step, target.
fn puzzle_html(kind: PuzzleKind, idx: usize, input: &[u8], label: &[u8], trace: &[StepTrace]) -> String {
    let (side, n) = view(kind, input, label);
    let mut s = String::new();
    let last = trace.last().map(|t| &t.tokens);
    let right = last.is_some_and(|p| label.iter().zip(p).all(|(&l, &t)| l == 0 || l == t));
    let halt_at = trace.iter().position(|t| t.halts).map(|k| k + 1);
    let _ = write!(
        s,
        "<section class=puzzle><h3>test example {idx}: {} after {} steps{}</h3><div class=row>",
        if right { "<span class=ok>solved</span>" } else { "<span class=bad>not solved</span>" },
        trace.len(),
        halt_at.map_or(String::from(", the halting head never fired"), |k| format!(", the halting head would stop at step {k}"))
    );
    s.push_str(&figure(&draw(kind, input, input, None, None, side, n), "input", "io"));
    let mut prev: Option<&[u8]> = None;
    for t in trace {
        let wrong = label.iter().zip(&t.tokens).filter(|(l, p)| **l != 0 && l != p).count();
        let class = if Some(t.step) == halt_at { "step halt" } else { "step" };
        let cap =
            format!("step {} · q {:.2}<br>{} changed · {} wrong", t.step, t.q_halt, if prev.is_some() { t.changed } else { 0 }, wrong);
        s.push_str(&figure(&draw(kind, &t.tokens, input, Some(label), prev, side, n), &cap, class));
        prev = Some(&t.tokens);
    }
    s.push_str(&figure(&draw(kind, label, input, None, None, side, n), "target", "io"));
    s.push_str("</div></section>");
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart text{font-size:11px;fill:#333}.chart .title{font-size:13px;font-weight:600}
.chart .grid{stroke:#eee}.chart .frame{fill:none;stroke:#888}.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure{margin:0;text-align:center;font-size:11px;color:#444}figure.halt svg{outline:3px solid #2ca02c}
figure.io figcaption{font-weight:600}.ok{color:#2ca02c}.bad{color:#d62728}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}.note{color:#666;font-size:12px}";

/// How every report's HTML begins (`trm report` knows an earlier report by it).
pub const REPORT_HTML_START: &str = "<!doctype html><html><head><meta charset=utf-8><title>trm report: ";

/// Writes the report; returns the puzzles drawn.
pub fn write_report(o: &ReportOptions) -> Result<usize> {
    let m = Metrics::read(&o.run)?;
    let mut html = String::new();
    let title = o.run.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let _ = write!(html, "{REPORT_HTML_START}{title}</title><style>{STYLE}</style></head><body><h1>trm report: {title}</h1>");
    // A run without checkpoints still has curves; a checkpoint that fails verification is named.
    let ckpt = match checkpoint::resolve(&o.run) {
        Ok(c) => Some(c),
        Err(e) => {
            if o.run.join("checkpoints").exists() {
                eprintln!("warning: no puzzles in the report: {e:#}");
            }
            None
        }
    };
    let state = ckpt.as_ref().map(|c| checkpoint::read_state_json(c)).transpose()?;
    html.push_str(&summary_table(ckpt.as_deref().zip(state.as_ref()), &m));
    html.push_str("<h2>Training curves</h2><div class=charts>");
    let specs = chart_specs(&m);
    for (t, series) in &specs {
        html.push_str(&svg::line_chart(t, "optimiser step", series, 440.0, 260.0));
    }
    html.push_str("</div>");
    let recorded = state.as_ref().and_then(|s| s.config.data_paths.first().map(PathBuf::from));
    let data = o.data.clone().or(recorded);
    let drawn = match (&ckpt, &state, data) {
        _ if o.puzzles == 0 => 0, // --puzzles 0: none asked for
        // A run moved or copied without its data: the curves are still worth a report.
        (Some(_), Some(_), Some(data)) if o.data.is_none() && !data.is_dir() => {
            eprintln!(
                "warning: the data set this run recorded, {}, is not there (moved or deleted): no puzzles drawn; pass --data DIR \
                 to draw them from a copy",
                data.display()
            );
            html.push_str("<p class=note>The run's data set is not there: puzzles not drawn (pass --data).</p>");
            0
        }
        (Some(ckpt), Some(st), Some(data)) => puzzles_step_by_step(&mut html, ckpt, st, &data, o)?,
        (ckpt, _, _) => {
            // Said where the user looks too, naming what is missing (a checkpoints folder that
            // failed to verify was named above).
            let missing = if ckpt.is_none() { "no checkpoint in the run" } else { "no test data (pass --data)" };
            if ckpt.is_none() && !o.run.join("checkpoints").exists() {
                eprintln!("warning: no puzzles in the report: {missing}");
            }
            let _ = write!(html, "<p class=note>Puzzles not drawn: {missing}.</p>");
            0
        }
    };
    html.push_str("</body></html>\n");
    // Both written in full before either is put in place: a report stopped while the charts
    // are drawn leaves the previous page and charts, not a new page beside old charts.
    let page = crate::util::fs::stage(&o.out, html.as_bytes())?;
    let charts = match o.png {
        true => Some(crate::util::fs::stage(&o.out.with_extension("png"), &png::charts_png(&specs)?)?),
        false => None,
    };
    page.commit()?;
    if let Some(charts) = charts {
        charts.commit()?;
    }
    Ok(drawn)
}

/// The data set a run recorded (`data_paths`, the same in all its checkpoints), if any. Only a
/// state.json is read: the report itself picks and verifies the checkpoint, once.
pub fn recorded_data(run: &Path) -> Option<PathBuf> {
    checkpoint::newest_state_json(run)?.config.data_paths.first().map(PathBuf::from)
}

/// The run summary: checkpoint, model and training settings, and the last evaluation.
fn summary_table(ckpt: Option<(&Path, &checkpoint::StateJson)>, m: &Metrics) -> String {
    let mut html = String::from("<table>");
    if let Some((ckpt, st)) = ckpt {
        let a = &st.model.arch;
        let c = &st.config;
        let rows: BTreeMap<&str, String> = BTreeMap::from([
            ("checkpoint", format!("{} (step {})", ckpt.display(), st.step)),
            ("model", {
                let s = crate::model::schedule::Schedule::of(a);
                let nets: Vec<String> = s.nets.iter().map(|n| format!("{} {} blocks", n.name, n.layers)).collect();
                format!(
                    "arch={}, hidden {}, {}, H_cycles {}, L_cycles {}, mlp_t {}, pos {:?}, effective depth {}",
                    a.name.name(),
                    a.hidden_size,
                    nets.join(" + "),
                    a.h_cycles,
                    a.l_cycles,
                    a.mlp_t,
                    a.pos_encodings,
                    s.effective_depth()
                )
            }),
            ("training", {
                let mut t = format!(
                    "batch {}, lr {}, weight decay {}, epochs {}, EMA {}",
                    c.global_batch_size, c.lr, c.weight_decay, c.epochs, c.ema
                );
                if let Some(d) = &c.depth_curriculum {
                    t.push_str(&format!(", depth curriculum {d}"));
                }
                if c.supervision_decay != 1.0 {
                    t.push_str(&format!(", supervision decay {}", c.supervision_decay));
                }
                t
            }),
        ]);
        for (k, v) in rows {
            let _ = write!(html, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
    }
    for key in ["accuracy", "exact_accuracy"] {
        if let Some((s, v)) = m.curve("eval", key).last() {
            let _ = write!(html, "<tr><th>test {key}</th><td>{v:.4} at step {s}</td></tr>");
        }
    }
    if let Some(speed) = speed_and_memory(m) {
        let _ = write!(html, "<tr><th>speed and memory</th><td>{speed}</td></tr>");
    }
    html.push_str("</table>");
    html
}

/// The median step time and examples per second, and the last memory peaks, of a run that logged
/// them (`SYSTEM_KEYS`).
fn speed_and_memory(m: &Metrics) -> Option<String> {
    let median = |key: &str| crate::eval::interval::median(&m.curve("train", key).into_iter().map(|p| p.1).collect::<Vec<_>>());
    let mut parts = vec![format!("{:.3} s per optimiser step (median)", median("step_seconds")?)];
    if let Some(rate) = median("examples_per_second") {
        parts.push(format!("{rate:.0} examples per second"));
    }
    for (label, key) in [("host peak RSS", "host_peak_rss_mib"), ("GPU peak allocated", "gpu_peak_allocated_mib")] {
        if let Some((_, mib)) = m.curve("train", key).last() {
            parts.push(format!("{label} {mib:.0} MiB"));
        }
    }
    Some(parts.join(", "))
}

/// Test puzzles solved step by step by the checkpoint, spread evenly over the test split.
/// Returns the puzzles drawn.
fn puzzles_step_by_step(html: &mut String, ckpt: &Path, st: &checkpoint::StateJson, data: &Path, o: &ReportOptions) -> Result<usize> {
    let test = format::read_dataset_split(data, "test")?;
    crate::eval::evaluate::check_data_fits(data, &test, &st.model)?;
    crate::eval::evaluate::check_identifiers(data, ckpt, &st.model)?;
    let kind = PuzzleKind::of_split(&test);
    let device = Default::default();
    let (params, table) = checkpoint::load_model::<Flex>(&ckpt.join("model.safetensors"), &st.model, &device)?;
    let w = Weights::from_named(&st.model, params)?;
    let steps = o.steps.unwrap_or(st.model.arch.halt_max_steps);
    let _ = write!(
        html,
        "<h2>Test puzzles, step by step</h2><p class=note>Data {}. Each picture is the decoded answer after one supervision step; \
         orange outlines mark cells that changed since the previous step, red marks cells that differ from the target, \
         q is the halting head's confidence that the answer is right (green frame: the first step where the model's halting rule fires, q &gt; 0.5 for TRM).</p>",
        data.display()
    );
    let (_, set) = &test.sets[0];
    let n = set.num_examples();
    let drawn = o.puzzles.min(n);
    for j in 0..drawn {
        let idx = j * n / drawn;
        let p = set.puzzle_indices.partition_point(|&s| s as usize <= idx).saturating_sub(1);
        let (input, label) = (set.example_input(idx), set.example_label(idx));
        let trace = solve_tokens(&st.model, &w, table.as_ref(), input, set.puzzle_identifiers[p], steps, false);
        html.push_str(&puzzle_html(kind, idx, input, label, &trace));
    }
    Ok(drawn)
}
