//! Training: losses, optimisers, the training step and loop, checkpoints.

pub mod adapt;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod guard;
pub mod hydra_config;
pub mod integrity;
pub mod logging;
pub mod loss;
pub mod optim;
pub mod presets;
pub mod progress;
pub mod setup;
pub mod source;
pub mod step;
pub mod trainer;
pub mod update;
