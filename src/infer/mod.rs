//! Inference on single puzzles.

pub mod bundled;
pub mod model_run;
pub mod solve;
pub mod views;
