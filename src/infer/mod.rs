//! Inference on single puzzles.

pub mod bundled;
pub mod solve;
pub mod views;
