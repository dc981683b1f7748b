//! The product's 32 x 32 block with AVX512-BF16 (AMD Zen 4 and 5, Intel Cooper Lake, Sapphire
//! Rapids and later): VDPBF16PS multiplies bfloat16 pairs and accumulates in float32, 16
//! columns per instruction. For CPUs without AMX tiles; where both exist, AMX is faster.
//!
//! It reads the same packed operands as the tile kernel (`super::amx`): a k pair of one left
//! row is one 32-bit word, broadcast to 16 lanes, and a k pair of 16 right columns is 64
//! contiguous bytes. Eight rows by 32 columns are 16 accumulators in registers; four such
//! groups make the block.

use super::{Lhs, Rhs};
use std::arch::x86_64::*;

/// Whether this CPU has AVX512-BF16.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// `c [32 x 32] (row stride c_rs floats) = a rows r.. r+32 · b columns 32 jb.. 32 jb + 32`.
///
/// # Safety
/// AVX512-BF16 must be `available`; `r + 32 <= a`'s padded rows and `32 jb + 32 <= b.n_pad`,
/// with `a.k_pad == b.k_pad`; `c` valid for writes of 32 rows of 32 floats `c_rs` apart.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn kernel(a: &Lhs, r: usize, b: &Rhs, jb: usize, c: *mut f32, c_rs: usize) {
    let pairs = a.k_pad / 2;
    // SAFETY (pointer arithmetic): inside the padded operands, per the caller's contract.
    let (rows, b0, b1) = unsafe {
        let b0 = b.data.as_ptr().add(2 * jb * pairs * 16);
        (a.data.as_ptr().add(r * a.k_pad).cast::<u32>(), b0, b0.add(pairs * 16))
    };
    for g in 0..4 {
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        for p in 0..pairs {
            // SAFETY: pair p of 16 columns is 16 words inside b; row 8 g + i, pair p inside a
            // (read unaligned: the rows are bfloat16, two bytes aligned).
            unsafe {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(16 * p).cast()));
                let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(16 * p).cast()));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = rows.add((8 * g + i) * pairs + p).read_unaligned();
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(x as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: row 8 g + i of c's 32 x 32 block, 32 floats.
            unsafe {
                let row = c.add((8 * g + i) * c_rs);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(16), acc[1]);
            }
        }
    }
}
