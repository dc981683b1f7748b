//! Small shared helpers: crash-safe files, seeded randomness, allocator settings.

pub mod alloc;
pub mod fs;
pub mod rng;
pub mod tensors;
