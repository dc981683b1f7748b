//! Data sets: the reference on-disk format, the builders for Sudoku-Extreme, Maze-Hard and ARC,
//! the embedded Sudoku generator, and the batch loader.

pub mod arc;
pub mod arc_task;
pub mod csv_rows;
pub mod dihedral;
pub mod format;
pub mod kind;
pub mod loader;
pub mod maze;
pub mod npy;
pub mod sudoku;
pub mod sudoku_solver;
pub mod tokens;
