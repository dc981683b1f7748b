//! The checkpoint store, below training and inference, which both read it: configurations
//! (presets, `key=value` overrides, the reference's `all_config.yaml`), checkpoints and their
//! integrity.

pub mod checkpoint;
pub mod config;
pub mod hydra_config;
pub mod integrity;
pub mod presets;
