//! The product's 32 x 32 block on Intel AMX tiles (Sapphire Rapids and later): TDPBF16PS
//! multiplies bfloat16 pairs and accumulates in float32.
//!
//! The kernel keeps the block in four accumulator tiles (tmm0-3), loads two tiles of each
//! operand per 32 values of k (tmm4-7) and stores the block once. Every tile is 16 rows of 64
//! bytes: 16 rows of 32 bfloat16 of the left operand, or 16 k pairs of 16 columns of the right
//! one, which is how `super::Lhs` and `super::Rhs` lay them out. The instructions are written
//! as inline assembly (Rust's AMX intrinsics are not stable); the operating system must grant
//! the process the tile state (`arch_prctl`, Linux 5.16+), which `available` asks for once.

use super::{Lhs, Rhs};
use std::arch::asm;
use std::sync::OnceLock;

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
        granted()
    })
}

/// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 when granted.
#[cfg(target_os = "linux")]
fn granted() -> bool {
    // SAFETY: a plain system call that only changes this process's permissions.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) == 0 }
}

/// Other systems: not used here (their tile-state permission is not wired up).
#[cfg(not(target_os = "linux"))]
fn granted() -> bool {
    false
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

/// Runs `f` with the tiles configured on this thread, then releases them.
pub fn with_tiles(f: &mut dyn FnMut()) {
    assert!(available(), "AMX tiles without AMX");
    /// Releases this thread's tile state when dropped, also when `f` panics.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            // SAFETY: AMX is available (asserted before this guard exists); releases this
            // thread's tile state.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }
    // SAFETY: AMX is available (asserted above); the configuration is this thread's.
    unsafe { asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    let _release = Release;
    f();
}

/// `c [32 x 32] (row stride c_rs floats) = a rows r.. r+32 · b columns 32 jb.. 32 jb + 32`.
///
/// # Safety
/// Inside `with_tiles`; `r + 32 <= a`'s padded rows and `32 jb + 32 <= b.n_pad`, with
/// `a.k_pad == b.k_pad`; `c` valid for writes of 32 rows of 32 floats `c_rs` apart.
pub unsafe fn kernel(a: &Lhs, r: usize, b: &Rhs, jb: usize, c: *mut f32, c_rs: usize) {
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
