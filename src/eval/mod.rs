//! Evaluation: golden-fixture parity, test-split evaluation, ARC voting and pass@k.

pub mod arc_vote;
pub mod evaluate;
pub mod parity;
