//! `bf16` where neither AMX nor AVX512-BF16 can run it (not x86-64): no unit is available, so
//! `bf16_products` refuses to turn on and nothing below is ever called.

use super::Bf16Unit as Unit;
use std::sync::Arc;

pub fn available(_: Unit) -> bool {
    false
}

pub struct Lhs;
pub struct Rhs;

const NEVER: &str = "bfloat16 products on a CPU without them (bf16_products refuses to turn them on here)";

pub fn lhs(_: &[f32], _: (usize, usize), _: usize, _: usize) -> Lhs {
    unreachable!("{NEVER}")
}

pub fn rhs(_: &[f32], _: (usize, usize), _: usize, _: usize) -> Rhs {
    unreachable!("{NEVER}")
}

pub fn weight_rhs(_: &[f32], _: (usize, usize), _: usize, _: usize) -> Arc<Rhs> {
    unreachable!("{NEVER}")
}

/// # Safety
/// Never called (see the module notes).
pub unsafe fn matmul(_: Unit, _: &Lhs, _: &Rhs, _: *mut f32, _: usize, _: bool) {
    unreachable!("{NEVER}")
}
