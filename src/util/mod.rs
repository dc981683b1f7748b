//! Small shared helpers: crash-safe files, seeded randomness, allocator settings.

pub mod alloc;
pub mod env;
pub mod fs;
pub mod host_memory;
pub mod interrupt;
pub mod lock;
pub mod np_random;
pub mod out_of_memory;
pub mod pyjson;
pub mod rng;
pub mod stored_zip;
pub mod tensors;
pub mod torch_pickle;
pub mod torch_zip;
pub mod torch_zip_write;
