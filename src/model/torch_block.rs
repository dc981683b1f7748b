//! A fused block on the libtorch engine: the whole post-norm block (mixer, SwiGLU, both residual
//! adds and RMSNorms) written in libtorch's own ops, and differentiated by torch's autograd as one
//! node of burn's graph.
//!
//! Why: on an H200 (docs/benchmarks.md, "trm on a GPU") burn's generic layers made trm's
//! attention training step 1.35× the reference's eager step. A libtorch profile of that step
//! (`trm bench --profile`) showed trm calling `aten::mm` 608 times per sudoku-att step against
//! the reference's 285: burn's generic layers split the q|k|v and gate|up products (burn's
//! `narrow` backward fills a zero tensor the size of the whole activation for each part), and
//! burn's autodiff differentiates RMSNorm, SiLU and RoPE as chains of element-wise kernels.
//! Here each block is what the reference's eager PyTorch runs: one product for q|k|v and one for
//! gate|up, torch's SDPA, `silu`, `rms_norm`, with torch's own backward for each.
//!
//! How (as `backend::torch_attention` does for attention alone): the forward runs under torch's
//! autograd on detached copies of the block input and its four weights, and keeps that small
//! torch graph; the backward runs that graph's backward on `dout` (`backend::graph_backward`). The output handed to burn is detached, so nothing
//! outside this op records a torch graph. Without autodiff (evaluation, inference, the no-grad
//! cycles of training) the same forward runs under `no_grad`.
//!
//! Numerics follow the generic block (`layers::block_generic`) and the reference: weights cast
//! to the activations' dtype per call, RMSNorm and RoPE in float32, the attention softmax
//! accumulated in float32. `TRM_FUSED_TORCH=0` turns the block off (burn's generic layers
//! instead); so does `TRM_FUSED_ATTENTION=0` for attention blocks, whose attention here is SDPA.
//! Tests: equality with the generic block, forward and every gradient (below), and the golden
//! fixtures on torch-cpu, whose forward and gradients run through it (tests/libtorch.rs, which
//! checks that they do).

use super::config::{ModelConfig, PosEncoding};
use super::rope::Rope;
use super::weights::{Block, Mixer};
use crate::backend::{Torch, cast};
use burn::backend::Autodiff;
use burn::prelude::{Backend, Tensor};
use burn::tensor::TensorPrimitive;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_tch::TchTensor;
use std::any::TypeId;
use std::sync::OnceLock;
use tch::Kind;

type TorchAutodiff = Autodiff<Torch>;

use super::counts::count;

/// Whether the fused block applies to backend `B` (libtorch, with or without autodiff, and not
/// turned off by `TRM_FUSED_TORCH=0`).
pub fn applies<B: Backend>() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::backend::capabilities::<B>().fused_torch_block && *ON.get_or_init(|| !crate::util::env::fused_torch_off())
}

/// Whether the fused block runs the blocks of `cfg` on `B` (blocks without biases, as every
/// architecture's): it applies to `B`; attention blocks also need the fused attention on (their
/// attention is SDPA, so `TRM_FUSED_ATTENTION=0` leaves them to burn's generic layers) and, with
/// RoPE, an even head width for the half-split rotation (every preset has one).
pub fn covers<B: Backend>(cfg: &ModelConfig) -> bool {
    if !applies::<B>() {
        return false;
    }
    let rope = cfg.arch.pos_encodings == PosEncoding::Rope;
    cfg.arch.mlp_t || (crate::backend::fused_attention_on::<B>() && !(rope && cfg.head_dim() % 2 == 1))
}

/// The block's mixer, as the torch forward needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MixerKind {
    Attention,
    MlpT,
}

/// Everything but the tensors: the shape facts and options of one block.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    mixer: MixerKind,
    heads: i64,
    eps: f64,
}

/// The post-norm block (see `layers::block`) on libtorch, or None when this path does not cover
/// it (another engine, a layer with a bias, or turned off: `TRM_FUSED_TORCH=0`, or for attention
/// `TRM_FUSED_ATTENTION=0`).
pub fn block<B: Backend>(h: &Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Option<Tensor<B, 3>> {
    let (m1, m2, mixer) = match &w.mixer {
        Mixer::Attention { qkv, o } => (qkv, o, MixerKind::Attention),
        Mixer::MlpT { gate_up, down } => (gate_up, down, MixerKind::MlpT),
    };
    if !covers::<B>(cfg) || [m1, m2, &w.gate_up, &w.down].iter().any(|l| l.bias.is_some()) {
        return None;
    }
    let g = Geometry { mixer, heads: cfg.arch.num_heads as i64, eps: cfg.arch.rms_norm_eps };
    let weights = [&m1.weight, &m2.weight, &w.gate_up.weight, &w.down.weight];
    let t = h.dims()[1] as i64;
    // The RoPE tables are constants: plain torch tensors, their first t rows.
    let tables = match (rope, cfg.arch.pos_encodings, mixer) {
        (Some(r), PosEncoding::Rope, MixerKind::Attention) => {
            Some([&r.cos, &r.sin].map(|c| plain_tch(c.clone()).narrow(0, 0, t).view([t, 1, 1, -1]))) // [t, 1, 1, hd]
        }
        _ => None,
    };
    let tables = tables.as_ref().map(|[c, s]| (c, s));

    if TypeId::of::<B>() == TypeId::of::<Torch>() {
        let x = plain_tch(h.clone());
        let w = weights.map(|w| plain_tch(w.clone()));
        let out = tch::no_grad(|| forward(&x, [&w[0], &w[1], &w[2], &w[3]], tables, g));
        count(|c| c.forward += 1);
        return Some(cast::<Torch, B, 3>(Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(out)))));
    }
    debug_assert_eq!(TypeId::of::<B>(), TypeId::of::<TorchAutodiff>());
    let x = cast::<B, TorchAutodiff, 3>(h.clone()).into_primitive().tensor();
    let w = weights.map(|w| cast::<B, TorchAutodiff, 2>(w.clone()).into_primitive().tensor());
    let nodes = [x.node.clone(), w[0].node.clone(), w[1].node.clone(), w[2].node.clone(), w[3].node.clone()];
    let out = match FusedTorchBlock.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            count(|c| c.tracked += 1);
            let inputs = [&x.primitive, &w[0].primitive, &w[1].primitive, &w[2].primitive, &w[3].primitive];
            // torch records (and saves for) only the gradients burn will ask for.
            let tracked = [&x.node, &w[0].node, &w[1].node, &w[2].node, &w[3].node].map(|n| !n.requirement.is_none());
            let mut graph = BlockGraph::forward(inputs.map(|t| &t.tensor), tracked, tables, g);
            let out = TchTensor::new(graph.out.detach());
            // burn writes in place into a tensor whose storage only it holds; these clones keep
            // it from writing into the memory torch saved for the backward.
            graph.pinned = inputs.iter().map(|t| (*t).clone()).chain([out.clone()]).collect();
            prep.finish(graph, out)
        }
        OpsKind::UnTracked(prep) => {
            count(|c| c.forward += 1);
            let ws = [&w[0].primitive.tensor, &w[1].primitive.tensor, &w[2].primitive.tensor, &w[3].primitive.tensor];
            prep.finish(TchTensor::new(tch::no_grad(|| forward(&x.primitive.tensor, ws, tables, g))))
        }
    };
    Some(cast::<TorchAutodiff, B, 3>(Tensor::from_primitive(TensorPrimitive::Float(out))))
}

/// The torch tensor under a libtorch tensor without autodiff (the type was checked).
fn plain_tch<B: Backend, const D: usize>(t: Tensor<B, D>) -> tch::Tensor {
    if TypeId::of::<B>() == TypeId::of::<TorchAutodiff>() {
        return cast::<B, TorchAutodiff, D>(t).inner().into_primitive().tensor().tensor;
    }
    cast::<B, Torch, D>(t).into_primitive().tensor().tensor
}

// ---------------------------------------------------------------------------------------------
// The forward pass, in libtorch's ops.

/// One block: `h = rms(x + mix(x))`, then `rms(h + swiglu(h))`. `w` is [mixer in, mixer out,
/// gate|up, down]; `rope` the `[t, 1, 1, hd]` cos and sin tables (attention only).
fn forward(x: &tch::Tensor, w: [&tch::Tensor; 4], rope: Option<(&tch::Tensor, &tch::Tensor)>, g: Geometry) -> tch::Tensor {
    let dt = x.kind();
    // Weights are cast to the activations' dtype per call (the reference's CastedLinear).
    let linear = |x: &tch::Tensor, w: &tch::Tensor| x.linear(&w.to_kind(dt), None::<tch::Tensor>);
    let h = match g.mixer {
        MixerKind::Attention => rms_norm(&(x + attention(x, w[0], w[1], rope, g)), g.eps),
        MixerKind::MlpT => rms_norm_axis(&(x + swiglu_seq(x, w[0], w[1])), 1, g.eps),
    };
    rms_norm(&(&h + swiglu(&h, w[2], w[3], &linear)), g.eps)
}

/// Non-causal multi-head attention: one product for q|k|v (`[q heads | k heads | v heads]`
/// columns), RoPE on q and k, SDPA (its softmax accumulates in float32), and the output
/// projection.
fn attention(x: &tch::Tensor, qkv: &tch::Tensor, o: &tch::Tensor, rope: Option<(&tch::Tensor, &tch::Tensor)>, g: Geometry) -> tch::Tensor {
    let dt = x.kind();
    let (b, t, d) = x.size3().expect("a [B, T, D] block input");
    let hd = d / g.heads;
    // q and k stay together through RoPE (one pass each way for both); a split and an unbind,
    // whose backwards are one cat and one stack, not a zero-filled tensor per part.
    let parts = x.linear(&qkv.to_kind(dt), None::<tch::Tensor>).view([b, t, 3, g.heads, hd]).split_with_sizes([2, 1], 2);
    let [qk, v]: [tch::Tensor; 2] = parts.try_into().expect("q|k and v");
    let qk = match rope {
        Some((cos, sin)) => apply_rope(&qk, cos, sin),
        None => qk,
    };
    let [q, k]: [tch::Tensor; 2] = qk.unbind(2).try_into().expect("q and k");
    let [q, k, v] = [q, k, v.squeeze_dim(2)].map(|t| t.transpose(1, 2)); // [B, H, T, hd]
    let scale = 1.0 / (hd as f64).sqrt();
    let ctx = tch::Tensor::scaled_dot_product_attention(&q, &k, &v, None::<tch::Tensor>, 0.0, false, Some(scale), false);
    ctx.transpose(1, 2).reshape([b, t, g.heads * hd]).linear(&o.to_kind(dt), None::<tch::Tensor>)
}

/// `x cos + rotate_half(x) sin` over `[B, T, 2, H, hd]` (q and k), in float32, returned in `x`'s
/// dtype; `cos` and `sin` are `[T, 1, 1, hd]`.
fn apply_rope(x: &tch::Tensor, cos: &tch::Tensor, sin: &tch::Tensor) -> tch::Tensor {
    let xf = x.to_kind(Kind::Float);
    let half = xf.size().last().copied().expect("a head axis") / 2;
    let rotated = tch::Tensor::cat(&[-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)], -1);
    (xf * cos + rotated * sin).to_kind(x.kind())
}

/// SwiGLU over the last axis: `down(silu(gate) * up)` with `[gate | up] = gate_up(x)`.
fn swiglu(
    x: &tch::Tensor,
    gate_up: &tch::Tensor,
    down: &tch::Tensor,
    linear: &impl Fn(&tch::Tensor, &tch::Tensor) -> tch::Tensor,
) -> tch::Tensor {
    let [gate, up]: [tch::Tensor; 2] = linear(x, gate_up).chunk(2, -1).try_into().expect("two halves");
    linear(&(gate.silu() * up), down)
}

/// SwiGLU across the sequence axis of `[B, T, D]` (the mlp_t mixer) without transposing, as
/// `layers::swiglu_seq`: batched products with the `[2I, T]` and `[T, I]` weights expanded over
/// the batch (no copies). On an H200 this form made trm's mlp_t step 0.94× the reference's eager
/// step, which transposes the stream to `[B, D, T]` and back; on torch-cpu in bfloat16 a first
/// version of this block with the transposed form made the sudoku-mlp step 1.8× as long.
fn swiglu_seq(x: &tch::Tensor, gate_up: &tch::Tensor, down: &tch::Tensor) -> tch::Tensor {
    let (dt, b) = (x.kind(), x.size()[0]);
    let left = |w: &tch::Tensor| {
        let (r, c) = w.size2().expect("a [rows, cols] weight");
        w.to_kind(dt).unsqueeze(0).expand([b, r, c], false)
    };
    let [gate, up]: [tch::Tensor; 2] = left(gate_up).matmul(x).chunk(2, 1).try_into().expect("two halves"); // [B, I, D] each
    left(down).matmul(&(gate.silu() * up)) // [B, T, D]
}

/// RMSNorm over axis `axis` without a weight, in float32 (the mlp_t mixer's norm runs over the
/// sequence axis, which torch's `rms_norm` does not cover).
fn rms_norm_axis(x: &tch::Tensor, axis: i64, eps: f64) -> tch::Tensor {
    let xf = x.to_kind(Kind::Float);
    let ms = xf.square().mean_dim(axis, true, Kind::Float);
    (&xf * (ms + eps).rsqrt()).to_kind(x.kind())
}

/// RMSNorm over the last axis without a weight, returned in `x`'s dtype. torch computes it in
/// float32 for a bfloat16 input (its opmath type), so no casts around it: on torch-cpu the result
/// and its gradient are bit-identical to casting to float32 and back (checked 2026-12-04), and a
/// GPU's fused `rms_norm` kernel skips two passes each way.
fn rms_norm(x: &tch::Tensor, eps: f64) -> tch::Tensor {
    let d = x.size().last().copied().expect("a last axis");
    x.rms_norm([d], None::<tch::Tensor>, eps)
}

// ---------------------------------------------------------------------------------------------
// The backward pass: torch's autograd over the graph the forward kept.

/// The torch graph of one block: its leaf inputs (detached block input and weights that require
/// grad) and its output; and burn's handles on the same memory (`pinned`), held until the
/// backward.
#[derive(Debug)]
struct BlockGraph {
    leaves: [tch::Tensor; 5],
    out: tch::Tensor,
    pinned: Vec<TchTensor>,
}

impl BlockGraph {
    fn forward(inputs: [&tch::Tensor; 5], tracked: [bool; 5], rope: Option<(&tch::Tensor, &tch::Tensor)>, g: Geometry) -> Self {
        tch::with_grad(|| {
            let leaves: [tch::Tensor; 5] = std::array::from_fn(|i| inputs[i].detach().set_requires_grad(tracked[i]));
            let out = forward(&leaves[0], [&leaves[1], &leaves[2], &leaves[3], &leaves[4]], rope, g);
            BlockGraph { leaves, out, pinned: vec![] }
        })
    }

    /// The gradients of the leaves `wanted` for the output gradient `dout`.
    fn backward(&self, dout: &tch::Tensor, wanted: &[usize]) -> Vec<tch::Tensor> {
        let inputs: Vec<&tch::Tensor> = wanted.iter().map(|&i| &self.leaves[i]).collect();
        crate::backend::graph_backward(&self.out, dout, &inputs)
    }
}

// The state burn keeps for the backward pass, which burn requires to be Clone (it does not clone
// one it runs); torch tensors are reference-counted handles, so a clone shares the same graph.
impl Clone for BlockGraph {
    fn clone(&self) -> Self {
        BlockGraph { leaves: self.leaves.each_ref().map(|t| t.shallow_clone()), out: self.out.shallow_clone(), pinned: self.pinned.clone() }
    }
}

/// burn's autodiff node for the fused block: parents [input, mixer in, mixer out, gate|up, down].
#[derive(Debug)]
struct FusedTorchBlock;

impl Backward<Torch, 5> for FusedTorchBlock {
    type State = BlockGraph;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        count(|c| c.backward += 1);
        let dout = grads.consume::<Torch>(&ops.node);
        let wanted: Vec<usize> = (0..5).filter(|&i| ops.parents[i].is_some()).collect();
        let gradients = ops.state.backward(&dout.tensor, &wanted);
        for (i, g) in wanted.into_iter().zip(gradients) {
            let node = ops.parents[i].as_ref().expect("a wanted parent");
            grads.register::<Torch>(node.id, TchTensor::new(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BLOCK_TEST_CASES, block_test_config};
    use crate::model::counts::block_counts;
    use crate::model::layers::block_generic;
    use crate::model::weights;
    use burn::backend::libtorch::LibTorchDevice;
    use burn::tensor::{DType, Distribution};

    type Ad = TorchAutodiff;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        crate::backend::to_host_f32(&t)
    }

    /// Relative L2 distance |a - b| / |b|, and |b|.
    fn rel_l2(a: &[f32], b: &[f32]) -> (f64, f64) {
        assert_eq!(a.len(), b.len());
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        ((num / den).sqrt(), den.sqrt())
    }

    #[test]
    fn fused_torch_block_matches_burns_generic_block_forward_and_gradients() {
        let device = LibTorchDevice::Cpu;
        assert!(applies::<Ad>() && applies::<Torch>() && !applies::<burn::backend::Flex>());
        for (pos, mlp_t, hidden, heads, seq_len, batch) in BLOCK_TEST_CASES {
            let cfg = block_test_config(pos, mlp_t, hidden, heads, seq_len);
            let mut rng = crate::util::rng::derive(3, &[]);
            let w = &weights::init::<Torch>(&cfg, &mut rng, &device).nets[0][0];
            let wad = w.map_weights(|t| Tensor::<Ad, 2>::from_inner(t).require_grad());
            let rope = Rope::<Ad>::new(&cfg, &device);
            let rope_plain = Rope::<Torch>::new(&cfg, &device);
            let t = cfg.total_len();
            // Values that bfloat16 holds exactly, so both dtypes start from the same input.
            let random = || {
                Tensor::<Torch, 3>::random([batch, t, hidden], Distribution::Normal(0.0, 1.0), &device).cast(DType::BF16).cast(DType::F32)
            };
            let (h0, probe) = (random(), random());
            let case = format!("{pos:?} mlp_t {mlp_t} D {hidden} H {heads} T {t}");

            // The output and the five gradients of two blocks in a row (so the input gradient of
            // one feeds the other), fused or generic, in `dtype`.
            let run = |fused: bool, dtype: DType| {
                let h = Tensor::<Ad, 3>::from_inner(h0.clone().cast(dtype)).require_grad();
                let once = |x: Tensor<Ad, 3>| {
                    if fused { block(&x, &wad, &cfg, Some(&rope)).expect("fused") } else { block_generic(x, &wad, &cfg, Some(&rope)) }
                };
                let y = once(once(h.clone()));
                let g = (y.clone() * Tensor::from_inner(probe.clone().cast(dtype))).sum().backward();
                let (m1, m2) = match &wad.mixer {
                    Mixer::Attention { qkv, o } => (qkv, o),
                    Mixer::MlpT { gate_up, down } => (gate_up, down),
                };
                assert_eq!(y.dtype(), dtype, "{case}: the output keeps the activations' dtype");
                let h_grad = h.grad(&g).expect("input gradient");
                assert_eq!(h_grad.dtype(), dtype, "{case}: the input gradient keeps its dtype");
                let grad = |t: &Tensor<Ad, 2>| {
                    let g = t.grad(&g).expect("a weight gradient");
                    assert_eq!(g.dtype(), DType::F32, "{case}: weight gradients are float32, as the weights");
                    values(g)
                };
                [values(y.inner()), values(h_grad), grad(&m1.weight), grad(&m2.weight), grad(&wad.gate_up.weight), grad(&wad.down.weight)]
            };
            let names = ["output", "d input", "d mixer 1", "d mixer 2", "d gate_up", "d down"];

            // Without autodiff: the forward alone.
            for dtype in [DType::F32, DType::BF16] {
                let h = h0.clone().cast(dtype);
                let before = block_counts();
                let plain = values(block(&h, w, &cfg, Some(&rope_plain)).expect("libtorch runs the fused block"));
                assert_eq!(block_counts().forward, before.forward + 1);
                let (e, _) = rel_l2(&plain, &values(block_generic(h, w, &cfg, Some(&rope_plain))));
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
                assert!(e <= tol, "{case} {dtype:?}: forward differs by {e:.1e} (relative L2)");
            }

            // On the autodiff backend with nothing tracked: the plain forward, no graph.
            let untracked = w.map_weights(Tensor::<Ad, 2>::from_inner);
            let before = block_counts();
            let y = block(&Tensor::<Ad, 3>::from_inner(h0.clone()), &untracked, &cfg, Some(&rope)).expect("fused");
            let after = block_counts();
            assert_eq!((after.forward - before.forward, after.tracked - before.tracked), (1, 0), "{case}: untracked");
            let (e, _) = rel_l2(&values(y.inner()), &values(block_generic(h0.clone(), w, &cfg, Some(&rope_plain))));
            assert!(e <= 1e-6, "{case}: untracked forward differs by {e:.1e}");

            // Only the input tracked (constant weights): torch records only that gradient.
            let input_grad = |fused: bool| {
                let h = Tensor::<Ad, 3>::from_inner(h0.clone()).require_grad();
                let y = if fused {
                    block(&h, &untracked, &cfg, Some(&rope)).expect("fused")
                } else {
                    block_generic(h.clone(), &untracked, &cfg, Some(&rope))
                };
                let g = (y * Tensor::from_inner(probe.clone())).sum().backward();
                values(h.grad(&g).expect("input gradient"))
            };
            let (e, norm) = rel_l2(&input_grad(true), &input_grad(false));
            assert!(norm > 0.0 && e <= 1e-6, "{case}: input gradient with constant weights differs by {e:.1e}");

            // float32: the same maths in another order (measured up to 6e-7).
            let before = block_counts();
            let fused = run(true, DType::F32);
            let after = block_counts();
            assert_eq!((after.tracked - before.tracked, after.backward - before.backward), (2, 2), "{case}");
            let generic = run(false, DType::F32);
            for (name, (a, b)) in names.iter().zip(fused.iter().zip(&generic)) {
                let (e, norm) = rel_l2(a, b);
                assert!(norm > 0.0 && e <= 1e-6, "{case} F32: {name}: relative L2 {e:.1e}");
            }
            // bfloat16: two roundings of the float32 result (the generic block's and this one's,
            // each about 1% in relative L2 on the mlp_t gradients) that differ by as much; the
            // fused block must be no farther from float32 than the generic one.
            let (fused16, generic16) = (run(true, DType::BF16), run(false, DType::BF16));
            for (k, name) in names.iter().enumerate() {
                let (e_fused, _) = rel_l2(&fused16[k], &generic[k]);
                let (e_generic, _) = rel_l2(&generic16[k], &generic[k]);
                eprintln!("{case}: {name}: bfloat16 against float32, fused {e_fused:.1e}, generic {e_generic:.1e}");
                assert!(
                    e_fused <= 1.25 * e_generic + 1e-3 && e_fused < 0.03,
                    "{case} BF16: {name}: fused {e_fused:.1e}, generic {e_generic:.1e}"
                );
            }
        }
    }
}
