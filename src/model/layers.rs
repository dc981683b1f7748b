//! The building blocks, as free functions over tensors: linear, RMSNorm (no weight), RoPE
//! (half-split), non-causal multi-head attention, SwiGLU, and the post-norm block.

use super::config::{ModelConfig, PosEncoding};
use super::precision::{in_f32, to_dtype};
pub use super::rope::Rope;
use super::weights::{Block, Linear, Mixer};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};

/// `x W^T (+ b)` over the last axis of a `[B, T, in]` tensor.
pub fn linear3<B: Backend>(x: Tensor<B, 3>, l: &Linear<B>) -> Tensor<B, 3> {
    let [b, t, i] = x.dims();
    let [o, _] = l.weight.dims();
    linear2(x.reshape([b * t, i]), l).reshape([b, t, o])
}

/// `x W^T (+ b)` for a `[B, in]` tensor; the weight (and bias) cast to `x`'s dtype per call,
/// like the reference's CastedLinear (a bfloat16 matmul under forward_dtype = bfloat16).
pub fn linear2<B: Backend>(x: Tensor<B, 2>, l: &Linear<B>) -> Tensor<B, 2> {
    let dt = x.dtype();
    let y = x.matmul(to_dtype(l.weight.clone(), dt).transpose());
    match &l.bias {
        Some(bias) => y + to_dtype(bias.clone(), dt).unsqueeze::<2>(),
        None => y,
    }
}

/// `x / sqrt(mean(x^2, axis) + eps)`, in float32; no learnable scale anywhere in TRM. The
/// blocks normalise the channel axis (2); the mlp_t mixer's transposed norm the sequence (1).
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, axis: usize, eps: f64) -> Tensor<B, 3> {
    in_f32(x, |x| {
        let ms = x.clone().powi_scalar(2).mean_dim(axis);
        x * (ms + eps).sqrt().recip()
    })
}

/// Non-causal multi-head attention, no mask; `qkv` output columns are [q heads | k heads | v heads],
/// each `heads x head_dim` wide with `head_dim = D / heads` (so the width is below D when the heads
/// do not divide D, as the reference's), and `o` maps that width back to D.
pub fn attention<B: Backend>(x: Tensor<B, 3>, qkv: &Linear<B>, o: &Linear<B>, heads: usize, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let hd = d / heads;
    let aw = hd * heads;
    // Row blocks of the qkv weight give contiguous q, k, v directly.
    let part = |k: usize| {
        let rows = Linear { weight: qkv.weight.clone().narrow(0, k * aw, aw), bias: qkv.bias.clone().map(|c| c.narrow(0, k * aw, aw)) };
        linear3(x.clone(), &rows).reshape([b, t, heads, hd])
    };
    let (mut q, mut k, v) = (part(0), part(1), part(2));
    if let Some(r) = rope {
        q = r.apply(q);
        k = r.apply(k);
    }
    let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2)); // [B, H, T, hd]
    let scale = 1.0 / (hd as f64).sqrt();
    let out = match crate::backend::fused_attention(q, k, v, scale) {
        Ok(out) => out, // one fused op (libtorch's SDPA), forward and backward
        Err((q, k, v)) => {
            let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [B, H, T, T]
            in_f32(scores, |s| softmax(s, 3)).matmul(v) // [B, H, T, hd], softmax in float32
        }
    };
    linear3(out.swap_dims(1, 2).reshape([b, t, aw]), o)
}

/// SwiGLU: `down(silu(gate) * up)` where `[gate | up] = gate_up(x)`.
pub fn swiglu<B: Backend>(x: Tensor<B, 3>, gate_up: &Linear<B>, down: &Linear<B>) -> Tensor<B, 3> {
    let i = gate_up.weight.dims()[0] / 2;
    // Row blocks of the weight instead of column halves of the output: both stay contiguous.
    let half =
        |k: usize| Linear { weight: gate_up.weight.clone().narrow(0, k * i, i), bias: gate_up.bias.clone().map(|c| c.narrow(0, k * i, i)) };
    let gate = linear3(x.clone(), &half(0));
    let up = linear3(x, &half(1));
    linear3(silu(gate) * up, down)
}

/// SwiGLU across the sequence axis of `[B, T, D]` (the mlp_t mixer), without transposing:
/// `W_gate [I, T] x h [B, T, D] -> [B, I, D]`, then `W_down [T, I] x [B, I, D] -> [B, T, D]`.
pub fn swiglu_seq<B: Backend>(h: Tensor<B, 3>, gate_up: &Linear<B>, down: &Linear<B>) -> Tensor<B, 3> {
    let [b, _, _] = h.dims();
    let i = gate_up.weight.dims()[0] / 2;
    let dt = h.dtype();
    let left = |w: Tensor<B, 2>| {
        let [r, c] = w.dims();
        to_dtype(w, dt).reshape([1, r, c]).expand([b, r, c])
    };
    let gate = left(gate_up.weight.clone().narrow(0, 0, i)).matmul(h.clone());
    let up = left(gate_up.weight.clone().narrow(0, i, i)).matmul(h);
    left(down.weight.clone()).matmul(silu(gate) * up)
}

/// Post-norm block: `h = rms(h + mix(h))`, then `h = rms(h + mlp(h))`. The mlp_t mixer works on
/// the transposed `[B, D, T]` stream, so its norm runs over the sequence axis.
pub fn block<B: Backend>(h: Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
    if let Some(out) = super::cpu::block(&h, w, cfg, rope) {
        return out; // the same block, fused, on the CPU backend
    }
    #[cfg(feature = "libtorch")]
    if let Some(out) = super::torch_block::block(&h, w, cfg, rope) {
        return out; // the same block in libtorch's ops, differentiated by torch (libtorch engine)
    }
    block_generic(h, w, cfg, rope)
}

/// Which form of the block runs the blocks of `cfg` on backend `B` (named in `trm bench`
/// results): `fused-cpu` (trm's CPU kernels), `fused-libtorch` (libtorch's ops under torch's
/// autograd), `generic+sdpa` (burn's layers with libtorch's fused attention) or `generic`.
pub fn block_form<B: Backend>(cfg: &ModelConfig) -> &'static str {
    if super::cpu::covers::<B>(cfg) {
        return "fused-cpu";
    }
    #[cfg(feature = "libtorch")]
    if super::torch_block::covers::<B>(cfg) {
        return "fused-libtorch";
    }
    if !cfg.arch.mlp_t && crate::backend::fused_attention_on::<B>() { "generic+sdpa" } else { "generic" }
}

/// `block` from burn's tensor ops, for every backend (and autodiff).
pub fn block_generic<B: Backend>(h: Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
    let eps = cfg.arch.rms_norm_eps;
    let h = match &w.mixer {
        Mixer::Attention { qkv, o } => {
            let rope = if cfg.arch.pos_encodings == PosEncoding::Rope { rope } else { None };
            rms_norm(h.clone() + attention(h, qkv, o, cfg.arch.num_heads, rope), 2, eps)
        }
        Mixer::MlpT { gate_up, down } => rms_norm(h.clone() + swiglu_seq(h, gate_up, down), 1, eps),
    };
    rms_norm(h.clone() + swiglu(h, &w.gate_up, &w.down), 2, eps)
}
