//! Nothing lost, nothing silently wrong (docs/reliability.md): the divergence guard, checkpoint
//! integrity and fallback, one writer per run folder, clean interrupts, and the surprises that
//! became errors.

mod common;

use common::{TINY, tiny_data};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trm::store::checkpoint;
use trm::store::config;
use trm::train::trainer::{TrainJob, train};

type AD = burn::backend::Autodiff<burn::backend::Flex>;

fn job(data: &Path, out: &Path, extra: &[&str], resume: bool) -> TrainJob {
    let run = ["epochs=400", "eval_interval=200", "eval_max_examples=8"];
    let ov: Vec<String> = run.iter().chain(extra).map(|s| s.to_string()).collect();
    common::tiny_job(data, out, &ov, resume)
}

fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

fn step_of(ckpt: &Path) -> u64 {
    checkpoint::read_state_json(ckpt).unwrap().step
}

fn flip_byte(file: &Path, at_from_end: usize) {
    let mut b = std::fs::read(file).unwrap();
    let i = b.len() - at_from_end;
    b[i] ^= 0x40;
    std::fs::write(file, b).unwrap();
}

#[test]
fn an_exploding_learning_rate_stops_the_run_and_keeps_the_last_finite_checkpoint() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let out = runs.path().join("boom");
    // lr 1e30: the first step multiplies the weights' scale by ~1e29, the forward then overflows.
    let e = err(train::<AD>(
        &job(data.path(), &out, &["lr=1e30", "checkpoint_interval_steps=1", "keep_checkpoints=1"], false),
        &Default::default(),
    ));
    assert!(e.contains("training diverged at step") && e.contains(" is "), "{e}");
    assert!(e.contains("the last finite checkpoint is"), "{e}");
    // The surviving checkpoint is finite, intact, and loads for evaluation.
    let ckpt = checkpoint::resolve(&out).unwrap();
    let at: u64 = e.split("diverged at step ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(step_of(&ckpt) < at, "checkpoint {} is not before the diverged step {at}", ckpt.display());
    let js = checkpoint::read_state_json(&ckpt).unwrap();
    checkpoint::load_model::<burn::backend::Flex>(&ckpt.join("model.safetensors"), &js.model, &Default::default()).unwrap();
    checkpoint::load_state::<burn::backend::Flex>(&ckpt, &Default::default()).unwrap();

    // With skipping allowed, bad batches are skipped (and logged) up to the bound, then it stops.
    let out = runs.path().join("skip");
    let e = err(train::<AD>(&job(data.path(), &out, &["lr=1e30", "skip_nonfinite_batches=2"], false), &Default::default()));
    assert!(e.contains("training diverged"), "{e}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.matches("\"split\":\"skipped\"").count(), 2, "{log}");
}

#[test]
fn non_finite_or_negative_hyperparameters_are_refused() {
    for (ov, key) in [
        ("lr=nan", "lr"),
        ("lr=inf", "lr"),
        ("lr=-1e-4", "lr"),
        ("weight_decay=-0.1", "weight_decay"),
        ("puzzle_emb_lr=-1", "puzzle_emb_lr"),
        ("puzzle_emb_weight_decay=nan", "puzzle_emb_weight_decay"),
        ("beta2=1.0", "beta2"),
        ("lr_min_ratio=2", "lr_min_ratio"),
        ("ema_rate=nan", "ema_rate"),
        ("arch.rms_norm_eps=-1e-5", "rms_norm_eps"),
    ] {
        // The innermost message, without the context that quotes the overrides (which names the
        // key whatever the error).
        let e = match config::resolve("sudoku-tiny", &[ov.to_string()]) {
            Err(e) => e.root_cause().to_string(),
            // arch keys are checked when the model is built
            Ok(c) => format!(
                "{:#}",
                trm::model::config::ModelConfig { arch: c.arch, seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 }
                    .validate()
                    .unwrap_err()
            ),
        };
        assert!(e.starts_with(&format!("{key} must be")) || e.starts_with(&format!("arch.{key} must be")), "{ov}: {e}");
    }
}

#[test]
fn a_non_finite_checkpoint_is_refused_on_load() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    train::<AD>(&job(data.path(), runs.path(), &["max_steps=2"], false), &Default::default()).unwrap();
    let ckpt = checkpoint::resolve(runs.path()).unwrap();
    let js = checkpoint::read_state_json(&ckpt).unwrap();
    // NaN written in place of a weight, with checksums that match (as a diverged run would have).
    let file = ckpt.join("model.safetensors");
    let mut t = trm::util::tensors::read_safetensors(&file).unwrap();
    let entries: Vec<(String, Vec<usize>, Vec<f32>)> = t
        .iter_mut()
        .map(|(k, v)| {
            let mut f = v.f32s();
            if k.ends_with("lm_head.weight") {
                f[3] = f32::NAN;
            }
            (k.clone(), v.shape.clone(), f)
        })
        .collect();
    trm::util::tensors::write_safetensors(&file, &entries, None).unwrap();
    trm::store::integrity::write_sums(&ckpt).unwrap();
    trm::store::integrity::forget(&ckpt);
    let e = err(checkpoint::load_model::<burn::backend::Flex>(&file, &js.model, &Default::default()));
    assert!(e.contains("lm_head.weight") && e.contains("non-finite"), "{e}");
}

/// A state.json whose config's architecture differs from the one it records for its weights
/// (edited by hand, checksums written again) is refused naming the key, not the data set.
#[test]
fn a_state_json_at_odds_with_itself_names_the_architecture_key() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    train::<AD>(&job(data.path(), runs.path(), &["max_steps=2"], false), &Default::default()).unwrap();
    let ckpt = checkpoint::resolve(runs.path()).unwrap();
    let file = ckpt.join("state.json");
    let mut js: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    js["config"]["arch"]["hidden_size"] = serde_json::json!(32);
    std::fs::write(&file, serde_json::to_vec(&js).unwrap()).unwrap();
    trm::store::integrity::write_sums(&ckpt).unwrap();
    trm::store::integrity::forget(&ckpt);
    let e = err(train::<AD>(&job(data.path(), runs.path(), &["max_steps=3"], true), &Default::default()));
    assert!(e.contains("arch.hidden_size 32 (config), 16 (model)") && e.contains("state.json"), "{e}");
    assert!(!e.contains("does not describe the data set"), "{e}");
}

/// A state.json's step must be its folder's, and its format the one trm writes (both edited by
/// hand here, checksums written again).
#[test]
fn a_state_json_with_another_step_or_format_is_refused() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    train::<AD>(&job(data.path(), runs.path(), &["max_steps=2"], false), &Default::default()).unwrap();
    let ckpt = checkpoint::resolve(runs.path()).unwrap();
    let file = ckpt.join("state.json");
    let good = std::fs::read(&file).unwrap();
    for (key, value, says) in [
        ("step", serde_json::json!(u64::MAX), "step 18446744073709551615 in a checkpoint of step 2"),
        ("format", serde_json::json!("trm-checkpoint-9"), "format `trm-checkpoint-9` is not the one this trm reads"),
    ] {
        let mut js: serde_json::Value = serde_json::from_slice(&good).unwrap();
        js[key] = value;
        std::fs::write(&file, serde_json::to_vec(&js).unwrap()).unwrap();
        let e = err(checkpoint::read_state_json(&ckpt));
        assert!(e.contains("state.json") && e.contains(says), "{key}: {e}");
    }
}

#[test]
fn a_corrupt_checkpoint_is_refused_and_resume_falls_back_to_the_intact_one() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let run = runs.path().join("run");
    train::<AD>(&job(data.path(), &run, &["max_steps=6", "checkpoint_interval_steps=2"], false), &Default::default()).unwrap();
    let latest = checkpoint::resolve(&run).unwrap();
    assert_eq!(step_of(&latest), 6);
    flip_byte(&latest.join("model.safetensors"), 100);
    trm::store::integrity::forget(&latest);
    // Readers refuse it and name the intact one; the CLI exits non-zero.
    let e = err(checkpoint::resolve(&run));
    assert!(e.contains("checksum mismatch") && e.contains("step_00000004"), "{e}");
    let o =
        Command::new(env!("CARGO_BIN_EXE_trm")).args(["eval", "--checkpoint"]).arg(&run).arg("--data").arg(data.path()).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"));
    // Resume continues from step 4, re-saves step 6 in place, and ends as a run never corrupted.
    let resumed = train::<AD>(&job(data.path(), &run, &["max_steps=8", "checkpoint_interval_steps=2"], true), &Default::default()).unwrap();
    assert_eq!(resumed.steps, 8);
    let straight = runs.path().join("straight");
    train::<AD>(&job(data.path(), &straight, &["max_steps=8", "checkpoint_interval_steps=2"], false), &Default::default()).unwrap();
    let (a, b) = (checkpoint::resolve(&run).unwrap(), checkpoint::resolve(&straight).unwrap());
    for f in ["model.safetensors", "state.safetensors"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    // Every checkpoint left is intact (the corrupt step 6 was replaced by the re-saved one).
    let left = trm::store::integrity::checkpoints(&run);
    assert!(left.len() == 2 && left.iter().all(|c| trm::store::integrity::verify(c).is_ok()), "{left:?}");
    // A dangling `latest` falls back to the newest intact checkpoint.
    std::fs::write(run.join("checkpoints/latest"), "step_00000099").unwrap();
    assert_eq!(step_of(&checkpoint::resolve(&run).unwrap()), 8);
}

fn trm_train(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trm"));
    c.args(["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"]).arg(data).arg("--out").arg(out);
    c.args(TINY).args(["epochs=4000", "eval_interval=2000", "eval_max_examples=8"]).args(extra);
    c
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(300), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logged_steps(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.matches("\"split\":\"train\"").count() as u64).unwrap_or(0)
}

#[test]
fn two_processes_cannot_write_one_run_folder() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let out = runs.path().join("run");
    // Both started at once; each runs for a few seconds if it gets the folder.
    let spawn = || trm_train(data.path(), &out, &["max_steps=300"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() != b.status.success(), "exactly one may run: {:?} {:?}", a.status, b.status);
    let loser = if a.status.success() { &b } else { &a };
    let msg = String::from_utf8_lossy(&loser.stderr);
    // (the pid is named once the winner has written it)
    assert!(msg.contains("is in use by another"), "{msg}");
    assert_eq!(logged_steps(&out), 300, "the winner's log is whole");

    // --resume while the run is alive is refused too.
    let live = runs.path().join("live");
    let mut child =
        trm_train(data.path(), &live, &["checkpoint_interval_steps=2"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("a checkpoint", || checkpoint::resolve(&live).is_ok());
    let o = trm_train(data.path(), &live, &["--resume"]).output().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("in use"), "{}", String::from_utf8_lossy(&o.stderr));
    // kill -9 (std's kill) leaves no stale lock: the run resumes at once.
    let n = format!("max_steps={}", step_of(&checkpoint::resolve(&live).unwrap()) + 1);
    let o = trm_train(data.path(), &live, &["--resume", &n]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Every step logged the process's peak memory (Linux's /proc, macOS's rusage, Windows' peak
    // working set: the one check of it that CI runs under Wine).
    let log = std::fs::read_to_string(live.join("metrics.jsonl")).unwrap();
    let train: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"split\":\"train\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!train.is_empty());
    for r in &train {
        let rss = r["host_peak_rss_mib"].as_f64().unwrap_or(0.0);
        assert!(rss > 10.0 && rss < 64.0 * 1024.0, "host_peak_rss_mib {rss} in {r}");
    }
}

#[cfg(unix)]
fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

// Unix only: on Windows the same handling (Ctrl-C or Ctrl-Break) is untested, because Wine 8
// cannot send a console event to another process group (GenerateConsoleCtrlEvent fails).
#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_and_the_run_resumes_exactly() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let out = runs.path().join("run");
    // No periodic checkpoints: before this, an interrupt lost the whole run.
    let child = trm_train(data.path(), &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("5 steps", || logged_steps(&out) >= 5);
    signal(&child, "-INT");
    let o = child.wait_with_output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{msg}");
    assert!(msg.contains("interrupted at step") && msg.contains("--resume"), "{msg}");
    let at = step_of(&checkpoint::resolve(&out).unwrap());
    assert!(at >= 5 && at == logged_steps(&out), "checkpoint at {at}, {} steps logged", logged_steps(&out));
    // Resume without --data (the run recorded it), and compare with a run never interrupted.
    let n = format!("max_steps={}", at + 3);
    let o = Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["train", "--resume", "--quiet", "--threads", "1", "--out"])
        .arg(&out)
        .arg(&n)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && msg.contains("(recorded by the run)"), "{msg}");
    let straight = runs.path().join("straight");
    assert!(trm_train(data.path(), &straight, &[&n]).output().unwrap().status.success());
    let (a, b) = (checkpoint::resolve(&out).unwrap(), checkpoint::resolve(&straight).unwrap());
    assert_eq!(std::fs::read(a.join("state.safetensors")).unwrap(), std::fs::read(b.join("state.safetensors")).unwrap());

    // SIGTERM twice at once (a job manager signals every process of a job, and `trm launch`
    // passes its own on to its ranks): one stop, with its checkpoint.
    let out = runs.path().join("told-twice");
    let child = trm_train(data.path(), &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("3 steps", || logged_steps(&out) >= 3);
    signal(&child, "-TERM");
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{msg}");
    assert!(msg.contains("interrupted at step"), "the run stopped without its checkpoint: {msg}");
    assert_eq!(step_of(&checkpoint::resolve(&out).unwrap()), logged_steps(&out));
    // A second SIGTERM a second or more after the first exits at once (unless the stop was done
    // by then), and the last complete checkpoint is intact.
    let out = runs.path().join("term");
    let mut child =
        trm_train(data.path(), &out, &["checkpoint_interval_steps=1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("3 steps", || logged_steps(&out) >= 3);
    signal(&child, "-TERM");
    std::thread::sleep(trm::util::interrupt::SAME_STOP + Duration::from_millis(100));
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let c = checkpoint::resolve(&out).unwrap();
    trm::store::integrity::verify(&c).unwrap();
    assert!(step_of(&c) >= 2);
}

#[test]
fn surprises_are_clear_errors() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let d = data.path();
    let run = |name: &str, extra: &[&str]| train::<AD>(&job(d, &runs.path().join(name), extra, false), &Default::default());
    // A global batch larger than an iteration's data: no steps would run.
    let e = err(run("big", &["global_batch_size=20000", "max_steps=1"]));
    assert!(e.contains("0 optimiser steps") && e.contains("global_batch_size=20000"), "{e}");
    // An expansion that leaves no MLP.
    let e = err(run("exp", &["arch.expansion=0.01"]));
    assert!(e.contains("arch.expansion"), "{e}");
    // --resume: safe keys apply, the others are refused by name.
    run("r", &["max_steps=2"]).unwrap();
    let resume = |extra: &[&str]| train::<AD>(&job(d, &runs.path().join("r"), extra, true), &Default::default());
    let e = err(resume(&["max_steps=3", "seed=5", "arch.L_cycles=3"]));
    assert!(e.contains("seed (0 -> 5)") && e.contains("arch.L_cycles (1 -> 3)") && e.contains("max_steps"), "{e}");
    assert_eq!(resume(&["max_steps=3", "lr=5e-5", "keep_checkpoints=3"]).unwrap().steps, 3);
    let e = err(train::<AD>(
        &TrainJob {
            init_from: Some(trm::train::setup::InitFrom::fine_tune(d.into()).unwrap()),
            ..job(d, &runs.path().join("r"), &[], true)
        },
        &Default::default(),
    ));
    assert!(e.contains("--init-from"), "{e}");
    // A test split that exists but cannot be read stops the run (it used to train without evaluation).
    let broken = runs.path().join("broken-data");
    tiny_data(&broken);
    std::fs::write(broken.join("test/dataset.json"), "{").unwrap();
    let e = format!("{:#}", train::<AD>(&job(&broken, &runs.path().join("b"), &["max_steps=1"], false), &Default::default()).unwrap_err());
    assert!(e.contains("test split exists but cannot be read") && e.contains("dataset.json"), "{e}");
    // An empty train split.
    let empty = runs.path().join("empty-data");
    trm::data::sudoku::write_dataset(&empty, &[], &trm::data::sudoku::generate(4, 30, 1, 1), 1, 1).unwrap();
    let e = format!("{:#}", train::<AD>(&job(&empty, &runs.path().join("e"), &[], false), &Default::default()).unwrap_err());
    assert!(e.contains("no examples"), "{e}");
}

#[test]
fn eval_limit_counts_exactly_n_examples() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    train::<AD>(&job(data.path(), runs.path(), &["max_steps=1"], false), &Default::default()).unwrap();
    for limit in ["3", "9"] {
        let o = Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(["eval", "--json", "--batch", "4", "--limit", limit, "--checkpoint"])
            .arg(runs.path())
            .arg("--data")
            .arg(data.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["count"].as_u64().unwrap().to_string(), limit);
    }
}

/// Resuming a run that is already at its end trains nothing, evaluates nothing again and writes
/// nothing: its logs stay as they were (the final evaluation used to be logged a second time).
/// And a run of an older trm whose state.json pairs puzzle_emb_ndim=0 with a puzzle_emb_len (then
/// inert, now refused for new runs) still resumes.
#[test]
fn resuming_a_finished_run_logs_nothing_twice() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    tiny_data(&data);
    let run = d.path().join("run");
    let first = train::<AD>(&job(&data, &run, &["max_steps=4"], false), &Default::default()).unwrap();
    assert_eq!((first.steps, first.evals.len()), (4, 1));
    let logs = |run: &Path| {
        let tb = std::fs::read_dir(run).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("tfevents")).unwrap();
        (std::fs::read(run.join("metrics.jsonl")).unwrap(), std::fs::read(tb).unwrap())
    };
    let before = logs(&run);
    let ckpt = checkpoint::resolve(&run).unwrap();
    let again = train::<AD>(&job(&data, &run, &[], true), &Default::default()).unwrap();
    assert_eq!((again.steps, again.evals.len(), again.checkpoint.as_deref()), (4, 0, Some(ckpt.as_path())));
    assert!(logs(&run) == before, "the logs changed");
    // max_steps raised: it goes on, and evaluates at its new end.
    let more = train::<AD>(&job(&data, &run, &["max_steps=6"], true), &Default::default()).unwrap();
    assert_eq!((more.steps, more.evals.len()), (6, 1));

    // An older trm's run: puzzle_emb_ndim=0 beside the default puzzle_emb_len=16.
    let old = d.path().join("old");
    train::<AD>(&job(&data, &old, &["max_steps=2", "arch.puzzle_emb_ndim=0", "arch.puzzle_emb_len=0"], false), &Default::default())
        .unwrap();
    let ckpt = checkpoint::resolve(&old).unwrap();
    let js = ckpt.join("state.json");
    let text = std::fs::read_to_string(&js).unwrap().replace("\"puzzle_emb_len\": 0", "\"puzzle_emb_len\": 16");
    assert_eq!(text.matches("\"puzzle_emb_len\": 16").count(), 2, "the model's and the config's");
    std::fs::write(&js, text).unwrap();
    trm::store::integrity::write_sums(&ckpt).unwrap();
    assert_eq!(checkpoint::read_state_json(&ckpt).unwrap().model.arch.puzzle_emb_len, 0);
    let resumed = job(&data, &old, &["max_steps=3", "arch.puzzle_emb_ndim=0", "arch.puzzle_emb_len=0"], true);
    assert_eq!(train::<AD>(&resumed, &Default::default()).unwrap().steps, 3);
    let e = err(train::<AD>(&job(&data, &d.path().join("new"), &["max_steps=2", "arch.puzzle_emb_ndim=0"], false), &Default::default()));
    assert!(e.contains("set arch.puzzle_emb_len=0"), "{e}");
}

/// A run whose training pass the CPU engine's estimate says does not fit the memory available is
/// refused before it writes anything but its folder's lock, naming a micro_batch_size that
/// divides the batch and fits (docs/reliability.md, "Memory"). A deep recursion
/// (arch.L_cycles=1000: about half a GB a row) at a batch of at least 1.5 times what this machine
/// has available. Then a model whose weights alone do not fit, refused before they are made.
#[test]
fn a_run_too_large_for_memory_is_refused_with_a_micro_batch_that_fits() {
    let Some(available) = trm::util::host_memory::available().map(|a| a.bytes) else {
        eprintln!("skipped: this platform does not report the memory available");
        return;
    };
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    let meta = trm::data::format::read_metadata(&data.path().join("train")).unwrap();
    let deep = "arch.L_cycles=1000";
    let cfg = job(data.path(), runs.path(), &[deep], false).config;
    let model = trm::model::config::ModelConfig {
        arch: cfg.arch,
        seq_len: meta.seq_len,
        vocab_size: meta.vocab_size,
        num_puzzle_identifiers: meta.num_puzzle_identifiers,
    };
    if !trm::model::cpu::covers::<AD>(&model) {
        eprintln!("skipped: the fused CPU block is off here (TRM_FUSED_CPU=0 or TRM_CPU_BF16=1), so nothing is estimated");
        return;
    }
    let row = trm::model::memory::train_bytes_per_row(&model);
    // One iteration (eval_interval=200 epochs of 48 examples) holds batches up to 9,600 rows.
    let batch = ((1.5 * available as f64 / row as f64).ceil() as usize).next_power_of_two().max(8);
    assert!(batch <= 8192, "{available} bytes available: more than this test's data can ask for");
    let out = runs.path().join("deep");
    let big = format!("global_batch_size={batch}");
    let e = err(train::<AD>(&job(data.path(), &out, &[deep, &big], false), &Default::default()));
    assert!(e.contains("would run out of memory in its first step") && e.contains(&format!("training pass of {batch} rows")), "{e}");
    let m: usize = e.split("`micro_batch_size=").nth(1).and_then(|r| r.split('`').next()).and_then(|m| m.parse().ok()).expect(&e);
    assert!(m < batch && batch.is_multiple_of(m), "suggested micro_batch_size={m}: {e}");
    assert!(m as u64 * row <= available, "{m} rows of {row} bytes exceed {available}: {e}");
    assert!(e.contains("--no-memory-check"), "{e}");
    let written: Vec<_> = std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(written.iter().all(|n| n == trm::util::lock::LOCK_FILE), "the refused run wrote {written:?} in {}", out.display());

    // A model whose state alone does not fit (64 GiB of weights, 260 GiB with its gradients and
    // optimiser state) is refused before its weights are made: the refusal comes at once, not from the
    // system killing the process while it builds them.
    let wide = ["arch.hidden_size=16384", "arch.L_layers=8", "arch.num_heads=64"];
    if available > 200 << 30 {
        eprintln!("skipped the model too large: {available} bytes available");
        return;
    }
    let t = std::time::Instant::now();
    let e = err(train::<AD>(&job(data.path(), &runs.path().join("wide"), &wide, false), &Default::default()));
    assert!(e.contains("would run out of memory before its first step") && e.contains("weights and puzzle-embedding table"), "{e}");
    assert!(e.contains("train a smaller model"), "{e}");
    assert!(t.elapsed().as_secs() < 10, "the refusal took {:?}", t.elapsed());
    // A batch that does not split is said first: the memory advice assumes batches that do.
    let odd = [&wide[..], &["global_batch_size=16", "micro_batch_size=3"]].concat();
    let e = err(train::<AD>(&job(data.path(), &runs.path().join("odd"), &odd, false), &Default::default()));
    assert!(e.contains("micro_batch_size 3 does not divide the 16 rows") && !e.contains("memory"), "{e}");
}

/// `trm bench` on the CPU engine: a step that does not fit is refused at once with the setting
/// that does, rather than killed by the system mid-step. Run under an 8 GiB data limit, so the
/// refusal holds on any machine (and a skipped check fails fast instead of swapping).
#[cfg(unix)]
#[test]
fn a_benchmark_too_large_for_memory_is_refused() {
    let arc = trm::bench::shape_for("arc-att", trm::model::architecture::Architecture::Trm).unwrap();
    if !trm::model::cpu::covers::<burn::backend::Flex>(&arc) {
        return eprintln!("skipped: the fused CPU block is off here, so nothing is estimated");
    }
    let bench = |args: &[&str]| {
        let all = [&["bench", "--shape", "arc-att", "--warmup", "0", "--reps", "1"][..], args].concat();
        let (code, e) = common::trm_capped(&all, 8 << 30);
        (code == Some(0), e)
    };
    let t = std::time::Instant::now();
    // 4,096 ARC rows hold about 14 GiB of carry: no pass fits beside it, a smaller batch does.
    let (ok, e) = bench(&["--batch", "4096", "--mode", "train"]);
    assert!(!ok && e.contains("this benchmark would run out of memory") && e.contains("`ulimit -d` leaves"), "{e}");
    let b: usize = e.split("pass --batch ").nth(1).and_then(|r| r.split(' ').next()).and_then(|b| b.parse().ok()).expect(&e);
    assert!(b < 4096, "{e}");
    // A batch whose carry fits is told the passes that fit beside it.
    let (ok, e) = bench(&["--batch", "64", "--mode", "train"]);
    assert!(!ok && e.contains("pass --micro-batch "), "{e}");
    // The forward alone: a smaller --batch.
    let (ok, e) = bench(&["--batch", "4096", "--mode", "eval"]);
    assert!(!ok && e.contains("this benchmark's forward pass would run out of memory") && e.contains("pass --batch "), "{e}");
    assert!(t.elapsed().as_secs() < 10, "the refusals took {:?}", t.elapsed());
}

/// A checkpoint whose identifier map names another number of identifiers than its model has rows
/// (a run folder two commands wrote at once) is refused by `trm eval` and `trm report`'s check.
#[test]
fn an_identifier_map_of_another_length_than_the_model_is_refused() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_data(data.path());
    train::<AD>(&job(data.path(), runs.path(), &["max_steps=1"], false), &Default::default()).unwrap();
    let ckpt = checkpoint::resolve(runs.path()).unwrap();
    let js = checkpoint::read_state_json(&ckpt).unwrap();
    trm::eval::evaluate::check_identifiers(data.path(), &ckpt, &js.model).unwrap();
    let map = if ckpt.join("identifiers.json").exists() { ckpt.join("identifiers.json") } else { runs.path().join("identifiers.json") };
    std::fs::write(&map, r#"["<blank>", "t1"]"#).unwrap();
    let e = err(trm::eval::evaluate::check_identifiers(data.path(), &ckpt, &js.model));
    assert!(e.contains("names 2 puzzle identifiers, the model has 1 rows"), "{e}");
}

/// The temporary file of a write killed in another process is removed by the next write of the
/// same file once it is old, on every platform (this file runs under Wine in CI, where the
/// process lookup is Windows'); a young one (perhaps a live writer elsewhere) is kept.
#[test]
fn a_killed_writes_temporary_file_is_removed_by_the_next_write() {
    let t = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap()).arg("--list").stdout(Stdio::null()).spawn().unwrap();
    let ended = child.id();
    child.wait().unwrap();
    let (old, young) =
        (t.path().join(format!("out.json.{ended}.0123abcd.0.tmp")), t.path().join(format!("out.json.{ended}.0123abcd.1.tmp")));
    for f in [&old, &young] {
        std::fs::write(f, "half a file").unwrap();
    }
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(hour_ago).unwrap();
    trm::util::fs::write_atomic(&t.path().join("out.json"), b"{}").unwrap();
    assert!(!old.exists(), "the killed write's old temporary file stayed");
    assert!(young.exists(), "a young temporary file was removed");
    assert_eq!(std::fs::read_to_string(t.path().join("out.json")).unwrap(), "{}");
}
