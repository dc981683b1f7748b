//! The TRM model: configuration, parameters, layers, the recursion, and the ACT wrapper.

pub mod act;
pub mod config;
pub mod cpu;
pub mod layers;
pub mod precision;
pub mod trm;
pub mod weights;
