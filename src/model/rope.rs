//! Rotary position embeddings (RoPE): the tables and their application, used by the attention of
//! the generic layers (`layers.rs`) and by the fused CPU block (`cpu/`).

use super::config::ModelConfig;
use super::precision::in_f32;
use burn::prelude::*;
use burn::tensor::TensorData;

/// RoPE tables `[T, head_dim]`: `cos/sin(t * inv_freq)` with the frequencies repeated twice
/// (half-split convention), computed in float32 as the reference does.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    /// The same tables repeated for every head and flattened, `[1, T * H * d]`: multiplying a
    /// `[B, T*H*d]` view broadcasts over the leading axis only, which burn-flex does with a fast
    /// row loop (broadcasting `[1, T, 1, d]` over `[B, T, H, d]` took a per-element strided path:
    /// 20% of a CPU forward pass).
    cos_heads: Tensor<B, 2>,
    sin_heads: Tensor<B, 2>,
    /// `[d, d]` signed permutation: `x R = rotate_half(x)`.
    pub rotate: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        // An MLP-mixing model's tables are never read; its arch.num_heads may exceed its width
        // (nothing splits), so they are made for at most one head per unit.
        let heads = cfg.arch.num_heads.clamp(1, cfg.d().max(1));
        let (t, d) = (cfg.total_len(), (cfg.d() / heads).max(1));
        let base = cfg.arch.rope_theta as f32;
        // A head 1 wide (learned or no position encodings; rope is refused an odd width with
        // attention) has no rotation pair; its tables are made, but never read.
        let half = (d / 2).max(1);
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
        let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
        for p in 0..t {
            for k in 0..d {
                let f = p as f32 * inv[k % half];
                cos.push(f.cos());
                sin.push(f.sin());
            }
        }
        let repeat = |table: &[f32]| -> Vec<f32> {
            let mut v = Vec::with_capacity(t * heads * d);
            for row in table.chunks(d) {
                for _ in 0..heads {
                    v.extend_from_slice(row);
                }
            }
            v
        };
        let (cos_heads, sin_heads) = (repeat(&cos), repeat(&sin));
        let half = d / 2;
        let mut rot = vec![0f32; d * d];
        for i in 0..half {
            rot[(i + half) * d + i] = -1.0; // out_i = -x_{i+d/2}
            rot[i * d + i + half] = 1.0; // out_{i+d/2} = x_i
        }
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, [t, d]), device),
            sin: Tensor::from_data(TensorData::new(sin, [t, d]), device),
            cos_heads: Tensor::from_data(TensorData::new(cos_heads, [1, t * heads * d]), device),
            sin_heads: Tensor::from_data(TensorData::new(sin_heads, [1, t * heads * d]), device),
            rotate: Tensor::from_data(TensorData::new(rot, [d, d]), device),
        }
    }

    /// Rotates `[B, T, H, d]` (heads in the third axis, so everything stays contiguous):
    /// `x cos + rotate_half(x) sin` with `rotate_half = [-x2, x1]`, done as a product with a
    /// fixed signed permutation so no strided half-views are materialised.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        in_f32(x, |x| self.apply_f32(x))
    }

    fn apply_f32(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, t, h, d] = x.dims();
        let n = t * h * d;
        let rot = x.clone().reshape([b * t * h, d]).matmul(self.rotate.clone()).reshape([b, n]);
        if self.cos_heads.dims()[1] != n {
            // Called with another head count or fewer positions than the config's: broadcast the
            // first t rows of the [T, d] tables.
            let (cos, sin) =
                (self.cos.clone().narrow(0, 0, t).reshape([1, t, 1, d]), self.sin.clone().narrow(0, 0, t).reshape([1, t, 1, d]));
            return x * cos + rot.reshape([b, t, h, d]) * sin;
        }
        (x.reshape([b, n]) * self.cos_heads.clone() + rot * self.sin_heads.clone()).reshape([b, t, h, d])
    }
}
