//! The checkpoint store, below training and inference, which both read it: configurations
//! (presets, `key=value` overrides, the reference's `all_config.yaml`, what a resumed run may
//! change), checkpoints and their integrity, and the ARC model a `--checkpoint` names with its
//! identifiers (`arc_model.rs`), an evaluation's saved outputs (`eval_outputs.rs`), the ARC
//! evaluator's arguments (`arc_evaluator.rs`) and the vote pool a run keeps (`arc_votes.rs`).

pub mod arc_evaluator;
pub mod arc_model;
pub mod arc_votes;
pub mod carry_rows;
pub mod checkpoint;
pub mod config;
pub mod eval_outputs;
pub mod hydra_config;
pub mod idle_keys;
pub mod integrity;
pub mod overrides;
pub mod presets;
pub mod puzzle_rows;
pub mod resume;
