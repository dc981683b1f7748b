//! trm: Tiny Recursive Models (TRM, arXiv 2510.04871) and their data sets, training, evaluation
//! and inference, on burn. See README.md for the commands and docs/ for the design.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod infer;
pub mod model;
pub mod parallel;
pub mod report;
pub mod step;
pub mod store;
pub mod train;
pub mod util;
