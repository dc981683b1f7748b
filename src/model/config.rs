//! Architecture configuration (the reference's `arch:` block), with the derived sizes.

use super::architecture::Architecture;
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

impl Architecture {
    /// This architecture's defaults as a config.
    pub fn defaults(self) -> ArchConfig {
        toml::Value::Table(self.full_table(&toml::Table::new())).try_into().expect("the embedded architecture defaults deserialise")
    }
}

/// The `arch:` block. Defaults are the reference's `config/arch/trm.yaml`; other architectures
/// start from `Architecture::defaults` (`configs/arch/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchConfig {
    /// Which model (`arch=trm`, `arch=hrm`, ...).
    pub name: Architecture,
    /// Width D of every token state (512 in the paper).
    pub hidden_size: usize,
    /// Attention heads; head dim = hidden_size / num_heads (rounded down, as the reference).
    pub num_heads: usize,
    /// SwiGLU expansion; inner width = ceil256(round(expansion * width * 2/3)).
    pub expansion: f64,
    /// T in the paper: recursions (HRM: high-level cycles) per supervision step.
    #[serde(rename = "H_cycles")]
    pub h_cycles: usize,
    /// n in the paper: latent updates per recursion (HRM: low-level steps per cycle).
    #[serde(rename = "L_cycles")]
    pub l_cycles: usize,
    /// Blocks of the L_level network (TRM's one shared network).
    #[serde(rename = "L_layers")]
    pub l_layers: usize,
    /// Blocks of the H_level network: HRM's high-level network, the baseline's only network,
    /// TRM's separate answer network when > 0 (0 = TRM's shared network updates y too).
    #[serde(rename = "H_layers")]
    pub h_layers: usize,
    /// MLP across the sequence instead of attention (the Sudoku-Extreme 87.4% model).
    pub mlp_t: bool,
    pub pos_encodings: PosEncoding,
    /// Width of the per-puzzle embedding (0 = no puzzle embedding); hidden_size unless given.
    pub puzzle_emb_ndim: usize,
    /// Prefix positions holding the puzzle embedding (0 = ceil(puzzle_emb_ndim / hidden)).
    pub puzzle_emb_len: usize,
    /// N_sup: deep-supervision steps (the ACT limit).
    pub halt_max_steps: usize,
    /// Probability that a row must run a random minimum number of steps (training only).
    pub halt_exploration_prob: f64,
    /// true: halt on sign(q_halt) alone, no Q-continue loss (TRM). false: halt when
    /// q_halt > q_continue and train q_continue on a bootstrapped target (HRM, "w/ ACT").
    #[serde(rename = "no_ACT_continue")]
    pub no_act_continue: bool,
    /// Differentiate only the last two updates (HRM's 1-step gradient) instead of the last
    /// whole recursion (TRM).
    pub one_step_grad: bool,
    /// Winner-take-all training over K latent chains (arXiv 2601.19085): each example runs K
    /// chains that share the answer y and keep their own latent z; only the lowest-loss chain is
    /// backpropagated (`step/wta.rs`). 1 = off (the reference). Evaluation runs chain 0 alone.
    pub wta_chains: usize,
    /// Baseline: adaptive halting in training (false = always halt_max_steps).
    pub act_enabled: bool,
    /// Baseline: adaptive halting in evaluation as well.
    pub act_inference: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub forward_dtype: ForwardDtype,
    pub loss_type: LossType,
}

impl Default for ArchConfig {
    fn default() -> Self {
        ArchConfig {
            name: Architecture::Trm,
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
            one_step_grad: false,
            wta_chains: 1,
            act_enabled: true,
            act_inference: false,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            forward_dtype: ForwardDtype::Bfloat16,
            loss_type: LossType::StablemaxCrossEntropy,
        }
    }
}

/// When a row stops in training (and, for the baseline with `act_inference`, in evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltRule {
    /// q_halt > 0 (TRM).
    Sign,
    /// q_halt > q_continue (HRM, TRM "w/ ACT", the baseline).
    VersusContinue,
}

impl HaltRule {
    /// Whether the rule stops a row with these Q logits.
    pub fn fires(self, q_halt: f32, q_continue: f32) -> bool {
        match self {
            HaltRule::Sign => q_halt > 0.0,
            HaltRule::VersusContinue => q_halt > q_continue,
        }
    }
}

impl ArchConfig {
    /// The rule that decides an adaptive halt.
    pub fn halt_rule(&self) -> HaltRule {
        if self.name != Architecture::TransformersBaseline && self.no_act_continue { HaltRule::Sign } else { HaltRule::VersusContinue }
    }
    /// Whether training computes the bootstrapped Q-continue target (one extra no-grad forward
    /// pass per step) and adds its loss.
    pub fn continue_target(&self) -> bool {
        self.name != Architecture::TransformersBaseline && !self.no_act_continue
    }
    /// Adaptive halting in training (the baseline can switch it off).
    pub fn adaptive_in_training(&self) -> bool {
        self.name != Architecture::TransformersBaseline || self.act_enabled
    }
    /// Adaptive halting in evaluation (only the baseline's `act_inference`).
    pub fn adaptive_in_eval(&self) -> bool {
        self.name == Architecture::TransformersBaseline && self.act_inference
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
    /// Width of the attention's q, k, v and of o_proj's input: heads x head_dim, which is less
    /// than D when the heads do not divide it (the baseline's 12 heads of 42 on D = 512).
    pub fn attention_width(&self) -> usize {
        self.arch.num_heads * self.head_dim()
    }
    /// P: prefix positions for the puzzle embedding.
    pub fn prefix_len(&self) -> usize {
        let a = &self.arch;
        if a.puzzle_emb_ndim == 0 {
            0
        } else if a.puzzle_emb_len > 0 && !matches!(a.name, Architecture::Hrm | Architecture::TransformersBaseline) {
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
        use anyhow::ensure;
        let a = &self.arch;
        ensure!(a.hidden_size > 0 && a.num_heads > 0, "arch.hidden_size and arch.num_heads must be positive");
        // Heads split attention's width; an MLP-mixing model has none (its tables of rope, never
        // read, are made one head wide).
        ensure!(a.mlp_t || a.num_heads <= a.hidden_size, "arch.num_heads {} exceeds arch.hidden_size {}", a.num_heads, a.hidden_size);
        // Bounds far above any model of the field, so that every size and count stays in range.
        for (key, v, max) in [
            ("arch.hidden_size", a.hidden_size, 1 << 16),
            ("arch.num_heads", a.num_heads, 1 << 16),
            ("arch.H_cycles", a.h_cycles, 1024),
            ("arch.L_cycles", a.l_cycles, 1024),
            ("arch.H_layers", a.h_layers, 256),
            ("arch.L_layers", a.l_layers, 256),
            ("arch.halt_max_steps", a.halt_max_steps, 1024),
            ("arch.puzzle_emb_len", a.puzzle_emb_len, 4096),
            ("arch.puzzle_emb_ndim", a.puzzle_emb_ndim, 1 << 20),
            ("the data set's seq_len", self.seq_len, crate::data::format::MAX_SEQ_LEN),
            ("the data set's vocab_size", self.vocab_size, 1 << 16),
            ("the data set's num_puzzle_identifiers", self.num_puzzle_identifiers, i32::MAX as usize),
        ] {
            ensure!(v <= max, "{key} {v} is above {max}, the largest trm builds");
        }
        // The puzzle-embedding table is the one tensor whose size two such numbers multiply.
        const MAX_TABLE: usize = 1 << 33;
        ensure!(
            self.num_puzzle_identifiers.saturating_mul(a.puzzle_emb_ndim) <= MAX_TABLE,
            "a puzzle-embedding table of {} identifiers x {} (arch.puzzle_emb_ndim) is above {MAX_TABLE} numbers, the largest trm builds",
            self.num_puzzle_identifiers,
            a.puzzle_emb_ndim
        );
        ensure!(a.expansion.is_finite() && a.expansion > 0.0, "arch.expansion must be a positive number, not {}", a.expansion);
        ensure!(a.expansion <= 64.0, "arch.expansion {} is above 64, the largest trm builds", a.expansion);
        ensure!(
            self.head_dim().is_multiple_of(2) || a.pos_encodings != PosEncoding::Rope || a.mlp_t,
            "arch.pos_encodings=rope needs an even head width, and arch.hidden_size {} / arch.num_heads {} gives {}: \
             change either, or use arch.pos_encodings=learned",
            a.hidden_size,
            a.num_heads,
            self.head_dim()
        );
        ensure!(a.halt_max_steps >= 1, "arch.halt_max_steps must be >= 1");
        ensure!(
            self.seq_len > 0 && self.vocab_size > 0,
            "the data set has seq_len {} and vocab_size {}: both must be positive",
            self.seq_len,
            self.vocab_size
        );
        ensure!(
            self.mlp_inner() > 0 && (!a.mlp_t || self.mlp_t_inner() > 0),
            "arch.expansion {} gives an MLP of width 0 at hidden_size {}",
            a.expansion,
            a.hidden_size
        );
        ensure!(
            a.puzzle_emb_ndim == 0 || self.num_puzzle_identifiers >= 1,
            "arch.puzzle_emb_ndim {} needs at least one puzzle identifier (the data set has none)",
            a.puzzle_emb_ndim
        );
        ensure!(
            a.puzzle_emb_ndim > 0 || a.puzzle_emb_len == 0 || matches!(a.name, Architecture::Hrm | Architecture::TransformersBaseline),
            "arch.puzzle_emb_len {} reserves prefix positions for a puzzle embedding, and arch.puzzle_emb_ndim=0 has none: \
             set arch.puzzle_emb_len=0 as well (the reference fails on this pair)",
            a.puzzle_emb_len
        );
        ensure!(a.rope_theta.is_finite() && a.rope_theta > 0.0, "arch.rope_theta must be positive, not {}", a.rope_theta);
        ensure!(
            a.puzzle_emb_ndim <= self.prefix_len() * a.hidden_size,
            "arch.puzzle_emb_ndim {} does not fit in puzzle_emb_len x hidden_size",
            a.puzzle_emb_ndim
        );
        ensure!((0.0..=1.0).contains(&a.halt_exploration_prob), "arch.halt_exploration_prob must be in [0, 1]");
        ensure!(a.rms_norm_eps.is_finite() && a.rms_norm_eps > 0.0, "arch.rms_norm_eps must be positive");
        match a.name {
            Architecture::Trm | Architecture::TrmSinglez | Architecture::TrmHier6 | Architecture::Hrm => {
                ensure!(a.h_cycles >= 1 && a.l_cycles >= 1, "arch.H_cycles and arch.L_cycles must be >= 1");
                ensure!(a.l_layers >= 1, "arch.L_layers must be >= 1");
            }
            Architecture::TransformersBaseline => {
                ensure!(a.h_cycles == 1, "arch=transformers_baseline has no recursion: arch.H_cycles must be 1 (kept for compatibility)");
                ensure!(a.h_layers >= 1, "arch.H_layers must be >= 1");
                ensure!(a.l_cycles == 0 && a.l_layers == 0, "arch=transformers_baseline has no L network");
                ensure!(!a.mlp_t, "arch=transformers_baseline has attention blocks only (no mlp_t)");
                ensure!(
                    a.pos_encodings != PosEncoding::None,
                    "arch=transformers_baseline needs pos_encodings rope or learned (the reference raises on anything else)"
                );
            }
        }
        ensure!((1..=64).contains(&a.wta_chains), "arch.wta_chains must be in 1..=64, not {}", a.wta_chains);
        if a.wta_chains > 1 {
            ensure!(
                a.name == Architecture::Trm && a.no_act_continue,
                "arch.wta_chains > 1 needs arch=trm with no_ACT_continue=True (the Q-continue target is not defined over chains)"
            );
        }
        if a.name == Architecture::Hrm {
            ensure!(a.h_layers >= 1, "arch=hrm needs arch.H_layers >= 1 (its high-level network)");
        }
        if a.name == Architecture::TrmSinglez {
            ensure!(a.h_layers == 0, "arch=trm_singlez has no answer state, so no H_level network: arch.H_layers must be 0");
        }
        if a.name == Architecture::TrmHier6 {
            ensure!(a.l_cycles <= 6, "arch=trm_hier6 has six latents: arch.L_cycles must be <= 6, not {}", a.l_cycles);
        }
        Ok(())
    }
}

/// The block shapes the fused blocks' tests run (`model::cpu`, `model::torch_block`), as
/// (positions, mlp_t, hidden, heads, seq_len, batch): the fourth and fifth are one head of a
/// width that is not a multiple of 16, 6 positions (gemm's small-matrix kernels), batch 1; the
/// last has heads that do not divide the width (as the baseline's 12 heads on 512): A = 6 x 6.
#[cfg(test)]
pub(crate) const BLOCK_TEST_CASES: [(PosEncoding, bool, usize, usize, usize, usize); 6] = [
    (PosEncoding::Rope, false, 64, 4, 19, 2),
    (PosEncoding::None, false, 64, 4, 19, 2),
    (PosEncoding::None, true, 64, 4, 19, 2),
    (PosEncoding::Rope, false, 40, 1, 5, 1),
    (PosEncoding::None, true, 40, 1, 5, 1),
    (PosEncoding::Rope, false, 40, 6, 7, 2),
];

/// A one-block-per-net model of one `BLOCK_TEST_CASES` shape (a one-row puzzle embedding).
#[cfg(test)]
pub(crate) fn block_test_config(pos: PosEncoding, mlp_t: bool, hidden: usize, heads: usize, seq_len: usize) -> ModelConfig {
    let arch = ArchConfig {
        hidden_size: hidden,
        num_heads: heads,
        pos_encodings: pos,
        mlp_t,
        puzzle_emb_ndim: hidden,
        puzzle_emb_len: 1,
        ..Default::default()
    };
    ModelConfig { arch, seq_len, vocab_size: 11, num_puzzle_identifiers: 3 }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn every_architecture_default_table_deserialises_and_validates() {
        for arch in Architecture::ALL {
            let a = arch.defaults();
            assert_eq!(a.name, arch);
            let c = ModelConfig { arch: a, seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 };
            c.validate().unwrap_or_else(|e| panic!("{}: {e:#}", arch.name()));
        }
        // The struct's Default is the reference's trm.yaml.
        assert_eq!(Architecture::Trm.defaults(), ArchConfig::default());
    }

    #[test]
    fn prefix_length_follows_the_architecture() {
        let mk = |arch: Architecture| ModelConfig { arch: arch.defaults(), seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 };
        assert_eq!(mk(Architecture::Trm).total_len(), 97);
        assert_eq!(mk(Architecture::Hrm).total_len(), 82);
        assert_eq!(mk(Architecture::TransformersBaseline).total_len(), 82);
        assert_eq!(mk(Architecture::TransformersBaseline).attention_width(), 504);
    }

    /// Sizes from a data set or a checkpoint's state.json are bounded before any table is
    /// allocated: an absurd one is an error, not an allocation failure that aborts.
    #[test]
    fn data_sizes_past_what_trm_builds_are_refused() {
        let mk =
            |seq_len, vocab_size, ids| ModelConfig { arch: Architecture::Trm.defaults(), seq_len, vocab_size, num_puzzle_identifiers: ids };
        mk(900, 12, 1_000_000).validate().unwrap(); // ARC with 1000 augmentations: about 876,000 identifiers
        let err = |c: ModelConfig| format!("{:#}", c.validate().unwrap_err());
        assert!(err(mk(81, 1_000_000_000_000, 1)).contains("the data set's vocab_size 1000000000000 is above 65536"));
        assert!(err(mk(usize::MAX, 11, 1)).contains("the data set's seq_len"));
        assert!(err(mk(81, 11, 1 << 40)).contains("num_puzzle_identifiers"));
        assert!(err(mk(81, 11, 100_000_000)).contains("a puzzle-embedding table of 100000000 identifiers x 512"));
    }

    /// A prefix with no puzzle embedding to fill it is refused (the reference fails on it), and
    /// each half of the fix passes.
    #[test]
    fn a_prefix_without_a_puzzle_embedding_is_refused() {
        let mk = |ndim, len| {
            let arch = ArchConfig { puzzle_emb_ndim: ndim, puzzle_emb_len: len, ..Default::default() };
            ModelConfig { arch, seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 }
        };
        let e = format!("{:#}", mk(0, 16).validate().unwrap_err());
        assert!(e.contains("arch.puzzle_emb_len 16") && e.contains("set arch.puzzle_emb_len=0"), "{e}");
        mk(0, 0).validate().unwrap();
        assert_eq!(mk(0, 0).total_len(), 81);
        mk(512, 16).validate().unwrap();
        // HRM has no puzzle_emb_len key: its inert 0 stands, and ndim 0 gives no prefix.
        let hrm = ModelConfig { arch: ArchConfig { puzzle_emb_ndim: 0, ..Architecture::Hrm.defaults() }, ..mk(0, 0) };
        hrm.validate().unwrap();
        assert_eq!(hrm.total_len(), 81);
    }

    #[test]
    fn swiglu_rounding_matches_the_reference_check_values() {
        assert_eq!(swiglu_inner(512, 4.0), 1536);
        assert_eq!(swiglu_inner(97, 4.0), 512);
        assert_eq!(swiglu_inner(916, 4.0), 2560);
        assert_eq!(swiglu_inner(64, 4.0), 256);
    }
}
