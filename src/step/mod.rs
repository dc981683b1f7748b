//! The training step in parts, below everything that trains, evaluates or infers: one
//! deep-supervision step forward (`supervision.rs`, with and without a graph), the losses
//! (`loss.rs`), the optimisers (`optim.rs`), the guard against non-finite values (`guard.rs`),
//! the one optimiser step from a rank's gradients (`update.rs`), winner-take-all
//! training over latent chains (`wta.rs`), and the depth curriculum that sets each training
//! step's recursion depth (`curriculum.rs`).

pub mod curriculum;
pub mod guard;
pub mod loss;
pub mod optim;
pub mod supervision;
pub mod update;
pub mod wta;
