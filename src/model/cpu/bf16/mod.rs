//! bfloat16 matrix products on Intel AMX (Sapphire Rapids and later), for the fused forward
//! under `--precision bfloat16` (`super::bf16_products`): both operands are rounded to
//! bfloat16 (to nearest, ties to even), the tile unit multiplies them and accumulates in
//! float32 (TDPBF16PS), and the result is float32. Everything around the products (residual
//! stream, norms, SiLU with a single-precision exp, the carry) stays float32.
//!
//! Layouts, as the tile instructions read them (every tile 16 rows of 64 bytes):
//! - the left operand `[m, k]`: bfloat16 rows, m padded to 32 and k to 32 with zeros;
//! - the right operand `[k, n]`: "VNNI" pairs, `[n/16][k/2][16 columns][2]`, k padded to 32
//!   and n to 32 with zeros, so one tile is 16 consecutive k pairs of 16 columns.
//!
//! The kernel keeps a 32 x 32 block of the product in four accumulator tiles (tmm0-3), loads
//! two tiles of each operand per 32 values of k (tmm4-7) and stores the block once. The
//! instructions are written as inline assembly (Rust's AMX intrinsics are not stable); the
//! operating system must grant the process the tile state (`arch_prctl`), which `available`
//! asks for once.

use rayon::prelude::*;
use std::arch::asm;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether this CPU has AMX tiles with bfloat16 and the kernel lets this process use them.
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16.
        // `__cpuid_count` is an unsafe fn before Rust 1.94 (rust-version is 1.92) and safe since.
        // SAFETY: CPUID is present on every x86-64 processor.
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
        if r.edx & (1 << 24) == 0 || r.edx & (1 << 22) == 0 || !std::arch::is_x86_feature_detected!("avx512f") {
            return false;
        }
        // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 when granted (Linux 5.16+).
        // SAFETY: a plain system call that only changes this process's permissions.
        let granted = unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) };
        granted == 0
    })
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
    assert!(m > 0 && k > 0 && src.len() > (m - 1) * rs + (k - 1) * cs, "amx lhs: operand size");
    let (m_pad, k_pad) = (round_up(m, 32), round_up(k, 32));
    let mut data = vec![0u16; m_pad * k_pad];
    let wide = available();
    let fill = |(i, row): (usize, &mut [u16])| {
        if i < m {
            if cs == 1 && wide {
                // SAFETY: AVX-512F is part of `available`, checked below.
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
    assert!(k > 0 && n > 0 && src.len() > (k - 1) * rs + (n - 1) * cs, "amx rhs: operand size");
    let (k_pad, n_pad) = (round_up(k, 32), round_up(n, 32));
    // Two bfloat16 per word: the k pair (2p, 2p + 1) of one column.
    let mut data = vec![0u32; k_pad * n_pad / 2];
    if cs == 1 && available() {
        // Row pairs (2p, 2p + 1) of 16 columns at a time, as 32-bit words of two bfloat16.
        let zeros = vec![0f32; n];
        let words = &mut data[..];
        for p in 0..k.div_ceil(2) {
            let r0 = &src[2 * p * rs..2 * p * rs + n];
            let r1 = if 2 * p + 1 < k { &src[(2 * p + 1) * rs..(2 * p + 1) * rs + n] } else { &zeros[..] };
            for jb in 0..n.div_ceil(16) {
                let (c0, c1) = (16 * jb, (16 * jb + 16).min(n));
                let at = jb * k_pad * 8 + p * 16;
                // SAFETY: AVX-512F is part of `available`, checked just above.
                unsafe { pair_rows(&r0[c0..c1], &r1[c0..c1], &mut words[at..at + (c1 - c0)]) };
            }
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

/// Tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// `c [32 x 32] (row stride c_rs floats) = a rows r.. r+32 · b columns 32 jb.. 32 jb + 32`.
///
/// # Safety
/// AMX must be `available` and the tiles configured on this thread (`ldtilecfg CONFIG`);
/// `r + 32 <= a`'s padded rows and `32 jb + 32 <= b.n_pad`, with `a.k_pad == b.k_pad`; `c` valid
/// for writes of 32 rows of 32 floats `c_rs` apart.
unsafe fn kernel(a: &Lhs, r: usize, b: &Rhs, jb: usize, c: *mut f32, c_rs: usize) {
    let k_pad = a.k_pad;
    // SAFETY (pointer arithmetic): inside the padded operands, per the caller's contract.
    let (a0, a1, b0, b1) = unsafe {
        let a0 = a.data.as_ptr().add(r * k_pad);
        let b0 = b.data.as_ptr().add(2 * jb * k_pad * 8);
        (a0, a0.add(16 * k_pad), b0, b0.add(k_pad * 8))
    };
    // SAFETY: every load reads 16 rows of 64 bytes inside the operands (k_pad / 32 blocks),
    // every store writes 16 rows of 64 bytes inside c's 32 x 32 block.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm5, [{a1} + {sa} * 1]",
            "tileloadd tmm6, [{b0} + {sb} * 1]",
            "tileloadd tmm7, [{b1} + {sb} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {sc} * 1], tmm0",
            "add {c}, 64",
            "tilestored [{c} + {sc} * 1], tmm1",
            "add {c}, {down}",
            "tilestored [{c} + {sc} * 1], tmm2",
            "add {c}, 64",
            "tilestored [{c} + {sc} * 1], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) k_pad / 32 => _,
            c = inout(reg) c => _,
            down = in(reg) 64 * c_rs - 64,
            sa = in(reg) 2 * k_pad,
            sb = in(reg) 64usize,
            sc = in(reg) 4 * c_rs,
            options(nostack),
        );
    }
}

/// `dst[i * dst_rs + j] = (a · b)[i, j]` for i < a.m, j < b.n, over the thread pool when
/// `parallel` and the product is big enough.
///
/// # Safety
/// `dst` must be valid for writes of `a.m` rows of `b.n` values `dst_rs` apart, and not be
/// written by anyone else meanwhile.
pub unsafe fn matmul(a: &Lhs, b: &Rhs, dst: *mut f32, dst_rs: usize, parallel: bool) {
    assert!(available(), "amx::matmul without AMX");
    assert_eq!(a.k_pad, b.k_pad, "amx matmul: inner sizes");
    let (m, n) = (a.m, b.n);
    let out = super::Out(dst);
    let strip = move |r: usize| {
        let mut block = [0f32; 32 * 32];
        for jb in 0..b.n_pad / 32 {
            let (rows, cols) = ((m - r).min(32), (n - 32 * jb).min(32));
            if rows == 32 && cols == 32 {
                // SAFETY: as below, the block being inside dst; the tiles were configured.
                unsafe { kernel(a, r, b, jb, out.ptr().add(r * dst_rs + 32 * jb), dst_rs) };
                continue;
            }
            // SAFETY: r < m_pad and jb < n_pad / 32; the tiles were configured by the caller.
            unsafe { kernel(a, r, b, jb, block.as_mut_ptr(), 32) };
            for i in 0..rows {
                // SAFETY: row r + i < m and columns 32 jb.. + cols < n of dst, this strip's only.
                unsafe {
                    std::ptr::copy_nonoverlapping(block[i * 32..].as_ptr(), out.ptr().add((r + i) * dst_rs + 32 * jb), cols);
                }
            }
        }
    };
    let strips = m.div_ceil(32);
    let configured = |f: &mut dyn FnMut()| {
        // SAFETY: AMX is available (asserted above); the configuration is this thread's.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        f();
        // SAFETY: releases this thread's tile state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    };
    if parallel && strips > 1 && m * n * a.k_pad >= 1 << 20 {
        let threads = rayon::current_num_threads().max(1);
        let per = strips.div_ceil(threads);
        (0..strips.div_ceil(per)).into_par_iter().for_each(|t| {
            configured(&mut || (t * per..((t + 1) * per).min(strips)).for_each(|s| strip(32 * s)));
        });
    } else {
        configured(&mut || (0..strips).for_each(|s| strip(32 * s)));
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
        if !available() {
            eprintln!("no AMX on this CPU: the AMX product is not exercised");
            return;
        }
        // Shapes with every edge: m, k, n not multiples of 32 (or 16), strided operands.
        for (m, k, n) in [(1, 1, 1), (33, 97, 47), (64, 128, 512), (97, 33, 16)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0).collect();
            let want = reference(&a, &b, m, k, n);
            // b given transposed (column stride k), as the linear layers hold their weights.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            for (rhs_op, parallel) in [(rhs(&b, (n, 1), k, n), false), (rhs(&bt, (1, k), k, n), true)] {
                let mut got = vec![f32::NAN; m * (n + 3)];
                unsafe { matmul(&lhs(&a, (k, 1), m, k), &rhs_op, got.as_mut_ptr(), n + 3, parallel) };
                for i in 0..m {
                    for j in 0..n {
                        let (g, w) = (got[i * (n + 3) + j], want[i * n + j]);
                        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "({m},{k},{n}) [{i},{j}]: {g} against {w}");
                    }
                    assert!(got[i * (n + 3) + n].is_nan(), "wrote past the row");
                }
            }
        }
    }
}
