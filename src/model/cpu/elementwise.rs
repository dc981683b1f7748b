//! The element-wise passes of a block, fused and vectorised: SiLU(gate) * up, residual add +
//! RMSNorm, row softmax, and half-split RoPE on one head.
//!
//! Each public function works on a slice and is compiled three times (AVX-512, AVX2 + FMA, and
//! the baseline), chosen at run time like the gemm kernels (AVX-512 only in builds with the
//! `avx512` feature, the default). Bodies are plain loops that LLVM
//! vectorises; `exp` is a branch-free polynomial evaluated in double precision (within half an
//! ulp, as libm's scalar `expf`). No FMA contraction is used, so all three variants give
//! identical bits.

/// Runs `$body` (an `#[inline(always)]` fn) with the widest vector ISA this CPU has.
macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn mid($($arg: $ty),*) { $body($($arg),*) }
                if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { mid($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// `e^x` for x in [-87, 88] (clamped outside), without branches or tables, rounded once from a
/// double-precision evaluation: range reduction `x = k ln2 + r` and a degree-7 Taylor polynomial
/// on |r| <= ln2/2 (truncation below 6e-9), so the float result is within half an ulp plus that
/// of the true value. A single-precision polynomial (3-4 ulp) was measurably less accurate over
/// the dozens of blocks of a supervision step: the parity sweep's trm fixture with 24 blocks per
/// call moved from 1.4e-5 to 2.4e-6 of the reference's values (bench/parity_sweep.sh).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2: f64 = std::f64::consts::LN_2;
    // 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-87.0, 88.0) as f64;
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT; // round(x / ln 2)
    let k = t.to_bits() as i64 - SHIFT.to_bits() as i64;
    let r = x - n * LN2; // |r| <= ln2 / 2, error ~1e-16
    const C: [f64; 8] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
    let p = C[0] + r * (C[1] + r * (C[2] + r * (C[3] + r * (C[4] + r * (C[5] + r * (C[6] + r * C[7]))))));
    (p * f64::from_bits(((k + 1023) as u64) << 52)) as f32
}

/// `e^x` for x in [-87, 88] (clamped outside) in single precision: the same reduction as `exp`
/// and a degree-6 polynomial, within a few ulp; for `--precision bfloat16`, whose products
/// already round their operands to 8 bits of mantissa.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let k = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((k + 127) as u32) << 23)
}

#[inline(always)]
fn silu_mul_f32_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_f32(-*g)) * u;
    }
}
dispatch!(silu_mul_f32, silu_mul_f32_body, (gate: &mut [f32], up: &[f32]));

#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}
dispatch!(silu_mul, silu_mul_body, (gate: &mut [f32], up: &[f32]));

/// Sum of squares with 16 independent lanes (a single accumulator would not vectorise).
#[inline(always)]
fn sum_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            lanes[l] += c[l] * c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `out <- rms_norm(residual + out)` row by row (rows of `width`), the post-norm of a block;
/// each row's `1 / rms` goes to `inv` (the backward pass needs it).
#[inline(always)]
fn add_rms_norm_body(out: &mut [f32], residual: &[f32], width: usize, eps: f32, inv: &mut [f32]) {
    for ((o, r), inv) in out.chunks_exact_mut(width).zip(residual.chunks_exact(width)).zip(inv) {
        for (a, &b) in o.iter_mut().zip(r) {
            *a += b;
        }
        *inv = 1.0 / (sum_squares(o) / width as f32 + eps).sqrt();
        for a in o.iter_mut() {
            *a *= *inv;
        }
    }
}
dispatch!(add_rms_norm, add_rms_norm_body, (out: &mut [f32], residual: &[f32], width: usize, eps: f32, inv: &mut [f32]));

/// Backward of `y = s / rms(s)` per row, in place on the incoming gradient:
/// `ds = inv * (dy - y * mean(dy * y))`.
#[inline(always)]
fn rms_norm_backward_body(grad: &mut [f32], y: &[f32], inv: &[f32], width: usize) {
    for ((g, y), &inv) in grad.chunks_exact_mut(width).zip(y.chunks_exact(width)).zip(inv) {
        let mut lanes = [0f32; 16];
        let (gc, yc) = (g.chunks_exact(16), y.chunks_exact(16));
        let tail: f32 = gc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
        for (a, b) in gc.zip(yc) {
            for l in 0..16 {
                lanes[l] += a[l] * b[l];
            }
        }
        let mean = (lanes.iter().sum::<f32>() + tail) / width as f32;
        for (g, &y) in g.iter_mut().zip(y) {
            *g = inv * (*g - y * mean);
        }
    }
}
dispatch!(rms_norm_backward, rms_norm_backward_body, (grad: &mut [f32], y: &[f32], inv: &[f32], width: usize));

/// Backward of `a = silu(g) * u`: `da` becomes `dg` in place and `du` is written.
#[inline(always)]
fn silu_mul_backward_body(da: &mut [f32], g: &[f32], u: &[f32], du: &mut [f32]) {
    for (((da, &g), &u), du) in da.iter_mut().zip(g).zip(u).zip(du) {
        let sig = 1.0 / (1.0 + exp(-g));
        let silu = g * sig;
        *du = *da * silu;
        *da = *da * u * (sig + silu * (1.0 - sig));
    }
}
dispatch!(silu_mul_backward, silu_mul_backward_body, (da: &mut [f32], g: &[f32], u: &[f32], du: &mut [f32]));

/// Softmax of each row of `width`, in place.
#[inline(always)]
fn softmax_rows_body(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut lanes = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for l in 0..16 {
                c[l] = exp(c[l] - max);
                lanes[l] += c[l];
            }
        }
        let mut sum = 0.0;
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / (lanes.iter().sum::<f32>() + sum);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
dispatch!(softmax_rows, softmax_rows_body, (x: &mut [f32], width: usize));

/// Copies `rows` head vectors of `d` (source rows `stride` apart) into `out` `[rows, d]`,
/// rotated by RoPE with tables `[rows, d]`: `x cos + [-x2, x1] sin`.
#[inline(always)]
fn rope_gather_body(src: &[f32], stride: usize, rows: usize, d: usize, cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = d / 2;
    for t in 0..rows {
        let x = &src[t * stride..t * stride + d];
        let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
        let o = &mut out[t * d..(t + 1) * d];
        for i in 0..half {
            o[i] = x[i] * c[i] - x[i + half] * s[i];
            o[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
        }
    }
}
dispatch!(rope_gather, rope_gather_body, (src: &[f32], stride: usize, rows: usize, d: usize, cos: &[f32], sin: &[f32], out: &mut [f32]));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_precision_exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst relative error {worst}");
    }

    #[test]
    fn exp_is_within_half_an_ulp() {
        let mut worst = 0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 0.000_37;
            let want = (x as f64).exp();
            let ulp = (want as f32).next_up() as f64 - want as f32 as f64;
            worst = worst.max((exp(x) as f64 - want).abs() / ulp);
        }
        // Half an ulp from rounding once, plus the polynomial's 6e-9 relative (~0.1 ulp).
        assert!(worst < 0.6, "worst error {worst} ulp");
    }

    #[test]
    fn fused_passes_match_their_definitions() {
        let x: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let y: Vec<f32> = (0..300).map(|i| ((i * 53 % 97) as f32 - 48.0) / 11.0).collect();

        let mut g = x.clone();
        silu_mul(&mut g, &y);
        for i in 0..300 {
            let want = x[i] / (1.0 + (-x[i]).exp()) * y[i];
            assert!((g[i] - want).abs() <= 1e-5 * (1.0 + want.abs()), "silu_mul at {i}: {} vs {want}", g[i]);
        }

        let mut o = x.clone();
        add_rms_norm(&mut o, &y, 100, 1e-5, &mut [0.0; 3]);
        for row in 0..3 {
            let s: Vec<f32> = (0..100).map(|j| x[row * 100 + j] + y[row * 100 + j]).collect();
            let inv = 1.0 / (s.iter().map(|v| v * v).sum::<f32>() / 100.0 + 1e-5).sqrt();
            for j in 0..100 {
                assert!((o[row * 100 + j] - s[j] * inv).abs() < 1e-5);
            }
        }

        let mut p = x.clone();
        softmax_rows(&mut p, 30);
        for row in p.chunks(30).zip(x.chunks(30)) {
            let max = row.1.iter().cloned().fold(f32::MIN, f32::max);
            let sum: f32 = row.1.iter().map(|v| (v - max).exp()).sum();
            for (got, v) in row.0.iter().zip(row.1) {
                assert!((got - (v - max).exp() / sum).abs() < 1e-6);
            }
        }

        // RoPE with cos = 1, sin = 0 is a copy; with cos = 0, sin = 1 it is rotate_half.
        let (d, rows, stride) = (8, 3, 20);
        let mut out = vec![0f32; rows * d];
        rope_gather(&x, stride, rows, d, &vec![1.0; rows * d], &vec![0.0; rows * d], &mut out);
        for t in 0..rows {
            assert_eq!(&out[t * d..(t + 1) * d], &x[t * stride..t * stride + d]);
        }
        rope_gather(&x, stride, rows, d, &vec![0.0; rows * d], &vec![1.0; rows * d], &mut out);
        for t in 0..rows {
            for i in 0..4 {
                assert_eq!(out[t * d + i], -x[t * stride + i + 4]);
                assert_eq!(out[t * d + i + 4], x[t * stride + i]);
            }
        }
    }
}
