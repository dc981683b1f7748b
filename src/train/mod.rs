//! Training: the loop (`trainer.rs`) and what it opens, logs and shows; the step itself is in
//! `step/`, checkpoints and configurations in `store/`.

pub mod adapt;
pub mod collective;
pub mod evaluation;
pub mod logging;
pub mod memory_check;
pub mod plan;
pub mod progress;
mod records;
pub mod setup;
pub mod trainer;
