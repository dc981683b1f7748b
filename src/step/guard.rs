//! The divergence guard: a training step whose loss or gradients are not finite never reaches the
//! optimiser. The trainer either stops (the default: exit code non-zero, a message naming the step
//! and the quantity, the last finite checkpoint kept) or, when `skip_nonfinite_batches` allows it,
//! skips the batch with the weights, carry and randomness as they were before it.

use super::loss::Metrics;
use burn::prelude::*;

/// The first non-finite quantity of a step's loss (summed over the batch), if any.
pub fn nonfinite_loss(m: &Metrics, with_continue: bool) -> Option<(&'static str, f64)> {
    let mut q = vec![("lm_loss", m.lm_loss), ("q_halt_loss", m.q_halt_loss)];
    if with_continue {
        q.push(("q_continue_loss", m.q_continue_loss));
    }
    q.into_iter().find(|(_, v)| !v.is_finite())
}

/// Sum of |g| over every gradient (one reduction per tensor, one read back): NaN or infinite when
/// any entry is (or when the gradients are beyond any usable scale).
pub fn grad_abs_sum<B: Backend>(grads: &[Option<Tensor<B, 2>>]) -> f64 {
    let sums: Vec<Tensor<B, 1>> = grads.iter().flatten().map(|g| g.clone().abs().sum()).collect();
    if sums.is_empty() {
        return 0.0;
    }
    Tensor::cat(sums, 0).sum().into_scalar().elem::<f64>()
}

/// The first non-finite gradient: the network's (by |g| sum) or the puzzle embeddings' rows.
pub fn nonfinite_grad<B: Backend>(grads: &[Option<Tensor<B, 2>>], puzzle: Option<&[f32]>) -> Option<(&'static str, f64)> {
    let s = grad_abs_sum(grads);
    if !s.is_finite() {
        return Some(("gradient of the network weights (sum of |g|)", s));
    }
    puzzle.and_then(|p| p.iter().find(|v| !v.is_finite())).map(|&v| ("gradient of the puzzle embeddings", v as f64))
}

/// The error of a run stopped by the guard.
pub fn divergence_message(step: u64, what: &str, value: f64, last_checkpoint: Option<&std::path::Path>, lr: f64) -> String {
    let ckpt = match last_checkpoint {
        Some(p) => format!("the last finite checkpoint is {}", p.display()),
        None => "no checkpoint was written before it".to_string(),
    };
    format!(
        "training diverged at step {step}: the {what} is {value}; the weights were not updated with it, and {ckpt}. \
         Lower the learning rate (lr is {lr:e} at this step) or set skip_nonfinite_batches=N to skip up to N such batches. \
         Finite weights can still be ruined by the steps before a divergence (grown huge): if a run resumed from that \
         checkpoint diverges at once even at a lower learning rate, start a new run"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn finds_nonfinite_quantities() {
        let d = Default::default();
        let ok = Tensor::<B, 2>::from_floats([[1.0, -2.0]], &d);
        let nan = Tensor::<B, 2>::from_floats([[1.0, f32::NAN]], &d);
        let inf = Tensor::<B, 2>::from_floats([[f32::NEG_INFINITY, 0.0]], &d);
        assert_eq!(nonfinite_grad::<B>(&[Some(ok.clone()), None], Some(&[0.5])), None);
        assert!(nonfinite_grad::<B>(&[Some(ok.clone()), Some(nan)], None).unwrap().1.is_nan());
        assert!(nonfinite_grad::<B>(&[Some(inf)], None).unwrap().1.is_infinite());
        assert_eq!(nonfinite_grad::<B>(&[Some(ok)], Some(&[0.0, f32::NAN])).unwrap().0, "gradient of the puzzle embeddings");
        let m = Metrics { lm_loss: 1.0, q_halt_loss: f64::INFINITY, q_continue_loss: f64::NAN, ..Default::default() };
        assert_eq!(nonfinite_loss(&m, false).unwrap().0, "q_halt_loss");
        let m = Metrics { q_continue_loss: f64::NAN, ..Default::default() };
        assert_eq!(nonfinite_loss(&m, false), None);
        assert_eq!(nonfinite_loss(&m, true).unwrap().0, "q_continue_loss");
    }
}
