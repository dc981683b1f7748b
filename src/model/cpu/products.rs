//! Which instructions run the fused forward's matrix products (linear layers and the mlp_t
//! mixer): float32 gemm, or bfloat16 operands with float32 sums (`bf16/`) on a unit the CPU
//! has. Process-wide, set once by `--precision` (`trm solve`, `eval`, `bench`, `train`). In
//! training the hand-written backward's linear-layer products (input and weight gradients) take
//! the same unit; the attention's and most of the mlp_t mixer's backward products, the
//! optimiser and everything element-wise stay float32. Weights, which change every step, are
//! then packed on every call instead of once.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The instructions that run the bfloat16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Unit {
    /// Intel AMX tiles (TDPBF16PS).
    Amx,
    /// AVX512-BF16 dot products in vector registers (VDPBF16PS).
    Avx512Bf16,
}

impl Bf16Unit {
    /// Whether this CPU (and, for AMX, the operating system) lets this process use it.
    pub fn available(self) -> bool {
        super::bf16::available(self)
    }

    /// The fastest unit here: AMX, else AVX512-BF16; None without either.
    pub fn best() -> Option<Bf16Unit> {
        [Bf16Unit::Amx, Bf16Unit::Avx512Bf16].into_iter().find(|u| u.available())
    }

    /// The `--precision` value that selects it.
    pub fn precision(self) -> &'static str {
        match self {
            Bf16Unit::Amx => "bfloat16-amx",
            Bf16Unit::Avx512Bf16 => "bfloat16-avx512",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Bf16Unit::Amx => "Intel AMX tiles (Sapphire Rapids or later, Linux 5.16+)",
            Bf16Unit::Avx512Bf16 => "AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake or later)",
        }
    }
}

/// The unit running the bfloat16 products: 0 none (float32), then 1 + the unit's index.
static PRODUCTS: AtomicU8 = AtomicU8::new(0);
const UNITS: [Bf16Unit; 2] = [Bf16Unit::Amx, Bf16Unit::Avx512Bf16];

/// Whether the fused float32 block runs at all: `TRM_FUSED_CPU=0` turns it off, and
/// `TRM_CPU_BF16=1` gives it bfloat16 activations, which it leaves to the generic layers.
fn fused_float32_block() -> bool {
    !crate::util::env::fused_cpu_off() && !crate::util::env::cpu_bf16()
}

/// The unit `--precision auto` takes: AMX, the one measured faster than float32 (on a
/// Sapphire Rapids-class Xeon, 2.29x at the paper's sudoku-mlp shape); None without it, or with
/// the fused float32 block off. AVX512-BF16 runs its dot products at half the rate of float32
/// FMAs there, the same FLOP rate, so float32 stays the default without AMX
/// (docs/benchmarks.md, "bfloat16 without AMX").
pub fn bf16_auto_unit() -> Option<Bf16Unit> {
    (fused_float32_block() && Bf16Unit::Amx.available()).then_some(Bf16Unit::Amx)
}

/// The fastest unit, for `--precision bfloat16`; refused, with the fix, where none can run.
pub fn bf16_fastest() -> anyhow::Result<Bf16Unit> {
    anyhow::ensure!(fused_float32_block(), "{FUSED_OFF}");
    Bf16Unit::best().ok_or_else(|| {
        let cpu = if cfg!(target_arch = "x86_64") { "this CPU has neither" } else { "trm has them on x86-64 only" };
        anyhow::anyhow!("--precision bfloat16 needs Intel AMX tiles or AVX512-BF16, and {cpu}: use --precision float32")
    })
}

const FUSED_OFF: &str = "--precision bfloat16 runs in the fused CPU block, which TRM_FUSED_CPU=0 or TRM_CPU_BF16=1 turns off: unset them or use --precision float32";

/// Whether the weights stay fixed while the products run (inference): then each is packed for
/// the unit once and kept.
static FIXED_WEIGHTS: AtomicBool = AtomicBool::new(true);

/// Runs the fused forward's products in bfloat16 on `unit` (None: float32), process-wide, for
/// inference (weights packed once); refused, with the fix, where it could not take effect.
pub fn bf16_products(unit: Option<Bf16Unit>) -> anyhow::Result<()> {
    set_products(unit, true)
}

/// `bf16_products` for training: the same forward products, with the weights (which every
/// optimiser step changes) packed on every call.
pub fn bf16_products_while_training(unit: Option<Bf16Unit>) -> anyhow::Result<()> {
    set_products(unit, false)
}

fn set_products(unit: Option<Bf16Unit>, fixed_weights: bool) -> anyhow::Result<()> {
    if let Some(u) = unit {
        anyhow::ensure!(fused_float32_block(), "{FUSED_OFF}");
        anyhow::ensure!(
            u.available(),
            "--precision {} needs {}; this CPU or kernel has none: use --precision bfloat16 (the fastest unit here, if any) or float32",
            u.precision(),
            u.needs()
        );
    }
    let code = unit.map_or(0, |u| 1 + UNITS.iter().position(|&x| x == u).expect("a listed unit") as u8);
    FIXED_WEIGHTS.store(fixed_weights, Ordering::Relaxed);
    PRODUCTS.store(code, Ordering::Relaxed);
    Ok(())
}

/// The unit running the products in bfloat16 now, None for float32.
pub(super) fn products_in_bf16() -> Option<Bf16Unit> {
    match PRODUCTS.load(Ordering::Relaxed) {
        0 => None,
        c => Some(UNITS[c as usize - 1]),
    }
}

/// Whether a weight may be packed once and kept (`bf16_products`, not while training).
pub(super) fn weights_fixed() -> bool {
    FIXED_WEIGHTS.load(Ordering::Relaxed)
}
