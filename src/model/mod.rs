//! The models: configuration, the recursion schedule of each architecture, parameters, layers,
//! the forward pass, and the ACT wrapper.

pub mod act;
pub mod architecture;
pub mod config;
pub mod counts;
pub mod cpu;
pub mod forward;
pub mod layers;
pub mod memory;
pub mod precision;
pub mod rope;
pub mod schedule;
#[cfg(feature = "libtorch")]
pub mod torch_block;
pub mod weights;
