//! Inference on single puzzles.

pub mod solve;
