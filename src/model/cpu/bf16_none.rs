//! `amx` where there is none (not x86-64 Linux): `available` is false, so `bf16_products`
//! refuses to turn on and nothing below is ever called.

use std::sync::Arc;

pub fn available() -> bool {
    false
}

pub struct Lhs;
pub struct Rhs;

const NEVER: &str = "AMX products without AMX (bf16_products refuses to turn them on here)";

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
pub unsafe fn matmul(_: &Lhs, _: &Rhs, _: *mut f32, _: usize, _: bool) {
    unreachable!("{NEVER}")
}
