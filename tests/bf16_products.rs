//! `--precision bfloat16`: the CPU engine's products in bfloat16 on Intel AMX tiles or with
//! AVX512-BF16. On a CPU with a unit, the fused block tracks float32 within bfloat16's precision
//! (and does round), the two units agree far more closely than either does with float32 (same
//! rounded operands, float32 sums in another order), and the bundled model still solves a
//! published puzzle; training with them resumes exactly; a unit the CPU lacks is refused with
//! an error that names the fix. Its own test binary, because the switch is process-wide.

mod common;

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use trm::model::config::{ArchConfig, ModelConfig, PosEncoding};
use trm::model::cpu::{Bf16Unit, bf16_products, block};
use trm::model::layers::Rope;
use trm::model::weights;

fn rel_l2<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x.into() - y.into()).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| y.into().powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn bfloat16_products_track_float32_or_are_refused() {
    let units: Vec<Bf16Unit> = [Bf16Unit::Amx, Bf16Unit::Avx512Bf16].into_iter().filter(|u| u.available()).collect();
    for u in [Bf16Unit::Amx, Bf16Unit::Avx512Bf16].into_iter().filter(|u| !u.available()) {
        let e = bf16_products(Some(u)).unwrap_err().to_string();
        assert!(e.contains(u.precision()) && e.contains("--precision bfloat16 (the fastest unit here"), "{e}");
        eprintln!("no {} on this CPU: checked its refusal only", u.precision());
    }
    let device = Default::default();
    for mlp_t in [false, true] {
        let arch = ArchConfig {
            hidden_size: 64,
            num_heads: 4,
            pos_encodings: if mlp_t { PosEncoding::None } else { PosEncoding::Rope },
            puzzle_emb_ndim: 64,
            puzzle_emb_len: 2,
            mlp_t,
            ..Default::default()
        };
        let cfg = ModelConfig { arch, seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 3 };
        let mut rng = trm::util::rng::derive(3, &[]);
        let w = weights::init::<Flex>(&cfg, &mut rng, &device);
        let rope = Rope::<Flex>::new(&cfg, &device);
        let h: Tensor<Flex, 3> = Tensor::random([5, cfg.total_len(), 64], Distribution::Normal(0.0, 1.0), &device);
        let run = |unit: Option<Bf16Unit>| {
            bf16_products(unit).unwrap();
            let y = block(&h, &w.nets[0][0], &cfg, Some(&rope)).expect("the fused block applies to Flex");
            y.into_data().to_vec::<f32>().unwrap()
        };
        let f32_out = run(None);
        let mut outs = Vec::new();
        for &u in &units {
            let (out, again) = (run(Some(u)), run(Some(u)));
            let e = rel_l2(&out, &f32_out);
            // bfloat16 keeps 8 bits of mantissa (relative rounding up to 2^-9 = 0.2% per operand).
            assert!(e > 1e-5 && e < 1e-2, "{u:?} mlp_t={mlp_t}: relative error {e} (must round, and stay within bfloat16's precision)");
            assert_eq!(out, again, "{u:?} mlp_t={mlp_t}: the bfloat16 products are deterministic");
            outs.push((u, out, e));
        }
        bf16_products(None).unwrap();
        if let [(_, amx, e_amx), (_, dot, e_dot)] = &outs[..] {
            // Same rounded operands, float32 sums in another order: far closer to each other
            // than to float32.
            let d = rel_l2(dot, amx);
            assert!(d < e_amx.min(*e_dot) / 10.0, "mlp_t={mlp_t}: AMX and AVX512-BF16 differ by {d} (from float32: {e_amx}, {e_dot})");
            eprintln!("mlp_t={mlp_t}: AMX vs AVX512-BF16 {d:.2e}; from float32 {e_amx:.2e} and {e_dot:.2e}");
        }
    }
}

/// `trm solve` with its defaults (`--precision auto`) solves the published puzzle and names the
/// products it ran: bfloat16 on AMX where this CPU has it, float32 elsewhere (AVX512-BF16 is
/// no faster than float32 on the Intel CPUs measured, so auto does not take it).
#[test]
fn solve_names_its_precision_and_solves_with_it() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["solve", "--sudoku", trm::cli::demo::PUBLISHED, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = if Bf16Unit::Amx.available() { "bfloat16-amx" } else { "float32" };
    assert_eq!(v["precision"], want, "{v}");
    assert_eq!(v["result"]["checked"], true, "{v}");
    let truth = trm::data::sudoku_solver::solve(&trm::data::sudoku_solver::parse_grid(trm::cli::demo::PUBLISHED).unwrap(), 2);
    let answer = trm::data::sudoku_solver::parse_grid(v["answer"].as_str().unwrap()).unwrap();
    assert_eq!(Some(answer), truth.solution);
}

/// bfloat16 products are the fused CPU engine's: asked for with another device, or with the
/// fused block turned off, they are refused before anything loads, with the reason.
#[test]
fn bfloat16_products_are_refused_off_the_fused_cpu_engine() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["solve", "--sudoku", trm::cli::demo::PUBLISHED, "--precision", "bfloat16", "--device", "torch-cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--precision bfloat16 is the CPU engine's"), "{err}");
    // Without the fused CPU block there is nothing to run them in: refused when asked for, and
    // auto runs (and says) float32.
    let solve = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(["solve", "--sudoku", trm::cli::demo::PUBLISHED, "--json"])
            .args(extra)
            .env("TRM_FUSED_CPU", "0")
            .output()
            .unwrap()
    };
    let o = solve(&["--precision", "bfloat16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("TRM_FUSED_CPU=0"), "{err}");
    let o = solve(&["--views", "2", "--steps", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["precision"], "float32", "{v}");
}

fn trm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap()
}

/// `trm train --precision bfloat16`: the forward products in bfloat16 change the training (the
/// weights differ from float32's, within bfloat16's precision), and a run resumed with the same
/// flag continues exactly; a CPU without a unit refuses it.
#[test]
fn training_with_bfloat16_products_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    common::tiny_data(data.path());
    let runs = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let run = |name: &str, precision: &str, steps: u64, resume: bool| {
        let out = runs.path().join(name);
        let max = format!("max_steps={steps}");
        let mut args = vec!["train", "--threads", "2", "--quiet", "--config", "sudoku-tiny", "--data", d, "--precision", precision];
        args.extend(["--out", out.to_str().unwrap()]);
        if resume {
            args.push("--resume");
        } else {
            args.extend(common::TINY);
            args.extend(["arch.hidden_size=32", "arch.puzzle_emb_ndim=32", "eval_interval=2", "epochs=4", "eval_max_examples=8"]);
        }
        args.push(&max);
        (trm(&args), out)
    };
    if Bf16Unit::best().is_none() {
        let (o, _) = run("refused", "bfloat16", 2, false);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("--precision float32"), "{err}");
        eprintln!("skipped: this CPU has neither AMX nor AVX512-BF16, so only the refusal is tested, not the exact resume");
        return;
    }
    let ok = |(o, out): (std::process::Output, std::path::PathBuf)| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let straight = ok(run("straight", "bfloat16", 10, false));
    ok(run("split", "bfloat16", 5, false));
    let split = ok(run("split", "bfloat16", 10, true));
    let float32 = ok(run("float32", "float32", 10, false));
    let (a, b, f) = (common::run_state(&straight), common::run_state(&split), common::run_state(&float32));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, va) in &a {
        assert!(va.values.iter().all(|v| v.is_finite()), "{k} is not finite");
        assert_eq!(va.values, b[k].values, "{k} differs after a resume with bfloat16 products");
    }
    let weights: Vec<&String> = a.keys().filter(|k| k.starts_with("model/") && k.contains(".layers.")).collect();
    assert!(!weights.is_empty(), "no block weights in {:?}", a.keys().collect::<Vec<_>>());
    let (mut differ, mut worst) = (0, 0.0f64);
    for k in weights {
        let e = rel_l2(&a[k].values, &f[k].values);
        differ += usize::from(e > 0.0);
        worst = worst.max(e);
    }
    eprintln!("{differ} block weights differ from float32's after 10 steps; the largest by {worst:.2e} (relative L2)");
    assert!(differ > 0, "bfloat16 products left the training unchanged");
    assert!(worst < 0.05, "after 10 steps a block weight is {worst} (relative L2) from float32's");
}
