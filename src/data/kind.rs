//! The kind of puzzle a data set or a model is for, read off its sequence length and vocabulary:
//! one place that says what a Sudoku, a maze and an ARC canvas look like as tokens, for
//! evaluation (which views apply), the report (how a cell is drawn) and `trm eval` (whether the
//! bundled Sudoku model fits).

use super::{arc, maze, sudoku};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PuzzleKind {
    /// 81 cells, vocabulary 11 (pad, blank, digits 1-9).
    Sudoku,
    /// A square grid of `side` x `side` cells, vocabulary 6 (pad and `# SGo`).
    Maze { side: usize },
    /// A 30 x 30 canvas, vocabulary 12 (pad, end-of-grid, colours 0-9).
    Arc,
    /// Anything else (a data set built for another task).
    Other,
}

impl PuzzleKind {
    pub fn of(seq_len: usize, vocab: usize) -> Self {
        let side = (seq_len as f64).sqrt().round() as usize;
        match vocab {
            sudoku::VOCAB if seq_len == sudoku::SEQ_LEN => PuzzleKind::Sudoku,
            maze::VOCAB if side * side == seq_len => PuzzleKind::Maze { side },
            arc::VOCAB if seq_len == arc::SEQ_LEN => PuzzleKind::Arc,
            _ => PuzzleKind::Other,
        }
    }

    /// Whether a search can replace a view that ran its lifetime by a fresh one: a Sudoku has
    /// millions of views (digit relabellings, band, stack, row and column shuffles, the
    /// transpose); a maze has its 8 symmetries, all of which run from the start.
    pub fn has_fresh_views(self) -> bool {
        self == PuzzleKind::Sudoku
    }

    /// The kind of a data set split's puzzles.
    pub fn of_split(split: &super::format::Split) -> Self {
        Self::of(split.metadata.seq_len, split.metadata.vocab_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_name_their_kind() {
        assert_eq!(PuzzleKind::of(81, 11), PuzzleKind::Sudoku);
        assert_eq!(PuzzleKind::of(900, 6), PuzzleKind::Maze { side: 30 });
        assert_eq!(PuzzleKind::of(16, 6), PuzzleKind::Maze { side: 4 });
        assert_eq!(PuzzleKind::of(900, 12), PuzzleKind::Arc);
        assert!(PuzzleKind::Sudoku.has_fresh_views() && !PuzzleKind::Maze { side: 30 }.has_fresh_views());
        // Near misses are another task's data, never guessed.
        for (s, v) in [(80, 11), (81, 12), (90, 6), (900, 11), (64, 10)] {
            assert_eq!(PuzzleKind::of(s, v), PuzzleKind::Other, "{s} {v}");
        }
    }
}
