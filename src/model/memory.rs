//! How much memory a training or evaluation pass of the CPU engine needs (`--device cpu`, the
//! fused float32 blocks of `model::cpu`), counted from what each block keeps for its backward
//! pass, so that `trm train` can refuse a run that would be killed by the system during its
//! first step and say which setting fits (`train::memory_check`), and `trm info` can show it.
//!
//! A training pass keeps, for every row and every block the gradient flows through: the block's
//! input, its attention q|k|v projections, q and k after RoPE, the softmax probabilities (heads
//! x T x T), the heads' outputs, the normed residual, the SwiGLU gate and up projections, and
//! the output (`model::cpu::Trace`; mlp_t keeps its sequence MLP's gate and up instead of the
//! attention values). The estimate counts the differentiated blocks plus two more: the
//! transient working memory of the forward and backward passes around them.
//!
//! Measured against the peak resident memory of `trm bench` (2 batch sizes each, the slope per
//! row; docs/reliability.md, "Memory"): the estimate lies between 1% below and 16% above the
//! measurement on TRM, TRM single-z, mlp_t and the transformer baseline at Sudoku's shape, TRM
//! at ARC's, HRM at Sudoku's and Maze's; an evaluation pass up to 41% above (mlp_t).
//!
//! Other engines keep other values (burn's generic autodiff on libtorch, bfloat16 emulation);
//! they are not estimated here (`estimated` says which are).

use super::config::ModelConfig;
use super::schedule::Schedule;

const F32: u128 = 4;

/// A size computed in u128 (hostile configurations reach past u64), saturated to u64.
fn bytes(n: u128) -> u64 {
    n.min(u64::MAX as u128) as u64
}

/// Floats one block keeps for one row for its backward pass.
fn kept_per_row(c: &ModelConfig) -> u128 {
    let (t, d, i) = (c.total_len() as u128, c.d() as u128, c.mlp_inner() as u128);
    // The channel SwiGLU: input, normed residual, gate, up, output.
    let channel = t * (3 * d + 2 * i);
    let mixer = if c.arch.mlp_t {
        2 * c.mlp_t_inner() as u128 * d // the sequence MLP's gate and up, [I_t, D] each
    } else {
        let (a, heads) = (c.attention_width() as u128, c.arch.num_heads as u128);
        t * 6 * a + heads * t * t // q|k|v, q and k after RoPE, the heads' outputs; probabilities
    };
    channel + mixer
}

/// Bytes per row of a training pass (one supervision step's forward and backward, one chain).
pub fn train_bytes_per_row(c: &ModelConfig) -> u64 {
    let blocks = Schedule::of(&c.arch).differentiated_blocks() as u128 + 2;
    bytes(F32 * blocks * kept_per_row(c))
}

/// Bytes per row of an evaluation pass (no gradient): one block's working values at a time (its
/// attention probabilities twice: the scores and their softmax), the carried states and the
/// logits.
pub fn eval_bytes_per_row(c: &ModelConfig) -> u64 {
    let (t, d) = (c.total_len() as u128, c.d() as u128);
    let states = Schedule::of(&c.arch).states.len() as u128;
    let scores = if c.arch.mlp_t { 0 } else { c.arch.num_heads as u128 * t * t };
    bytes(F32 * (kept_per_row(c) + scores + (states + 2) * t * d + t * c.vocab_size as u128))
}

/// Bytes of the parameters' gradients and Adam moments (and the EMA copy), the training state
/// that grows beside the weights once the first update is made (the puzzle-embedding table's
/// sign-SGD keeps no moments).
pub fn optimiser_bytes(c: &ModelConfig, ema: bool) -> u64 {
    weight_bytes(c).saturating_mul(3 + ema as u64)
}

/// Bytes of the carry (every state the supervision steps hand on) for one row and one chain.
pub fn carry_bytes_per_row(c: &ModelConfig) -> u64 {
    let states = Schedule::of(&c.arch).states.len() as u128;
    bytes(F32 * states * c.total_len() as u128 * c.d() as u128)
}

/// Bytes of the puzzle-embedding table (one row per identifier).
pub fn table_bytes(c: &ModelConfig) -> u64 {
    bytes(F32 * c.num_puzzle_identifiers as u128 * c.arch.puzzle_emb_ndim as u128)
}

/// Bytes of the weights themselves (the puzzle-embedding table excluded).
pub fn weight_bytes(c: &ModelConfig) -> u64 {
    bytes(F32 * super::weights::count_params(c) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (The estimates against measured peaks are tested in `bench.rs`, beside the benchmark
    /// shapes they were measured at.)
    #[test]
    fn optimiser_state_is_three_or_four_copies_of_the_weights() {
        let c = ModelConfig { arch: Default::default(), seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 };
        let p = crate::model::weights::count_params(&c) as u64;
        assert_eq!(optimiser_bytes(&c, false), 12 * p);
        assert_eq!(optimiser_bytes(&c, true), 16 * p);
    }
}
