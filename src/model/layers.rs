//! The building blocks, as free functions over tensors: linear, RMSNorm (no weight), RoPE
//! (half-split), non-causal multi-head attention, SwiGLU, and the post-norm block.

use super::config::{ModelConfig, PosEncoding};
use super::weights::{Block, Linear, Mixer};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{silu, softmax};

/// `x W^T (+ b)` over the last axis of a `[B, T, in]` tensor.
pub fn linear3<B: Backend>(x: Tensor<B, 3>, l: &Linear<B>) -> Tensor<B, 3> {
    let [b, t, i] = x.dims();
    let [o, _] = l.weight.dims();
    let y = x.reshape([b * t, i]).matmul(l.weight.clone().transpose());
    let y = match &l.bias {
        Some(bias) => y + bias.clone().unsqueeze::<2>(),
        None => y,
    };
    y.reshape([b, t, o])
}

/// `x W^T (+ b)` for a `[B, in]` tensor.
pub fn linear2<B: Backend>(x: Tensor<B, 2>, l: &Linear<B>) -> Tensor<B, 2> {
    let y = x.matmul(l.weight.clone().transpose());
    match &l.bias {
        Some(bias) => y + bias.clone().unsqueeze::<2>(),
        None => y,
    }
}

/// `x / sqrt(mean(x^2, last axis) + eps)`; no learnable scale anywhere in TRM.
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
    let ms = x.clone().powi_scalar(2).mean_dim(2);
    x * (ms + eps).sqrt().recip()
}

/// RoPE tables `[T, head_dim]`: `cos/sin(t * inv_freq)` with the frequencies repeated twice
/// (half-split convention), computed in float32 as the reference does.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let (t, d) = (cfg.total_len(), cfg.head_dim());
        let base = cfg.arch.rope_theta as f32;
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
        let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
        for p in 0..t {
            for k in 0..d {
                let f = p as f32 * inv[k % (d / 2)];
                cos.push(f.cos());
                sin.push(f.sin());
            }
        }
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, [t, d]), device),
            sin: Tensor::from_data(TensorData::new(sin, [t, d]), device),
        }
    }

    /// Rotates `[B, H, T, d]`: `x cos + rotate_half(x) sin`, `rotate_half = [-x2, x1]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rot = Tensor::cat(vec![x2.neg(), x1], 3);
        let cos = self.cos.clone().unsqueeze::<4>();
        let sin = self.sin.clone().unsqueeze::<4>();
        x * cos + rot * sin
    }
}

/// Non-causal multi-head attention, no mask; `qkv` output columns are [q heads | k heads | v heads].
pub fn attention<B: Backend>(x: Tensor<B, 3>, qkv: &Linear<B>, o: &Linear<B>, heads: usize, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let hd = d / heads;
    let qkv = linear3(x, qkv).reshape([b, t, 3 * heads, hd]);
    let split = |k: usize| qkv.clone().narrow(2, k * heads, heads).swap_dims(1, 2); // [B, H, T, hd]
    let (mut q, mut k, v) = (split(0), split(1), split(2));
    if let Some(r) = rope {
        q = r.apply(q);
        k = r.apply(k);
    }
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()); // [B, H, T, T]
    let out = softmax(scores, 3).matmul(v); // [B, H, T, hd]
    linear3(out.swap_dims(1, 2).reshape([b, t, d]), o)
}

/// SwiGLU: `down(silu(gate) * up)` where `[gate | up] = gate_up(x)`.
pub fn swiglu<B: Backend>(x: Tensor<B, 3>, gate_up: &Linear<B>, down: &Linear<B>) -> Tensor<B, 3> {
    let gu = linear3(x, gate_up);
    let i = gu.dims()[2] / 2;
    let gate = gu.clone().narrow(2, 0, i);
    let up = gu.narrow(2, i, i);
    linear3(silu(gate) * up, down)
}

/// Post-norm block: `h = rms(h + mix(h))`, then `h = rms(h + mlp(h))`. The mlp_t mixer works on
/// the transposed `[B, D, T]` stream, so its norm runs over the sequence axis.
pub fn block<B: Backend>(h: Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
    let eps = cfg.arch.rms_norm_eps;
    let h = match &w.mixer {
        Mixer::Attention { qkv, o } => {
            let rope = if cfg.arch.pos_encodings == PosEncoding::Rope { rope } else { None };
            rms_norm(h.clone() + attention(h, qkv, o, cfg.arch.num_heads, rope), eps)
        }
        Mixer::MlpT { gate_up, down } => {
            let ht = h.swap_dims(1, 2);
            rms_norm(ht.clone() + swiglu(ht, gate_up, down), eps).swap_dims(1, 2)
        }
    };
    rms_norm(h.clone() + swiglu(h, &w.gate_up, &w.down), eps)
}
