//! Small shared helpers: crash-safe files and seeded randomness.

pub mod fs;
pub mod rng;
pub mod tensors;
