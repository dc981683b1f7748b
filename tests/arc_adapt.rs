//! End to end on real ARC tasks: train a tiny ARC model on two tasks, then `adapt` it to a task it
//! never saw and check that the new puzzle embedding learns (the training loss falls with the
//! network frozen), that the identifier map grew, and that evaluation wrote a scored submission.

mod common;

use trm::cli::adapt::read_tasks;
use trm::data::arc::{self, BuildOptions};
use trm::data::format;
use trm::store::{checkpoint, config};
use trm::train::adapt::{AdaptJob, adapt};
use trm::train::trainer;

type B = burn::backend::Autodiff<burn::backend::Flex>;

/// The tiny model: ARC shapes (900 tokens), hidden 32, one recursion of one latent update.
const TINY: [&str; 12] = [
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.L_layers=1",
    "arch.H_cycles=1",
    "arch.L_cycles=1",
    "arch.halt_max_steps=2",
    "arch.puzzle_emb_ndim=32",
    "arch.mlp_t=False",
    "arch.pos_encodings=rope",
    "global_batch_size=8",
    "puzzle_emb_lr=0.05",
    "eval_max_examples=64",
];

fn lm_losses(run: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["lm_loss"].as_f64().unwrap())
        .collect()
}

/// The ARC training tasks (with solutions) and a picker by name.
fn training_tasks() -> Vec<trm::data::arc_task::Task> {
    let arc_dir = common::data().join("arc");
    read_tasks(&arc_dir.join("arc-agi_training_challenges.json"), Some(&arc_dir.join("arc-agi_training_solutions.json"))).unwrap()
}

/// A quiet job training the tiny model on `data` into `out` (TINY, then `extra`); resumed, `extra`
/// is also the resume's overrides.
fn tiny_job(data: &std::path::Path, out: &std::path::Path, extra: &[&str], resume: bool) -> trainer::TrainJob {
    let ov: Vec<String> = TINY.iter().chain(extra).map(|s| s.to_string()).collect();
    trainer::TrainJob {
        config: config::resolve("demo", &ov).unwrap(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        resume,
        overrides: if resume { extra.iter().map(|s| s.to_string()).collect() } else { vec![] },
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    }
}

/// A data set of the named training tasks (each with 3 augmentations besides the original) in
/// `dir/name`.
fn two_task_data(dir: &std::path::Path, name: &str, tasks: [&str; 2]) -> std::path::PathBuf {
    let all = training_tasks();
    let pick = |n: &str| all.iter().find(|t| t.name == n).unwrap().clone();
    let opt = BuildOptions { input_prefix: String::new(), subsets: vec![], test_sets: vec![], num_aug: 3, seed: 0, translate: true };
    let data = dir.join(name);
    arc::build_tasks(&data, tasks.iter().map(|t| (pick(t), true)).collect(), vec!["<blank>".into()], &opt).unwrap();
    data
}

/// Trains the tiny model on `data` into `out` (TINY, then `extra`) and returns its newest checkpoint.
fn train_base(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    trainer::train::<B>(&tiny_job(data, out, extra, false), &Default::default()).unwrap();
    checkpoint::resolve(out).unwrap()
}

#[test]
fn adapt_learns_a_new_task_embedding_and_writes_a_submission() {
    let dir = tempfile::tempdir().unwrap();
    let all = training_tasks();
    let pick = |n: &str| all.iter().find(|t| t.name == n).unwrap().clone();

    // 1. A "pre-trained" model: a few steps on two small tasks.
    let base_data = two_task_data(dir.path(), "base-data", ["0d3d703e", "6150a2bd"]);
    let base_run = dir.path().join("base-run");
    // Without the ARC evaluator (the reference's `evaluators=[]`): no ARC scores, no submission.
    let base_ckpt = train_base(&base_data, &base_run, &["max_steps=30", "epochs=50", "eval_interval=50", "evaluators=[]"]);
    let metrics = std::fs::read_to_string(base_run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"exact_accuracy\"") && !metrics.contains("ARC/pass@"), "{metrics}");
    assert!(!base_run.join("submission.json").exists());
    assert!(checkpoint::read_state_json(&base_ckpt).unwrap().config.evaluators.is_empty());
    let old_names = checkpoint::read_identifiers(&base_ckpt).unwrap();
    assert_eq!(old_names.len(), 1 + 2 * 4, "blank + 2 tasks x (identity + 3 augmentations)");

    // 2. Adapt to a task it never saw, network frozen: only the new embedding rows may move. Its
    // evaluation scores with the ARC evaluator whatever the base run's `evaluators` were (step 4).
    let new_task = pick("25ff71a9"); // two test inputs: fractional credit applies
    let frozen = AdaptJob {
        checkpoint: base_run.clone(),
        config: None,
        identifiers: None,
        tasks: vec![new_task.clone()],
        task_files: vec![],
        out: dir.path().join("adapt-frozen"),
        num_aug: 7,
        steps: 8,
        all_weights: false,
        batch: Some(8),
        overrides: vec!["puzzle_emb_lr=0.01".into()],
        seed: 1,
        quiet: true,
        engine_flags: String::new(),
        memory_check: true,
    };
    let r = adapt::<B>(&frozen, &Default::default()).unwrap();
    assert_eq!(r.new_identifiers, 8, "identity + 7 augmentations");
    let names = format::read_identifiers(&r.data).unwrap();
    assert_eq!(&names[..old_names.len()], &old_names[..], "the checkpoint's identifiers keep their numbers");
    assert!(names[old_names.len()..].iter().all(|n| n.starts_with("25ff71a9")));
    let a = trm::util::tensors::read_safetensors(&base_ckpt.join("model.safetensors")).unwrap();
    let b = trm::util::tensors::read_safetensors(&checkpoint::resolve(&r.run).unwrap().join("model.safetensors")).unwrap();
    for (k, t) in &a {
        let u = &b[k];
        if k.ends_with("puzzle_emb.weights") {
            let old_len = t.f32s().len();
            assert_eq!(u.shape, vec![names.len(), t.shape[1]]);
            assert_eq!(t.f32s(), u.f32s()[..old_len].to_vec(), "old embedding rows changed");
            assert!(u.f32s()[old_len..].iter().any(|x| *x != 0.0), "new rows never moved");
        } else {
            assert_eq!(t.f32s(), u.f32s(), "{k} changed although the network is frozen");
        }
    }
    let frozen_eval = r.train.evals.last().unwrap().1.lm_loss;

    // 3. The same task with every weight tuned: the new task's loss falls clearly. (A base model
    // trained for 30 steps barely attends to the puzzle-embedding position, so with the network
    // frozen the loss stays flat here; a real pre-trained ARC model is what the frozen mode is for.)
    let out = dir.path().join("adapt");
    let aj = AdaptJob { out: out.clone(), steps: 40, all_weights: true, ..frozen };
    let r = adapt::<B>(&aj, &Default::default()).unwrap();
    let losses = lm_losses(&r.run);
    assert_eq!(losses.len(), 40);
    let head = losses[..8].iter().sum::<f64>() / 8.0;
    let tail = losses[losses.len() - 8..].iter().sum::<f64>() / 8.0;
    let eval = r.train.evals.last().unwrap().1.lm_loss;
    eprintln!("adapt lm_loss: first 8 steps {head:.4}, last 8 steps {tail:.4}; test lm_loss {eval:.4} (frozen network: {frozen_eval:.4})");
    assert!(tail < 0.85 * head, "the new task's loss should fall: {head:.4} -> {tail:.4}");
    assert!(eval < 0.9 * frozen_eval, "its test inputs should be predicted better: {eval:.4} vs {frozen_eval:.4}");

    // 4. Evaluation voted over the augmentations and wrote a Kaggle submission.
    let score = r.score.expect("an ARC evaluation at the end");
    assert_eq!((score.tasks, score.test_inputs), (1, 2));
    let sub: serde_json::Value = trm::util::fs::read_json(&r.run.join("submission.json")).unwrap();
    let entries = sub["25ff71a9"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["attempt_1"].is_array() && e["attempt_2"].is_array()));
    // The run pooled its votes, so `trm eval` on it writes eval_submission.json beside the run's
    // submission.json (the pool's), and replaces it every time; the pool's is never written over,
    // not even when --submission names it with --force.
    let pooled = std::fs::read(r.run.join("submission.json")).unwrap();
    for named in [false, false, true] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
        c.args(["eval", "--steps", "1", "--checkpoint"]).arg(&r.run).arg("--data").arg(&r.data);
        if named {
            c.arg("--submission").arg(r.run.join("submission.json")).arg("--force");
        }
        let o = c.output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        if named {
            assert!(!o.status.success() && e.contains("belongs to the model being evaluated"), "{e}");
        } else {
            assert!(o.status.success() && e.contains("eval_submission.json"), "{e}");
        }
    }
    assert_eq!(std::fs::read(r.run.join("submission.json")).unwrap(), pooled, "the pool's submission is kept");
    assert!(trm::util::fs::read_json::<serde_json::Value>(&r.run.join("eval_submission.json")).unwrap()["25ff71a9"].is_array());

    // 5. `trm solve --arc-task`: the adapted model answers; the base model explains what to do.
    let task_file = dir.path().join("25ff71a9.json");
    std::fs::write(&task_file, new_task.to_json().to_string()).unwrap();
    let open = |spec: &std::path::Path| trm::store::arc_model::open_arc(spec, None, &[], None).unwrap();
    trm::cli::solve_arc::run(&open(&r.run), &task_file, None, Some(2), false, true, trm::backend::DeviceSpec::Cpu).unwrap();
    let e = format!(
        "{:#}",
        trm::cli::solve_arc::run(&open(&base_run), &task_file, None, None, false, true, trm::backend::DeviceSpec::Cpu).unwrap_err()
    );
    assert!(e.contains("25ff71a9") && e.contains("trm adapt"), "{e}");

    // 5b. The same model as a bare torch file, as the reference saves them: `trm export` writes
    // the weights and all_config.yaml; with the data's identifiers.json beside them, `trm solve
    // --arc-task` and `trm adapt` take the bare file and answer as with the run folder.
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare = bare_dir.join("step_40");
    let trm_bin = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    trm_bin(&["export".as_ref(), "--checkpoint".as_ref(), r.run.as_os_str(), "--out".as_ref(), bare.as_os_str()]);
    let solve = |spec: &std::path::Path| {
        let args = ["solve", "--json", "--steps", "2", "--checkpoint"];
        let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
        a.extend([spec.as_os_str(), "--arc-task".as_ref(), task_file.as_os_str()]);
        trm_bin(&a)
    };
    // The export wrote the run's identifier map beside the weights; without it, solving asks for
    // --identifiers.
    let ids = bare_dir.join("identifiers.json");
    assert_eq!(std::fs::read(&ids).unwrap(), std::fs::read(r.data.join("identifiers.json")).unwrap());
    std::fs::rename(&ids, bare_dir.join("identifiers.away")).unwrap();
    let no_ids = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["solve", "--checkpoint"])
        .arg(&bare)
        .arg("--arc-task")
        .arg(&task_file)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&no_ids.stderr);
    assert!(!no_ids.status.success() && e.contains("--identifiers"), "{e}");
    std::fs::rename(bare_dir.join("identifiers.away"), &ids).unwrap();
    assert_eq!(solve(&bare), solve(&r.run), "the bare file answers as the run folder");
    let from_bare = AdaptJob { checkpoint: bare.clone(), out: dir.path().join("adapt-bare"), steps: 2, ..aj };
    let rb = adapt::<B>(&from_bare, &Default::default()).unwrap();
    assert_eq!(rb.new_identifiers, 0, "the task is already among the bare file's identifiers");
    // A second adaptation into the same --out clears its data/ and run/, but never a file the
    // user put there, nor one it reads: both are refused before anything is removed.
    let notes = rb.run.join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    let e = format!("{:#}", adapt::<B>(&from_bare.clone(), &Default::default()).err().expect("refused"));
    assert!(e.contains("holds notes.txt, which `trm adapt` did not write"), "{e}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
    std::fs::remove_file(&notes).unwrap();
    let tasks_inside = rb.data.join("train/tasks.json");
    std::fs::write(&tasks_inside, "{}").unwrap();
    let again = AdaptJob { task_files: vec![tasks_inside.clone()], ..from_bare.clone() };
    let e = format!("{:#}", adapt::<B>(&again, &Default::default()).err().expect("refused"));
    assert!(e.contains("tasks.json lies in") && e.contains("clears and rebuilds"), "{e}");
    assert!(tasks_inside.exists() && rb.run.join("metrics.jsonl").exists(), "nothing was removed");
    std::fs::remove_file(&tasks_inside).unwrap();
    // The mark of a data build that was stopped is trm's own too.
    std::fs::write(rb.data.join(trm::data::format::BUILDING), "").unwrap();
    assert!(adapt::<B>(&from_bare, &Default::default()).is_ok(), "trm's own files are replaced");

    // 6. The report draws ARC puzzles (palette grids cropped to the used region) and a pass@k chart.
    let html = dir.path().join("report.html");
    let o = trm::report::ReportOptions { run: r.run.clone(), out: html.clone(), data: None, puzzles: 2, steps: None, png: false };
    assert_eq!(trm::report::write_report(&o).unwrap(), 2);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("ARC pass@k (test)"), "ARC chart");
    assert!(page.contains(r##"fill="#000000""##), "ARC palette: background colour 0 is black");

    // 7. Identifier names that do not match the model are refused before anything runs: a run's
    // identifiers.json with names past its puzzle table, and an empty one beside a bare file
    // (identifier 0 is the blank one, so a new task would have taken it).
    let ckpt = checkpoint::resolve(&r.run).unwrap();
    let model_ids = checkpoint::read_state_json(&ckpt).unwrap().model.num_puzzle_identifiers;
    for f in [ckpt.join("identifiers.json"), r.run.join("identifiers.json")].iter().filter(|f| f.exists()) {
        let mut names: Vec<String> = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        names.extend(["x".to_string(), "y".to_string(), "z".to_string()]);
        std::fs::write(f, serde_json::to_string(&names).unwrap()).unwrap();
    }
    let e = format!("{:#}", trm::store::arc_model::open_arc(&r.run, None, &[], None).err().unwrap());
    assert!(e.contains(&format!("identifiers.json names {} puzzle identifiers, the model has {model_ids}", model_ids + 3)), "{e}");
    std::fs::write(bare_dir.join("identifiers.json"), "[]").unwrap();
    let e = format!("{:#}", trm::store::arc_model::open_arc(&bare, None, &[], None).err().unwrap());
    assert!(e.contains("no identifiers"), "{e}");
}

/// `trm train --init-from` onto a data set with other tasks: a puzzle-embedding row stays with
/// the identifier it was trained for (matched by name), and the data set's other identifiers
/// start from the mean of the checkpoint's rows (the reference's rule for a table it cannot
/// keep). Learning rates are 0, so the run's table is the table it started from.
#[test]
fn fine_tuning_on_other_tasks_keeps_each_embedding_row_with_its_puzzle() {
    let dir = tempfile::tempdir().unwrap();
    let all = training_tasks();
    let pick = |n: &str| all.iter().find(|t| t.name == n).unwrap().clone();
    let opt = BuildOptions { input_prefix: String::new(), subsets: vec![], test_sets: vec![], num_aug: 2, seed: 0, translate: true };
    let (base_data, other_data) = (dir.path().join("base-data"), dir.path().join("other-data"));
    arc::build_tasks(&base_data, vec![(pick("0d3d703e"), true), (pick("6150a2bd"), true)], vec!["<blank>".into()], &opt).unwrap();
    arc::build_tasks(&other_data, vec![(pick("25ff71a9"), true), (pick("0d3d703e"), true)], vec!["<blank>".into()], &opt).unwrap();
    let base_run = dir.path().join("base-run");
    let base_ckpt = train_base(&base_data, &base_run, &["max_steps=4", "epochs=50", "eval_interval=50", "puzzle_emb_lr=0.5"]);

    let run = dir.path().join("fine-tune");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
    c.args(["train", "--quiet", "--threads", "1", "--config", "demo", "--data"]).arg(&other_data).arg("--out").arg(&run);
    c.arg("--init-from").arg(&base_run).args(TINY).args(["max_steps=1", "epochs=50", "eval_interval=50", "lr=0", "puzzle_emb_lr=0"]);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");

    let table = |ckpt: &std::path::Path| {
        let t = trm::util::tensors::read_safetensors(&ckpt.join("model.safetensors")).unwrap();
        let w = t.iter().find(|(k, _)| k.ends_with("puzzle_emb.weights")).unwrap().1;
        let d = w.shape[1];
        w.f32s().chunks(d).map(|r| r.to_vec()).collect::<Vec<_>>()
    };
    let (old, old_names) = (table(&base_ckpt), checkpoint::read_identifiers(&base_ckpt).unwrap());
    let (new, new_names) = (table(&checkpoint::resolve(&run).unwrap()), format::read_identifiers(&other_data).unwrap());
    let mean: Vec<f32> = (0..old[0].len()).map(|j| old.iter().map(|r| r[j]).sum::<f32>() / old.len() as f32).collect();
    let mut kept = 0;
    for (name, row) in new_names.iter().zip(&new) {
        match old_names.iter().position(|n| n == name) {
            Some(i) => {
                kept += 1;
                assert_eq!(row, &old[i], "{name}: its trained row");
            }
            None => assert!(row.iter().zip(&mean).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs())), "{name}: the mean row"),
        }
    }
    // The blank identifier and 0d3d703e's identity copy at least (its augmentations' names depend
    // on what was drawn before them); 25ff71a9's copies are new.
    assert!(kept >= 2 && kept < new_names.len(), "{kept} of {}", new_names.len());
    assert!(old.iter().skip(1).any(|r| r.iter().any(|&x| x != 0.0)), "the base model's rows were trained");
    assert!(err.contains(&format!("{kept} of the data set's {} puzzle identifiers keep", new_names.len())), "{err}");

    // The reference's `load_checkpoint=PATH` is --init-from PATH: the same table.
    let by_key = dir.path().join("fine-tune-load-checkpoint");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
    c.args(["train", "--quiet", "--threads", "1", "--config", "demo", "--data"]).arg(&other_data).arg("--out").arg(&by_key);
    c.arg(format!("load_checkpoint={}", base_run.display())).args(TINY);
    c.args(["max_steps=1", "epochs=50", "eval_interval=50", "lr=0", "puzzle_emb_lr=0"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(table(&checkpoint::resolve(&by_key).unwrap()), new);
}

/// `trm adapt` trains the steps it is asked for and evaluates every new test input, whatever the
/// base run's own settings: a base run that capped its evaluations (`eval_max_examples=4`) and
/// trained in micro-batches of 6 once passed both to the adaptation (which then scored 4 of 8
/// test rows, and refused its batch of 8 because 6 does not divide it), and a batch of 8 over
/// puzzles of 3 demonstrations ran out of data before the schedule's end (11 of 12 steps).
#[test]
fn adapt_runs_its_own_schedule_whatever_the_base_run_set() {
    let dir = tempfile::tempdir().unwrap();
    let all = training_tasks();
    let pick = |n: &str| all.iter().find(|t| t.name == n).unwrap().clone();
    let opt = BuildOptions { input_prefix: String::new(), subsets: vec![], test_sets: vec![], num_aug: 1, seed: 0, translate: true };
    let base_data = dir.path().join("base-data");
    arc::build_tasks(&base_data, vec![(pick("0d3d703e"), true), (pick("6150a2bd"), true)], vec!["<blank>".into()], &opt).unwrap();
    let base_run = dir.path().join("base-run");
    train_base(&base_data, &base_run, &["max_steps=2", "global_batch_size=12", "micro_batch_size=6", "eval_max_examples=4"]);
    let task = pick("017c7c7b"); // 3 demonstrations, 1 test input
    assert_eq!((task.train.len(), task.test.len()), (3, 1));
    let job = AdaptJob {
        checkpoint: base_run,
        config: None,
        identifiers: None,
        tasks: vec![task],
        task_files: vec![],
        out: dir.path().join("adapt"),
        num_aug: 7,
        steps: 12,
        all_weights: false,
        batch: Some(8),
        overrides: vec![],
        seed: 1,
        quiet: true,
        engine_flags: String::new(),
        memory_check: true,
    };
    let r = adapt::<B>(&job, &Default::default()).unwrap();
    assert_eq!(r.train.steps, 12, "the schedule, not the data, ends the adaptation");
    assert_eq!(lm_losses(&r.run).len(), 12);
    let (_, eval) = r.train.evals.last().expect("an evaluation at the end");
    assert_eq!(eval.count, 8, "every view of the test input (identity + 7 augmentations) is evaluated");
    let score = eval.arc.as_ref().expect("ARC scoring");
    assert_eq!((score.tasks, score.tasks_not_evaluated, score.test_inputs), (1, 0, 1));
}

/// An ARC data set whose identifiers name other puzzles than the model's rows (the same tasks in
/// another order) is refused by `trm eval` and `trm report`, naming both files; it once ran and
/// scored every puzzle with another puzzle's embedding without a word.
#[test]
fn eval_and_report_refuse_data_whose_identifiers_name_other_puzzles() {
    let dir = tempfile::tempdir().unwrap();
    let all = training_tasks();
    let pick = |n: &str| all.iter().find(|t| t.name == n).unwrap().clone();
    let opt = BuildOptions { input_prefix: String::new(), subsets: vec![], test_sets: vec![], num_aug: 1, seed: 0, translate: true };
    let (data, swapped) = (dir.path().join("data"), dir.path().join("swapped"));
    arc::build_tasks(&data, vec![(pick("0d3d703e"), true), (pick("6150a2bd"), true)], vec!["<blank>".into()], &opt).unwrap();
    arc::build_tasks(&swapped, vec![(pick("6150a2bd"), true), (pick("0d3d703e"), true)], vec!["<blank>".into()], &opt).unwrap();
    assert_ne!(format::read_identifiers(&data).unwrap(), format::read_identifiers(&swapped).unwrap());
    let run = dir.path().join("run");
    train_base(&data, &run, &["max_steps=1"]);
    let trm = |args: &[&std::ffi::OsStr]| std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap();
    let (run, data, swapped) = (run.as_os_str(), data.as_os_str(), swapped.as_os_str());
    let html = dir.path().join("report.html");
    let s = |x: &str| std::ffi::OsString::from(x);
    let (ck, da, ev, rp) = (s("--checkpoint"), s("--data"), s("eval"), s("report"));
    let o = trm(&[&ev, &ck, run, &da, data]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for args in [vec![&*ev, &ck, run, &da, swapped], vec![&*rp, &s("--run"), run, &da, swapped, &s("--out"), html.as_os_str()]] {
        let o = trm(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success()
                && e.contains(&dir.path().join("swapped").join("identifiers.json").display().to_string())
                && e.contains("identifier 1"),
            "{args:?}: {e}"
        );
    }
    // The report's charts go beside it as .png: an --out that is itself .png is refused.
    let o = trm(&[&rp, &s("--run"), run, &s("--out"), dir.path().join("r.png").as_os_str()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("name it .html"), "{e}");
}

/// The reference's default `aggregated_voting`: every ARC evaluation of a run adds its votes to
/// one pool, and `ARC/pass@k` and `submission.json` are the pool's; `ARC/this_evaluation/pass@k`
/// is the evaluation's own, which is what a run with `aggregated_voting: False` reports. The pool
/// is in every checkpoint, so a run stopped after its second evaluation and resumed logs what an
/// uninterrupted one does and ends with the same pool, to the byte.
#[test]
fn arc_evaluations_vote_together_across_a_run_and_resume_with_their_votes() {
    let dir = tempfile::tempdir().unwrap();
    let data = two_task_data(dir.path(), "data", ["0d3d703e", "25ff71a9"]);
    let job = |out: &str, extra: &[&str], resume: bool| {
        let every_5_of_15: Vec<&str> = ["epochs=15", "eval_interval=5"].into_iter().chain(extra.iter().copied()).collect();
        tiny_job(&data, &dir.path().join(out), if resume { extra } else { &every_5_of_15 }, resume)
    };
    let evals = |out: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join(out).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["split"] == "eval").collect()
    };
    let pooled = trainer::train::<B>(&job("pooled", &[], false), &Default::default()).unwrap();
    trainer::train::<B>(
        &job("alone", &["evaluators=[{name: arc@ARC, aggregated_voting: False, submission_K: 3}]"], false),
        &Default::default(),
    )
    .unwrap();
    let (ep, ea) = (evals("pooled"), evals("alone"));
    assert_eq!(ep.len(), 3, "an evaluation every 5 of 15 epochs");
    assert_eq!(ea.len(), ep.len());
    for (i, (p, a)) in ep.iter().zip(&ea).enumerate() {
        assert_eq!(p["step"], a["step"]);
        for k in [1, 2, 5, 10, 100, 1000] {
            // The evaluation's own votes are the same predictions as the run that votes alone.
            assert_eq!(p[format!("ARC/this_evaluation/pass@{k}")], a[format!("ARC/pass@{k}")], "step {}", p["step"]);
            assert!(p[format!("ARC/pass@{k}")].is_f64());
            if i == 0 {
                // The pool holds the first evaluation's votes alone.
                assert_eq!(p[format!("ARC/pass@{k}")], a[format!("ARC/pass@{k}")]);
            }
        }
        assert!(a.get("ARC/this_evaluation/pass@2").is_none());
    }
    // The pool holds every evaluation's votes: one per test example evaluated, or an empty grid.
    let ckpt = checkpoint::resolve(&pooled.checkpoint.clone().unwrap()).unwrap();
    let pool = checkpoint::read_arc_votes(&ckpt).unwrap().expect("the pooled run's checkpoint holds its votes");
    let tasks = arc::read_test_puzzles(&data).unwrap();
    let votes: usize =
        tasks.iter().flat_map(|t| t.test.iter().map(|p| pool.ranked(&t.name, &p.input).iter().map(|c| c.votes).sum::<usize>())).sum();
    let examples: f64 = ep.iter().map(|e| e["count"].as_f64().unwrap()).sum();
    assert_eq!((votes + pool.empty) as f64, examples, "every evaluation's votes are in the pool");
    assert!(examples > 3.0 * 8.0, "the test split has the two tasks' three test inputs in 4 views each");
    let last = pooled.evals.last().unwrap().1.arc.clone().unwrap();
    let sub: serde_json::Value = trm::util::fs::read_json(&dir.path().join("pooled/submission.json")).unwrap();
    let direct = trm::eval::arc_vote::submission(&pool, &tasks, 2);
    assert_eq!(sub, direct, "the submission is the pool's");
    assert_eq!(last.pass_at, trm::eval::arc_vote::score(&pool, &tasks, &[1, 2, 5, 10, 100, 1000], false).pass_at);
    assert!(checkpoint::read_arc_votes(&checkpoint::resolve(&dir.path().join("alone")).unwrap()).unwrap().is_none());
    assert!(pooled.arc_pooled && trm::train::trainer::arc_summary(&pooled.evals[0].1, true).contains("of every evaluation so far"));
    // The report draws the pool's pass@k and the evaluation's own pass@2 beside it.
    let html = dir.path().join("report.html");
    let o =
        trm::report::ReportOptions { run: dir.path().join("pooled"), out: html.clone(), data: None, puzzles: 0, steps: None, png: false };
    trm::report::write_report(&o).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("pass@2 (pooled)") && page.contains("pass@2 (this evaluation)"), "the ARC chart's series");

    // Stopped one step after its second evaluation, then resumed: the stopped run's last
    // evaluation, off the schedule, is scored with the pool but not kept in it, so the resumed
    // run logs what the uninterrupted one does at every scheduled evaluation and ends with the
    // same pool.
    fn arc_fields(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
        v.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("ARC/")).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    let second = ep[1]["step"].as_u64().unwrap();
    trainer::train::<B>(&job("split", &[&format!("max_steps={}", second + 1)], false), &Default::default()).unwrap();
    let resumed = trainer::train::<B>(&job("split", &["max_steps=null"], true), &Default::default()).unwrap();
    assert_eq!(resumed.steps, pooled.steps);
    let mut es = evals("split");
    let off = es.iter().position(|e| e["step"] == second + 1).expect("the stopped run evaluated its last step");
    assert!(es[off]["ARC/this_evaluation/pass@2"].is_f64());
    es.remove(off);
    assert_eq!(es.len(), ep.len());
    for (s, p) in es.iter().zip(&ep) {
        assert_eq!((s["step"].clone(), arc_fields(s)), (p["step"].clone(), arc_fields(p)));
    }
    let file = trm::store::arc_votes::FILE;
    let split_ckpt = checkpoint::resolve(&dir.path().join("split")).unwrap();
    assert_eq!(std::fs::read(split_ckpt.join(file)).unwrap(), std::fs::read(ckpt.join(file)).unwrap());
    // Stopped by its time limit after every step, and resumed each time: a stop on an iteration's
    // last batch ends with that iteration's scheduled evaluation, pooled (every other stop's is off
    // the schedule), so the run logs the same ARC scores there and ends with the same pool.
    let mut runs = 0;
    loop {
        let mut timed = job("timed", &[], runs > 0);
        timed.time_limit = Some(std::time::Duration::ZERO);
        runs += 1;
        if trainer::train::<B>(&timed, &Default::default()).unwrap().steps >= pooled.steps {
            break;
        }
        assert!(runs <= 2 * pooled.steps, "the time-limited run does not end");
    }
    assert!(runs >= pooled.steps / 2, "the time limit stopped the run {runs} times in {} steps", pooled.steps);
    let timed: Vec<_> = evals("timed").into_iter().filter(|e| ep.iter().any(|p| p["step"] == e["step"])).collect();
    assert_eq!(timed.len(), ep.len());
    for (s, p) in timed.iter().zip(&ep) {
        assert_eq!((s["step"].clone(), arc_fields(s)), (p["step"].clone(), arc_fields(p)));
    }
    let timed_ckpt = checkpoint::resolve(&dir.path().join("timed")).unwrap();
    assert_eq!(std::fs::read(timed_ckpt.join(file)).unwrap(), std::fs::read(ckpt.join(file)).unwrap());
    // Stopped one batch before the first iteration's end, whose last batch the resumed run then
    // skips as non-finite (`skip_nonfinite_batches`; written into the checkpoint here, as no
    // batch of this data diverges): the stopped run evaluated that step off the schedule, so the
    // resumed run evaluates it again at the iteration's end, and that evaluation's votes join the
    // pool.
    let first = ep[0]["step"].as_u64().unwrap();
    assert!(first >= 2, "the first iteration has {first} batches");
    trainer::train::<B>(&job("skipped", &[&format!("max_steps={}", first - 1)], false), &Default::default()).unwrap();
    let stopped = checkpoint::resolve(&dir.path().join("skipped")).unwrap();
    let mut state: serde_json::Value = trm::util::fs::read_json(&stopped.join("state.json")).unwrap();
    assert_eq!(state["evaluated_off_schedule"], true, "{state}");
    state["position"]["batch"] = (state["position"]["batch"].as_u64().unwrap() + 1).into();
    state["skipped_batches"] = 1.into();
    trm::util::fs::write_json(&stopped.join("state.json"), &state).unwrap();
    trm::store::integrity::write_sums(&stopped).unwrap();
    trm::store::integrity::forget(&stopped);
    // Resumed to the same step: no batch is left to train, only the iteration's end (its
    // evaluation) to run.
    trainer::train::<B>(&job("skipped", &[&format!("max_steps={}", first - 1)], true), &Default::default()).unwrap();
    let es = evals("skipped");
    let at_stop: Vec<_> = es.iter().filter(|e| e["step"] == first - 1).collect();
    assert_eq!(at_stop.len(), 2, "the step evaluated off the schedule, then at its iteration's end");
    assert_eq!(at_stop[0]["ARC/this_evaluation/pass@2"], at_stop[1]["ARC/this_evaluation/pass@2"], "the same weights");
    let pool = checkpoint::read_arc_votes(&checkpoint::resolve(&dir.path().join("skipped")).unwrap()).unwrap().unwrap();
    let votes: usize =
        tasks.iter().flat_map(|t| t.test.iter().map(|p| pool.ranked(&t.name, &p.input).iter().map(|c| c.votes).sum::<usize>())).sum();
    let scheduled: f64 = es.iter().map(|e| e["count"].as_f64().unwrap()).sum::<f64>() - at_stop[0]["count"].as_f64().unwrap();
    assert_eq!((votes + pool.empty) as f64, scheduled, "every evaluation's votes but the one off the schedule");
    // `trm export` says how the run voted, as the reference's all_config.yaml would.
    let trm_bin = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let alone = dir.path().join("alone");
    let bare = dir.path().join("alone-export/step");
    trm_bin(&["export".as_ref(), "--checkpoint".as_ref(), alone.as_os_str(), "--out".as_ref(), bare.as_os_str()]);
    let yaml = std::fs::read_to_string(dir.path().join("alone-export/all_config.yaml")).unwrap();
    assert!(yaml.contains("evaluators:\n- aggregated_voting: false\n  name: arc@ARC\n  submission_K: 3\n"), "{yaml}");
    // `trm eval` on the run writes the run's number of attempts (submission_K).
    let sub = |run: &str| -> serde_json::Value { trm::util::fs::read_json(&dir.path().join(run).join("submission.json")).unwrap() };
    let attempts = |v: &serde_json::Value| v["25ff71a9"][1].as_object().unwrap().len();
    assert_eq!(attempts(&sub("alone")), 3, "the run's own submission");
    std::fs::remove_file(alone.join("submission.json")).unwrap();
    let o = trm_bin(&[
        "eval".as_ref(),
        "--steps".as_ref(),
        "1".as_ref(),
        "--checkpoint".as_ref(),
        alone.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 attempts per test input"));
    assert_eq!(attempts(&sub("alone")), 3, "trm eval's");
    // So does `trm eval` on the exported weights alone: the evaluator's arguments come from the
    // all_config.yaml beside them.
    let o = trm_bin(&[
        "eval".as_ref(),
        "--steps".as_ref(),
        "1".as_ref(),
        "--checkpoint".as_ref(),
        bare.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("3 attempts per test input") && !said.contains("evaluators"), "{said}");
    assert_eq!(attempts(&sub("alone-export")), 3, "trm eval's, on the bare weights");
}
