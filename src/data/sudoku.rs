//! Sudoku-Extreme builder (`trm data sudoku`), as the reference `build_sudoku_dataset.py`:
//! tokens 0 = PAD, 1 = blank, 2..=10 = digits 1..9; seq_len 81, vocab 11, one puzzle identifier
//! (0, the blank one) shared by every puzzle. Each training puzzle becomes one group holding the
//! original plus `num_aug` validity-preserving shuffles; the test split is never augmented.

use super::format::{self, SplitData};
use super::sudoku_solver::{self, Grid};
use crate::util::rng;
use anyhow::{Result, bail};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rayon::prelude::*;
use std::path::Path;

pub const SEQ_LEN: usize = 81;
pub const VOCAB: usize = 11;

/// One puzzle with its solution (digits, 0 = blank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Puzzle {
    pub question: Grid,
    pub answer: Grid,
}

/// Parses and checks the CSV rows: 81 cells, digits or `.`, the answer a valid grid that agrees
/// with every given.
pub fn read_csv(path: &Path) -> Result<Vec<Puzzle>> {
    let mut out = Vec::new();
    for row in super::csv_rows::read(path)? {
        let at = format!("{}:{}", path.display(), row.line);
        let question = sudoku_solver::parse_grid(&row.question).map_err(|e| anyhow::anyhow!("{at}: question: {e}"))?;
        let answer = sudoku_solver::parse_grid(&row.answer).map_err(|e| anyhow::anyhow!("{at}: answer: {e}"))?;
        if !sudoku_solver::is_valid_solution(&answer) {
            bail!("{at}: answer is not a complete valid Sudoku grid");
        }
        if !sudoku_solver::solves(&question, &answer) {
            bail!("{at}: answer contradicts a given of the question");
        }
        out.push(Puzzle { question, answer });
    }
    Ok(out)
}

/// Tokens of a question (blank -> 1, digit d -> d + 1).
pub fn tokens(grid: &Grid) -> [u8; 81] {
    grid.map(|d| d + 1)
}

/// The grid that tokens spell (`tokens`' inverse): digit d for token d + 1, and 0 (blank) for
/// anything else: padding, a blank, or a prediction out of the digits' range.
pub fn grid_of_tokens<T: Copy + Into<i64>>(tokens: &[T]) -> Grid {
    std::array::from_fn(|i| match tokens[i].into() {
        t @ 2..=10 => (t - 1) as u8,
        _ => 0,
    })
}

/// A validity-preserving view of a Sudoku: digit relabelling (blank kept), an optional
/// transpose, band order and rows within each band, stack order and columns within each stack.
/// Training augments with random views (`shuffle`); `trm solve --views` solves several views of
/// one puzzle and maps each answer back with `invert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SudokuView {
    /// `digits[d - 1]` is the new label of digit d.
    pub digits: [u8; 9],
    pub transpose: bool,
    /// Row r of the view is row `rows[r]` of the (transposed) original; likewise columns.
    pub rows: [usize; 9],
    pub cols: [usize; 9],
}

impl SudokuView {
    pub const IDENTITY: SudokuView = SudokuView {
        digits: [1, 2, 3, 4, 5, 6, 7, 8, 9],
        transpose: false,
        rows: [0, 1, 2, 3, 4, 5, 6, 7, 8],
        cols: [0, 1, 2, 3, 4, 5, 6, 7, 8],
    };

    /// A random view, drawn as the reference draws its augmentations.
    pub fn random(rng: &mut impl Rng) -> SudokuView {
        let mut digits = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        digits.shuffle(rng);
        let transpose = rng.random_bool(0.5);
        let lines = |rng: &mut dyn rand::RngCore| {
            let mut bands = [0usize, 1, 2];
            bands.shuffle(rng);
            let mut perm = [0usize; 9];
            for (k, b) in bands.iter().enumerate() {
                let mut within = [0usize, 1, 2];
                within.shuffle(rng);
                for (j, w) in within.iter().enumerate() {
                    perm[k * 3 + j] = b * 3 + w;
                }
            }
            perm
        };
        let rows = lines(rng);
        let cols = lines(rng);
        SudokuView { digits, transpose, rows, cols }
    }

    /// Where cell (r, c) of the view comes from in the original grid.
    fn source(&self, r: usize, c: usize) -> usize {
        let (sr, sc) = (self.rows[r], self.cols[c]);
        if self.transpose { sc * 9 + sr } else { sr * 9 + sc }
    }

    /// The view of a grid (0 = blank).
    pub fn apply(&self, g: &Grid) -> Grid {
        let mut out = [0u8; 81];
        for r in 0..9 {
            for c in 0..9 {
                let d = g[self.source(r, c)];
                out[r * 9 + c] = if d == 0 { 0 } else { self.digits[d as usize - 1] };
            }
        }
        out
    }

    /// The original grid of a view's grid: `invert(apply(g)) == g`.
    pub fn invert(&self, v: &Grid) -> Grid {
        let mut back = [0u8; 10];
        for (d, &to) in self.digits.iter().enumerate() {
            back[to as usize] = d as u8 + 1;
        }
        let mut out = [0u8; 81];
        for r in 0..9 {
            for c in 0..9 {
                out[self.source(r, c)] = back[v[r * 9 + c].min(9) as usize];
            }
        }
        out
    }
}

/// A random validity-preserving shuffle (`SudokuView::random`), the same for question and answer.
pub fn shuffle(p: &Puzzle, rng: &mut impl Rng) -> Puzzle {
    let v = SudokuView::random(rng);
    Puzzle { question: v.apply(&p.question), answer: v.apply(&p.answer) }
}

/// Options of `trm data sudoku`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Keep this many training puzzles, drawn at random (seeded); all when None.
    pub subsample: Option<usize>,
    /// Keep this many test puzzles, drawn at random (seeded); all when None.
    pub test_subsample: Option<usize>,
    /// Augmented copies per training puzzle.
    pub num_aug: usize,
    pub seed: u64,
}

/// Draws `n` of `items` without replacement, keeping file order; all of them when the file has
/// no more than `n` (as the reference does).
pub fn subsample<T: Clone>(items: &[T], n: Option<usize>, seed: u64, stream: u64) -> Result<Vec<T>> {
    let Some(n) = n.filter(|&n| n < items.len()) else { return Ok(items.to_vec()) };
    let mut idx: Vec<usize> = (0..items.len()).collect::<Vec<_>>().choose_multiple(&mut rng::derive(seed, &[stream]), n).copied().collect();
    idx.sort_unstable();
    Ok(idx.into_iter().map(|i| items[i].clone()).collect())
}

/// Refuses a training split past the format's int32 offsets: `puzzles x (1 + num_aug)` examples
/// (81 bytes each for inputs and again for labels: 350 GB at the limit, so a build this large
/// could not finish anyway).
pub fn check_size(puzzles: usize, num_aug: usize) -> Result<()> {
    let examples = puzzles.checked_mul(num_aug + 1);
    if examples.is_none_or(|n| n > i32::MAX as usize) {
        anyhow::bail!(
            "{puzzles} training puzzles x (1 + --num-aug {num_aug}) examples is past the {} examples the data format's int32 \
             offsets hold: use fewer training puzzles (--subsample N; generate: --train N) or a smaller --num-aug",
            i32::MAX
        );
    }
    Ok(())
}

/// The random stream `generate` makes puzzle `i` of `stream` from.
fn puzzle_rng(seed: u64, stream: u64, i: usize) -> rand_chacha::ChaCha8Rng {
    rng::derive(seed, &[stream, i as u64])
}

/// The random stream of group `g`'s augmentations: its own, apart from the stream `generate`
/// made puzzle `g` from with the same seed (`puzzle_rng`). Sharing it once tied each generated
/// puzzle's augmentations to the draws that made the puzzle (its number of givens among them).
fn augmentation_rng(seed: u64, split_stream: u64, g: usize) -> rand_chacha::ChaCha8Rng {
    const AUGMENTATIONS: u64 = 0xA06;
    rng::derive(seed, &[AUGMENTATIONS, split_stream, g as u64])
}

/// Builds one split: each puzzle a group of `1 + num_aug` single-example puzzles.
pub fn build_split(puzzles: &[Puzzle], num_aug: usize, seed: u64, split_stream: u64) -> SplitData {
    let groups: Vec<Vec<Puzzle>> = puzzles
        .par_iter()
        .enumerate()
        .map(|(g, p)| {
            let mut r = augmentation_rng(seed, split_stream, g);
            std::iter::once(*p).chain((0..num_aug).map(|_| shuffle(p, &mut r))).collect()
        })
        .collect();
    let mut split = SplitData::new(SEQ_LEN);
    for group in groups {
        for p in group {
            split.push_example(&tokens(&p.question), &tokens(&p.answer));
            split.end_puzzle(0);
        }
        split.end_group();
    }
    split
}

/// Writes a complete Sudoku data set (train + test + identifiers.json) from puzzle lists.
pub fn write_dataset(out: &Path, train: &[Puzzle], test: &[Puzzle], num_aug: usize, seed: u64) -> Result<(SplitData, SplitData)> {
    write_dataset_with(out, train, test, num_aug, seed, |_| Ok(()))
}

/// As `write_dataset`, and `extra` writes more files into `out` inside the same build (before
/// the marker goes, so a set whose extra files are missing is never taken for finished).
pub fn write_dataset_with(
    out: &Path,
    train: &[Puzzle],
    test: &[Puzzle],
    num_aug: usize,
    seed: u64,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<(SplitData, SplitData)> {
    check_size(train.len(), num_aug)?;
    let building = format::Building::start(out)?;
    let tr = build_split(train, num_aug, seed, 0);
    let te = build_split(test, 0, seed, 1);
    // As the reference: total_puzzles counts the original puzzles (= groups).
    format::write_split(&out.join("train"), &tr, &tr.metadata(VOCAB, 1, tr.num_groups()))?;
    format::write_split(&out.join("test"), &te, &te.metadata(VOCAB, 1, te.num_groups()))?;
    format::write_identifiers(out, &["<blank>".to_string()])?;
    crate::util::fs::drop_stale_arc_tasks(out)?;
    extra(out)?;
    building.finish()?;
    Ok((tr, te))
}

/// `trm data sudoku`: CSV files in, reference layout out.
pub fn build(train_csv: &Path, test_csv: &Path, out: &Path, opt: &BuildOptions) -> Result<(SplitData, SplitData)> {
    let train = subsample(&read_csv(train_csv)?, opt.subsample, opt.seed, 100)?;
    let test = subsample(&read_csv(test_csv)?, opt.test_subsample, opt.seed, 101)?;
    write_dataset(out, &train, &test, opt.num_aug, opt.seed)
}

/// How many givens generated puzzles get: one target (`30`), or a range (`24-40`) from which
/// each puzzle draws its own target uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Givens {
    pub min: usize,
    pub max: usize,
}

impl From<usize> for Givens {
    fn from(n: usize) -> Givens {
        Givens { min: n, max: n }
    }
}

impl std::str::FromStr for Givens {
    type Err = String;
    fn from_str(s: &str) -> Result<Givens, String> {
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| format!("givens `{s}`: expected a number like 30 or a range like 24-40"));
        let g = match s.split_once('-') {
            Some((a, b)) => Givens { min: num(a)?, max: num(b)? },
            None => Givens::from(num(s)?),
        };
        if g.min > g.max || g.max > 81 || g.min < 17 {
            return Err(format!("givens `{s}`: needs 17 <= min <= max <= 81 (17 is the fewest a unique Sudoku can have)"));
        }
        Ok(g)
    }
}

impl std::fmt::Display for Givens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max { write!(f, "{}", self.min) } else { write!(f, "{}-{}", self.min, self.max) }
    }
}

/// Generates `n` unique-solution puzzles with about `givens` clues, in parallel, seeded. Every
/// puzzle has its own random solution grid.
pub fn generate(n: usize, givens: impl Into<Givens>, seed: u64, stream: u64) -> Vec<Puzzle> {
    let givens = givens.into();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut r = puzzle_rng(seed, stream, i);
            let target = r.random_range(givens.min..=givens.max);
            let g = sudoku_solver::generate(&mut r, target);
            Puzzle { question: g.puzzle, answer: g.solution }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Puzzle {
        let q = sudoku_solver::parse_grid(".47.5....6.9.3.4..53..........9..6.....3.6.82.....5.4.79...4..64.37......56.9....").unwrap();
        let a = sudoku_solver::parse_grid("247659318689137425531482967874921653915346782362875149798514236423768591156293874").unwrap();
        Puzzle { question: q, answer: a }
    }

    #[test]
    fn tokens_and_grids_round_trip_and_odd_tokens_read_as_blank() {
        let p = sample();
        for g in [p.question, p.answer] {
            assert_eq!(grid_of_tokens(&tokens(&g)), g);
            let wide: Vec<i64> = tokens(&g).iter().map(|&t| t as i64).collect();
            assert_eq!(grid_of_tokens(&wide), g);
        }
        // Padding (0), blank (1) and anything past the digits read as an empty cell.
        let odd: Vec<i64> = (0..81).map(|i| [0, 1, 11, -3, 2][i % 5]).collect();
        let g = grid_of_tokens(&odd);
        assert!(g.iter().enumerate().all(|(i, &d)| d == if i % 5 == 4 { 1 } else { 0 }));
    }

    proptest! {
        #[test]
        fn shuffle_keeps_a_valid_solution_of_the_shuffled_question(seed in any::<u64>()) {
            let p = sample();
            let s = shuffle(&p, &mut rng::derive(seed, &[]));
            prop_assert!(sudoku_solver::solves(&s.question, &s.answer));
            // Blanks stay blanks, givens stay givens.
            prop_assert_eq!(s.question.iter().filter(|&&d| d == 0).count(), p.question.iter().filter(|&&d| d == 0).count());
            // And it is still the unique solution.
            let r = sudoku_solver::solve(&s.question, 2);
            prop_assert_eq!(r.count, 1);
            prop_assert_eq!(r.solution.unwrap(), s.answer);
        }
    }

    #[test]
    fn a_generated_puzzle_and_its_augmentations_draw_from_different_streams() {
        use rand::RngCore;
        for (seed, stream, g) in [(0, 0, 0), (42, 0, 7), (1, 1, 3)] {
            assert_ne!(
                puzzle_rng(seed, stream, g).next_u64(),
                augmentation_rng(seed, stream, g).next_u64(),
                "seed {seed}, stream {stream}, group {g}"
            );
        }
    }

    #[test]
    fn subsample_keeps_file_order_and_everything_when_asked_for_more() {
        let items: Vec<u32> = (0..10).collect();
        let some = subsample(&items, Some(4), 3, 100).unwrap();
        assert!(some.len() == 4 && some.windows(2).all(|w| w[0] < w[1]), "{some:?}");
        assert_eq!(subsample(&items, Some(10), 3, 100).unwrap(), items);
        assert_eq!(subsample(&items, Some(1000), 3, 100).unwrap(), items);
    }

    #[test]
    fn split_layout_matches_the_reference() {
        let s = build_split(&[sample(), sample()], 3, 0, 0);
        assert_eq!(s.num_groups(), 2);
        assert_eq!(s.num_puzzles(), 8);
        assert_eq!(s.num_examples(), 8);
        assert_eq!(s.group_indices, vec![0, 4, 8]);
        assert_eq!(s.puzzle_indices, (0..=8).collect::<Vec<i32>>());
        assert!(s.puzzle_identifiers.iter().all(|&i| i == 0));
        // First member is the original: blank -> 1, digit d -> d + 1.
        assert_eq!(s.example_input(0)[0], 1);
        assert_eq!(s.example_input(0)[1], 5);
        assert_eq!(s.example_label(0)[0], 3);
    }
}
