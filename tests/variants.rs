//! Every architecture and ablation runs forward and backward on the CPU, and differentiates
//! exactly the network applications its definition says. The counts come from the fused CPU
//! block itself (plain forward passes, passes recorded for backprop, backward passes), so a
//! schedule that ran an update on the wrong backend, or a gradient that leaked past the cut,
//! changes them.

use burn::prelude::*;
use trm::model::act::Carry;
use trm::model::config::ModelConfig;
use trm::model::counts::block_counts;
use trm::model::layers::Rope;
use trm::model::weights::{self, Weights};
use trm::step::supervision::{Ropes, eval_forward, train_forward};
use trm::store::config;

type AD = burn::backend::Autodiff<burn::backend::Flex>;
type B = burn::backend::Flex;

/// A tiny model of every architecture: T = 2 recursions of n = 3 updates, width 16.
fn model(overrides: &[&str]) -> ModelConfig {
    let mut ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ov.extend(["arch.hidden_size=16", "arch.num_heads=2", "arch.puzzle_emb_ndim=16", "arch.halt_max_steps=3"].map(String::from));
    let cfg = config::resolve("sudoku-tiny", &ov).unwrap();
    let m = ModelConfig { arch: cfg.arch, seq_len: 12, vocab_size: 11, num_puzzle_identifiers: 3 };
    m.validate().unwrap();
    m
}

const TRM: [&str; 4] = ["arch.mlp_t=False", "arch.pos_encodings=rope", "arch.H_cycles=2", "arch.L_cycles=3"];

/// What one training step and one evaluation step ran, in blocks.
#[derive(Debug, PartialEq)]
struct Counts {
    /// Blocks run without a graph in the training step (before the cut, and the bootstrap pass).
    train_plain: usize,
    /// Blocks recorded for backprop, and the backward passes through them.
    differentiated: usize,
    backward: usize,
    /// Blocks of one evaluation step (the effective depth).
    eval: usize,
}

fn run(c: &ModelConfig) -> (Counts, Vec<(String, f64)>) {
    let device = Default::default();
    let mut rng = trm::util::rng::derive(5, &[]);
    let params = weights::init::<B>(c, &mut rng, &device).into_named();
    let table = Some(Tensor::<B, 2>::random([3, 16], burn::tensor::Distribution::Normal(0.0, 0.1), &device));
    let batch = trm::bench::random_batch(c, 3, &mut rng);
    let ropes = Ropes::<AD>::new(c, &device);
    let mut carry = Carry::<B>::new(c, 3, &device);
    let t0 = block_counts();
    let (loss, _, leaves) = train_forward::<AD>(
        c,
        &params,
        table.as_ref(),
        &mut carry,
        &batch,
        &ropes,
        trm::model::act::Exploration { prob: 0.0, seed: 6, step: 1, first_row: 0, chains: 1 },
    );
    let t1 = block_counts();
    let grads = loss.total.backward();
    let t2 = block_counts();
    let (g, pg) = leaves.grads(&grads);
    let mut norms: Vec<(String, f64)> = params
        .iter()
        .zip(&g)
        .filter(|(n, _)| n.trainable)
        .map(|(n, g)| {
            let v = g.as_ref().map_or(vec![], trm::backend::to_host_f32);
            (n.name.clone(), v.iter().map(|x| (*x as f64).abs()).sum())
        })
        .collect();
    norms.push(("puzzle rows".into(), pg.map_or(0.0, |g| trm::backend::to_host_f32(&g).iter().map(|x| x.abs() as f64).sum())));
    let w = Weights::from_named(c, params).unwrap();
    let mut eval_carry = Carry::<B>::new(c, 3, &device);
    let e0 = block_counts();
    eval_forward(c, &w, table.as_ref(), &mut eval_carry, &batch, &Rope::new(c, &device), 3);
    let e1 = block_counts();
    assert_eq!(e1.tracked, e0.tracked, "evaluation records nothing");
    let counts = Counts {
        train_plain: t1.forward - t0.forward,
        differentiated: t1.tracked - t0.tracked,
        backward: t2.backward - t1.backward,
        eval: e1.forward - e0.forward,
    };
    (counts, norms)
}

/// Runs a case and checks the counts against the definition; every trainable tensor (and the
/// puzzle rows) must receive a gradient, except where `no_grad` says which ones cannot.
fn check(name: &str, overrides: &[&str], want: Counts, no_grad: &[&str]) {
    let c = model(overrides);
    let (got, norms) = run(&c);
    assert_eq!(got, want, "{name}: blocks run / differentiated / backward / evaluated");
    for (tensor, norm) in norms {
        let expect_grad = !no_grad.iter().any(|p| tensor.contains(p));
        assert_eq!(norm > 0.0, expect_grad, "{name}: gradient of {tensor} is {norm}");
    }
}

#[test]
fn trm_differentiates_the_n_plus_1_applications_of_its_last_recursion() {
    // L_layers 2: the last recursion is (3 + 1) x 2 = 8 blocks; the first one 8 more, no graph.
    check("trm", &TRM, Counts { train_plain: 8, differentiated: 8, backward: 8, eval: 16 }, &[]);
    let mut mlp = TRM.to_vec();
    mlp.extend(["arch.mlp_t=True", "arch.pos_encodings=none"]);
    check("trm mlp_t", &mlp, Counts { train_plain: 8, differentiated: 8, backward: 8, eval: 16 }, &[]);
}

#[test]
fn trm_with_act_adds_one_forward_pass_for_the_continue_target() {
    let mut ov = TRM.to_vec();
    ov.push("arch.no_ACT_continue=False");
    // The bootstrap pass runs the whole step again without a graph: 16 more plain blocks.
    check("trm w/ ACT", &ov, Counts { train_plain: 8 + 16, differentiated: 8, backward: 8, eval: 16 }, &[]);
}

#[test]
fn separate_networks_and_the_one_step_gradient() {
    let mut sep = TRM.to_vec();
    sep.extend(["arch.L_layers=2", "arch.H_layers=1"]);
    // Per recursion 3 L updates of 2 blocks and 1 H update of 1 block: 7 blocks.
    check("trm separate f_H, f_L", &sep, Counts { train_plain: 7, differentiated: 7, backward: 7, eval: 14 }, &[]);
    let mut one = TRM.to_vec();
    one.push("arch.one_step_grad=True");
    // Only the last z update and the y update (2 blocks each) are differentiated.
    check("trm 1-step gradient", &one, Counts { train_plain: 12, differentiated: 4, backward: 4, eval: 16 }, &[]);
}

#[test]
fn hrm_differentiates_exactly_the_last_l_and_h_update() {
    let ov = ["arch=hrm", "arch.H_cycles=2", "arch.L_cycles=3", "arch.L_layers=2", "arch.H_layers=1"];
    // A step is 6 L updates (2 blocks) and 2 H updates (1 block): 14 blocks. One L and one H
    // update (3 blocks) are differentiated; the bootstrap pass adds a whole step, no graph.
    check("hrm", &ov, Counts { train_plain: 11 + 14, differentiated: 3, backward: 3, eval: 14 }, &[]);
    let mut full = ov.to_vec();
    full.push("arch.one_step_grad=False");
    // The whole last cycle: 3 L updates and the H update.
    check("hrm full last cycle", &full, Counts { train_plain: 7 + 14, differentiated: 7, backward: 7, eval: 14 }, &[]);
    let mut sign = ov.to_vec();
    sign.push("arch.no_ACT_continue=True");
    check("hrm without the continue loss", &sign, Counts { train_plain: 11, differentiated: 3, backward: 3, eval: 14 }, &[]);
}

#[test]
fn single_z_and_six_latents() {
    let base = ["arch.mlp_t=False", "arch.pos_encodings=rope", "arch.H_cycles=2", "arch.L_cycles=3"];
    let mut single = vec!["arch=trm_singlez"];
    single.extend(base);
    check("trm_singlez", &single, Counts { train_plain: 8, differentiated: 8, backward: 8, eval: 16 }, &[]);
    let mut six = vec!["arch=trm_hier6"];
    six.extend(base);
    check("trm_hier6", &six, Counts { train_plain: 8, differentiated: 8, backward: 8, eval: 16 }, &[]);
}

#[test]
fn the_transformer_baseline_runs_its_network_once_with_gradient() {
    let ov = ["arch=transformers_baseline", "arch.H_layers=3", "arch.num_heads=3"];
    check("baseline", &ov, Counts { train_plain: 0, differentiated: 3, backward: 3, eval: 3 }, &[]);
    let off = ["arch=transformers_baseline", "arch.H_layers=3", "arch.num_heads=3", "arch.act_enabled=False"];
    check("baseline without ACT", &off, Counts { train_plain: 0, differentiated: 3, backward: 3, eval: 3 }, &[]);
}

/// Every architecture trains through the real loop, checkpoints, resumes bit-exactly (its carry
/// holds all its states), evaluates from the checkpoint and solves a puzzle through the CLI.
#[test]
fn every_architecture_trains_resumes_exactly_evaluates_and_solves() {
    use trm::train::trainer::{TrainJob, train};
    let data = tempfile::tempdir().unwrap();
    let train_set = trm::data::sudoku::generate(32, 30, 1, 0);
    let test_set = trm::data::sudoku::generate(8, 30, 1, 1);
    trm::data::sudoku::write_dataset(data.path(), &train_set, &test_set, 1, 1).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let common = [
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.puzzle_emb_ndim=16",
        "arch.halt_max_steps=3",
        "arch.halt_exploration_prob=0.5",
        "global_batch_size=8",
        "lr_warmup_steps=2",
        "ema=True",
        "epochs=4",
        "eval_interval=2",
        "eval_max_examples=8",
    ];
    let cases: [(&str, &[&str]); 6] = [
        ("trm_wta", &["arch.wta_chains=3"]),
        ("hrm", &["arch=hrm", "arch.L_layers=1", "arch.H_layers=1"]),
        ("trm_w_act", &["arch.no_ACT_continue=False", "arch.H_layers=1"]),
        ("trm_singlez", &["arch=trm_singlez", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"]),
        ("trm_hier6", &["arch=trm_hier6", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"]),
        ("baseline", &["arch=transformers_baseline", "arch.H_layers=2", "arch.act_inference=True"]),
    ];
    for (name, arch) in cases {
        let cfg = |steps: u64| {
            let ov: Vec<String> = arch.iter().chain(&common).map(|s| s.to_string()).chain([format!("max_steps={steps}")]).collect();
            config::resolve("sudoku-tiny", &ov).unwrap()
        };
        let job = |out: &str, steps: u64, resume: bool| TrainJob {
            config: cfg(steps),
            data: data.path().to_path_buf(),
            out: runs.path().join(format!("{name}-{out}")),
            resume,
            overrides: vec![format!("max_steps={steps}")],
            quiet: true,
            init_from: None,
            time_limit: None,
            engine_flags: String::new(),
            memory_check: true,
        };
        let straight = train::<AD>(&job("straight", 6, false), &Default::default()).unwrap();
        assert_eq!(straight.steps, 6, "{name}");
        train::<AD>(&job("split", 3, false), &Default::default()).unwrap();
        train::<AD>(&job("split", 6, true), &Default::default()).unwrap();
        let state = |out: &str| {
            let ckpt = trm::store::checkpoint::resolve(&runs.path().join(format!("{name}-{out}"))).unwrap();
            trm::util::tensors::read_safetensors(&ckpt.join("state.safetensors")).unwrap()
        };
        let (a, b) = (state("straight"), state("split"));
        let n_states = trm::model::schedule::Schedule::of(&cfg(1).arch).states.len();
        assert_eq!(a.keys().filter(|k| k.starts_with("carry.")).count(), n_states, "{name}: every state is in the checkpoint");
        for (k, v) in &a {
            assert_eq!(v.values, b[k].values, "{name}: {k} differs after resume");
        }
        // Evaluation and solving from the checkpoint, through the CLI.
        let run = runs.path().join(format!("{name}-straight"));
        let bin = env!("CARGO_BIN_EXE_trm");
        let out = std::process::Command::new(bin)
            .args(["eval", "--json", "--data"])
            .arg(data.path())
            .arg("--checkpoint")
            .arg(&run)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: eval: {}", String::from_utf8_lossy(&out.stderr));
        let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(js["count"], 8, "{name}");
        let q: String = test_set[0].question.iter().map(|&d| if d == 0 { '.' } else { (b'0' + d) as char }).collect();
        let out = std::process::Command::new(bin)
            .args(["solve", "--json", "--steps", "4", "--sudoku", &q, "--checkpoint"])
            .arg(&run)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: solve: {}", String::from_utf8_lossy(&out.stderr));
        let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(js["steps"].as_array().unwrap().len(), 4, "{name}");
    }
}

/// The training step rebuilds the weights by position (`from_ordered`, no names read); loading
/// rebuilds them by name in any order (`from_named`). Both must give the same model, for every
/// kind of architecture, and a weight missing or misshapen by name is an error that names it.
#[test]
fn weights_rebuilt_by_position_match_weights_rebuilt_by_name() {
    let device = Default::default();
    let cases: [&[&str]; 4] = [&TRM, &["arch.mlp_t=True"], &["arch=hrm"], &["arch.pos_encodings=learned", "arch.mlp_t=False"]];
    for overrides in cases {
        let c = model(overrides);
        let named = weights::init::<B>(&c, &mut trm::util::rng::derive(9, &[]), &device).into_named();
        let mut shuffled = named.clone();
        shuffled.reverse();
        let by_name = Weights::from_named(&c, shuffled).unwrap().into_named();
        let by_position = Weights::<B>::from_ordered(&c, named.iter().map(|n| n.tensor.clone()).collect()).into_named();
        assert_eq!((by_name.len(), by_position.len()), (named.len(), named.len()), "{overrides:?}");
        for ((a, b), n) in by_name.iter().zip(&by_position).zip(&named) {
            assert_eq!((&a.name, &a.shape), (&n.name, &n.shape), "{overrides:?}: order");
            assert_eq!((&b.name, &b.shape), (&n.name, &n.shape), "{overrides:?}: order");
            let (x, y, z) = (a.tensor.to_data(), b.tensor.to_data(), n.tensor.to_data());
            assert!(x == z && y == z, "{overrides:?}: {} differs", n.name);
        }
        let mut missing = named.clone();
        let gone = missing.remove(1).name;
        let Err(err) = Weights::from_named(&c, missing) else { panic!("{overrides:?}: a missing weight is refused") };
        let err = err.to_string();
        assert!(err.contains(&gone), "{err}");
        let mut misshapen = named.clone();
        let bad = &mut misshapen[1];
        bad.shape = vec![bad.shape.iter().product::<usize>() + 1];
        let Err(err) = Weights::from_named(&c, misshapen) else { panic!("{overrides:?}: a misshapen weight is refused") };
        let err = err.to_string();
        assert!(err.contains(&format!("weight `{gone}` has shape")), "{err}");
    }
}
