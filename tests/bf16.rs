//! `arch.forward_dtype = bfloat16` on the CPU backend (emulated by burn-flex; the same code runs
//! natively in bfloat16 on CUDA): the forward pass and the gradients track float32 within
//! bfloat16's precision, the carry is bfloat16, and logits leave the model as float32.
//! Its own test binary, because it turns on the process-wide CPU bfloat16 switch.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use trm::model::act::Carry;
use trm::model::config::{ForwardDtype, ModelConfig};
use trm::model::layers::Rope;
use trm::model::precision::allow_bf16_on_cpu;
use trm::model::weights;
use trm::step::supervision::{Ropes, eval_forward, train_forward};

fn tiny(shape: &str, dtype: ForwardDtype) -> ModelConfig {
    let mut c = trm::bench::shape(shape).unwrap();
    let a = &mut c.arch;
    (a.hidden_size, a.num_heads, a.puzzle_emb_ndim, a.h_cycles, a.l_cycles, a.forward_dtype) = (64, 4, 64, 1, 1, dtype);
    c
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `|a - b| / |b|` over whole vectors.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// bfloat16 forward and gradients against float32 on backend `B` (the same code for every engine).
fn bfloat16_tracks_float32<B: Backend>(device: &B::Device) {
    let device = device.clone();
    for shape in ["sudoku-att", "sudoku-mlp"] {
        // Forward: two supervision steps (the second starts from the bfloat16 carry of the first).
        let forward = |dtype| {
            let c = tiny(shape, dtype);
            let mut rng = trm::util::rng::derive(5, &[]);
            let w = weights::init::<B>(&c, &mut rng, &device);
            let table = Tensor::<B, 2>::zeros([c.num_puzzle_identifiers, c.arch.puzzle_emb_ndim], &device);
            let batch = trm::bench::random_batch(&c, 4, &mut rng);
            let mut carry = Carry::new(&c, 4, &device);
            let rope = Rope::<B>::new(&c, &device);
            let _ = eval_forward(&c, &w, Some(&table), &mut carry, &batch, &rope, usize::MAX);
            let (_, out) = eval_forward(&c, &w, Some(&table), &mut carry, &batch, &rope, usize::MAX);
            (out.logits.dtype(), out.states[0].dtype(), values(out.logits), values(out.q_halt))
        };
        let (dt32, carry32, l32, q32) = forward(ForwardDtype::Float32);
        let (dt16, carry16, l16, q16) = forward(ForwardDtype::Bfloat16);
        assert_eq!((dt32, carry32, dt16, carry16), (DType::F32, DType::F32, DType::F32, DType::BF16), "{shape}");
        let (el, eq) = (rel_l2(&l16, &l32), rel_l2(&q16, &q32));
        assert!(el > 0.0, "{shape}: the bfloat16 run must actually round");
        // Rounding compounds through the recursion: 4 network applications here give 1% (att)
        // and 3% (mlp_t) on the logits (measured; one block alone is checked below).
        assert!(el < 0.06 && eq < 0.06, "{shape}: logits rel. error {el}, q_halt {eq}");

        // Gradients of one training step on Autodiff<Flex>.
        let grads = |dtype| {
            let c = tiny(shape, dtype);
            let mut rng = trm::util::rng::derive(6, &[]);
            let params = weights::init::<B>(&c, &mut rng, &device).into_named();
            let table = Tensor::<B, 2>::zeros([c.num_puzzle_identifiers, c.arch.puzzle_emb_ndim], &device);
            let batch = trm::bench::random_batch(&c, 4, &mut rng);
            let mut carry = Carry::new(&c, 4, &device);
            let ropes = Ropes::<Autodiff<B>>::new(&c, &device);
            let (loss, _, leaves) = train_forward::<Autodiff<B>>(
                &c,
                &params,
                Some(&table),
                &mut carry,
                &batch,
                &ropes,
                trm::model::act::Exploration { prob: 0.0, seed: 6, step: 1, first_row: 0, chains: 1 },
            );
            assert_eq!(loss.total.dtype(), DType::F64, "stable-max loss in float64");
            let g = loss.total.backward();
            let (g, _) = leaves.grads(&g);
            g.into_iter().flatten().flat_map(values).collect::<Vec<f32>>()
        };
        let (g32, g16) = (grads(ForwardDtype::Float32), grads(ForwardDtype::Bfloat16));
        assert_eq!(g32.len(), g16.len());
        assert!(g16.iter().all(|v| v.is_finite()));
        let eg = rel_l2(&g16, &g32);
        eprintln!("{shape}: gradient rel. error {eg}");
        assert!(eg > 0.0 && eg < 0.1, "{shape}: gradient rel. error {eg}");
    }
}

#[test]
fn bfloat16_forward_and_gradients_track_float32_on_cpu() {
    allow_bf16_on_cpu(true);
    bfloat16_tracks_float32::<Flex>(&Default::default());
}

/// libtorch runs bfloat16 natively: the code path of `--device cuda`, on the CPU.
#[cfg(feature = "libtorch")]
#[test]
fn bfloat16_forward_and_gradients_track_float32_on_libtorch() {
    bfloat16_tracks_float32::<trm::backend::Torch>(&burn::backend::libtorch::LibTorchDevice::Cpu);
}

#[test]
fn one_bfloat16_block_is_within_bfloat16_rounding_of_float32() {
    let device = Default::default();
    for shape in ["sudoku-att", "sudoku-mlp"] {
        let c = tiny(shape, ForwardDtype::Float32);
        let mut rng = trm::util::rng::derive(5, &[]);
        let w = weights::init::<Flex>(&c, &mut rng, &device);
        let rope = Rope::<Flex>::new(&c, &device);
        let h: Tensor<Flex, 3> = Tensor::random([4, c.total_len(), 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let f32_out = values(trm::model::layers::block_generic(h.clone(), &w.nets[0][0], &c, Some(&rope)));
        let h16 = h.cast(DType::BF16);
        let rounded = Tensor::<Flex, 3>::from_data(burn::tensor::TensorData::new(values(h16.clone()), [4, c.total_len(), 64]), &device);
        let from_rounded_input = values(trm::model::layers::block_generic(rounded, &w.nets[0][0], &c, Some(&rope)));
        let bf16_out = values(trm::model::layers::block_generic(h16, &w.nets[0][0], &c, Some(&rope)));
        let (e, e_in) = (rel_l2(&bf16_out, &f32_out), rel_l2(&from_rounded_input, &f32_out));
        // bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%): rounding the input
        // alone costs ~0.2%, the whole block in bfloat16 ~0.5% (measured).
        assert!(e_in > 0.0 && e_in < 0.004 && e < 0.01, "{shape}: one block, bf16 vs f32 {e} (rounded input alone {e_in})");
    }
}
