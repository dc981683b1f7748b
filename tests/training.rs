//! Training end to end on CPU: exact resume, kill -9 safety, and learning on real Sudoku data.

mod common;

use std::path::Path;
use trm::train::config;
use trm::train::trainer::{TrainJob, train};
use trm::util::tensors::read_safetensors;

type AD = burn::backend::Autodiff<burn::backend::Flex>;

/// A tiny generated Sudoku data set (the embedded default), built once per test.
fn tiny_data(dir: &Path) {
    let train = trm::data::sudoku::generate(48, 30, 1, 0);
    let test = trm::data::sudoku::generate(16, 30, 1, 1);
    trm::data::sudoku::write_dataset(dir, &train, &test, 1, 1).unwrap();
}

fn tiny_config(extra: &[&str]) -> config::TrainConfig {
    let mut ov: Vec<String> = [
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.puzzle_emb_ndim=16",
        "arch.mlp_t=False",
        "arch.pos_encodings=rope",
        "arch.H_cycles=2",
        "arch.L_cycles=1",
        "arch.halt_max_steps=3",
        "arch.halt_exploration_prob=0.5",
        "global_batch_size=8",
        "epochs=4",
        "eval_interval=2",
        "lr_warmup_steps=3",
        "ema=True",
        "eval_max_examples=8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ov.extend(extra.iter().map(|s| s.to_string()));
    config::resolve("sudoku-tiny", &ov).unwrap()
}

fn final_state(run: &Path) -> std::collections::BTreeMap<String, trm::util::tensors::HostTensor> {
    let ckpt = trm::train::checkpoint::resolve(run).unwrap();
    let mut all = read_safetensors(&ckpt.join("state.safetensors")).unwrap();
    for (k, v) in read_safetensors(&ckpt.join("model.safetensors")).unwrap() {
        all.insert(format!("model/{k}"), v);
    }
    all
}

#[test]
fn resume_is_exact() {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    // 14 steps crosses an iteration boundary (12 steps per 2-epoch iteration) and an evaluation.
    let n = 14;
    let job = |out: &str, steps: u64, resume: bool| TrainJob {
        config: tiny_config(&[&format!("max_steps={steps}")]),
        data: data.path().to_path_buf(),
        out: runs.path().join(out),
        resume,
        quiet: true,
        init_from: None,
        time_limit: None,
    };
    let straight = train::<AD>(&job("straight", n, false), &Default::default()).unwrap();
    assert_eq!(straight.steps, n);
    train::<AD>(&job("split", n / 2, false), &Default::default()).unwrap();
    let resumed = train::<AD>(&job("split", n, true), &Default::default()).unwrap();
    assert_eq!(resumed.steps, n);
    let a = final_state(&runs.path().join("straight"));
    let b = final_state(&runs.path().join("split"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k.starts_with("adam_m.")) && a.keys().any(|k| k.starts_with("ema.")) && a.contains_key("carry.z_h"));
    for (k, va) in &a {
        assert_eq!(va.values, b[k].values, "{k} differs after resume");
    }
    // The training logs agree too (same losses at every step).
    let losses = |run: &str| -> Vec<String> {
        std::fs::read_to_string(runs.path().join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"split\":\"train\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["step"], v["lm_loss"])
            })
            .collect()
    };
    assert_eq!(losses("straight"), losses("split"));
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
        quiet: true,
        init_from: None,
        time_limit: None,
    };
    train::<AD>(&job, &Default::default()).unwrap();
    let e = format!("{:#}", train::<AD>(&job, &Default::default()).unwrap_err());
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn a_tiny_trm_learns_real_sudoku() {
    // Real data: the Sudoku-Extreme 1k training split (2 shuffles each), 256 held-out test_hard
    // puzzles.
    let shared = common::shared().join("data/sudoku-extreme-1k");
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
        quiet: true,
        init_from: None,
        time_limit: None,
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
}
