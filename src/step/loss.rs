//! The ACT loss head of one supervision step, as the reference `ACTLossHead`:
//!
//! * `lm_loss`: per-token cross-entropy (stable-max in float64 by default), averaged over each
//!   row's valid tokens, **summed** over rows;
//! * `q_halt_loss`: BCE-with-logits of q_halt against "this step's argmax is exactly right",
//!   summed over every row (halted or not);
//! * `q_continue_loss` (HRM, TRM "w/ ACT"): BCE-with-logits of q_continue against the
//!   bootstrapped target (`act::continue_target`), summed over every row;
//! * `total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)`; the trainer backpropagates
//!   `total / global_batch`.
//!
//! Metrics count only rows that halted on this step and have at least one valid label.

use crate::data::loader::IGNORE_LABEL;
use crate::model::config::LossType;
use crate::model::precision::{loss_dtype, to_dtype};
use burn::prelude::*;
use burn::tensor::TensorData;

/// Summed (not yet normalised) metrics of one step, as the reference reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub count: f64,
    pub accuracy: f64,
    pub exact_accuracy: f64,
    pub q_halt_accuracy: f64,
    pub steps: f64,
    pub lm_loss: f64,
    pub q_halt_loss: f64,
    /// 0 when the architecture trains no Q-continue head.
    #[serde(default)]
    pub q_continue_loss: f64,
}

impl Metrics {
    pub fn add(&mut self, o: &Metrics) {
        self.count += o.count;
        self.accuracy += o.accuracy;
        self.exact_accuracy += o.exact_accuracy;
        self.q_halt_accuracy += o.q_halt_accuracy;
        self.steps += o.steps;
        self.lm_loss += o.lm_loss;
        self.q_halt_loss += o.q_halt_loss;
        self.q_continue_loss += o.q_continue_loss;
    }

    /// The fields in a fixed order (for sums over ranks).
    /// How many values `to_array` gives.
    pub const LEN: usize = 8;

    pub fn to_array(&self) -> [f64; Self::LEN] {
        [
            self.count,
            self.accuracy,
            self.exact_accuracy,
            self.q_halt_accuracy,
            self.steps,
            self.lm_loss,
            self.q_halt_loss,
            self.q_continue_loss,
        ]
    }

    /// The inverse of `to_array`.
    pub fn from_array(v: &[f64]) -> Metrics {
        Metrics {
            count: v[0],
            accuracy: v[1],
            exact_accuracy: v[2],
            q_halt_accuracy: v[3],
            steps: v[4],
            lm_loss: v[5],
            q_halt_loss: v[6],
            q_continue_loss: v[7],
        }
    }
}

/// What the loss head returns.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// Scalar total loss `[1]` (float64 with the stable-max loss), differentiable.
    pub total: Tensor<B, 1>,
    /// Each row's part of `total` `[B]` (its token loss plus half its Q losses), differentiable:
    /// winner-take-all training sums only the winners' (`step/wta.rs`).
    pub row_total: Tensor<B, 1>,
    pub metrics: Metrics,
    /// argmax predictions `[B*S]`.
    pub preds: Vec<i64>,
    /// Per row: every valid token predicted right.
    pub seq_correct: Vec<bool>,
    /// Per row: its metrics as if it alone had halted at this step (count 1 when it has labels),
    /// with its own token loss and Q-halt loss (adaptive evaluation takes each row at its halt).
    pub rows: Vec<Metrics>,
    /// The bootstrapped Q-continue target `[B]`, when this step trained q_continue.
    pub q_continue_target: Option<Vec<f32>>,
}

/// `log(s(x)_label / sum s(x))` with `s(x) = x + 1` (x >= 0), `1 / (1 - x + 1e-30)` (x < 0).
/// Computed in `loss_dtype` (float64 on the CPU, as the reference).
fn log_stablemax_at<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 3, Int>) -> Tensor<B, 3> {
    let x = to_dtype(logits, loss_dtype::<B>());
    let neg = x.clone().lower_elem(0.0);
    let s = (x.clone() + 1.0).mask_where(neg, (x.neg() + 1.0 + 1e-30).recip());
    let sum = s.clone().sum_dim(2);
    s.gather(2, labels).log() - sum.log()
}

fn log_softmax_at<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 3, Int>) -> Tensor<B, 3> {
    burn::tensor::activation::log_softmax(logits, 2).gather(2, labels)
}

/// Loss and metrics of one step. `labels` `[B*S]` on the host (IGNORE_LABEL = not supervised),
/// `halted`/`steps` the carry after this step; `q_continue` the continue logits with their
/// bootstrapped target when the architecture trains them.
pub fn act_loss<B: Backend>(
    logits: Tensor<B, 3>,
    q_halt: Tensor<B, 1>,
    q_continue: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    labels: &[i32],
    halted: &[bool],
    steps: &[u32],
    loss_type: LossType,
) -> LossOutput<B> {
    let [b, s, _] = logits.dims();
    let device = logits.device();
    // Discrete parts on the host: predictions, correctness, per-row valid counts.
    let preds: Vec<i64> = logits.clone().argmax(2).into_data().convert::<i64>().to_vec().expect("int predictions");
    let q_host: Vec<f32> = q_halt.clone().into_data().convert::<f32>().to_vec().expect("float q");
    let mut metrics = Metrics::default();
    let mut rows = vec![Metrics::default(); b];
    let mut seq_correct = vec![false; b];
    let mut inv_div = vec![0f64; b];
    for r in 0..b {
        let (mut n, mut right) = (0usize, 0usize);
        for k in 0..s {
            let l = labels[r * s + k];
            if l != IGNORE_LABEL {
                n += 1;
                right += (preds[r * s + k] == l as i64) as usize;
            }
        }
        seq_correct[r] = right == n; // true for rows with nothing to predict, as the reference
        inv_div[r] = 1.0 / n.max(1) as f64;
        if n > 0 {
            let row = &mut rows[r];
            row.count = 1.0;
            row.accuracy = right as f64 / n as f64;
            row.exact_accuracy = seq_correct[r] as u8 as f64;
            row.q_halt_accuracy = ((q_host[r] >= 0.0) == seq_correct[r]) as u8 as f64;
            row.steps = steps[r] as f64;
        }
        if halted[r] {
            metrics.add(&rows[r]);
        }
    }
    // Token loss, masked, mean per row, summed over rows.
    let mask: Vec<f64> = labels.iter().map(|&l| (l != IGNORE_LABEL) as u8 as f64).collect();
    let safe: Vec<i32> = labels.iter().map(|&l| if l == IGNORE_LABEL { 0 } else { l }).collect();
    let labels_t = Tensor::<B, 3, Int>::from_data(TensorData::new(safe, [b, s, 1]), &device);
    let logp = match loss_type {
        LossType::StablemaxCrossEntropy => log_stablemax_at(logits, labels_t),
        LossType::SoftmaxCrossEntropy => to_dtype(log_softmax_at(logits, labels_t), loss_dtype::<B>()),
    };
    let dt = loss_dtype::<B>();
    let mask_t = Tensor::<B, 3>::from_data(TensorData::new(mask, [b, s, 1]).convert_dtype(dt), (&device, dt));
    let div_t = Tensor::<B, 2>::from_data(TensorData::new(inv_div, [b, 1]).convert_dtype(dt), (&device, dt));
    let per_row = (logp.neg() * mask_t).sum_dim(1).reshape([b, 1]) * div_t;
    let row_lm: Vec<f64> = per_row.clone().into_data().convert::<f64>().to_vec().expect("float losses");
    let lm_loss = per_row.clone().sum().reshape([1]);
    // Q-halt: BCE with logits against exact correctness, summed over all rows.
    let target: Vec<f32> = seq_correct.iter().map(|&c| c as u8 as f32).collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(target, [b]), &device);
    let q_halt_rows = bce_with_logits(q_halt, t);
    let row_q: Vec<f64> = q_halt_rows.clone().into_data().convert::<f64>().to_vec().expect("float losses");
    for (r, row) in rows.iter_mut().enumerate() {
        (row.lm_loss, row.q_halt_loss) = (row_lm[r], row_q[r]);
    }
    let mut q_rows = q_halt_rows.clone();
    let q_halt_loss = q_halt_rows.sum().reshape([1]);
    metrics.lm_loss = lm_loss.clone().into_scalar().to_f64();
    metrics.q_halt_loss = q_halt_loss.clone().into_scalar().to_f64();
    let mut q_loss = q_halt_loss;
    let mut q_continue_target = None;
    if let Some((q_continue, target)) = q_continue {
        q_continue_target = Some(target.clone().into_data().convert::<f32>().to_vec().expect("float target"));
        let q_continue_rows = bce_with_logits(q_continue, target);
        q_rows = q_rows + q_continue_rows.clone();
        let q_continue_loss = q_continue_rows.sum().reshape([1]);
        metrics.q_continue_loss = q_continue_loss.clone().into_scalar().to_f64();
        q_loss = q_loss + q_continue_loss;
    }
    let total = lm_loss + to_dtype(q_loss, dt) * 0.5;
    let row_total = per_row.reshape([b]) + to_dtype(q_rows, dt) * 0.5;
    LossOutput { total, row_total, metrics, preds, seq_correct, rows, q_continue_target }
}

/// The weight of a row's loss at its `t`-th supervision step (1-based) of at most `max`, under
/// hierarchical supervision weighting with decay `lambda`: `lambda^(t-1)` over the mean of the
/// `max` weights.
pub fn supervision_weight(t: u32, max: usize, lambda: f64) -> f64 {
    let z = (0..max.max(1)).map(|k| lambda.powi(k as i32)).sum::<f64>() / max.max(1) as f64;
    lambda.powi(t.saturating_sub(1) as i32) / z
}

/// The loss to backpropagate under hierarchical supervision weighting: each row's part of the
/// total (`LossOutput::row_total`) times the weight of the supervision step it is at (`steps`,
/// the carry after the step).
pub fn weighted_total<B: Backend>(row_total: Tensor<B, 1>, steps: &[u32], max: usize, lambda: f64) -> Tensor<B, 1> {
    let w: Vec<f64> = steps.iter().map(|&t| supervision_weight(t, max, lambda)).collect();
    let dt = row_total.dtype();
    let w = Tensor::<B, 1>::from_data(TensorData::new(w, [steps.len()]).convert_dtype(dt), (&row_total.device(), dt));
    (row_total * w).sum().reshape([1])
}

/// Numerically stable `BCEWithLogits(x, t) = max(x, 0) - x t + log(1 + exp(-|x|))`.
pub fn bce_with_logits<B: Backend>(x: Tensor<B, 1>, t: Tensor<B, 1>) -> Tensor<B, 1> {
    let relu = x.clone().clamp_min(0.0);
    relu - x.clone() * t + (x.abs().neg().exp() + 1.0).log()
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn stablemax_check_values() {
        let dev = Default::default();
        // logits [1, -1]: s = [2, 0.5] -> p = [0.8, 0.2]
        let logits = Tensor::<B, 3>::from_data(TensorData::new(vec![1.0f32, -1.0, 0.0, 0.0], [1, 2, 2]), &dev);
        let labels = Tensor::<B, 3, Int>::from_data(TensorData::new(vec![0i32, 1], [1, 2, 1]), &dev);
        let lp: Vec<f64> = log_stablemax_at(logits, labels).into_data().convert::<f64>().to_vec().unwrap();
        assert!((lp[0] - 0.8f64.ln()).abs() < 1e-12);
        assert!((lp[1] - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn bce_matches_the_formula() {
        let dev = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::new(vec![-5.0f32, 0.0, 3.0], [3]), &dev);
        let t = Tensor::<B, 1>::from_data(TensorData::new(vec![0.0f32, 1.0, 1.0], [3]), &dev);
        let v: Vec<f32> = bce_with_logits(x, t).into_data().to_vec().unwrap();
        assert!((v[0] - 0.006715348).abs() < 1e-6); // BCE(-5, 0)
        assert!((v[1] - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((v[2] - 0.04858735).abs() < 1e-6);
    }

    #[test]
    fn supervision_weights_decay_and_average_one() {
        let n = 16;
        let w: Vec<f64> = (1..=n as u32).map(|t| supervision_weight(t, n, 0.7)).collect();
        assert!((w.iter().sum::<f64>() / n as f64 - 1.0).abs() < 1e-12);
        for k in 1..n {
            assert!((w[k] / w[k - 1] - 0.7).abs() < 1e-12);
        }
        assert!((1..=n as u32).all(|t| supervision_weight(t, n, 1.0) == 1.0));
        // The weighted total: rows at steps 1 and 3 of 4 with decay 0.5 (weights 1/Z and 0.25/Z,
        // Z = (1 + 0.5 + 0.25 + 0.125) / 4).
        let rows = Tensor::<B, 1>::from_data(TensorData::new(vec![2.0f32, 4.0], [2]), &Default::default());
        let got = weighted_total(rows, &[1, 3], 4, 0.5).into_scalar().to_f64();
        let z = 1.875 / 4.0;
        assert!((got - (2.0 + 4.0 * 0.25) / z).abs() < 1e-5, "{got}");
    }
}
