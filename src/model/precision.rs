//! The forward dtype (`arch.forward_dtype`), as the reference's "casted" layers: parameters,
//! optimiser state and the loss stay float32 (float64 for stable-max), while the residual
//! stream, the carry and every linear layer run in bfloat16 (weights cast per call); RMSNorm,
//! RoPE and the attention softmax compute in float32 and cast back; logits and Q logits leave
//! the model as float32.
//!
//! On the Flex CPU backend bfloat16 is emulated through float32 by burn-flex (slower, and the fused
//! CPU block only handles float32), so CPU runs compute in float32 unless `TRM_CPU_BF16=1`
//! (or `allow_bf16_on_cpu`) asks for the emulation, e.g. to study bfloat16 numerics.
//!
//! The token loss is computed in float64, as the reference's stable-max, on every engine that has
//! it (Flex, libtorch), and in float32 on burn's cubecl CUDA backend: its fused kernels have no
//! float64 (they panic with "Unsupported precision for fusion: f64", seen on an H200,
//! 2026-11-27). What each engine can do is stated in `crate::backend`.

use super::config::{ForwardDtype, ModelConfig};
use crate::backend::capabilities;
use burn::prelude::*;
use burn::tensor::DType;
use std::sync::atomic::{AtomicBool, Ordering};

static CPU_BF16: AtomicBool = AtomicBool::new(false);

/// Lets the CPU backend honour `forward_dtype = bfloat16` (process-wide).
pub fn allow_bf16_on_cpu(on: bool) {
    CPU_BF16.store(on, Ordering::Relaxed);
}

/// The activations' dtype for this config on backend `B`.
pub fn activation_dtype<B: Backend>(cfg: &ModelConfig) -> DType {
    match cfg.arch.forward_dtype {
        ForwardDtype::Bfloat16 if capabilities::<B>().native_bf16 || CPU_BF16.load(Ordering::Relaxed) => DType::BF16,
        _ => DType::F32,
    }
}

/// The dtype the token loss is computed in on backend `B` (see the module notes).
pub fn loss_dtype<B: Backend>() -> DType {
    capabilities::<B>().loss_dtype
}

/// Whether a bfloat16 request falls back to float32 on `B` (worth a note to the user).
pub fn bf16_falls_back<B: Backend>(cfg: &ModelConfig) -> bool {
    cfg.arch.forward_dtype == ForwardDtype::Bfloat16 && activation_dtype::<B>(cfg) == DType::F32
}

/// `t` in dtype `dt`; no op (and no autodiff node) when it already is.
pub fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dt: DType) -> Tensor<B, D> {
    if t.dtype() == dt { t } else { t.cast(dt) }
}

/// `f` computed in float32, its result returned in `t`'s dtype (RMSNorm, RoPE, softmax).
pub fn in_f32<B: Backend, const D: usize>(t: Tensor<B, D>, f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>) -> Tensor<B, D> {
    let dt = t.dtype();
    to_dtype(f(to_dtype(t, DType::F32)), dt)
}
