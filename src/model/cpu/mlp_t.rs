//! The mlp_t mixer (SwiGLU across the sequence axis) and its norm over the sequence axis,
//! forward and backward, on row-major `x [B, T, D]`, without transposing anything.
//!
//! Per batch row b, with `X_b [T, D]`: `gate_b = W_gate X_b`, `up_b = W_up X_b` (`[I, D]`,
//! `W_gate_up [2I, T]`), `m_b = W_down (silu(gate_b) up_b)` (`[T, D]`, `W_down [T, I]`); then
//! `h1 = (x + m) / rms` where the rms runs over T for each (b, channel).

use super::{Dense, Dims, gemm_into, silu_mul_backward_par, silu_mul_par, uninit, values};
use rayon::prelude::*;

/// What the mixer computed, kept for the backward pass.
pub(super) struct SeqMlp {
    /// `[B, I, D]` each: gate and up projections (before SiLU).
    gate: Vec<f32>,
    up: Vec<f32>,
    /// `[B, T, D]`: the mixer output (before the residual).
    pub out: Vec<f32>,
}

/// `out_b [m, D] = W [m, k] (row stride w_rs, column stride w_cs) · in_b [k, D]` for every b.
fn per_batch(w: &[f32], (w_rs, w_cs): (usize, usize), input: &[f32], m: usize, k: usize, g: Dims) -> Vec<f32> {
    let d = g.d;
    assert!(input.len() == g.batch * k * d && w.len() > (m - 1) * w_rs + (k - 1) * w_cs, "mlp_t: operand sizes");
    let mut out = uninit(g.batch * m * d);
    let spare = &mut out.spare_capacity_mut()[..g.batch * m * d];
    // With bfloat16 products, W is rounded and laid out once for every batch row.
    let w_bf16 = super::products_in_bf16().map(|unit| (unit, super::bf16::lhs(w, (w_rs, w_cs), m, k)));
    spare.par_chunks_mut(m * d).zip(input.par_chunks(k * d)).for_each(|(o, x)| {
        // SAFETY: o holds m*d slots written in full by the product; w and x cover their extents.
        unsafe {
            match &w_bf16 {
                Some((unit, a)) => super::bf16::matmul(*unit, a, &super::bf16::rhs(x, (d, 1), k, d), o.as_mut_ptr().cast(), d, false),
                None => gemm_into(m, d, k, o.as_mut_ptr().cast(), d, w.as_ptr(), (w_rs, w_cs), x.as_ptr(), (d, 1), 1.0, false, false),
            }
        }
    });
    // SAFETY: every batch block was written above.
    unsafe { out.set_len(g.batch * m * d) };
    out
}

/// `gate_up [2I, T]` and `down [T, I]` (the raw gemm calls rely on it); returns I.
fn check_shapes(gate_up: &Dense, down: &Dense, t: usize) -> usize {
    let i = gate_up.w.layout().shape()[0] / 2;
    assert_eq!(gate_up.w.layout().shape().dims::<2>(), [2 * i, t], "mlp_t: gate_up shape vs sequence length");
    assert_eq!(down.w.layout().shape().dims::<2>(), [t, i], "mlp_t: down shape");
    i
}

/// Forward of the mixer on `x [B, T, D]` (g.t = T).
pub(super) fn forward(x: &[f32], g: Dims, gate_up: &Dense, down: &Dense, keep: bool) -> SeqMlp {
    let (t, wgu, wd) = (g.t, values(&gate_up.w), values(&down.w));
    let i = gate_up.w.layout().shape()[0] / 2;
    check_shapes(gate_up, down, t);
    let mut gate = per_batch(&wgu[..i * t], (t, 1), x, i, t, g);
    let up = per_batch(&wgu[i * t..], (t, 1), x, i, t, g);
    let mut act = if keep { gate.clone() } else { std::mem::take(&mut gate) };
    silu_mul_par(&mut act, &up);
    let out = per_batch(&wd, (i, 1), &act, t, i, g);
    SeqMlp { gate, up: if keep { up } else { Vec::new() }, out }
}

/// `out <- rms_norm(residual + out)` over the sequence axis of `[B, T, D]`; returns `1 / rms`
/// per (b, channel), `[B, D]`.
pub(super) fn add_rms_norm_seq(out: &mut [f32], residual: &[f32], g: Dims, eps: f32) -> Vec<f32> {
    let (t, d) = (g.t, g.d);
    let mut inv = vec![0f32; g.batch * d];
    out.par_chunks_mut(t * d).zip(residual.par_chunks(t * d)).zip(inv.par_chunks_mut(d)).for_each(|((o, r), inv)| {
        let mut ss = vec![0f32; d];
        for (row, res) in o.chunks_exact_mut(d).zip(r.chunks_exact(d)) {
            for ((v, &c), s) in row.iter_mut().zip(res).zip(ss.iter_mut()) {
                *v += c;
                *s += *v * *v;
            }
        }
        for (iv, s) in inv.iter_mut().zip(&ss) {
            *iv = 1.0 / (s / t as f32 + eps).sqrt();
        }
        for row in o.chunks_exact_mut(d) {
            row.iter_mut().zip(inv.iter()).for_each(|(v, iv)| *v *= iv);
        }
    });
    inv
}

/// Backward of `add_rms_norm_seq`, in place on the gradient: per (b, channel) column,
/// `ds = inv (dh - h mean_t(dh h))`.
pub(super) fn rms_seq_backward(grad: &mut [f32], h: &[f32], inv: &[f32], g: Dims) {
    let (t, d) = (g.t, g.d);
    grad.par_chunks_mut(t * d).zip(h.par_chunks(t * d)).zip(inv.par_chunks(d)).for_each(|((gr, h), inv)| {
        let mut dot = vec![0f32; d];
        for (gr, h) in gr.chunks_exact(d).zip(h.chunks_exact(d)) {
            dot.iter_mut().zip(gr).zip(h).for_each(|((s, a), b)| *s += a * b);
        }
        for (gr, h) in gr.chunks_exact_mut(d).zip(h.chunks_exact(d)) {
            for (((v, &hv), &iv), &dt) in gr.iter_mut().zip(h).zip(inv).zip(&dot) {
                *v = iv * (*v - hv * dt / t as f32);
            }
        }
    });
}

/// Backward of the mixer from `dm [B, T, D]`: adds the input gradient to `dx` and returns the
/// weight gradients `(d gate_up [2I, T], d down [T, I])`.
pub(super) fn backward(m: &SeqMlp, x: &[f32], dm: &[f32], g: Dims, gate_up: &Dense, down: &Dense, dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
    let (t, d, b) = (g.t, g.d, g.batch);
    let (wgu, wd) = (values(&gate_up.w), values(&down.w));
    let i = check_shapes(gate_up, down, t);
    assert!(dm.len() == b * t * d && dx.len() == b * t * d && x.len() == b * t * d, "mlp_t backward: sizes");
    let mut act = m.gate.clone();
    silu_mul_par(&mut act, &m.up);
    // d down [T, I] = sum_b dm_b [T, D] act_b^T; da_b [I, D] = W_down^T dm_b.
    let mut d_down = vec![0f32; t * i];
    let mut d_gate_up = vec![0f32; 2 * i * t];
    for bi in 0..b {
        let (dmb, ab) = (&dm[bi * t * d..], &act[bi * i * d..]);
        // SAFETY: extents [T, D], [I, D] and [T, I] are inside the buffers.
        unsafe { gemm_into(t, i, d, d_down.as_mut_ptr(), i, dmb.as_ptr(), (d, 1), ab.as_ptr(), (1, d), 1.0, true, true) }
    }
    let mut dgate = per_batch(&wd, (1, i), dm, i, t, g);
    let mut dup = act;
    silu_mul_backward_par(&mut dgate, &m.gate, &m.up, &mut dup);
    // d W_gate [I, T] = sum_b dg_b [I, D] X_b^T; same for up, stacked as [2I, T].
    let (dwg, dwu) = d_gate_up.split_at_mut(i * t);
    for bi in 0..b {
        let xb = &x[bi * t * d..];
        for (dw, dv) in [(&mut *dwg, &dgate), (&mut *dwu, &dup)] {
            // SAFETY: extents [I, D], [T, D] and [I, T] are inside the buffers.
            unsafe { gemm_into(i, t, d, dw.as_mut_ptr(), t, dv[bi * i * d..].as_ptr(), (d, 1), xb.as_ptr(), (1, d), 1.0, true, true) }
        }
    }
    // dX_b [T, D] += W_gate^T dg_b + W_up^T du_b.
    dx.par_chunks_mut(t * d).enumerate().for_each(|(bi, dxb)| {
        for (w, dv) in [(&wgu[..i * t], &dgate), (&wgu[i * t..], &dup)] {
            // SAFETY: extents [T, I], [I, D] and [T, D] are inside the buffers.
            unsafe { gemm_into(t, d, i, dxb.as_mut_ptr(), d, w.as_ptr(), (1, t), dv[bi * i * d..].as_ptr(), (d, 1), 1.0, true, false) }
        }
    });
    (d_gate_up, d_down)
}
