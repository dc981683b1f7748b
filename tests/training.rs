//! Training end to end on CPU: exact resume, kill -9 safety, and learning on real Sudoku data.

mod common;

use std::path::Path;
use trm::store::config;
use trm::train::trainer::{TrainJob, train};
use trm::util::tensors::read_safetensors;

type AD = burn::backend::Autodiff<burn::backend::Flex>;

use common::{TINY, tiny_data};

fn tiny_config(extra: &[&str]) -> config::TrainConfig {
    let run = ["arch.halt_exploration_prob=0.5", "epochs=4", "eval_interval=2", "eval_max_examples=8"];
    let ov: Vec<String> = TINY.iter().chain(&run).chain(extra).map(|s| s.to_string()).collect();
    config::resolve("sudoku-tiny", &ov).unwrap()
}

fn final_state(run: &Path) -> std::collections::BTreeMap<String, trm::util::tensors::HostTensor> {
    let ckpt = trm::store::checkpoint::resolve(run).unwrap();
    let mut all = read_safetensors(&ckpt.join("state.safetensors")).unwrap();
    for (k, v) in read_safetensors(&ckpt.join("model.safetensors")).unwrap() {
        all.insert(format!("model/{k}"), v);
    }
    all
}

/// A quiet job of the tiny recipe with `max_steps=steps` and `extra` into `runs/out`; a resumed
/// run is handed `max_steps` alone.
fn steps_job(data: &Path, runs: &Path, out: &str, steps: u64, resume: bool, extra: &[&str]) -> TrainJob {
    let max = format!("max_steps={steps}");
    let ov: Vec<&str> = std::iter::once(max.as_str()).chain(extra.iter().copied()).collect();
    TrainJob {
        config: tiny_config(&ov),
        data: data.to_path_buf(),
        out: runs.join(out),
        resume,
        overrides: vec![max.clone()],
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    }
}

/// The train records of a run's metrics.jsonl.
fn train_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .collect()
}

#[test]
fn resume_is_exact() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    // 14 steps crosses an iteration boundary (12 steps per 2-epoch iteration) and an evaluation.
    let n = 14;
    let job = |out: &str, steps: u64, resume: bool| steps_job(data.path(), runs.path(), out, steps, resume, &[]);
    let straight = train::<AD>(&job("straight", n, false), &Default::default()).unwrap();
    assert_eq!(straight.steps, n);
    // The ARC evaluator (the default) has nothing to score on Sudoku data: the run records none.
    assert_eq!(job("straight", n, false).config.evaluators, [config::ARC_EVALUATOR]);
    let recorded = trm::store::checkpoint::read_state_json(&trm::store::checkpoint::resolve(&runs.path().join("straight")).unwrap());
    assert!(recorded.unwrap().config.evaluators.is_empty());
    train::<AD>(&job("split", n / 2, false), &Default::default()).unwrap();
    let resumed = train::<AD>(&job("split", n, true), &Default::default()).unwrap();
    assert_eq!(resumed.steps, n);
    let a = final_state(&runs.path().join("straight"));
    let b = final_state(&runs.path().join("split"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k.starts_with("adam_m.")) && a.keys().any(|k| k.starts_with("ema.")) && a.contains_key("carry.z_H"));
    for (k, va) in &a {
        assert_eq!(va.values, b[k].values, "{k} differs after resume");
    }
    // The training logs agree too (same losses at every step).
    let losses = |run: &str| -> Vec<String> {
        train_records(&runs.path().join(run)).iter().map(|v| format!("{} {}", v["step"], v["lm_loss"])).collect()
    };
    assert_eq!(losses("straight"), losses("split"));
}

#[test]
fn a_depth_curriculum_trains_its_stages_and_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    // 24 steps in the schedule (4 epochs of 6 batches): stage 1 is steps 1-8 (progress < 0.3),
    // stage 2 steps 9-15, stage 3 from step 16. The run stops at 18.
    let n = 18;
    let job = |out: &str, steps: u64, resume: bool, extra: &[&str]| {
        let ov: Vec<&str> = ["arch.H_cycles=3", "arch.L_cycles=3"].into_iter().chain(extra.iter().copied()).collect();
        steps_job(data.path(), runs.path(), out, steps, resume, &ov)
    };
    let cgar = ["depth_curriculum=cgar", "supervision_decay=0.7"];
    train::<AD>(&job("straight", n, false, &cgar), &Default::default()).unwrap();
    train::<AD>(&job("split", 11, false, &cgar), &Default::default()).unwrap();
    train::<AD>(&job("split", n, true, &cgar), &Default::default()).unwrap();
    let (a, b) = (final_state(&runs.path().join("straight")), final_state(&runs.path().join("split")));
    for (k, va) in &a {
        assert_eq!(va.values, b[k].values, "{k} differs after resume");
    }
    // Every step logged the depth of its stage.
    let depth: Vec<(u64, u64)> = train_records(&runs.path().join("straight"))
        .iter()
        .map(|v| (v["H_cycles"].as_f64().unwrap() as u64, v["L_cycles"].as_f64().unwrap() as u64))
        .collect();
    let want: Vec<(u64, u64)> = (1..=n)
        .map(|s| {
            if s <= 8 {
                (1, 1)
            } else if s <= 15 {
                (2, 2)
            } else {
                (3, 3)
            }
        })
        .collect();
    assert_eq!(depth, want);
    // The first stage is the shallow model: steps 1-8 equal a run configured at H_cycles=1
    // L_cycles=1 (same weights, data and schedule), and then the runs part.
    train::<AD>(&job("shallow", 10, false, &["arch.H_cycles=1", "arch.L_cycles=1"]), &Default::default()).unwrap();
    train::<AD>(&job("staged", 10, false, &["depth_curriculum=cgar"]), &Default::default()).unwrap();
    let loss = |run: &str| -> Vec<f64> { train_records(&runs.path().join(run)).iter().map(|v| v["lm_loss"].as_f64().unwrap()).collect() };
    let (shallow, staged) = (loss("shallow"), loss("staged"));
    assert_eq!(shallow[..8], staged[..8]);
    assert_ne!(shallow[8..], staged[8..]);
    // Supervision weighting changes the training (the straight run above against the same
    // curriculum without it).
    train::<AD>(&job("unweighted", n, false, &["depth_curriculum=cgar"]), &Default::default()).unwrap();
    assert_ne!(loss("straight"), loss("unweighted"));
    // The later stages train at their depth too. Stage 2 of the (3, 3) run equals the last stage
    // of a (2, 2) model with the same first stage (steps 9-15), and then the runs part; stage 3,
    // the (3, 3) model's own depth, equals stage 3 of a (4, 4) model whose fourth stage is never
    // reached (it would start at step 23).
    let two = ["arch.H_cycles=2", "arch.L_cycles=2", "depth_curriculum=0:1:1,0.3:2:2"];
    train::<AD>(&job("two_deep", n, false, &two), &Default::default()).unwrap();
    let four = ["arch.H_cycles=4", "arch.L_cycles=4", "depth_curriculum=0:1:1,0.3:2:2,0.6:3:3,0.9:4:4"];
    train::<AD>(&job("four_deep", n, false, &four), &Default::default()).unwrap();
    let (cgar3, two_deep) = (loss("unweighted"), loss("two_deep"));
    assert_eq!(cgar3[..15], two_deep[..15]);
    assert!((15..n as usize).all(|i| cgar3[i] != two_deep[i]), "stage 3 trained like stage 2: {cgar3:?} {two_deep:?}");
    assert_eq!(cgar3, loss("four_deep"));
    // A last stage that the 24-step schedule never reaches (step 25) is refused before training.
    let e = train::<AD>(&job("late", n, false, &["depth_curriculum=0:1:1,0.99:3:3"]), &Default::default()).unwrap_err();
    assert!(format!("{e:#}").contains("the schedule has 24 steps, too few for its last stage"), "{e:#}");
}

/// The reference's `data_paths_test` naming the training data set is its test split, recorded as
/// the reference's default `[]`; another data set's test split is refused before training.
#[test]
fn data_paths_test_names_the_training_data_set_or_is_refused() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let same = format!("data_paths_test=[{}]", data.path().display());
    train::<AD>(&steps_job(data.path(), runs.path(), "same", 1, false, &[&same]), &Default::default()).unwrap();
    let ckpt = trm::store::checkpoint::resolve(&runs.path().join("same")).unwrap();
    assert!(trm::store::checkpoint::read_state_json(&ckpt).unwrap().config.data_paths_test.is_empty());
    let other = format!("data_paths_test=[{}]", runs.path().display());
    let e = train::<AD>(&steps_job(data.path(), runs.path(), "other", 1, false, &[&other]), &Default::default()).unwrap_err();
    assert!(format!("{e:#}").contains("is not implemented"), "{e:#}");
    assert!(!runs.path().join("other").join("checkpoints").exists());
}

/// Heads 1 wide (as many heads as hidden units), with learned or no position encodings, train:
/// the rope tables, made whatever the encoding, once divided by the half width, 0 there. So do
/// heads of odd width under mlp_t with rope configured, and more heads than units there.
#[test]
fn heads_one_wide_train() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    for (out, extra) in [
        ("attention", ["arch.num_heads=16", "arch.pos_encodings=learned", "arch.mlp_t=False"]),
        ("mlp_t", ["arch.num_heads=16", "arch.pos_encodings=none", "arch.mlp_t=True"]),
        // rope from a config file under mlp_t, heads 5 wide: rope is never applied (no attention),
        // so its even-width rule does not hold the model back.
        ("mlp_t rope", ["arch.hidden_size=20", "arch.pos_encodings=rope", "arch.mlp_t=True"]),
        // More heads than units: nothing splits under mlp_t (was refused, and the idle-key check
        // then refused the arch.num_heads that would have fixed it).
        ("mlp_t heads", ["arch.hidden_size=8", "arch.num_heads=16", "arch.mlp_t=True"]),
    ] {
        let s = train::<AD>(&steps_job(data.path(), runs.path(), out, 2, false, &extra), &Default::default()).unwrap();
        assert_eq!(s.steps, 2, "{out}");
    }
}

/// A key given on the command line that the run would not use is refused, not recorded and
/// ignored; so is an iteration too long to hold its draw order.
#[test]
fn command_line_keys_that_would_change_nothing_are_refused() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let refused = |out: &str, given: &[&str]| {
        let mut job = steps_job(data.path(), runs.path(), out, 1, false, given);
        job.overrides.extend(given.iter().map(|s| s.to_string()));
        format!("{:#}", train::<AD>(&job, &Default::default()).unwrap_err())
    };
    let e = refused("arc", &["evaluators=[{name: arc@ARC, submission_K: 3}]"]);
    assert!(e.contains("is not an ARC data set"), "{e}");
    let e = refused("frozen", &["freeze_weights=True", "lr=0.5"]);
    assert!(e.starts_with("lr=0.5 would change nothing: freeze_weights=True trains only the puzzle embeddings"), "{e}");
    let e = refused("mlp", &["arch.mlp_t=True", "arch.pos_encodings=none", "arch.num_heads=1"]);
    assert!(e.contains("no heads"), "{e}");
    // 10^11 epochs in one iteration: an order of draws no machine holds (it was an abort, or an
    // overflow panic, before the first step).
    let e = refused("long", &["epochs=100000000000", "eval_interval=100000000000"]);
    assert!(e.contains("evaluate more often") && e.contains("100000000000 epochs"), "{e}");
    // The preset's arc@ARC on Sudoku data is left out (the run records none), as before.
    let s = train::<AD>(&steps_job(data.path(), runs.path(), "default", 1, false, &[]), &Default::default()).unwrap();
    assert_eq!(s.steps, 1);
}

#[test]
fn a_second_run_into_the_same_folder_needs_resume() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let job = TrainJob {
        config: tiny_config(&["max_steps=2"]),
        data: data.path().into(),
        out: runs.path().into(),
        resume: false,
        overrides: vec![],
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    };
    train::<AD>(&job, &Default::default()).unwrap();
    let e = format!("{:#}", train::<AD>(&job, &Default::default()).unwrap_err());
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn a_tiny_trm_learns_real_sudoku() {
    // Real data: the Sudoku-Extreme 1k training split (2 shuffles each), 256 held-out test_hard
    // puzzles.
    let shared = common::data().join("sudoku-extreme-1k");
    let data = tempfile::tempdir().unwrap();
    let opt = trm::data::sudoku::BuildOptions { subsample: None, test_subsample: Some(256), num_aug: 2, seed: 0 };
    let (_, test) = trm::data::sudoku::build(&shared.join("train.csv"), &shared.join("test_hard.csv.gz"), data.path(), &opt).unwrap();
    // Baseline: copy every given and guess blanks uniformly among the 9 digits.
    let n = test.num_examples();
    let givens: usize = (0..n).map(|i| test.example_input(i).iter().filter(|&&t| t >= 2).count()).sum();
    let blanks = n * 81 - givens;
    let baseline = (givens as f64 + blanks as f64 / 9.0) / (n * 81) as f64;

    let runs = tempfile::tempdir().unwrap();
    let cfg = config::resolve(
        "sudoku-tiny",
        &[
            "arch.mlp_t=False",
            "arch.pos_encodings=rope",
            "arch.hidden_size=32",
            "arch.num_heads=2",
            "arch.puzzle_emb_ndim=32",
            "arch.halt_max_steps=4",
            "global_batch_size=32",
            "lr=3e-3",
            "puzzle_emb_lr=3e-3",
            "lr_warmup_steps=20",
            "weight_decay=0.1",
            "epochs=8",
            "eval_interval=4",
            "max_steps=200",
            "eval_max_examples=256",
        ]
        .map(String::from),
    )
    .unwrap();
    let job = TrainJob {
        config: cfg,
        data: data.path().into(),
        out: runs.path().into(),
        resume: false,
        overrides: vec![],
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    };
    let s = train::<AD>(&job, &Default::default()).unwrap();
    let (_, first) = &s.evals[0];
    let (_, last) = s.evals.last().unwrap();
    let blank_acc = (last.accuracy * (n * 81) as f64 - givens as f64) / blanks as f64;
    eprintln!(
        "baseline {baseline:.4}; eval token accuracy {:.4} -> {:.4}; blank-cell accuracy {blank_acc:.4}",
        first.accuracy, last.accuracy
    );
    assert_eq!(last.count, 256);
    assert!(
        last.accuracy > baseline + 0.02,
        "token accuracy {:.4} is not clearly above the copy+chance baseline {baseline:.4}",
        last.accuracy
    );
    assert!(blank_acc > 1.25 / 9.0, "blank cells {blank_acc:.4} are no better than chance");
    // The training loss fell.
    let log = std::fs::read_to_string(runs.path().join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("\"split\":\"train\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lm_loss"].as_f64().unwrap())
        .collect();
    let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let tail: f64 = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(tail < 0.85 * head, "training loss {head:.4} -> {tail:.4} did not fall");
    // Every step also logs its wall time, the examples per second that makes, and the process's
    // peak memory (the host's; a GPU's only on cuda).
    let records: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"split\":\"train\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    for r in &records {
        let (secs, rate) = (r["step_seconds"].as_f64().unwrap(), r["examples_per_second"].as_f64().unwrap());
        assert!(secs > 0.0 && secs < 60.0, "step_seconds {secs}");
        assert!((rate * secs / 32.0 - 1.0).abs() < 1e-6, "examples_per_second {rate} is not batch 32 / {secs} s");
        let rss = r["host_peak_rss_mib"].as_f64().unwrap();
        // Linux sums its resident-memory counters lazily, so the peak it reports can dip slightly.
        assert!(rss > 10.0 && rss < 64.0 * 1024.0, "host_peak_rss_mib {rss}");
        assert!(r.get("gpu_peak_allocated_mib").is_none(), "no GPU counters on the CPU");
    }
    let evals: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"split\":\"eval\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(evals.len(), s.evals.len());
    assert!(evals.iter().all(|r| r["eval_seconds"].as_f64().is_some_and(|t| t > 0.0)), "each evaluation logs its wall time");

    // The trained run answers a held-out puzzle through the CLI, as JSON, with one entry per step
    // (6 > halt_max_steps 4: test-time recursion), and the HTML report draws it.
    let q: String = test.example_input(0).iter().map(|&t| if t >= 2 { (b'0' + t - 1) as char } else { '.' }).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["solve", "--steps", "6", "--json", "--sudoku", &q, "--checkpoint"])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(js["steps"].as_array().unwrap().len(), 6);
    let answer = js["answer"].as_str().unwrap();
    assert_eq!(answer.len(), 81);
    // The verdict against an independent check: the rules and the givens, by the exact solver's
    // own test of a solution (a model this small usually breaks them).
    use trm::data::sudoku_solver::{parse_grid, solves};
    let independent = parse_grid(answer).is_ok_and(|a| solves(&parse_grid(&q).unwrap(), &a));
    assert_eq!(js["valid"].as_bool().unwrap(), independent, "{js}");
    assert_eq!(independent, js["problems"].as_array().unwrap().is_empty(), "a verdict of invalid names its problems: {js}");
    assert!(js["steps"].as_array().unwrap().iter().all(|s| (0.0..=1.0).contains(&s["q_halt"].as_f64().unwrap())));

    let html = runs.path().join("report.html");
    let o = trm::report::ReportOptions { run: runs.path().into(), out: html.clone(), data: None, puzzles: 2, steps: None, png: true };
    assert_eq!(trm::report::write_report(&o).unwrap(), 2, "puzzles found through the run's recorded data path");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("class=\"chart\"").count(), 8, "six learning curves, the step time and the peak memory");
    assert!(page.contains("s per optimiser step (median)") && page.contains("host peak RSS"), "the summary's speed and memory");
    assert_eq!(page.matches("<section class=puzzle>").count(), 2);
    assert_eq!(page.matches("step 4 · q").count(), 2, "one grid per supervision step");
    assert!(!page.contains("http://") || page.matches("http://").count() == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    assert!(!page.contains("https://") && !page.contains("<script"), "self-contained: no network, no scripts");
    let png = std::fs::read(html.with_extension("png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The report inside the run folder, written again by the command (as after more training):
    // an existing report is replaced with --force only; the run's own files never are.
    let report = |out: &Path, force: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
        c.args(["report", "--puzzles", "0", "--threads", "1", "--run"]).arg(runs.path()).arg("--out").arg(out);
        let o = c.args(force.then_some("--force")).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (ok, err) = report(&html, false);
    assert!(!ok && err.contains("the file exists; pass --force"), "{err}");
    std::fs::write(&html, "stale").unwrap(); // a page that is not trm's report is the run's to keep
    let (ok, err) = report(&html, true);
    assert!(!ok && err.contains("belongs to the run being reported"), "{err}");
    std::fs::write(&html, &page).unwrap();
    let (ok, err) = report(&html, true);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&html).unwrap().matches("<section class=puzzle>").count() == 0, "rewritten with --puzzles 0");
    let metrics = runs.path().join("metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let (ok, err) = report(&metrics, true);
    assert!(!ok && err.contains("belongs to the run being reported"), "{err}");
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
}

/// The `trm` binary is killed with SIGKILL in the middle of training (checkpoints every 2 steps);
/// `--resume` continues from the last checkpoint and ends bit-identical to a run never killed.
#[test]
fn kill_dash_nine_then_resume_matches_an_uninterrupted_run() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_trm");
    let overrides = TINY.iter().chain(&["epochs=400", "eval_interval=200", "eval_max_examples=8", "checkpoint_interval_steps=2"]);
    let cmd = |out: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(bin);
        c.args(["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"]).arg(data.path()).arg("--out").arg(out);
        c.args(overrides.clone()).args(extra);
        c
    };
    let killed = runs.path().join("killed");
    let mut child = cmd(&killed, &[]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait for a checkpoint at step >= 6, then SIGKILL (std's kill is SIGKILL on Unix).
    let t0 = std::time::Instant::now();
    loop {
        let at =
            trm::store::checkpoint::resolve(&killed).ok().and_then(|c| trm::store::checkpoint::read_state_json(&c).ok()).map(|s| s.step);
        if at.is_some_and(|s| s >= 6) {
            break;
        }
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = trm::store::checkpoint::read_state_json(&trm::store::checkpoint::resolve(&killed).unwrap()).unwrap().step;

    let n = at_kill + 5;
    let max = format!("max_steps={n}");
    let resumed = cmd(&killed, &["--resume", &max]).output().unwrap();
    assert!(resumed.status.success(), "resume failed: {}", String::from_utf8_lossy(&resumed.stderr));
    let straight = runs.path().join("straight");
    assert!(cmd(&straight, &[&max]).output().unwrap().status.success());

    let a = final_state(&straight);
    let b = final_state(&killed);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, va) in &a {
        assert_eq!(va.values, b[k].values, "{k} differs after kill -9 + resume (killed at checkpoint step {at_kill})");
    }
    // Each step is logged once: what the killed run logged after its checkpoint was dropped.
    let steps: Vec<u64> = std::fs::read_to_string(killed.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=n).collect::<Vec<_>>());
    let tb = std::fs::read_dir(&killed).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("tfevents")).unwrap();
    let events = trm::train::logging::read_events(&tb).unwrap();
    let loss_steps: Vec<u64> = events.iter().filter(|(_, tag, _)| tag == "train/lm_loss").map(|(s, _, _)| *s).collect();
    assert_eq!(loss_steps, (1..=n).collect::<Vec<_>>());
}

/// `trm eval` reports the same losses whatever its batch size. The padding rows of a partial last
/// batch once added their q_halt loss (a padding row has no labels, so its target is "correct"):
/// a 4-step model evaluated on 32 puzzles read q_halt_loss 0.0067 in batches of 16, 1.26 in
/// batches of 20 and 35.0 in batches of 256 (by hand, 2026-12-06). This checks the non-adaptive
/// evaluation, the one every architecture but the baseline with `act_inference` runs.
#[test]
fn eval_losses_do_not_depend_on_the_batch_size() {
    eval_losses_agree_across_batch_sizes(&common::TINY);
}

/// The same for the adaptive evaluation (the baseline with `act_inference`), where each row's
/// losses are taken at its first halt: padding rows halt too, and must not be counted. It fails
/// without the `r < real` guard of `run_batch` (q_halt_loss 0.0067 in one batch, 1.26 in batches
/// of 5; checked 2026-12-06).
#[test]
fn adaptive_eval_losses_do_not_depend_on_the_batch_size() {
    eval_losses_agree_across_batch_sizes(&[
        "arch=transformers_baseline",
        "arch.H_layers=2",
        "arch.act_inference=True",
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.puzzle_emb_ndim=16",
        "global_batch_size=8",
    ]);
}

fn eval_losses_agree_across_batch_sizes(overrides: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tiny_data(&data);
    let run = dir.path().join("run");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).chain(["max_steps=4".to_string()]).collect();
    let mut job = common::tiny_job(&data, &run, &[], false);
    // Every evaluation also saves every output of each example (checked against trm eval's below).
    let all = "eval_save_outputs=[inputs,labels,puzzle_identifiers,preds,logits,q_halt_logits,q_continue_logits]";
    job.config = trm::store::config::resolve("sudoku-tiny", &[&overrides[..], &[all.to_string()]].concat()).unwrap();
    train::<AD>(&job, &Default::default()).unwrap();
    let eval = |batch: &str, extra: &[&str]| -> serde_json::Value {
        let args = ["eval", "--checkpoint", run.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json", "--batch", batch];
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // 16 test puzzles: one full batch; a last batch of 1 real row and 4 padding rows; 240 padding rows.
    let whole = eval("16", &[]);
    assert_eq!(whole["count"], 16);

    // The outputs trm eval saves (batches of 5: padding rows are not saved) are the training
    // run's own evaluation's, and agree with the metrics: the saved answers score as reported.
    let saved = dir.path().join("outputs.pt");
    let keys = ["inputs", "labels", "puzzle_identifiers", "preds", "logits", "q_halt_logits", "q_continue_logits"];
    eval("5", &["--save-outputs", saved.to_str().unwrap(), "--outputs", &keys.join(",")]);
    let (mine, trained) = (saved_outputs(&saved, &keys), saved_outputs(&run.join("step_4_all_preds.0"), &keys));
    for k in keys {
        let (a, b) = (&mine[k], &trained[k]);
        assert!(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "{k} differs");
    }
    let (preds, labels, logits) = (&mine["preds"], &mine["labels"], &mine["logits"]);
    let (s, v) = (labels.len() / 16, logits.len() / labels.len());
    assert_eq!((mine["puzzle_identifiers"].len(), mine["q_halt_logits"].len(), s * 16), (16, 16, preds.len()));
    let (mut exact, mut token) = (0.0, 0.0);
    for r in 0..16 {
        let row = r * s..(r + 1) * s;
        let supervised: Vec<usize> = row.filter(|&i| labels[i] != -100.0).collect();
        let right = supervised.iter().filter(|&&i| preds[i] == labels[i]).count();
        exact += (right == supervised.len()) as u8 as f64 / 16.0;
        token += right as f64 / supervised.len().max(1) as f64 / 16.0;
    }
    assert!((exact - whole["exact_accuracy"].as_f64().unwrap()).abs() < 1e-9, "exact accuracy {exact} against {}", whole["exact_accuracy"]);
    assert!((token - whole["accuracy"].as_f64().unwrap()).abs() < 1e-9, "token accuracy {token} against {}", whole["accuracy"]);
    for (i, p) in preds.iter().enumerate() {
        let l = &logits[i * v..(i + 1) * v];
        let best = (0..v).fold(0, |b, j| if l[j] > l[b] { j } else { b });
        assert_eq!(best as f64, *p, "the answer is the logits' argmax");
    }

    for batch in ["5", "256"] {
        let other = eval(batch, &[]);
        for key in ["lm_loss", "q_halt_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps"] {
            let (a, b) = (whole[key].as_f64().unwrap(), other[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{key}: {a} in one batch of 16, {b} in batches of {batch}");
        }
        // Accuracy per supervision step and the halting histogram: the same numbers, flattened.
        for key in ["per_step", "halt_step_histogram"] {
            let flat = |v: &serde_json::Value| -> Vec<f64> {
                let mut out = Vec::new();
                let mut stack = vec![v.clone()];
                while let Some(x) = stack.pop() {
                    match x {
                        serde_json::Value::Array(a) => stack.extend(a.into_iter().rev()),
                        x => out.push(x.as_f64().unwrap()),
                    }
                }
                out
            };
            let (a, b) = (flat(&whole[key]), flat(&other[key]));
            assert!(!a.is_empty() && a.len() == b.len(), "{key}: {a:?} against {b:?}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-9, "{key}: {a:?} in one batch of 16, {b:?} in batches of {batch}");
            }
        }
    }
}

/// The tensors of a saved-outputs file (`keys`, in the order they were asked for), as f64: read
/// from the archive's raw little-endian data entries, int32, int64 or float32 by the output.
fn saved_outputs(path: &Path, keys: &[&str]) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let archive = path.file_stem().unwrap().to_str().unwrap().to_string();
    let mut out = std::collections::BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let mut b = vec![];
        std::io::Read::read_to_end(&mut z.by_name(&format!("{archive}/data/{i}")).unwrap(), &mut b).unwrap();
        let values: Vec<f64> = match *k {
            "inputs" | "labels" | "puzzle_identifiers" => b.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            "preds" => b.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            _ => b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        };
        out.insert(k.to_string(), values);
    }
    out
}

/// A run that its time limit stops after every step, resumed each time, logs each step's
/// evaluation once, the uninterrupted run's among them. (A stop on an iteration's last batch ends
/// with the iteration's own evaluation; a trm that evaluated it off the schedule once logged it
/// again on resume.)
#[test]
fn a_run_stopped_by_its_time_limit_at_every_step_logs_each_evaluation_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tiny_data(&data);
    let ov = ["epochs=4".to_string(), "eval_interval=2".to_string()];
    let records = |run: &std::path::Path, split: &str| -> Vec<u64> {
        (std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["split"] == split)
            .map(|v| v["step"].as_u64().unwrap())
            .collect()
    };
    let whole = dir.path().join("whole");
    let steps = train::<AD>(&common::tiny_job(&data, &whole, &ov, false), &Default::default()).unwrap().steps;
    let stopped = dir.path().join("stopped");
    let mut job = common::tiny_job(&data, &stopped, &ov, false);
    job.time_limit = Some(std::time::Duration::ZERO);
    let mut runs = 0;
    loop {
        let s = train::<AD>(&job, &Default::default()).unwrap();
        runs += 1;
        job.resume = true;
        if s.steps >= steps || runs > 3 * steps {
            break;
        }
    }
    assert!(runs >= steps / 2, "the time limit stopped the run {runs} times in {steps} steps");
    assert_eq!(records(&stopped, "train"), records(&whole, "train"));
    // Every stop evaluates its final weights (`--time-limit` ends a run evaluated); no step twice.
    let (evals, stopped_evals) = (records(&whole, "eval"), records(&stopped, "eval"));
    assert!(evals.len() >= 2, "{evals:?}");
    assert!(stopped_evals.windows(2).all(|w| w[0] < w[1]), "a step evaluated twice: {stopped_evals:?}");
    assert!(evals.iter().all(|e| stopped_evals.contains(e)), "{evals:?} not all in {stopped_evals:?}");

    // A run that ends at its first iteration's end, where a checkpoint of that step
    // (checkpoint_interval_steps) came before the iteration's evaluation and no scheduled one
    // after it (checkpoint_every_eval=False, not the last iteration): its final checkpoint still
    // holds the evaluation, so a resume has nothing to evaluate again.
    let first = evals[0];
    let ended = dir.path().join("ended");
    let ov: Vec<String> = ov
        .iter()
        .cloned()
        .chain(["checkpoint_every_eval=False".into(), format!("checkpoint_interval_steps={first}"), format!("max_steps={first}")])
        .collect();
    let s = train::<AD>(&common::tiny_job(&data, &ended, &ov, false), &Default::default()).unwrap();
    assert_eq!(s.evals.iter().map(|e| e.0).collect::<Vec<_>>(), [first]);
    let again = train::<AD>(&common::tiny_job(&data, &ended, &ov, true), &Default::default()).unwrap();
    assert_eq!((again.steps, again.evals.len()), (first, 0), "the resumed run evaluated step {first} again");
    assert_eq!(records(&ended, "eval"), [first]);
}
