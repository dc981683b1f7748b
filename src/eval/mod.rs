//! Evaluation: golden-fixture parity, test-split evaluation.

pub mod evaluate;
pub mod parity;
