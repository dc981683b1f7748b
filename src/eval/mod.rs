//! Evaluation: golden-fixture parity, test-split evaluation.

pub mod parity;
