//! A fused forward pass of one block on burn's CPU backend (Flex, float32).
//!
//! burn-flex runs every op as its own pass: a fresh zeroed output (then copied once more to
//! align it), element-wise work on one thread with scalar libm `exp`, heads moved between axes
//! by strided copies. Its matmuls run close to the core's peak on all threads, so at the
//! sudoku-att shape more than half of an evaluation step was spent outside them
//! (docs/benchmarks.md). Here a block is a handful of gemm calls on row-major buffers plus
//! fused, multi-threaded, vectorised passes (`elementwise`):
//!
//! - attention: one gemm for q|k|v; per (batch, head), RoPE while gathering q and k, scores,
//!   softmax and the value product with gemm strides that read the heads in place; o_proj;
//! - or the mlp_t mixer: per batch row, gemms against the `[·, T]` weights (`mlp_t.rs`);
//! - SwiGLU: two gemms on the weight's row blocks, SiLU(gate)*up in one pass, down_proj;
//! - each residual add and RMSNorm in one pass.
//!
//! It is used when the backend is Flex (evaluation, inference, the no-grad cycles of training)
//! and, with a hand-written backward pass, when it is Autodiff<Flex> (the differentiated cycle,
//! `backward.rs`). The GPU keeps the generic layers. `TRM_FUSED_CPU=0` turns it off (for A/B
//! timing). Tests: equality with the generic block and with burn's autodiff of it, and the
//! golden fixtures (tests/parity.rs) whose forward and gradients run through it.
//!
//! `bf16_products` (`--precision bfloat16`) moves the linear layers' and the mlp_t mixer's
//! forward products to bfloat16 on Intel AMX tiles or with AVX512-BF16 (`bf16/`), and in
//! training the linear layers' backward products too; the attention scores and everything
//! element-wise stay float32 (`products.rs`).

mod backward;
#[cfg(target_arch = "x86_64")]
pub mod bf16;
#[cfg(not(target_arch = "x86_64"))]
#[path = "bf16_none.rs"]
pub mod bf16;
mod elementwise;
mod mlp_t;
mod products;

pub use products::{Bf16Unit, bf16_auto_unit, bf16_fastest, bf16_products, bf16_products_while_training};
use products::{products_in_bf16, weights_fixed};

use super::config::{ModelConfig, PosEncoding};
use super::rope::Rope;
use super::weights::{Block, Linear, Mixer};
use crate::backend::cast;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::{Bytes, DType, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::OnceLock;

use super::counts::count;

/// Whether `block` below applies to backend `B`.
pub fn applies<B: Backend>() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    crate::backend::is_flex::<B>()
        && crate::backend::capabilities::<B>().fused_cpu_block
        && *ON.get_or_init(|| !crate::util::env::fused_cpu_off())
}

/// Whether the fused block (forward, or forward and backward on `Autodiff<Flex>`) runs the
/// blocks of `cfg` on `B`: it covers float32 activations only.
pub fn covers<B: Backend>(cfg: &ModelConfig) -> bool {
    (applies::<B>() || backward::applies_autodiff::<B>()) && super::precision::activation_dtype::<B>(cfg) == DType::F32
}

/// `Tensor<B>` -> the Flex primitive, when `B` is Flex (checked by the caller).
fn into_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    cast::<B, Flex, D>(t).into_primitive().tensor()
}

fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    cast::<Flex, B, D>(Tensor::from_primitive(TensorPrimitive::Float(t)))
}

/// The float32 values of a tensor in row-major order (borrowed when already contiguous).
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}

/// Weight (and bias) values of a linear layer.
struct Dense {
    w: FlexTensor,
    b: Option<FlexTensor>,
}

impl Dense {
    fn of<B: Backend>(l: &Linear<B>) -> Self {
        Dense { w: into_flex(l.weight.clone()), b: l.bias.clone().map(into_flex) }
    }
}

/// Output rows allocated without zeroing: every element is written by gemm before it is read.
fn uninit(n: usize) -> Vec<f32> {
    Vec::with_capacity(n)
}

/// Raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: only used by tasks writing disjoint regions, joined before the buffer is read.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A method, so closures capture the whole `Out` (Send) rather than its raw field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst[m, n] (row stride dst_rs) = scale * lhs[m, k] · rhs[k, n]` (`+= ` when `accumulate`),
/// strides in elements. Without `accumulate` gemm does not read `dst`: it may be uninitialised.
///
/// # Safety
/// `lhs` must be valid for reads of the `m x k` extent its strides describe, `rhs` of `k x n`,
/// and `dst` for writes (and reads, with `accumulate`) of `m` rows of `n` values `dst_rs` apart;
/// `dst` must not overlap `lhs` or `rhs`.
unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    // Same rule as burn-flex: split one product over threads only when it is big enough.
    let par = if parallel && m * n * k >= 192 * 192 * 192 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the caller guarantees the pointers cover the strided extents.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

/// `x [rows, in] · W^T (+ b)` with `W` rows `first..first+out` of the layer's `[*, in]` weight.
fn linear_rows(x: &[f32], rows: usize, l: &Dense, first: usize, out: usize) -> Vec<f32> {
    let w_all = values(&l.w);
    let inp = l.w.layout().shape()[1];
    assert_eq!(x.len(), rows * inp, "fused linear: input width");
    assert!((first + out) * inp <= w_all.len(), "fused linear: weight rows");
    let w = &w_all[first * inp..(first + out) * inp];
    let mut y = uninit(rows * out);
    // SAFETY: y has capacity rows*out and gemm (or bf16) writes all of it; x and w cover their extents.
    unsafe {
        if let Some(unit) = products_in_bf16() {
            let packed = if matches!(w_all, Cow::Borrowed(_)) && weights_fixed() {
                bf16::weight_rhs(w, (1, inp), inp, out)
            } else {
                bf16::rhs(w, (1, inp), inp, out).into()
            };
            bf16::matmul(unit, &bf16::lhs(x, (inp, 1), rows, inp), &packed, y.as_mut_ptr(), out, true);
        } else {
            gemm_into(rows, out, inp, y.as_mut_ptr(), out, x.as_ptr(), (inp, 1), w.as_ptr(), (1, inp), 1.0, false, true);
        }
        y.set_len(rows * out);
    }
    if let Some(b) = &l.b {
        let b = values(b);
        let b = &b[first..first + out];
        y.par_chunks_mut(out).for_each(|row| row.iter_mut().zip(b).for_each(|(v, c)| *v += c));
    }
    y
}

/// Element-wise passes split into chunks over the thread pool.
const CHUNK: usize = 1 << 15;

/// What attention computes on the way, kept for the backward pass (`backward.rs`).
struct Attention {
    /// `[B*T, 3A]`: q | k | v projections (before RoPE), A = heads x head_dim.
    qkv: Vec<f32>,
    /// `[B*H, T, hd]` each: q and k after RoPE, one contiguous block per (batch, head).
    q: Vec<f32>,
    k: Vec<f32>,
    /// `[B*H, T, T]`: attention probabilities.
    p: Vec<f32>,
    /// `[B*T, A]`: the heads' outputs side by side, input of o_proj.
    ctx: Vec<f32>,
    /// `[B*T, D]`: o_proj(ctx).
    out: Vec<f32>,
}

/// The attention geometry: batch, positions, width, heads.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    t: usize,
    d: usize,
    heads: usize,
}

impl Dims {
    /// Head width: D / heads, rounded down as the reference does.
    fn hd(self) -> usize {
        self.d / self.heads
    }
    /// Attention width A = heads x head_dim (D when the heads divide D).
    fn aw(self) -> usize {
        self.heads * self.hd()
    }
    fn rows(self) -> usize {
        self.batch * self.t
    }
}

/// Non-causal multi-head attention of `h [B*T, D]` (before the residual).
fn attention(h: &[f32], g: Dims, qkv_w: &Dense, o: &Dense, rope: Option<(&[f32], &[f32])>) -> Attention {
    let (t, d, hd, aw) = (g.t, g.d, g.hd(), g.aw());
    // The writes below rely on these (every ctx column is written by exactly one head).
    assert!(hd > 0 && (rope.is_none() || hd.is_multiple_of(2)), "fused attention: D {d}, {} heads", g.heads);
    assert_eq!(qkv_w.w.layout().shape().dims::<2>(), [3 * aw, d], "fused attention: qkv_proj shape");
    assert_eq!(o.w.layout().shape().dims::<2>(), [d, aw], "fused attention: o_proj shape");
    let qkv = linear_rows(h, g.rows(), qkv_w, 0, 3 * aw); // [B*T, q | k | v]
    let jobs = g.batch * g.heads;
    let (mut q, mut k, mut p) = (vec![0f32; jobs * t * hd], vec![0f32; jobs * t * hd], uninit(jobs * t * t));
    let mut ctx = uninit(g.rows() * aw);
    let (out, probs) = (Out(ctx.as_mut_ptr()), Out(p.as_mut_ptr()));
    let scale = 1.0 / (hd as f32).sqrt();
    q.par_chunks_mut(t * hd).zip(k.par_chunks_mut(t * hd)).enumerate().for_each(|(job, (q, k))| {
        let (b, head) = (job / g.heads, job % g.heads);
        let rows = &qkv[b * t * 3 * aw + head * hd..];
        gather_heads(rows, 3 * aw, t, hd, rope, q);
        gather_heads(&rows[aw..], 3 * aw, t, hd, rope, k);
        // SAFETY: q, k are [t, hd]; this job's [t, t] block of p and its (rows b*t.., columns
        // head*hd..) block of ctx are written by this job only; v is read in place (stride 3A).
        unsafe {
            let scores = probs.ptr().add(job * t * t);
            gemm_into(t, t, hd, scores, t, q.as_ptr(), (hd, 1), k.as_ptr(), (1, hd), scale, false, false);
            let s = std::slice::from_raw_parts_mut(scores, t * t); // written in full just above
            elementwise::softmax_rows(s, t);
            let v = rows[2 * aw..].as_ptr();
            gemm_into(t, hd, t, out.ptr().add(b * t * aw + head * hd), aw, s.as_ptr(), (t, 1), v, (3 * aw, 1), 1.0, false, false);
        }
    });
    // SAFETY: the jobs above wrote all of p and every [row, head] block of ctx.
    unsafe {
        p.set_len(jobs * t * t);
        ctx.set_len(g.rows() * aw);
    }
    let out = linear_rows(&ctx, g.rows(), o, 0, d);
    Attention { qkv, q, k, p, ctx, out }
}

/// One head's `[t, hd]` block out of rows `stride` apart, rotated by RoPE when given.
fn gather_heads(rows: &[f32], stride: usize, t: usize, hd: usize, rope: Option<(&[f32], &[f32])>, out: &mut [f32]) {
    match rope {
        Some((cos, sin)) => elementwise::rope_gather(rows, stride, t, hd, cos, sin, out),
        None => {
            for i in 0..t {
                out[i * hd..(i + 1) * hd].copy_from_slice(&rows[i * stride..i * stride + hd]);
            }
        }
    }
}

/// `gate <- silu(gate) * up`, over the thread pool.
fn silu_mul_par(gate: &mut [f32], up: &[f32]) {
    let f = if products_in_bf16().is_some() { elementwise::silu_mul_f32 } else { elementwise::silu_mul };
    gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(|(g, u)| f(g, u));
}

/// Backward of `silu_mul_par`: `da` becomes `d gate` in place, `du` receives `d up`.
fn silu_mul_backward_par(da: &mut [f32], gate: &[f32], up: &[f32], du: &mut [f32]) {
    da.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .zip(du.par_chunks_mut(CHUNK))
        .for_each(|(((da, g), u), du)| elementwise::silu_mul_backward(da, g, u, du));
}

/// `out <- rms_norm(residual + out)` over rows of `d`; returns each row's `1 / rms`.
fn add_rms_norm(out: &mut [f32], residual: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let rows_per = (CHUNK / d).max(1);
    let mut inv = vec![0f32; out.len() / d];
    out.par_chunks_mut(rows_per * d)
        .zip(residual.par_chunks(rows_per * d))
        .zip(inv.par_chunks_mut(rows_per))
        .for_each(|((o, r), inv)| elementwise::add_rms_norm(o, r, d, eps, inv));
    inv
}

/// A block's token mixer weights.
enum MixerW {
    Attention {
        qkv: Dense,
        o: Dense,
    },
    /// SwiGLU across the sequence: `gate_up [2I_T, T]`, `down [T, I_T]`.
    MlpT {
        gate_up: Dense,
        down: Dense,
    },
}

/// One block's weights: the mixer, then the channel SwiGLU.
struct Layer {
    mixer: MixerW,
    gate_up: Dense,
    down: Dense,
}

impl Layer {
    fn of<B: Backend>(w: &Block<B>) -> Self {
        let mixer = match &w.mixer {
            Mixer::Attention { qkv, o } => MixerW::Attention { qkv: Dense::of(qkv), o: Dense::of(o) },
            Mixer::MlpT { gate_up, down } => MixerW::MlpT { gate_up: Dense::of(gate_up), down: Dense::of(down) },
        };
        Layer { mixer, gate_up: Dense::of(&w.gate_up), down: Dense::of(&w.down) }
    }
}

/// What the mixer computed on the way.
enum MixerTrace {
    Attention(Attention),
    MlpT(mlp_t::SeqMlp),
}

/// What a block computed on the way, kept for the backward pass (`backward.rs`).
struct Trace {
    mixer: MixerTrace,
    /// `[B*T, D]`: after the first residual + norm, and its `1 / rms` (per row for attention,
    /// per (batch, channel) for mlp_t, whose norm runs over the sequence).
    h1: Vec<f32>,
    inv1: Vec<f32>,
    /// `[B*T, I]`: the SwiGLU gate and up projections (before SiLU).
    gate: Vec<f32>,
    up: Vec<f32>,
    /// `[B*T, D]`: the block output, and its rows' `1 / rms`.
    y: Vec<f32>,
    inv2: Vec<f32>,
}

/// The block on row-major values `x [B*T, D]`: `h1 = rms(x + mix(x))`, `y = rms(h1 + mlp(h1))`.
/// With `keep`, the intermediates come back too.
fn block_values(x: &[f32], g: Dims, eps: f32, l: &Layer, rope: Option<(&[f32], &[f32])>, keep: bool) -> (Vec<f32>, Option<Trace>) {
    let (rows, d) = (g.rows(), g.d);
    let (h1, inv1, mixer) = match &l.mixer {
        MixerW::Attention { qkv, o } => {
            let mut attn = attention(x, g, qkv, o, rope);
            let mut h1 = std::mem::take(&mut attn.out);
            let inv1 = add_rms_norm(&mut h1, x, d, eps);
            (h1, inv1, MixerTrace::Attention(attn))
        }
        MixerW::MlpT { gate_up, down } => {
            let mut m = mlp_t::forward(x, g, gate_up, down, keep);
            let mut h1 = std::mem::take(&mut m.out);
            let inv1 = mlp_t::add_rms_norm_seq(&mut h1, x, g, eps);
            (h1, inv1, MixerTrace::MlpT(m))
        }
    };
    let i = l.gate_up.w.layout().shape()[0] / 2;
    let mut gate = linear_rows(&h1, rows, &l.gate_up, 0, i);
    let up = linear_rows(&h1, rows, &l.gate_up, i, i);
    let mut act = if keep { gate.clone() } else { std::mem::take(&mut gate) };
    silu_mul_par(&mut act, &up);
    let mut y = linear_rows(&act, rows, &l.down, 0, d);
    let inv2 = add_rms_norm(&mut y, &h1, d, eps);
    if !keep {
        return (y, None);
    }
    (y.clone(), Some(Trace { mixer, h1, inv1, gate, up, y, inv2 }))
}

/// RoPE tables `[T, hd]` as Flex tensors, when this block applies RoPE.
fn rope_tables<B: Backend>(rope: Option<&Rope<B>>, cfg: &ModelConfig) -> Option<(FlexTensor, FlexTensor)> {
    match (rope, cfg.arch.pos_encodings) {
        (Some(r), PosEncoding::Rope) => Some((into_flex(r.cos.clone()), into_flex(r.sin.clone()))),
        _ => None,
    }
}

/// The post-norm block (see `layers::block`), or None when this path does not cover it
/// (another backend, or non-f32 data).
pub fn block<B: Backend>(h: &Tensor<B, 3>, w: &Block<B>, cfg: &ModelConfig, rope: Option<&Rope<B>>) -> Option<Tensor<B, 3>> {
    if backward::applies_autodiff::<B>() {
        return backward::block(h, w, cfg, rope);
    }
    if !applies::<B>() {
        return None;
    }
    let [batch, t, d] = h.dims();
    let x = into_flex(h.clone());
    if x.dtype() != DType::F32 {
        return None;
    }
    let layer = Layer::of(w);
    let tables = rope_tables(rope, cfg);
    let tables_f32 = tables.as_ref().map(|(c, s)| (values(c), values(s)));
    let rope = tables_f32.as_ref().map(|(c, s)| (&c[..], &s[..]));
    let g = Dims { batch, t, d, heads: cfg.arch.num_heads };
    let (y, _) = block_values(&values(&x), g, cfg.arch.rms_norm_eps as f32, &layer, rope, false);
    count(|c| c.forward += 1);
    Some(from_flex(flex_tensor(y, [batch, t, d])))
}

/// A contiguous float32 Flex tensor holding `v`.
fn flex_tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(v), Layout::contiguous(shape.into()), DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{ArchConfig, ModelConfig};
    use crate::model::layers::block_generic;
    use crate::model::weights;
    use burn::tensor::Distribution;

    fn config(pos: PosEncoding) -> ModelConfig {
        let arch =
            ArchConfig { hidden_size: 64, num_heads: 4, pos_encodings: pos, puzzle_emb_ndim: 64, puzzle_emb_len: 2, ..Default::default() };
        ModelConfig { arch, seq_len: 21, vocab_size: 11, num_puzzle_identifiers: 3 }
    }

    #[test]
    fn fused_block_matches_the_generic_block() {
        let device = Default::default();
        // (positions, biases, mlp_t, heads): 6 heads do not divide D = 64 (head dim 10, A = 60).
        for (pos, bias, mlp_t, heads) in [
            (PosEncoding::Rope, false, false, 4),
            (PosEncoding::None, true, false, 4),
            (PosEncoding::Learned, false, false, 4),
            (PosEncoding::None, false, true, 4),
            (PosEncoding::Rope, false, false, 6),
        ] {
            let mut cfg = config(pos);
            cfg.arch.mlp_t = mlp_t;
            cfg.arch.num_heads = heads;
            let mut rng = crate::util::rng::derive(7, &[]);
            let mut w = weights::init::<Flex>(&cfg, &mut rng, &device);
            if bias {
                // The TRM layers have no biases; the fused linear supports them anyway.
                let Mixer::Attention { qkv, .. } = &mut w.nets[0][0].mixer else { unreachable!() };
                qkv.bias = Some(Tensor::random([3 * 64], Distribution::Normal(0.0, 0.5), &device));
                w.nets[0][0].gate_up.bias = Some(Tensor::random([2 * cfg.mlp_inner()], Distribution::Normal(0.0, 0.5), &device));
            }
            let rope = Rope::<Flex>::new(&cfg, &device);
            let t = cfg.total_len();
            let h: Tensor<Flex, 3> = Tensor::random([3, t, 64], Distribution::Normal(0.0, 1.0), &device);
            for layer in &w.nets[0] {
                let fused = block(&h, layer, &cfg, Some(&rope)).expect("the fused path applies to Flex");
                let generic = block_generic(h.clone(), layer, &cfg, Some(&rope));
                let (a, b) = (fused.into_data().to_vec::<f32>().unwrap(), generic.into_data().to_vec::<f32>().unwrap());
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < 2e-5, "{pos:?}: fused and generic blocks differ by {worst}");
            }
            // A non-contiguous input: the [T, B, D] layout seen as [B, T, D] through a transpose.
            let tb: Tensor<Flex, 3> = Tensor::random([t, 3, 64], Distribution::Normal(0.0, 1.0), &device);
            let view = tb.clone().swap_dims(0, 1);
            assert!(!into_flex(view.clone()).is_contiguous(), "the test input must be a strided view");
            let dense: Tensor<Flex, 3> = Tensor::from_data(view.clone().into_data(), &device);
            let a = block(&view, &w.nets[0][0], &cfg, Some(&rope)).unwrap().into_data().to_vec::<f32>().unwrap();
            let b = block_generic(dense, &w.nets[0][0], &cfg, Some(&rope)).into_data().to_vec::<f32>().unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 2e-5), "{pos:?}: strided input");
        }
    }
}
