//! Architecture configuration (the reference's `arch:` block), with the derived sizes.

use serde::{Deserialize, Serialize};

/// Position encoding of the token stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    /// Rotary embedding on q and k (half-split convention), positions include the prefix.
    #[default]
    Rope,
    /// A learned `[T, D]` table added to the embeddings (then scaled by 1/sqrt 2).
    Learned,
    /// Nothing (used with `mlp_t`, whose token mixing is position-aware by construction).
    None,
}

/// Precision of the forward pass. Parameters, optimiser state and the loss stay float32/64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardDtype {
    #[default]
    Float32,
    Bfloat16,
}

/// Token loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// The reference default: "stable max" (s(x) = x + 1 for x >= 0, 1/(1 - x) below), in float64.
    #[default]
    StablemaxCrossEntropy,
    SoftmaxCrossEntropy,
}

/// The `arch:` block. Defaults are the reference's `config/arch/trm.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchConfig {
    /// Width D of every token state (512 in the paper).
    pub hidden_size: usize,
    /// Attention heads; head dim = hidden_size / num_heads.
    pub num_heads: usize,
    /// SwiGLU expansion; inner width = ceil256(round(expansion * width * 2/3)).
    pub expansion: f64,
    /// T in the paper: recursions per supervision step (only the last one is differentiated).
    #[serde(rename = "H_cycles")]
    pub h_cycles: usize,
    /// n in the paper: latent updates per recursion.
    #[serde(rename = "L_cycles")]
    pub l_cycles: usize,
    /// Blocks in the one shared network.
    #[serde(rename = "L_layers")]
    pub l_layers: usize,
    /// Unused by TRM (kept for HRM and for reference command lines).
    #[serde(rename = "H_layers")]
    pub h_layers: usize,
    /// MLP across the sequence instead of attention (the Sudoku-Extreme 87.4% model).
    pub mlp_t: bool,
    pub pos_encodings: PosEncoding,
    /// Width of the per-puzzle embedding (0 = no puzzle embedding).
    pub puzzle_emb_ndim: usize,
    /// Prefix positions holding the puzzle embedding (0 = ceil(puzzle_emb_ndim / hidden)).
    pub puzzle_emb_len: usize,
    /// N_sup: deep-supervision steps (the ACT limit).
    pub halt_max_steps: usize,
    /// Probability that a row must run a random minimum number of steps (training only).
    pub halt_exploration_prob: f64,
    /// Halt on sign(q_halt) alone, without the Q-continue target (TRM default).
    #[serde(rename = "no_ACT_continue")]
    pub no_act_continue: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub forward_dtype: ForwardDtype,
    pub loss_type: LossType,
}

impl Default for ArchConfig {
    fn default() -> Self {
        ArchConfig {
            hidden_size: 512,
            num_heads: 8,
            expansion: 4.0,
            h_cycles: 3,
            l_cycles: 6,
            l_layers: 2,
            h_layers: 0,
            mlp_t: false,
            pos_encodings: PosEncoding::Rope,
            puzzle_emb_ndim: 512,
            puzzle_emb_len: 16,
            halt_max_steps: 16,
            halt_exploration_prob: 0.1,
            no_act_continue: true,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            forward_dtype: ForwardDtype::Bfloat16,
            loss_type: LossType::StablemaxCrossEntropy,
        }
    }
}

/// Everything the model needs: the arch block plus what the data set dictates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
}

/// SwiGLU inner width as the reference rounds it: `ceil256(round(expansion * width * 2 / 3))`.
/// Python's round is half-to-even; ties never occur for the configs used, but we match it.
pub fn swiglu_inner(width: usize, expansion: f64) -> usize {
    let x = expansion * width as f64 * 2.0 / 3.0;
    let r = x.round();
    let r = if (x - x.trunc() - 0.5).abs() < 1e-12 && (r as i64) % 2 != 0 { r - 1.0 } else { r };
    (r as usize).div_ceil(256) * 256
}

impl ModelConfig {
    pub fn d(&self) -> usize {
        self.arch.hidden_size
    }
    pub fn head_dim(&self) -> usize {
        self.arch.hidden_size / self.arch.num_heads
    }
    /// P: prefix positions for the puzzle embedding.
    pub fn prefix_len(&self) -> usize {
        let a = &self.arch;
        if a.puzzle_emb_ndim == 0 {
            0
        } else if a.puzzle_emb_len > 0 {
            a.puzzle_emb_len
        } else {
            a.puzzle_emb_ndim.div_ceil(a.hidden_size)
        }
    }
    /// T = S + P: positions the network sees.
    pub fn total_len(&self) -> usize {
        self.seq_len + self.prefix_len()
    }
    pub fn mlp_inner(&self) -> usize {
        swiglu_inner(self.arch.hidden_size, self.arch.expansion)
    }
    /// Inner width of the sequence-mixing MLP (mlp_t variant).
    pub fn mlp_t_inner(&self) -> usize {
        swiglu_inner(self.total_len(), self.arch.expansion)
    }
    pub fn validate(&self) -> anyhow::Result<()> {
        let a = &self.arch;
        anyhow::ensure!(a.hidden_size > 0 && a.num_heads > 0, "arch.hidden_size and arch.num_heads must be positive");
        anyhow::ensure!(
            a.hidden_size.is_multiple_of(a.num_heads),
            "arch.hidden_size {} is not divisible by arch.num_heads {}",
            a.hidden_size,
            a.num_heads
        );
        anyhow::ensure!(self.head_dim().is_multiple_of(2) || a.pos_encodings != PosEncoding::Rope, "RoPE needs an even head dim");
        anyhow::ensure!(
            a.h_cycles >= 1 && a.l_cycles >= 1 && a.l_layers >= 1,
            "arch.H_cycles, arch.L_cycles and arch.L_layers must be >= 1"
        );
        anyhow::ensure!(a.halt_max_steps >= 1, "arch.halt_max_steps must be >= 1");
        anyhow::ensure!(
            a.puzzle_emb_ndim <= self.prefix_len() * a.hidden_size,
            "arch.puzzle_emb_ndim {} does not fit in puzzle_emb_len x hidden_size",
            a.puzzle_emb_ndim
        );
        anyhow::ensure!((0.0..=1.0).contains(&a.halt_exploration_prob), "arch.halt_exploration_prob must be in [0, 1]");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_rounding_matches_the_reference_check_values() {
        assert_eq!(swiglu_inner(512, 4.0), 1536);
        assert_eq!(swiglu_inner(97, 4.0), 512);
        assert_eq!(swiglu_inner(916, 4.0), 2560);
        assert_eq!(swiglu_inner(64, 4.0), 256);
    }
}
