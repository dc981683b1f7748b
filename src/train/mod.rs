//! Training: losses, optimisers, the training step and loop, checkpoints.

pub mod loss;
pub mod optim;
pub mod step;
