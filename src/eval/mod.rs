//! Evaluation: golden-fixture parity, test-split evaluation, test-time-scaled accuracy, ARC
//! voting and pass@k.

pub mod arc_vote;
pub mod evaluate;
pub mod fixture;
pub mod interval;
pub mod parity;
pub mod scaled;
