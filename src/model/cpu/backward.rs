//! The fused block on `Autodiff<Flex>` (the differentiated cycle of CPU training): the forward
//! pass of `mod.rs` keeping its intermediates, and a hand-written backward pass registered as
//! one node of burn's autodiff graph (burn's custom-operation mechanism), with parents
//! `[h, mixer weight 1, mixer weight 2, gate_up_proj, down_proj]` (the mixer's are qkv_proj and
//! o_proj, or for mlp_t its gate_up and down; their backward is in `mlp_t.rs`).
//!
//! Backward, from the block output y back to its input x (rows `[B*T, ·]`, weights `[out, in]`):
//!
//! 1. `y = rms(h1 + down(a))`: `ds2 = inv2 (dy - y mean(dy y))`; `dW_down = ds2^T a`;
//!    `da = ds2 W_down`, with `a = silu(g) u` recomputed from the kept g and u.
//! 2. SwiGLU: `dg = da u silu'(g)`, `du = da silu(g)`; `dW_gate_up = [dg | du]^T h1`;
//!    `dh1 = ds2 + dg W_gate + du W_up`.
//! 3. `h1 = rms(x + o(ctx))`: `ds1` as in 1; `dW_o = ds1^T ctx`; `dctx = ds1 W_o`.
//! 4. Per (batch, head): `dV = P^T dctx`, `dP = dctx V^T`, `dS = P (dP - rowsum(dP P))`,
//!    `dQ = scale dS K`, `dK = scale dS^T Q`, then RoPE transposed (`x cos + [x2, -x1] sin`).
//! 5. `dW_qkv = dqkv^T x`; `dx = ds1 + dqkv W_qkv`.
//!
//! Checked against burn's own autodiff of the generic block in the tests below, and by the
//! golden gradients of the reference (tests/parity.rs).

use super::*;
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use std::any::TypeId;
use std::sync::Arc;

type Ad = Autodiff<Flex>;

/// Whether the fused autodiff block applies to backend `B`.
pub fn applies_autodiff<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Ad>() && super::applies::<Flex>()
}

/// Everything the backward pass reads; shared (`Arc`) because burn clones op states.
#[derive(Clone)]
struct Saved(Arc<SavedBlock>);

struct SavedBlock {
    g: Dims,
    x: Vec<f32>,
    trace: Trace,
    layer: Layer,
    rope: Option<(FlexTensor, FlexTensor)>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusedBlock {:?}", self.0.g)
    }
}

#[derive(Debug)]
struct FusedBlock;

/// The block on `Autodiff<Flex>` (no biases), or None to use the generic one.
pub fn block<B: Backend>(h: &Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Option<Tensor<B, 3>> {
    let (m1, m2) = match &w.mixer {
        Mixer::Attention { qkv, o } => (qkv, o),
        Mixer::MlpT { gate_up, down } => (gate_up, down),
    };
    if [m1, m2, &w.gate_up, &w.down].iter().any(|l| l.bias.is_some()) {
        return None;
    }
    let ad = |t: &Tensor<B, 2>| cast::<B, Ad, 2>(t.clone()).into_primitive().tensor();
    let x = cast::<B, Ad, 3>(h.clone()).into_primitive().tensor();
    if x.primitive.dtype() != DType::F32 {
        return None;
    }
    let [batch, t, d] = h.dims();
    let (w1, w2, wgu, wd) = (ad(&m1.weight), ad(&m2.weight), ad(&w.gate_up.weight), ad(&w.down.weight));
    let dense = |t: &FloatTensor<Ad>| Dense { w: t.primitive.clone(), b: None };
    let mixer = match &w.mixer {
        Mixer::Attention { .. } => MixerW::Attention { qkv: dense(&w1), o: dense(&w2) },
        Mixer::MlpT { .. } => MixerW::MlpT { gate_up: dense(&w1), down: dense(&w2) },
    };
    let layer = Layer { mixer, gate_up: dense(&wgu), down: dense(&wd) };
    let tables = match (rope, cfg.arch.pos_encodings) {
        (Some(r), PosEncoding::Rope) => Some((ad(&r.cos).primitive, ad(&r.sin).primitive)),
        _ => None,
    };
    let g = Dims { batch, t, d, heads: cfg.arch.num_heads };
    let (xv, eps) = (values(&x.primitive), cfg.arch.rms_norm_eps as f32);
    let tables_f32 = tables.as_ref().map(|(c, s)| (values(c), values(s)));
    let rope = tables_f32.as_ref().map(|(c, s)| (&c[..], &s[..]));
    let prep = FusedBlock.prepare::<NoCheckpointing>([x.node.clone(), w1.node.clone(), w2.node.clone(), wgu.node.clone(), wd.node.clone()]);
    let out = match prep.compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            count(|c| c.tracked += 1);
            let (y, trace) = block_values(&xv, g, eps, &layer, rope, true);
            let saved = SavedBlock { g, x: xv.into_owned(), trace: trace.expect("kept"), layer, rope: tables.clone() };
            prep.finish(Saved(Arc::new(saved)), flex_tensor(y, [batch, t, d]))
        }
        OpsKind::UnTracked(prep) => {
            count(|c| c.forward += 1);
            prep.finish(flex_tensor(block_values(&xv, g, eps, &layer, rope, false).0, [batch, t, d]))
        }
    };
    Some(cast::<Ad, B, 3>(Tensor::from_primitive(TensorPrimitive::Float(out))))
}

/// `out [m, n] = a[k, m]^T · b[k, n]` (a weight gradient: rows of k are the batch rows).
fn matmul_tn(a: &[f32], b: &[f32], k: usize, m: usize, n: usize) -> Vec<f32> {
    assert!(a.len() >= k * m && b.len() >= k * n, "matmul_tn: operand sizes");
    let mut out = uninit(m * n);
    // SAFETY: out has capacity m*n, written in full by gemm (or bf16); a and b cover k*m and k*n.
    unsafe {
        match products_in_bf16() {
            Some(unit) => bf16::matmul(unit, &bf16::lhs(a, (1, m), m, k), &bf16::rhs(b, (n, 1), k, n), out.as_mut_ptr(), n, true),
            None => gemm_into(m, n, k, out.as_mut_ptr(), n, a.as_ptr(), (1, m), b.as_ptr(), (n, 1), 1.0, false, true),
        }
        out.set_len(m * n);
    }
    out
}

/// `dst [m, n] += a[m, k] · b[k, n]`.
fn matmul_acc(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && a.len() >= m * k && b.len() >= k * n);
    if products_in_bf16().is_some() {
        let p = matmul_nn(a, b, m, k, n);
        dst.par_chunks_mut(CHUNK).zip(p.par_chunks(CHUNK)).for_each(|(d, p)| d.iter_mut().zip(p).for_each(|(d, p)| *d += p));
        return;
    }
    // SAFETY: sizes checked above.
    unsafe { gemm_into(m, n, k, dst.as_mut_ptr(), n, a.as_ptr(), (k, 1), b.as_ptr(), (n, 1), 1.0, true, true) }
}

/// `a[m, k] · b[k, n]`.
fn matmul_nn(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let Some(unit) = products_in_bf16() else {
        let mut out = vec![0f32; m * n];
        matmul_acc(&mut out, a, b, m, k, n);
        return out;
    };
    assert!(a.len() >= m * k && b.len() >= k * n, "matmul_nn: operand sizes");
    let mut out = uninit(m * n);
    // SAFETY: out has capacity m*n, written in full by the product; a and b cover their extents.
    unsafe {
        bf16::matmul(unit, &bf16::lhs(a, (k, 1), m, k), &bf16::rhs(b, (n, 1), k, n), out.as_mut_ptr(), n, true);
        out.set_len(m * n);
    }
    out
}

impl Backward<Flex, 5> for FusedBlock {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        count(|c| c.backward += 1);
        let s = &*ops.state.0;
        let (g, tr, l) = (s.g, &s.trace, &s.layer);
        let (rows, d, i) = (g.rows(), g.d, tr.gate.len() / g.rows());
        let dy = grads.consume::<Flex>(&ops.node);
        let mut ds2 = values(&dy).into_owned();
        rms_backward(&mut ds2, &tr.y, &tr.inv2, d);

        // 1-2. SwiGLU and its projections.
        let (wgu, wd) = (values(&l.gate_up.w), values(&l.down.w));
        let mut act = tr.gate.clone();
        silu_mul_par(&mut act, &tr.up);
        let d_down = matmul_tn(&ds2, &act, rows, d, i);
        let mut dgate = matmul_nn(&ds2, &wd, rows, d, i);
        let mut dup = act; // reused as the du buffer
        silu_mul_backward_par(&mut dgate, &tr.gate, &tr.up, &mut dup);
        let mut d_gate_up = matmul_tn(&dgate, &tr.h1, rows, i, d);
        d_gate_up.extend_from_slice(&matmul_tn(&dup, &tr.h1, rows, i, d));
        let mut dh1 = ds2;
        matmul_acc(&mut dh1, &dgate, &wgu[..i * d], rows, i, d);
        matmul_acc(&mut dh1, &dup, &wgu[i * d..], rows, i, d);
        drop((dgate, dup));

        // 3-5. The first norm, the mixer, and the input.
        let (dx, d_m1, d_m2, (m1, m2)) = match (&l.mixer, &tr.mixer) {
            (MixerW::Attention { qkv, o }, MixerTrace::Attention(a)) => {
                rms_backward(&mut dh1, &tr.h1, &tr.inv1, d);
                let ds1 = dh1;
                let aw = g.aw();
                let d_o = matmul_tn(&ds1, &a.ctx, rows, d, aw);
                let dctx = matmul_nn(&ds1, &values(&o.w), rows, d, aw);
                let rope_f32 = s.rope.as_ref().map(|(c, sn)| (values(c), values(sn)));
                let rope = rope_f32.as_ref().map(|(c, sn)| (&c[..], &sn[..]));
                let dqkv = attention_backward(a, &dctx, g, rope);
                let d_qkv = matmul_tn(&dqkv, &s.x, rows, 3 * aw, d);
                let mut dx = ds1;
                matmul_acc(&mut dx, &dqkv, &values(&qkv.w), rows, 3 * aw, d);
                (dx, d_qkv, d_o, (qkv, o))
            }
            (MixerW::MlpT { gate_up, down }, MixerTrace::MlpT(m)) => {
                mlp_t::rms_seq_backward(&mut dh1, &tr.h1, &tr.inv1, g);
                let mut dx = dh1.clone();
                let (d_gu, d_dn) = mlp_t::backward(m, &s.x, &dh1, g, gate_up, down, &mut dx);
                (dx, d_gu, d_dn, (gate_up, down))
            }
            _ => unreachable!("the trace comes from the same layer"),
        };

        let shape = |w: &Dense| -> [usize; 2] { [w.w.layout().shape()[0], w.w.layout().shape()[1]] };
        let [ph, p1, p2, pgu, pd] = ops.parents;
        let weights = [(p1, d_m1, shape(m1)), (p2, d_m2, shape(m2)), (pgu, d_gate_up, [2 * i, d]), (pd, d_down, [d, i])];
        for (parent, grad, shape) in weights {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex_tensor(grad, shape));
            }
        }
        if let Some(node) = ph {
            grads.register::<Flex>(node.id, flex_tensor(dx, [g.batch, g.t, d]));
        }
    }
}

/// Parallel `elementwise::rms_norm_backward` over row chunks.
fn rms_backward(grad: &mut [f32], y: &[f32], inv: &[f32], d: usize) {
    let rows_per = (CHUNK / d).max(1);
    grad.par_chunks_mut(rows_per * d)
        .zip(y.par_chunks(rows_per * d))
        .zip(inv.par_chunks(rows_per))
        .for_each(|((gr, y), inv)| elementwise::rms_norm_backward(gr, y, inv, d));
}

/// Gradient of the attention input projections `[B*T, 3A]` (q | k | v) from `dctx [B*T, A]`.
fn attention_backward(a: &Attention, dctx: &[f32], g: Dims, rope: Option<(&[f32], &[f32])>) -> Vec<f32> {
    let (t, hd, aw) = (g.t, g.hd(), g.aw());
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dqkv = vec![0f32; g.rows() * 3 * aw];
    let out = Out(dqkv.as_mut_ptr());
    (0..g.batch * g.heads).into_par_iter().for_each_init(
        || (vec![0f32; t * t], vec![0f32; t * hd], vec![0f32; t * hd]),
        |(dp, dq, dk), job| {
            let (b, head) = (job / g.heads, job % g.heads);
            let p = &a.p[job * t * t..(job + 1) * t * t];
            let (q, k) = (&a.q[job * t * hd..(job + 1) * t * hd], &a.k[job * t * hd..(job + 1) * t * hd]);
            let dc = &dctx[b * t * aw + head * hd..];
            let v = &a.qkv[b * t * 3 * aw + 2 * aw + head * hd..];
            let base = b * t * 3 * aw + head * hd;
            // SAFETY: every slice covers its strided extent; this job writes only rows b*t..
            // and the q, k, v columns of its head in dqkv.
            unsafe {
                let dst = out.ptr().add(base);
                gemm_into(t, hd, t, dst.add(2 * aw), 3 * aw, p.as_ptr(), (1, t), dc.as_ptr(), (aw, 1), 1.0, false, false);
                gemm_into(t, t, hd, dp.as_mut_ptr(), t, dc.as_ptr(), (aw, 1), v.as_ptr(), (1, 3 * aw), 1.0, false, false);
                for (dpr, pr) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                    let dot: f32 = dpr.iter().zip(pr).map(|(x, y)| x * y).sum();
                    dpr.iter_mut().zip(pr).for_each(|(x, &y)| *x = y * (*x - dot));
                }
                gemm_into(t, hd, t, dq.as_mut_ptr(), hd, dp.as_ptr(), (t, 1), k.as_ptr(), (hd, 1), scale, false, false);
                gemm_into(t, hd, t, dk.as_mut_ptr(), hd, dp.as_ptr(), (1, t), q.as_ptr(), (hd, 1), scale, false, false);
                scatter_heads(dq, dst, 3 * aw, t, hd, rope);
                scatter_heads(dk, dst.add(aw), 3 * aw, t, hd, rope);
            }
        },
    );
    dqkv
}

/// Writes a head's `[t, hd]` gradient to rows `stride` apart, through RoPE transposed.
///
/// # Safety
/// `dst` must be valid for `t` rows of `hd` values, `stride` apart.
unsafe fn scatter_heads(src: &[f32], dst: *mut f32, stride: usize, t: usize, hd: usize, rope: Option<(&[f32], &[f32])>) {
    let half = hd / 2;
    for r in 0..t {
        // SAFETY: row r of the destination, per the contract above.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.add(r * stride), hd) };
        let x = &src[r * hd..(r + 1) * hd];
        match rope {
            Some((cos, sin)) => {
                let (c, s) = (&cos[r * hd..(r + 1) * hd], &sin[r * hd..(r + 1) * hd]);
                for j in 0..half {
                    o[j] = x[j] * c[j] + x[j + half] * s[j + half];
                    o[j + half] = x[j + half] * c[j + half] - x[j] * s[j];
                }
            }
            None => o.copy_from_slice(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BLOCK_TEST_CASES, block_test_config};
    use crate::model::layers::block_generic;
    use crate::model::weights;
    use burn::tensor::Distribution;

    fn leaf(t: Tensor<Flex, 2>) -> Tensor<Ad, 2> {
        Tensor::from_inner(t).require_grad()
    }

    fn grad_values<const D: usize>(t: &Tensor<Ad, D>, g: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients) -> Vec<f32> {
        t.grad(g).expect("a gradient").into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn fused_backward_matches_burns_autodiff_of_the_generic_block() {
        let device = Default::default();
        assert!(applies_autodiff::<Ad>() && !applies_autodiff::<Flex>(), "layers::block dispatches Autodiff<Flex> here");
        for (pos, mlp_t, hidden, heads, seq_len, batch) in BLOCK_TEST_CASES {
            let cfg = block_test_config(pos, mlp_t, hidden, heads, seq_len);
            let mut rng = crate::util::rng::derive(3, &[]);
            let w = &weights::init::<Flex>(&cfg, &mut rng, &device).nets[0][0];
            let wad = w.map_weights(leaf);
            let rope = Rope::<Ad>::new(&cfg, &device);
            let t = cfg.total_len();
            let h0: Tensor<Flex, 3> = Tensor::random([batch, t, hidden], Distribution::Normal(0.0, 1.0), &device);
            let probe: Tensor<Flex, 3> = Tensor::random([batch, t, hidden], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let h = Tensor::<Ad, 3>::from_inner(h0.clone()).require_grad();
                // Two blocks in a row, so the input gradient of one feeds the other.
                let once = |x: Tensor<Ad, 3>| {
                    if fused { crate::model::layers::block(x, &wad, &cfg, Some(&rope)) } else { block_generic(x, &wad, &cfg, Some(&rope)) }
                };
                let y = once(once(h.clone()));
                let loss = (y * Tensor::from_inner(probe.clone())).sum();
                let g = loss.backward();
                let (m1, m2) = match &wad.mixer {
                    Mixer::Attention { qkv, o } => (qkv, o),
                    Mixer::MlpT { gate_up, down } => (gate_up, down),
                };
                [
                    grad_values(&h, &g),
                    grad_values(&m1.weight, &g),
                    grad_values(&m2.weight, &g),
                    grad_values(&wad.gate_up.weight, &g),
                    grad_values(&wad.down.weight, &g),
                ]
            };
            let (fused, generic) = (run(true), run(false));
            for (name, (a, b)) in ["h", "mixer 1", "mixer 2", "gate_up", "down"].iter().zip(fused.iter().zip(&generic)) {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    scale > 0.0 && worst <= 1e-4 * scale,
                    "{pos:?} mlp_t {mlp_t} D {hidden} T {t}: d {name}: worst {worst} vs scale {scale}"
                );
            }
        }
    }
}
