//! Per-thread counts of fused block applications, whichever engine's fused block ran (the CPU
//! block, `model::cpu`, or libtorch's, `model::torch_block`): plain forward passes (no graph),
//! forward passes recorded for backprop, and backward passes. Tests read them to check what a
//! schedule really runs and differentiates (tests/variants.rs) and that a fused block ran at all.

use std::cell::Cell;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub forward: usize,
    pub tracked: usize,
    pub backward: usize,
}

thread_local! {
    static COUNTS: Cell<BlockCounts> = const { Cell::new(BlockCounts { forward: 0, tracked: 0, backward: 0 }) };
}

/// This thread's counts so far.
pub fn block_counts() -> BlockCounts {
    COUNTS.with(Cell::get)
}

/// Adds one application to this thread's counts.
pub(crate) fn count(f: impl FnOnce(&mut BlockCounts)) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}
