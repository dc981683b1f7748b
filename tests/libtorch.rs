//! The libtorch engine on the CPU (`--device torch-cpu`): the code that `--device cuda` runs on
//! a GPU, tested without one. Golden parity on every fixture, side by side with the Flex CPU
//! backend; train, exact resume, eval and solve through the command line. Built only with the
//! `libtorch` feature (CI: `cargo test --features libtorch`).
#![cfg(feature = "libtorch")]

mod common;

use burn::backend::Autodiff;
use burn::backend::libtorch::LibTorchDevice;
use std::path::{Path, PathBuf};
use std::process::Command;

type Torch = Autodiff<trm::backend::Torch>;
type FlexAd = Autodiff<burn::backend::Flex>;

fn fixtures() -> Vec<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(&here).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("expected.safetensors").exists()).collect();
    v.sort();
    v
}

/// (tensors compared, failures, worst error/tolerance) of a fixture on one engine.
fn worst(checks: &[trm::eval::parity::Check]) -> (usize, usize, f64) {
    let failed = checks.iter().filter(|c| !c.ok()).count();
    let w = checks.iter().filter(|c| c.tolerance > 0.0).map(|c| c.error / c.tolerance).fold(0.0, f64::max);
    (checks.len(), failed, w)
}

#[test]
fn every_golden_fixture_matches_the_reference_on_libtorch_cpu() {
    let all = fixtures();
    assert!(all.len() >= 7, "expected the golden fixtures, found {all:?}");
    eprintln!("{:<22} {:>8} {:>22} {:>22}", "fixture", "tensors", "worst err/tol torch-cpu", "worst err/tol cpu");
    let mut bad = vec![];
    for dir in &all {
        let before = trm::model::counts::block_counts();
        let t = trm::eval::parity::run::<Torch>(dir, &LibTorchDevice::Cpu).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        let after = trm::model::counts::block_counts();
        let f = trm::eval::parity::run::<FlexAd>(dir, &Default::default()).unwrap();
        let (n, failed, wt) = worst(&t);
        let (_, _, wf) = worst(&f);
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        // The forward and the gradients ran through libtorch's fused block.
        assert!(after.tracked > before.tracked && after.backward > before.backward, "{name}: the fused block did not run: {after:?}");
        eprintln!("{name:<22} {n:>8} {wt:>22.3} {wf:>22.3}");
        assert!(n >= 100, "{name}: only {n} tensors compared");
        if failed > 0 {
            bad.push(format!("{name}: {:#?}", t.iter().filter(|c| !c.ok()).collect::<Vec<_>>()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn trm(args: &[&str]) -> String {
    trm_with_env(&[], args)
}

#[test]
fn train_resume_eval_and_solve_on_libtorch_cpu() {
    let data = tempfile::tempdir().unwrap();
    common::tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let run = |name: &str, steps: u64, resume: bool| {
        let out = runs.path().join(name);
        let max = format!("max_steps={steps}");
        let mut args = vec!["train", "--device", "torch-cpu", "--threads", "2", "--quiet", "--config", "sudoku-tiny", "--data", d];
        // The split run in torch's deterministic mode (its deterministic forms, and NaN in
        // every fresh allocation, which a read of unset memory would carry into the states).
        if name == "split" {
            args.push("--deterministic");
        }
        args.extend(["--out", out.to_str().unwrap()]);
        if resume {
            args.push("--resume");
        } else {
            args.extend(common::TINY);
            args.extend(["arch.halt_exploration_prob=0.5", "eval_interval=2", "epochs=4", "eval_max_examples=8"]);
        }
        args.push(&max);
        trm(&args);
        out
    };
    // 10 steps straight, and 5 + 5 through a resume (deterministic), in separate processes:
    // identical states.
    let straight = run("straight", 10, false);
    run("split", 5, false);
    let split = run("split", 10, true);
    let (a, b) = (common::run_state(&straight), common::run_state(&split));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k.starts_with("adam_m.")) && a.keys().any(|k| k.starts_with("ema.")));
    for (k, va) in &a {
        assert!(va.values.iter().all(|v| v.is_finite()), "{k} is not finite");
        assert_eq!(va.values, b[k].values, "{k} differs after resume on libtorch");
    }

    // The checkpoint libtorch wrote evaluates the same on both engines.
    let eval = |device: &str| -> serde_json::Value {
        let out = trm(&["eval", "--device", device, "--checkpoint", straight.to_str().unwrap(), "--data", d, "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let (t, c) = (eval("torch-cpu"), eval("cpu"));
    for key in ["accuracy", "exact_accuracy", "lm_loss"] {
        let (x, y) = (t[key].as_f64().unwrap(), c[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-3 * y.abs().max(1.0), "{key}: torch-cpu {x}, cpu {y}");
    }

    // The outputs an evaluation saves load in PyTorch itself (`torch.load`, whose default since
    // torch 2.6 reads only plain tensors), with the reference's dtypes. PyTorch is installed
    // wherever this test builds (the libtorch feature links pip's torch).
    let saved = runs.path().join("outputs.pt");
    let saved_arg = saved.to_str().unwrap();
    let args = ["eval", "--device", "torch-cpu", "--checkpoint", straight.to_str().unwrap(), "--data", d, "--save-outputs", saved_arg];
    trm(&[&args[..], &["--outputs", "inputs,labels,preds,logits,q_halt_logits"]].concat());
    let script = "import sys, torch\n\
                  d = torch.load(sys.argv[1])\n\
                  print(' '.join(f'{k}:{str(v.dtype)[6:]}:{list(v.shape)}' for k, v in d.items()))\n\
                  assert bool((d['logits'].argmax(-1) == d['preds']).all())\n\
                  assert bool((d['labels'] != -100).any())";
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&python).args(["-c", script, saved_arg]).output().unwrap();
    assert!(o.status.success(), "{python}: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "inputs:int32:[16, 81] labels:int32:[16, 81] preds:int64:[16, 81] logits:float32:[16, 81, 11] q_halt_logits:float32:[16]"
    );

    // The bundled model solves the published puzzle on libtorch as on the CPU backend, with views.
    let puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    let solve = |device: &str| -> serde_json::Value {
        serde_json::from_str(&trm(&["solve", "--device", device, "--sudoku", puzzle, "--views", "4", "--steps", "8", "--json"])).unwrap()
    };
    let (t, c) = (solve("torch-cpu"), solve("cpu"));
    assert_eq!(t["answer"], c["answer"]);
    assert_eq!(t["result"]["checked"], serde_json::Value::Bool(true), "{t}");
    let g = trm::data::sudoku_solver::parse_grid(t["answer"].as_str().unwrap()).unwrap();
    assert!(trm::data::sudoku_solver::violations(&g).is_empty());
}

/// A training step that runs out of memory in libtorch (here the host's, capped with RLIMIT_DATA;
/// on a GPU the device's, which torch reports the same way) ends the run with an error that says
/// which setting to change, not a panic; and following that advice trains. Measured on 2 cores
/// (release build), sudoku-tiny's step of 128 rows: in one pass it failed up to a cap of 1300 MB
/// and fitted at 1700; in passes of 64 it failed at 900 and fitted at 1300; passes of 32 fitted
/// at 900.
#[test]
fn a_step_out_of_memory_says_how_to_fit_and_the_advice_trains() {
    const CAP: u64 = 1100 << 20;
    let data = tempfile::tempdir().unwrap();
    let train = trm::data::sudoku::generate(64, 30, 1, 0);
    let test = trm::data::sudoku::generate(16, 30, 1, 1);
    trm::data::sudoku::write_dataset(data.path(), &train, &test, 1, 1).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("run");
    let base: Vec<String> = [
        "train",
        "--device",
        "torch-cpu",
        "--threads",
        "2",
        "--quiet",
        "--config",
        "sudoku-tiny",
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "global_batch_size=128",
        "max_steps=1",
    ]
    .map(String::from)
    .to_vec();
    let mut advice: Option<String> = None;
    let mut tried = vec![];
    for _ in 0..4 {
        let args: Vec<String> = base.iter().cloned().chain(advice.clone()).collect();
        let (code, err) = common::trm_capped(&args, CAP);
        tried.push((advice.clone(), code));
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(1), "not a clean error: {err}");
        assert!(!err.contains("panicked") && !err.contains("frame #"), "{err}");
        assert!(err.contains("training step 1 ran out of memory in passes of") && err.contains("can't allocate memory"), "{err}");
        assert!(err.contains("no checkpoint was written yet"), "{err}");
        let m: String =
            err.split("micro_batch_size=").nth(1).expect("no micro_batch_size advice").chars().take_while(char::is_ascii_digit).collect();
        advice = Some(format!("micro_batch_size={m}"));
    }
    eprintln!("under a {} MB cap: {tried:?}", CAP >> 20);
    assert_eq!(tried[0], (None, Some(1)), "the step of 128 rows in one pass should not fit under the cap");
    assert_eq!(tried.last().unwrap().1, Some(0), "the advice never fitted: {tried:?}");
    assert!(out.join("checkpoints/step_00000001").join("model.safetensors").exists());
    // After a checkpoint the advice is to resume from it: one more step in one pass fails, naming
    // the checkpoint, and the resume it advises (with the pass that fitted) trains on.
    let resume = |extra: &[&str]| {
        let args: Vec<String> =
            base.iter().cloned().chain(["--resume", "max_steps=2"].into_iter().chain(extra.iter().copied()).map(String::from)).collect();
        common::trm_capped(&args, CAP)
    };
    let (code, err) = resume(&["micro_batch_size=128"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("training step 2 ran out of memory")
            && err.contains("step_00000001: run the same command again with `micro_batch_size=64` (in place of"),
        "{err}"
    );
    let fitted = tried.last().unwrap().0.clone().unwrap();
    let (code, err) = resume(&[&fitted]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.join("checkpoints/step_00000002").join("model.safetensors").exists());
}

#[test]
fn a_gpu_that_libtorch_does_not_see_is_a_clear_error() {
    if tch::Cuda::device_count() > 0 {
        eprintln!("skipped: libtorch sees a GPU here, so there is no missing GPU to refuse");
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["parity", "--device", "cuda", "tests/fixtures/hrm-small"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sees no CUDA device") && err.contains("torch-cpu"), "{err}");
}

/// burn's generic attention (the form the other engines run), for checking the fused one.
fn generic_attention<B: burn::prelude::Backend>(
    q: burn::prelude::Tensor<B, 4>,
    k: burn::prelude::Tensor<B, 4>,
    v: burn::prelude::Tensor<B, 4>,
    scale: f64,
) -> burn::prelude::Tensor<B, 4> {
    let dt = q.dtype();
    let scores = (q.matmul(k.swap_dims(2, 3)) * scale).cast(burn::tensor::DType::F32);
    burn::tensor::activation::softmax(scores, 3).cast(dt).matmul(v)
}

#[test]
fn fused_attention_matches_the_generic_form_with_gradients() {
    use burn::prelude::Tensor;
    use burn::tensor::{DType, Distribution};
    assert!(trm::backend::capabilities::<Torch>().fused_attention);
    let dev = LibTorchDevice::Cpu;
    let rel = |a: Tensor<trm::backend::Torch, 4>, b: Tensor<trm::backend::Torch, 4>| {
        let (a, b) = (trm::backend::to_host_f32(&a), trm::backend::to_host_f32(&b));
        let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    // [B, H, T, hd] as the Sudoku attention model's blocks (T = 81 cells + 16 puzzle-embedding
    // positions), small; q and k are strided views, as the model's are after swap_dims.
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let input = || {
            let t = Tensor::<Torch, 4>::random([2, 97, 3, 8], Distribution::Normal(0.0, 1.0), &dev).swap_dims(1, 2);
            t.cast(dtype).require_grad()
        };
        let (q, k, v) = (input(), input(), input());
        let w = Tensor::<Torch, 4>::random([2, 3, 97, 8], Distribution::Normal(0.0, 1.0), &dev).cast(dtype);
        let scale = 1.0 / 8f64.sqrt();
        let fused = trm::backend::fused_attention(q.clone(), k.clone(), v.clone(), scale).expect("libtorch has fused attention");
        let generic = generic_attention(q.clone(), k.clone(), v.clone(), scale);
        let g_fused = (fused.clone() * w.clone()).sum().backward();
        let g_generic = (generic.clone() * w).sum().backward();
        let out_err = rel(fused.inner(), generic.inner());
        assert!(out_err < tol, "{dtype:?}: output differs by {out_err:.2e}");
        for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (t.grad(&g_fused).expect("fused gradient"), t.grad(&g_generic).expect("generic gradient"));
            assert_eq!(a.dtype(), dtype, "{name}'s gradient keeps its dtype");
            let e = rel(a, b);
            eprintln!("{dtype:?} d{name}: relative L2 {e:.2e} (output {out_err:.2e})");
            assert!(e < tol, "{dtype:?}: gradient of {name} differs by {e:.2e}");
        }
    }
    // An engine without it hands the inputs back.
    let x = Tensor::<FlexAd, 4>::zeros([1, 1, 2, 2], &Default::default());
    assert!(trm::backend::fused_attention(x.clone(), x.clone(), x, 1.0).is_err());
}

#[test]
fn bench_profile_reports_the_operators_of_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.tsv");
    let out = trm(&[
        "bench",
        "--device",
        "torch-cpu",
        "--shape",
        "sudoku-att",
        "--batch",
        "2",
        "--warmup",
        "0",
        "--reps",
        "1",
        "--profile",
        events.to_str().unwrap(),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let p = &r["profile"];
    assert_eq!(p["steps"], 2, "{r}");
    // A training step of the Sudoku attention model is thousands of operators, products among them.
    assert!(p["ops_per_step"].as_f64().unwrap() > 1000.0, "{p}");
    let mm = p["top_ops"].as_array().unwrap().iter().find(|o| o["op"] == "aten::mm").expect("aten::mm among the top operators");
    assert!(mm["calls_per_step"].as_f64().unwrap() >= 100.0, "{mm}");
    // No GPU here: no kernel figures.
    assert!(p["kernels_per_step"].is_null(), "{p}");
    assert!(std::fs::read_to_string(&events).unwrap().lines().count() > 1000);
}

/// `trm` with extra environment variables; its stdout.
fn trm_with_env(env: &[(&str, &str)], args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_trm")).envs(env.iter().copied()).args(args).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "trm {args:?} with {env:?} failed:\n{out}\n{err}");
    out.into_owned()
}

#[test]
fn bench_names_the_block_form_and_the_fused_block_merges_the_products() {
    let dir = tempfile::tempdir().unwrap();
    // (shape, environment, the block form that must run)
    let cases = [
        ("sudoku-att", &[][..], "fused-libtorch"),
        ("sudoku-att", &[("TRM_FUSED_TORCH", "0")][..], "generic+sdpa"),
        ("sudoku-att", &[("TRM_FUSED_ATTENTION", "0")][..], "generic"),
        ("sudoku-mlp", &[("TRM_FUSED_ATTENTION", "0")][..], "fused-libtorch"),
        ("sudoku-mlp", &[("TRM_FUSED_TORCH", "0")][..], "generic"),
    ];
    let mut products = vec![];
    for (i, (shape, env, form)) in cases.iter().enumerate() {
        let events = dir.path().join(format!("events-{i}.tsv"));
        let args = ["bench", "--device", "torch-cpu", "--shape", shape, "--mode", "eval", "--batch", "1", "--warmup", "0", "--reps", "1"];
        let out = trm_with_env(env, &[&args[..], &["--profile", events.to_str().unwrap(), "--json"]].concat());
        let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(r["block"], *form, "{shape} with {env:?}: {r}");
        let mm = r["profile"]["top_ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == "aten::mm")
            .map(|o| o["calls_per_step"].as_f64().unwrap());
        products.push(mm.unwrap_or_else(|| panic!("{shape} with {env:?}: no aten::mm among the top operators: {r}")));
    }
    // Per attention block the fused form makes 4 products (q|k|v, o, gate|up, down) where burn's
    // generic layers make 9 (q, k, v, RoPE's rotation of q and k, o, gate, up, down).
    eprintln!("aten::mm per sudoku-att eval step at batch 1: fused block {}, generic layers {}", products[0], products[1]);
    assert!(products[0] < 0.6 * products[1], "aten::mm per eval step: fused {} against generic {}", products[0], products[1]);
}

#[test]
fn deterministic_refuses_a_cublas_workspace_that_torch_would_stop_at() {
    let o = Command::new(env!("CARGO_BIN_EXE_trm"))
        .env("CUBLAS_WORKSPACE_CONFIG", ":1024:2")
        .args(["bench", "--device", "torch-cpu", "--deterministic", "--batch", "1", "--reps", "1", "--warmup", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(":4096:8 or :16:8") && err.contains("\":1024:2\""), "{err}");
    // A value torch accepts is kept, and said.
    let o = Command::new(env!("CARGO_BIN_EXE_trm"))
        .env("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        .args(["bench", "--device", "torch-cpu", "--deterministic", "--batch", "1", "--reps", "1", "--warmup", "0", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("CUBLAS_WORKSPACE_CONFIG=:16:8"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["deterministic"], serde_json::Value::Bool(true));
}

/// One rank of the in-process transport on libtorch with a bfloat16 forward: every collective
/// (gradients, puzzle-embedding rows, metrics, the carry at each checkpoint, the evaluation's
/// answers) runs through the host exchange, as NCCL with one GPU does, and the run ends with the
/// same state as a plain run, byte for byte.
#[test]
fn one_rank_through_the_exchange_matches_a_plain_run_on_libtorch() {
    let data = tempfile::tempdir().unwrap();
    common::tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let ov: Vec<String> = ["arch.forward_dtype=bfloat16", "arch.halt_exploration_prob=0.5", "max_steps=6", "checkpoint_interval_steps=3"]
        .map(String::from)
        .to_vec();
    let job = |name: &str| common::tiny_job(data.path(), &runs.path().join(name), &ov, false);
    let device = LibTorchDevice::Cpu;
    trm::train::trainer::train::<Torch>(&job("plain"), &device).unwrap();
    let mut one = trm::parallel::threads::group(1).pop().unwrap();
    assert!(!trm::parallel::Reducer::is_single(&one), "one rank must exchange through the transport");
    trm::train::trainer::train_with::<Torch>(&job("one"), &device, &mut one).unwrap();
    let (a, b) = (common::run_state(&runs.path().join("plain")), common::run_state(&runs.path().join("one")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k.starts_with("carry")), "{:?}", a.keys().collect::<Vec<_>>());
    for (k, va) in &a {
        assert_eq!(va.values, b[k].values, "{k} differs between a plain run and one rank through the exchange");
    }
}
