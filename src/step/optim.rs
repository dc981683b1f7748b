//! Optimisers and schedules, as the reference wires them:
//!
//! * **AdamATan2** (default) for every trainable parameter: decoupled decay first, then
//!   `p -= lr/(1-b1^t) * atan2(m, sqrt(v)/sqrt(1-b2^t))` (no epsilon); or **AdamW** (torch's).
//! * **sign-SGD** for the puzzle-embedding table: per distinct id in the global batch, the
//!   gradient rows are summed, then `w <- w (1 - lr wd) - lr sign(sum)`; other rows untouched.
//! * **LR schedule**: linear warmup, then cosine down to `lr_min_ratio` (constant at ratio 1).
//! * **EMA** of the trainable parameters (not the buffers, not the puzzle table).

use crate::model::weights::Named;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

/// Which optimiser updates the network weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    AdamAtan2,
    Adamw,
}

/// Hyper-parameters of one network-optimiser step.
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub kind: OptimizerKind,
}

/// First and second moments, one per named tensor (None for buffers), and the step count.
#[derive(Debug, Clone)]
pub struct AdamState<B: Backend> {
    pub step: u64,
    pub m: Vec<Option<Tensor<B, 2>>>,
    pub v: Vec<Option<Tensor<B, 2>>>,
}

impl<B: Backend> AdamState<B> {
    pub fn new(params: &[Named<B>]) -> Self {
        let zeros = |n: &Named<B>| n.trainable.then(|| n.tensor.zeros_like());
        AdamState { step: 0, m: params.iter().map(zeros).collect(), v: params.iter().map(zeros).collect() }
    }
}

/// One step over `params` with `grads` (same order; None = no gradient: skipped, not decayed).
pub fn adam_step<B: Backend>(params: &mut [Named<B>], grads: &[Option<Tensor<B, 2>>], st: &mut AdamState<B>, h: &AdamHyper) {
    st.step += 1;
    let t = st.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2 = 1.0 - h.beta2.powi(t);
    for (i, p) in params.iter_mut().enumerate() {
        let (Some(g), true) = (&grads[i], p.trainable) else { continue };
        let (m, v) = (st.m[i].take().expect("moment"), st.v[i].take().expect("moment"));
        let m = m.clone() + (g.clone() - m) * (1.0 - h.beta1);
        let v = v.clone() + (g.clone() * g.clone() - v) * (1.0 - h.beta2);
        let decayed = p.tensor.clone() * (1.0 - h.lr * h.weight_decay);
        p.tensor = match h.kind {
            OptimizerKind::AdamAtan2 => decayed - atan2_zero_at_origin(m.clone(), v.clone().sqrt() * (1.0 / bc2.sqrt())) * (h.lr / bc1),
            OptimizerKind::Adamw => decayed - (m.clone() * (1.0 / bc1)) / ((v.clone() * (1.0 / bc2)).sqrt() + 1e-8) * h.lr,
        };
        st.m[i] = Some(m);
        st.v[i] = Some(v);
    }
}

/// `atan2(y, x)`, exactly 0 where `y = x = 0`: PyTorch's and CUDA's value there, but undefined
/// on some backends (a Vulkan device gave 3π/4). Both moments are zero for a parameter that never
/// had a gradient (token rows never used, the Q-continue row with `no_ACT_continue`), whose
/// AdamATan2 update must then be nothing but the weight decay.
pub fn atan2_zero_at_origin<B: Backend, const D: usize>(y: Tensor<B, D>, x: Tensor<B, D>) -> Tensor<B, D> {
    let origin = y.clone().equal_elem(0.0).bool_and(x.clone().equal_elem(0.0));
    y.atan2(x).mask_fill(origin, 0.0)
}

/// sign-SGD on the rows of `table` `[N, ndim]` used by this batch. `ids` `[rows]` and `grad`
/// `[rows, ndim]` (host) are the whole global batch's.
pub fn sign_sgd_rows<B: Backend>(table: Tensor<B, 2>, ids: &[i32], grad: &[f32], lr: f64, wd: f64) -> Tensor<B, 2> {
    let ndim = table.dims()[1];
    let mut uniq: Vec<i32> = ids.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let mut sums = vec![0f32; uniq.len() * ndim];
    for (r, id) in ids.iter().enumerate() {
        let u = uniq.binary_search(id).expect("id present");
        for k in 0..ndim {
            sums[u * ndim + k] += grad[r * ndim + k];
        }
    }
    let device = table.device();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(uniq.clone(), [uniq.len()]), &device);
    let rows = table.clone().select(0, idx.clone());
    let sign: Vec<f32> = sums
        .iter()
        .map(|&g| {
            if g > 0.0 {
                1.0
            } else if g < 0.0 {
                -1.0
            } else {
                0.0
            }
        })
        .collect();
    let sign = Tensor::<B, 2>::from_data(TensorData::new(sign, [uniq.len(), ndim]), &device);
    // new = w (1 - lr wd) - lr sign  =>  add  -w lr wd - lr sign  to the selected rows
    let delta = rows * (-lr * wd) - sign * lr;
    table.select_assign(0, idx, delta, IndexingUpdateOp::Add)
}

/// Learning rate at 1-based `step`: linear warmup over `warmup` steps, then cosine from `base` to
/// `base * min_ratio` at `total` (the reference's `cosine_schedule_with_warmup_lr_lambda`).
pub fn lr_at(step: u64, base: f64, warmup: u64, total: u64, min_ratio: f64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * (min_ratio + ((1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0))
}

/// Exponential moving average of the trainable tensors: `shadow <- (1-mu) p + mu shadow`.
pub fn ema_update<B: Backend>(shadow: &mut [Named<B>], params: &[Named<B>], mu: f64) {
    for (s, p) in shadow.iter_mut().zip(params) {
        debug_assert_eq!(s.name, p.name);
        if p.trainable {
            s.tensor = p.tensor.clone() * (1.0 - mu) + s.tensor.clone() * mu;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_warmup_then_cosine() {
        assert_eq!(lr_at(50, 1.0, 100, 1000, 0.1), 0.5);
        assert!((lr_at(100, 1.0, 100, 1000, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(1000, 1.0, 100, 1000, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(550, 1.0, 100, 1000, 0.1) - 0.55).abs() < 1e-12);
        // min_ratio 1: constant after warmup
        assert_eq!(lr_at(700, 2.0, 100, 1000, 1.0), 2.0);
    }

    #[test]
    fn sign_sgd_sums_duplicate_ids_and_touches_only_their_rows() {
        type B = burn::backend::Flex;
        let dev = Default::default();
        let table = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0], [3, 2]), &dev);
        // rows with id 1 twice: grads (+1, -1) and (-3, -1) sum to (-2, -2) -> sign (-1, -1)
        let out = sign_sgd_rows(table, &[1, 1], &[1.0, -1.0, -3.0, -1.0], 0.1, 0.5);
        let v: Vec<f32> = out.into_data().to_vec().unwrap();
        let want = [1.0, 1.0, 2.0 * 0.95 + 0.1, 2.0 * 0.95 + 0.1, 3.0, 3.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    /// AdamATan2 on a parameter whose first row never had a gradient and whose second had one:
    /// the first row only decays, the second moves by lr * atan2(m, sqrt(v)) / bias corrections.
    pub(crate) fn zero_moments_give_only_the_decay<B: Backend>(dev: &B::Device) {
        let p0 = [0.5f32, -1.5, 2.0, 0.25, -0.75, 1.0];
        let g = [0.0f32, 0.0, 0.0, 0.3, -2.0, 1e-3];
        let mut params = vec![Named::<B> {
            name: "w".into(),
            shape: vec![2, 3],
            tensor: Tensor::from_data(TensorData::new(p0.to_vec(), [2, 3]), dev),
            trainable: true,
        }];
        let grads = vec![Some(Tensor::<B, 2>::from_data(TensorData::new(g.to_vec(), [2, 3]), dev))];
        let mut st = AdamState::new(&params);
        let h = AdamHyper { lr: 1e-2, beta1: 0.9, beta2: 0.95, weight_decay: 0.1, kind: OptimizerKind::AdamAtan2 };
        adam_step(&mut params, &grads, &mut st, &h);
        let got: Vec<f32> = params[0].tensor.clone().into_data().convert::<f32>().to_vec().unwrap();
        for k in 0..6 {
            let decayed = p0[k] as f64 * (1.0 - h.lr * h.weight_decay);
            // step 1: m / (1 - b1) = g and sqrt(v / (1 - b2)) = |g|, so atan2(m, sqrt(v)/sqrt(bc2)) = atan2((1-b1) g, |g|)
            let gk = g[k] as f64;
            let update = if gk == 0.0 { 0.0 } else { ((1.0 - h.beta1) * gk).atan2(gk.abs()) * h.lr / (1.0 - h.beta1) };
            let want = decayed - update;
            assert!(got[k].is_finite() && (got[k] as f64 - want).abs() < 1e-6, "element {k}: {} against {want} ({got:?})", got[k]);
        }
        let zero = atan2_zero_at_origin(Tensor::<B, 1>::zeros([4], dev), Tensor::<B, 1>::zeros([4], dev));
        assert_eq!(zero.into_data().convert::<f32>().to_vec::<f32>().unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn adam_atan2_zero_moments_give_only_the_decay_on_flex() {
        zero_moments_give_only_the_decay::<burn::backend::Flex>(&Default::default());
    }

    #[cfg(feature = "libtorch")]
    #[test]
    fn adam_atan2_zero_moments_give_only_the_decay_on_libtorch() {
        zero_moments_give_only_the_decay::<crate::backend::Torch>(&burn::backend::libtorch::LibTorchDevice::Cpu);
    }
}
