//! Fused attention on the libtorch engine: libtorch's `scaled_dot_product_attention` (SDPA)
//! instead of burn's generic QKᵀ → softmax → ·V, in evaluation and in training.
//!
//! Why: on an H200 (docs/benchmarks.md, "trm on a GPU") the generic form made trm's attention
//! training step 1.35× the reference's eager step, whose attention is one fused cuDNN/flash
//! kernel each way (0.009 s of a 0.27 s step). The generic form makes about ten passes over a
//! `[B, H, T, T]` score tensor per call.
//!
//! Training: burn's autodiff has no fused attention (it differentiates the generic form), so
//! this module adds one autodiff op for `Autodiff<LibTorch>`. Its forward runs SDPA under
//! torch's own autograd on detached copies of q, k and v, and keeps that small torch graph; its
//! backward runs that graph's backward on `dout` (`torch_shim::graph_backward`). So libtorch picks the same kernels each way as PyTorch does
//! (flash or memory-efficient or cuDNN on a GPU, its flash kernel on the CPU), and burn's graph
//! holds the op as one node. The output handed to burn is detached: nothing outside this op
//! records a torch graph.
//!
//! Numerics: SDPA accumulates the softmax in float32 for bfloat16 inputs, as the generic form's
//! float32 softmax does (src/model/layers.rs), and as the reference's SDPA does.

use super::torch_shim::graph_backward;
use super::{Torch, cast};
use burn::backend::Autodiff;
use burn::prelude::{Backend, Tensor};
use burn::tensor::TensorPrimitive;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_tch::TchTensor;
use std::any::TypeId;

type TorchAutodiff = Autodiff<Torch>;

/// Non-causal attention without a mask over `[B, H, T, hd]` tensors, scaled by `scale`, when `B`
/// is the libtorch engine (with or without autodiff); `Err` hands the inputs back otherwise.
#[allow(clippy::type_complexity)]
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> {
    if TypeId::of::<B>() == TypeId::of::<Torch>() {
        let [q, k, v] = [q, k, v].map(|t| cast::<B, Torch, 4>(t).into_primitive().tensor());
        let out = sdpa(&q.tensor, &k.tensor, &v.tensor, scale);
        return Ok(cast::<Torch, B, 4>(Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(out)))));
    }
    if TypeId::of::<B>() == TypeId::of::<TorchAutodiff>() {
        let [q, k, v] = [q, k, v].map(|t| cast::<B, TorchAutodiff, 4>(t).into_primitive().tensor());
        let out = match Sdpa.prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let mut graph = SdpaGraph::forward(&q.primitive.tensor, &k.primitive.tensor, &v.primitive.tensor, scale);
                let out = TchTensor::new(graph.out.detach());
                // burn writes in place into a tensor whose storage only it holds; these clones keep
                // it from writing into the memory torch saved for the backward.
                graph.pinned = vec![q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), out.clone()];
                prep.finish(graph, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(TchTensor::new(sdpa(&q.primitive.tensor, &k.primitive.tensor, &v.primitive.tensor, scale)))
            }
        };
        return Ok(cast::<TorchAutodiff, B, 4>(Tensor::from_primitive(TensorPrimitive::Float(out))));
    }
    Err((q, k, v))
}

fn sdpa(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, scale: f64) -> tch::Tensor {
    tch::Tensor::scaled_dot_product_attention(q, k, v, None::<tch::Tensor>, 0.0, false, Some(scale), false)
}

/// The torch graph of one SDPA call: its leaf inputs (detached q, k, v that require grad) and
/// its output; and burn's handles on the same memory (`pinned`), held until the backward.
#[derive(Debug)]
struct SdpaGraph {
    q: tch::Tensor,
    k: tch::Tensor,
    v: tch::Tensor,
    out: tch::Tensor,
    pinned: Vec<TchTensor>,
}

impl SdpaGraph {
    fn forward(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, scale: f64) -> Self {
        tch::with_grad(|| {
            let [q, k, v] = [q, k, v].map(|t| t.detach().set_requires_grad(true));
            let out = sdpa(&q, &k, &v, scale);
            SdpaGraph { q, k, v, out, pinned: vec![] }
        })
    }

    /// The gradients of q, k and v for the output gradient `dout`.
    fn backward(&self, dout: &tch::Tensor) -> [tch::Tensor; 3] {
        let mut g = graph_backward(&self.out, dout, &[&self.q, &self.k, &self.v]).into_iter();
        [(); 3].map(|_| g.next().expect("one gradient per input"))
    }
}

// The state burn keeps for the backward pass, which burn requires to be Clone (it does not clone
// one it runs); torch tensors are reference-counted handles, so a clone shares the same graph.
impl Clone for SdpaGraph {
    fn clone(&self) -> Self {
        SdpaGraph {
            q: self.q.shallow_clone(),
            k: self.k.shallow_clone(),
            v: self.v.shallow_clone(),
            out: self.out.shallow_clone(),
            pinned: self.pinned.clone(),
        }
    }
}

/// burn's autodiff node for the fused attention.
#[derive(Debug)]
struct Sdpa;

impl Backward<Torch, 3> for Sdpa {
    type State = SdpaGraph;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dout = grads.consume::<Torch>(&ops.node);
        let gradients = ops.state.backward(&dout.tensor);
        for (parent, g) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = parent {
                grads.register::<Torch>(node.id, TchTensor::new(g));
            }
        }
    }
}
