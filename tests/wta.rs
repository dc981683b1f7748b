//! Winner-take-all training over latent chains (`arch.wta_chains`, `step/wta.rs`), checked on a
//! tiny case against the plain step run on the same chains: the loss is each example's lowest
//! chain loss, the gradient is the gradient through those winners alone, every chain carries its
//! winner's answer and keeps its own latent, and an example's chains halt together.

use burn::prelude::*;
use trm::backend::to_host_f32;
use trm::model::act::{Carry, Exploration};
use trm::model::config::ModelConfig;
use trm::model::weights::{self, Weights};
use trm::step::loss::Metrics;
use trm::step::supervision::{Ropes, train_forward};
use trm::step::wta;
use trm::store::config;

type AD = burn::backend::Autodiff<burn::backend::Flex>;
type B = burn::backend::Flex;

const K: usize = 3;
const EXAMPLES: usize = 2;

fn model(chains: usize) -> ModelConfig {
    let ov: Vec<String> = [
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.puzzle_emb_ndim=16",
        "arch.halt_max_steps=3",
        "arch.mlp_t=False",
        "arch.H_cycles=2",
        "arch.L_cycles=2",
        &format!("arch.wta_chains={chains}"),
    ]
    .map(String::from)
    .to_vec();
    let cfg = config::resolve("sudoku-tiny", &ov).unwrap();
    let m = ModelConfig { arch: cfg.arch, seq_len: 12, vocab_size: 11, num_puzzle_identifiers: 3 };
    m.validate().unwrap();
    m
}

fn explore(chains: usize) -> Exploration {
    Exploration { prob: 0.0, seed: 9, step: 4, first_row: 0, chains }
}

fn host3(t: &Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, _, _] = t.dims();
    (0..b).map(|r| to_host_f32(&t.clone().narrow(0, r, 1).flatten::<1>(0, 2))).collect()
}

#[test]
fn the_winners_are_the_lowest_loss_chains_first_on_a_tie() {
    let row = |lm: f64, q: f64| Metrics { lm_loss: lm, q_halt_loss: q, ..Default::default() };
    // Example 0: chain 2 has the lowest lm + q/2 (1.0 + 0.1); example 1: chains 0 and 1 tie.
    let rows = [row(2.0, 0.0), row(1.0, 1.0), row(1.0, 0.2), row(1.0, 0.0), row(0.5, 1.0), row(3.0, 0.0)];
    assert_eq!(wta::winners(&rows, 3), vec![2, 3]);
}

#[test]
fn chain_zero_starts_from_l_init_and_the_others_from_their_own_draws() {
    let c = model(K);
    let device = Default::default();
    let w = weights::init::<B>(&c, &mut trm::util::rng::derive(1, &[]), &device);
    let batch = wta::expand_batch(&trm::bench::random_batch(&c, EXAMPLES, &mut trm::util::rng::derive(2, &[])), K);
    let start = || {
        let mut carry = Carry::<B>::for_training(&c, EXAMPLES, &device);
        let reset = carry.halted.clone();
        carry.reset_and_load(&w, &batch);
        wta::fresh_latents(&c, &mut carry, &reset, &explore(K));
        host3(&carry.states[1])
    };
    let z = start();
    assert_eq!(z, start(), "the draws are reproducible");
    let l_init = to_host_f32(&w.inits[1]);
    for (r, row) in z.iter().enumerate() {
        let is_l_init = row.chunks(16).all(|tok| tok == l_init.as_slice());
        assert_eq!(is_l_init, r % K == 0, "row {r}: only chain 0 starts from L_init");
    }
    assert_ne!(z[1], z[2]);
    assert_ne!(z[1], z[4], "each example draws its own");
    // The data rows are the examples repeated once per chain.
    assert_eq!(batch.inputs[..12], batch.inputs[24..36]);
    assert_ne!(batch.inputs[..12], batch.inputs[36..48]);
}

#[test]
fn wta_loss_and_gradient_are_the_plain_step_s_through_the_winners_alone() {
    let (c, plain) = (model(K), model(1));
    let device = Default::default();
    let params = weights::init::<B>(&c, &mut trm::util::rng::derive(1, &[]), &device).into_named();
    let table = Some(Tensor::<B, 2>::random([3, 16], burn::tensor::Distribution::Normal(0.0, 0.1), &device));
    let batch = trm::bench::random_batch(&c, EXAMPLES, &mut trm::util::rng::derive(2, &[]));
    let ropes = Ropes::<AD>::new(&c, &device);

    // The winner-take-all step.
    let mut carry = Carry::<B>::for_training(&c, EXAMPLES, &device);
    assert_eq!(carry.batch_size(), EXAMPLES * K);
    let (loss, _, leaves) = train_forward::<AD>(&c, &params, table.as_ref(), &mut carry, &batch, &ropes, explore(K));

    // The plain step on the same K·B rows, started from the same states (run twice: a graph
    // is backpropagated once).
    let expanded = wta::expand_batch(&batch, K);
    let w = Weights::from_named(&plain, params.clone()).unwrap();
    let plain_step = || {
        let mut p_carry = Carry::<B>::new(&plain, EXAMPLES * K, &device);
        let reset = p_carry.halted.clone();
        p_carry.reset_and_load(&w, &expanded);
        wta::fresh_latents(&c, &mut p_carry, &reset, &explore(K));
        p_carry.halted = vec![false; EXAMPLES * K]; // loaded: the step must not reset them again
        train_forward::<AD>(&plain, &params, table.as_ref(), &mut p_carry, &expanded, &ropes, explore(1))
    };
    let (p_loss, p_out, p_leaves) = plain_step();

    // Loss: each example's lowest chain loss, summed.
    let per_row: Vec<f64> = p_loss.row_total.clone().into_data().convert::<f64>().to_vec().unwrap();
    let win: Vec<usize> =
        per_row.chunks(K).enumerate().map(|(i, ch)| i * K + (0..K).fold(0, |b, c| if ch[c] < ch[b] { c } else { b })).collect();
    let want: f64 = win.iter().map(|&r| per_row[r]).sum();
    let got = loss.total.clone().into_scalar().to_f64();
    assert!((got - want).abs() <= 1e-6 * want.abs(), "WTA loss {got} vs lowest chain losses {want}");
    assert!(got < per_row.iter().sum::<f64>() / K as f64, "the winners' loss is below the chains' mean");

    // Gradient: that of the winners' rows of the plain step, and not that of all rows.
    let g = leaves.grads(&loss.total.backward()).0;
    let ids = Tensor::<AD, 1, Int>::from_data(TensorData::new(win.iter().map(|&r| r as i32).collect::<Vec<_>>(), [EXAMPLES]), &device);
    let p_win = p_loss.row_total.clone().select(0, ids).sum();
    let g_win = p_leaves.grads(&p_win.backward()).0;
    let (again, _, again_leaves) = plain_step();
    let g_all = again_leaves.grads(&again.total.backward()).0;
    let (mut compared, mut differs_from_all) = (0, false);
    for ((a, b), all) in g.iter().zip(&g_win).zip(&g_all) {
        if let (Some(a), Some(b), Some(all)) = (a, b, all) {
            let (a, b, all) = (to_host_f32(a), to_host_f32(b), to_host_f32(all));
            let scale = b.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale), "gradient differs from the winners' gradient");
            differs_from_all |= a.iter().zip(&all).any(|(x, y)| (x - y).abs() > 1e-3 * scale);
            compared += 1;
        }
    }
    assert!(compared > 5 && differs_from_all, "{compared} gradients compared; the losers must have counted for nothing");

    // Carry: every chain holds its winner's y and its own z; an example's chains halt together.
    let (y, z) = (host3(&carry.states[0]), host3(&carry.states[1]));
    let (p_y, p_z) = (host3(&p_out.states[0].clone().inner()), host3(&p_out.states[1].clone().inner()));
    for r in 0..EXAMPLES * K {
        assert_eq!(y[r], p_y[win[r / K]], "row {r}: y is the winner's");
        assert_eq!(z[r], p_z[r], "row {r}: z is its own");
    }
    for chains in carry.halted.chunks(K).zip(carry.steps.chunks(K)) {
        assert!(chains.0.iter().all(|&h| h == chains.0[0]) && chains.1.iter().all(|&s| s == 1));
    }
}

#[test]
fn wta_chains_is_refused_where_it_is_not_defined() {
    let err = |ov: &[&str]| {
        let ov: Vec<String> = ov.iter().map(|s| s.to_string()).collect();
        let cfg = config::resolve("sudoku-tiny", &ov);
        let cfg = match cfg {
            Err(e) => return e.root_cause().to_string(),
            Ok(c) => c,
        };
        let m = ModelConfig { arch: cfg.arch, seq_len: 12, vocab_size: 11, num_puzzle_identifiers: 3 };
        format!("{:#}", m.validate().unwrap_err())
    };
    assert!(err(&["arch.wta_chains=0"]).contains("arch.wta_chains must be in 1..=64"));
    assert!(err(&["arch.wta_chains=2", "arch.no_ACT_continue=False"]).contains("no_ACT_continue=True"));
    let e = err(&["arch=hrm", "arch.wta_chains=2"]);
    assert!(e.contains("arch.wta_chains") && !e.contains("[\"arch=hrm\""), "{e}");
}
