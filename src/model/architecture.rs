//! The architectures trm runs (the reference's `arch=` choices) as data: one row of [`REGISTRY`]
//! each, with its name, the reference's model class, its default `arch:` block
//! (`configs/arch/NAME.toml`) and the keys of the reference's config. `config.rs` builds an
//! `ArchConfig` from a row; `schedule.rs` says what each architecture computes.

use serde::{Deserialize, Serialize};

/// The reasoning architecture: which states the model carries, which networks update them and
/// in what order (`schedule.rs`). The names are the reference's `arch=` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The Tiny Recursive Model (`arch=trm`).
    #[default]
    Trm,
    /// The Hierarchical Reasoning Model (`arch=hrm`).
    Hrm,
    /// TRM with a single latent (`arch=trm_singlez`).
    TrmSinglez,
    /// TRM with six latents (`arch=trm_hier6`).
    TrmHier6,
    /// A plain transformer in the same ACT loop (`arch=transformers_baseline`).
    TransformersBaseline,
}

/// One row per architecture: everything about it that is data. Adding an architecture is a row
/// here, its `configs/arch/NAME.toml`, its recursion schedule (`schedule.rs`) and, where its
/// reference config differs, its reading in `eval/fixture.rs`; the compiler points at each
/// `match` that must learn it, and `registry_has_one_row_per_architecture` checks the table.
pub struct ArchRow {
    pub arch: Architecture,
    /// `arch=NAME` on trm's command line and in its configs.
    pub name: &'static str,
    /// The reference's model class (`arch.name` in its `all_config.yaml`).
    pub class_path: &'static str,
    /// The default `arch:` block (the reference's `config/arch/NAME.yaml`, plus trm's ablation
    /// switches). A key missing from it does not apply to the architecture and is refused.
    pub defaults: &'static str,
    /// The keys of the reference's `config/arch/NAME.yaml` besides `name` and `loss` (what a
    /// reference `all_config.yaml` must hold, and what trm writes into one).
    pub reference_keys: &'static [&'static str],
}

/// The reference arch keys of the TRM family.
const TRM_KEYS: &[&str] = &[
    "H_cycles",
    "H_layers",
    "L_cycles",
    "L_layers",
    "expansion",
    "forward_dtype",
    "halt_exploration_prob",
    "halt_max_steps",
    "hidden_size",
    "mlp_t",
    "no_ACT_continue",
    "num_heads",
    "pos_encodings",
    "puzzle_emb_len",
    "puzzle_emb_ndim",
];

/// Every architecture, in the order of [`Architecture::index`].
pub const REGISTRY: [ArchRow; 5] = [
    ArchRow {
        arch: Architecture::Trm,
        name: "trm",
        class_path: "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        defaults: include_str!("../../configs/arch/trm.toml"),
        reference_keys: TRM_KEYS,
    },
    ArchRow {
        arch: Architecture::Hrm,
        name: "hrm",
        class_path: "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1",
        defaults: include_str!("../../configs/arch/hrm.toml"),
        reference_keys: &[
            "H_cycles",
            "H_layers",
            "L_cycles",
            "L_layers",
            "expansion",
            "forward_dtype",
            "halt_exploration_prob",
            "halt_max_steps",
            "hidden_size",
            "mlp_t",
            "num_heads",
            "pos_encodings",
            "puzzle_emb_ndim",
        ],
    },
    ArchRow {
        arch: Architecture::TrmSinglez,
        name: "trm_singlez",
        class_path: "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
        defaults: include_str!("../../configs/arch/trm_singlez.toml"),
        reference_keys: TRM_KEYS,
    },
    ArchRow {
        arch: Architecture::TrmHier6,
        name: "trm_hier6",
        class_path: "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1",
        defaults: include_str!("../../configs/arch/trm_hier6.toml"),
        reference_keys: TRM_KEYS,
    },
    ArchRow {
        arch: Architecture::TransformersBaseline,
        name: "transformers_baseline",
        class_path: "recursive_reasoning.transformers_baseline@Model_ACTV2",
        defaults: include_str!("../../configs/arch/transformers_baseline.toml"),
        reference_keys: &[
            "H_cycles",
            "H_layers",
            "expansion",
            "halt_exploration_prob",
            "halt_max_steps",
            "hidden_size",
            "num_heads",
            "pos_encodings",
            "puzzle_emb_ndim",
        ],
    },
];

impl Architecture {
    /// Its row of [`REGISTRY`] (an exhaustive match: a new variant does not compile without one).
    const fn index(self) -> usize {
        match self {
            Architecture::Trm => 0,
            Architecture::Hrm => 1,
            Architecture::TrmSinglez => 2,
            Architecture::TrmHier6 => 3,
            Architecture::TransformersBaseline => 4,
        }
    }

    pub fn row(self) -> &'static ArchRow {
        &REGISTRY[self.index()]
    }

    /// The name used by `arch=NAME` (the reference's), also accepting HRM's own `hrm_v1`.
    pub fn parse(name: &str) -> Option<Architecture> {
        let name = if name == "hrm_v1" { "hrm" } else { name };
        REGISTRY.iter().find(|r| r.name == name).map(|r| r.arch)
    }

    /// The architecture of a reference class path (`recursive_reasoning.trm@...`), also HRM's own
    /// module name (`hrm.hrm_act_v1@...`).
    pub fn from_class_path(path: &str) -> Option<Architecture> {
        let module = path.split('@').next().unwrap_or(path);
        let short = module.rsplit('.').next().unwrap_or(module);
        Architecture::parse(if short == "hrm_act_v1" { "hrm" } else { short })
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub const ALL: [Architecture; 5] = [REGISTRY[0].arch, REGISTRY[1].arch, REGISTRY[2].arch, REGISTRY[3].arch, REGISTRY[4].arch];

    /// This architecture's default `arch:` table (every key it accepts).
    pub fn defaults_table(self) -> toml::Table {
        self.row().defaults.parse().expect("the embedded architecture defaults parse")
    }

    /// The values of the struct's fields that are not keys of this architecture (their
    /// `ArchConfig::default` would otherwise show through): the baseline has no L network,
    /// HRM and the baseline no `puzzle_emb_len`.
    fn inert(self) -> toml::Table {
        let text = match self {
            Architecture::TransformersBaseline => "L_cycles = 0\nL_layers = 0\npuzzle_emb_len = 0",
            Architecture::Hrm => "puzzle_emb_len = 0",
            _ => "",
        };
        text.parse().expect("inert values parse")
    }

    /// A complete `arch:` table: the architecture's defaults, `overrides` on top (keys of this
    /// architecture only: the caller checks), and the inert values of the other fields.
    pub fn full_table(self, overrides: &toml::Table) -> toml::Table {
        let mut t = self.inert();
        t.extend(self.defaults_table());
        t.extend(overrides.clone());
        // The reference's yaml says `puzzle_emb_ndim: ${.hidden_size}`: it follows the width
        // unless it is given.
        if !overrides.contains_key("puzzle_emb_ndim")
            && let Some(h) = t.get("hidden_size").cloned()
        {
            t.insert("puzzle_emb_ndim".into(), h);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_one_row_per_architecture() {
        for (i, row) in REGISTRY.iter().enumerate() {
            assert_eq!(row.arch.index(), i, "{}: its row is out of order", row.name);
            assert_eq!(Architecture::parse(row.name), Some(row.arch));
            assert_eq!(Architecture::from_class_path(row.class_path), Some(row.arch), "{}", row.class_path);
            let defaults: toml::Table = row.defaults.parse().unwrap();
            assert!(!row.reference_keys.is_empty() && defaults.contains_key("hidden_size"), "{}", row.name);
        }
        let names: std::collections::BTreeSet<_> = REGISTRY.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), REGISTRY.len(), "names are unique");
        assert_eq!(Architecture::from_class_path("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"), Some(Architecture::Hrm));
    }
}
