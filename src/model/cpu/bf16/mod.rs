//! bfloat16 matrix products for the fused forward under `--precision bfloat16`
//! (`super::bf16_products`): both operands are rounded to bfloat16 (to nearest, ties to even),
//! the products of bfloat16 pairs are summed in float32, and the result is float32. Everything
//! around the products (residual stream, norms, SiLU with a single-precision exp, the carry)
//! stays float32. Two units run them, on the same packed operands:
//! - `amx`: Intel AMX tiles (TDPBF16PS), Sapphire Rapids and later;
//! - `dot`: AVX512-BF16 (VDPBF16PS), AMD Zen 4 and 5, Intel Cooper Lake and later.
//!
//! Both flush bfloat16 denormals to zero; they differ only in the order of the float32 sums.
//!
//! Layouts, as the tile instructions read them (every tile 16 rows of 64 bytes):
//! - the left operand `[m, k]`: bfloat16 rows, m padded to 32 and k to 32 with zeros;
//! - the right operand `[k, n]`: "VNNI" pairs, `[n/16][k/2][16 columns][2]`, k padded to 32
//!   and n to 32 with zeros, so one tile is 16 consecutive k pairs of 16 columns.

mod amx;
mod dot;

use super::Bf16Unit as Unit;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether this CPU (and, for AMX, the operating system) lets this process use `unit`.
pub fn available(unit: Unit) -> bool {
    match unit {
        Unit::Amx => amx::available(),
        Unit::Avx512Bf16 => dot::available(),
    }
}

/// Whether the packing may use AVX-512 (every unit implies it).
fn wide() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Rounds to bfloat16, to nearest with ties to even (NaN stays NaN); branch-free, so the
/// loops below vectorise.
#[inline(always)]
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7FFF_FFFF) > 0x7F80_0000;
    (if nan { (b >> 16) | 0x40 } else { rounded }) as u16
}

/// `dst[j] = bf16(src[j])`.
#[target_feature(enable = "avx512f")]
fn round_row(src: &[f32], dst: &mut [u16]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = bf16(s));
}

/// `dst[c] = bf16(r0[c]) | bf16(r1[c]) << 16`: two rows of k as the pairs of a VNNI tile row.
#[target_feature(enable = "avx512f")]
fn pair_rows(r0: &[f32], r1: &[f32], dst: &mut [u32]) {
    dst.iter_mut().zip(r0.iter().zip(r1)).for_each(|(d, (&a, &b))| *d = bf16(a) as u32 | (bf16(b) as u32) << 16);
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// The left operand `[m, k]` as padded bfloat16 rows.
pub struct Lhs {
    data: Vec<u16>,
    m: usize,
    k_pad: usize,
}

/// The left operand from float32 values `src[i * rs + j * cs]`, i < m, j < k.
pub fn lhs(src: &[f32], (rs, cs): (usize, usize), m: usize, k: usize) -> Lhs {
    if m == 0 || k == 0 {
        return Lhs { data: vec![], m, k_pad: round_up(k, 32) }; // an empty product (`matmul` writes zeros or nothing)
    }
    assert!(src.len() > (m - 1) * rs + (k - 1) * cs, "amx lhs: operand size");
    let (m_pad, k_pad) = (round_up(m, 32), round_up(k, 32));
    let mut data = vec![0u16; m_pad * k_pad];
    if rs == 1 && cs != 1 {
        // The transpose of a row-major `[k, m]` matrix (a weight gradient's left operand): 32 of
        // its columns at a time, two of its rows at a time (rounded together into 32 words of
        // two bfloat16, one word per output row), so that both sides stay in cache.
        let (zeros, wide) = (vec![0f32; 32], wide());
        let block = |(b, rows): (usize, &mut [u16])| {
            let (c0, cols) = (32 * b, m.saturating_sub(32 * b).min(32));
            let mut words = [0u32; 32];
            for p in 0..k.div_ceil(2) {
                let r0 = &src[2 * p * cs + c0..2 * p * cs + c0 + cols];
                let r1 = if 2 * p + 1 < k { &src[(2 * p + 1) * cs + c0..(2 * p + 1) * cs + c0 + cols] } else { &zeros[..cols] };
                if wide {
                    // SAFETY: AVX-512F, checked above.
                    unsafe { pair_rows(r0, r1, &mut words[..cols]) };
                } else {
                    words.iter_mut().zip(r0.iter().zip(r1)).for_each(|(w, (&a, &b))| *w = bf16(a) as u32 | (bf16(b) as u32) << 16);
                }
                for (c, w) in words[..cols].iter().enumerate() {
                    rows[c * k_pad + 2 * p] = *w as u16;
                    rows[c * k_pad + 2 * p + 1] = (*w >> 16) as u16;
                }
            }
        };
        if m * k >= 1 << 16 {
            data.par_chunks_mut(32 * k_pad).enumerate().for_each(block);
        } else {
            data.chunks_mut(32 * k_pad).enumerate().for_each(block);
        }
        return Lhs { data, m, k_pad };
    }
    let wide = wide();
    let fill = |(i, row): (usize, &mut [u16])| {
        if i < m {
            if cs == 1 && wide {
                // SAFETY: AVX-512F, checked above.
                unsafe { round_row(&src[i * rs..i * rs + k], &mut row[..k]) };
            } else {
                row[..k].iter_mut().enumerate().for_each(|(j, d)| *d = bf16(src[i * rs + j * cs]));
            }
        }
    };
    if m * k >= 1 << 16 {
        data.par_chunks_mut(k_pad).enumerate().for_each(fill);
    } else {
        data.chunks_mut(k_pad).enumerate().for_each(fill);
    }
    Lhs { data, m, k_pad }
}

/// The right operand `[k, n]` in VNNI tiles.
pub struct Rhs {
    data: Vec<u32>,
    n: usize,
    k_pad: usize,
    n_pad: usize,
}

/// The right operand from float32 values `src[i * rs + j * cs]`, i < k, j < n.
pub fn rhs(src: &[f32], (rs, cs): (usize, usize), k: usize, n: usize) -> Rhs {
    if k == 0 || n == 0 {
        return Rhs { data: vec![], n, k_pad: round_up(k, 32), n_pad: round_up(n, 32) }; // an empty product
    }
    assert!(src.len() > (k - 1) * rs + (n - 1) * cs, "amx rhs: operand size");
    let (k_pad, n_pad) = (round_up(k, 32), round_up(n, 32));
    // Two bfloat16 per word: the k pair (2p, 2p + 1) of one column.
    let mut data = vec![0u32; k_pad * n_pad / 2];
    if cs == 1 && wide() {
        // Row pairs (2p, 2p + 1) of 16 columns at a time, as 32-bit words of two bfloat16.
        let zeros = vec![0f32; n];
        let words = &mut data[..];
        for p in 0..k.div_ceil(2) {
            let r0 = &src[2 * p * rs..2 * p * rs + n];
            let r1 = if 2 * p + 1 < k { &src[(2 * p + 1) * rs..(2 * p + 1) * rs + n] } else { &zeros[..] };
            for jb in 0..n.div_ceil(16) {
                let (c0, c1) = (16 * jb, (16 * jb + 16).min(n));
                let at = jb * k_pad * 8 + p * 16;
                // SAFETY: AVX-512F, checked just above.
                unsafe { pair_rows(&r0[c0..c1], &r1[c0..c1], &mut words[at..at + (c1 - c0)]) };
            }
        }
        return Rhs { data, n, k_pad, n_pad };
    }
    if rs == 1 {
        // Columns contiguous in k (a linear layer's weight rows, `W [n, k]`): one block of 16
        // columns at a time, each column's k pairs read along its row.
        let block = |(jb, words): (usize, &mut [u32])| {
            for c in 0..n.saturating_sub(16 * jb).min(16) {
                let col = &src[(16 * jb + c) * cs..(16 * jb + c) * cs + k];
                for (p, pair) in col.chunks(2).enumerate() {
                    words[p * 16 + c] = bf16(pair[0]) as u32 | pair.get(1).map_or(0, |&v| (bf16(v) as u32) << 16);
                }
            }
        };
        if k * n >= 1 << 16 {
            data.par_chunks_mut(k_pad * 8).enumerate().for_each(block);
        } else {
            data.chunks_mut(k_pad * 8).enumerate().for_each(block);
        }
        return Rhs { data, n, k_pad, n_pad };
    }
    // Column j, row i goes to block j / 16 (`[k_pad / 2][16][2]`), pair i / 2, lane j % 16, i % 2.
    for i in 0..k {
        let at = (i / 2) * 16;
        for j in 0..n {
            data[(j / 16) * k_pad * 8 + at + j % 16] |= (bf16(src[i * rs + j * cs]) as u32) << (16 * (i % 2));
        }
    }
    Rhs { data, n, k_pad, n_pad }
}

/// `rhs` of a weight that does not change while bfloat16 products are on (inference), packed
/// once: kept by the values' address and length, the operand's geometry and a sample of the
/// values, so a buffer reused for other weights is packed again.
pub fn weight_rhs(src: &[f32], strides: (usize, usize), k: usize, n: usize) -> Arc<Rhs> {
    type Key = (usize, usize, (usize, usize), usize, usize, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Rhs>>>> = OnceLock::new();
    let step = (src.len() / 256).max(1);
    let sample = src.iter().step_by(step).fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
    let key = (src.as_ptr() as usize, src.len(), strides, k, n, sample);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("amx weight cache").get(&key) {
        return hit.clone();
    }
    let packed = Arc::new(rhs(src, strides, k, n));
    let mut c = cache.lock().expect("amx weight cache");
    if c.len() >= 1024 {
        c.clear();
    }
    c.insert(key, packed.clone());
    packed
}

/// `dst[i * dst_rs + j] = (a · b)[i, j]` for i < a.m, j < b.n, on `unit`, over the thread
/// pool when `parallel` and the product is big enough.
///
/// # Safety
/// `dst` must be valid for writes of `a.m` rows of `b.n` values `dst_rs` apart, and not be
/// written by anyone else meanwhile.
pub unsafe fn matmul(unit: Unit, a: &Lhs, b: &Rhs, dst: *mut f32, dst_rs: usize, parallel: bool) {
    assert!(available(unit), "{} products without the unit", unit.precision());
    assert_eq!(a.k_pad, b.k_pad, "bfloat16 matmul: inner sizes");
    let (m, n) = (a.m, b.n);
    if m == 0 || n == 0 {
        return;
    }
    if a.k_pad == 0 {
        // An inner size of 0: the product is zero.
        for i in 0..m {
            // SAFETY: row i < m of dst, n values, per the caller's contract.
            unsafe { std::ptr::write_bytes(dst.add(i * dst_rs), 0, n) };
        }
        return;
    }
    let out = super::Out(dst);
    // SAFETY (both): the unit is available (asserted above) and, for AMX, the tiles are
    // configured on this thread (`on_unit` below); the caller keeps the block's bounds.
    let kernel = move |r, jb, c, c_rs| unsafe {
        match unit {
            Unit::Amx => amx::kernel(a, r, b, jb, c, c_rs),
            Unit::Avx512Bf16 => dot::kernel(a, r, b, jb, c, c_rs),
        }
    };
    let strip = move |r: usize| {
        let mut block = [0f32; 32 * 32];
        for jb in 0..b.n_pad / 32 {
            let (rows, cols) = ((m - r).min(32), (n - 32 * jb).min(32));
            if rows == 32 && cols == 32 {
                // SAFETY: r < m_pad, jb < n_pad / 32, and the 32 x 32 block is inside dst.
                kernel(r, jb, unsafe { out.ptr().add(r * dst_rs + 32 * jb) }, dst_rs);
                continue;
            }
            kernel(r, jb, block.as_mut_ptr(), 32);
            for i in 0..rows {
                // SAFETY: row r + i < m and columns 32 jb.. + cols < n of dst, this strip's only.
                unsafe {
                    std::ptr::copy_nonoverlapping(block[i * 32..].as_ptr(), out.ptr().add((r + i) * dst_rs + 32 * jb), cols);
                }
            }
        }
    };
    let on_unit = |f: &mut dyn FnMut()| match unit {
        Unit::Amx => amx::with_tiles(f),
        Unit::Avx512Bf16 => f(),
    };
    let strips = m.div_ceil(32);
    if parallel && strips > 1 && m * n * a.k_pad >= 1 << 20 {
        let threads = rayon::current_num_threads().max(1);
        let per = strips.div_ceil(threads);
        (0..strips.div_ceil(per)).into_par_iter().for_each(|t| {
            on_unit(&mut || (t * per..((t + 1) * per).min(strips)).for_each(|s| strip(32 * s)));
        });
    } else {
        on_unit(&mut || (0..strips).for_each(|s| strip(32 * s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let r = |x: f32| f32::from_bits((bf16(x) as u32) << 16);
        (0..m)
            .flat_map(|i| (0..n).map(move |j| (0..k).map(|q| r(a[i * k + q]) as f64 * r(b[q * n + j]) as f64).sum::<f64>() as f32))
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even one, 1.
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert!(f32::from_bits((bf16(f32::NAN) as u32) << 16).is_nan());
    }

    #[test]
    fn products_match_bfloat16_operands_with_float32_sums() {
        let units: Vec<Unit> = [Unit::Amx, Unit::Avx512Bf16].into_iter().filter(|u| u.available()).collect();
        if units.is_empty() {
            eprintln!("neither AMX nor AVX512-BF16 on this CPU: the bfloat16 products are not exercised");
            return;
        }
        // Shapes with every edge: m, k, n not multiples of 32 (or 16), strided operands.
        // Empty products too (an empty batch: m = 0), as float32's gemm takes them.
        for (m, k, n) in [(1, 1, 1), (33, 97, 47), (64, 128, 512), (97, 33, 16), (100, 700, 40), (0, 5, 7), (3, 0, 7), (3, 5, 0)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0).collect();
            let want = reference(&a, &b, m, k, n);
            // b given transposed (column stride k), as the linear layers hold their weights.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let cases = [(rhs(&b, (n, 1), k, n), false), (rhs(&bt, (1, k), k, n), true)];
            for (unit, (rhs_op, parallel)) in units.iter().flat_map(|&u| cases.iter().map(move |c| (u, c))) {
                let mut got = vec![f32::NAN; m * (n + 3)];
                // a given as it is, or as the transpose of a row-major [k, m] (a weight gradient's).
                let a_op = if *parallel { lhs(&at, (1, m), m, k) } else { lhs(&a, (k, 1), m, k) };
                unsafe { matmul(unit, &a_op, rhs_op, got.as_mut_ptr(), n + 3, *parallel) };
                for i in 0..m {
                    for j in 0..n {
                        let (g, w) = (got[i * (n + 3) + j], want[i * n + j]);
                        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{unit:?} ({m},{k},{n}) [{i},{j}]: {g} against {w}");
                    }
                    assert!(got[i * (n + 3) + n].is_nan(), "{unit:?} wrote past the row");
                }
            }
        }
    }
}
