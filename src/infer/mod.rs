//! Inference on single puzzles.

pub mod solve;
pub mod views;
