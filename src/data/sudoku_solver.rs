//! Exact Sudoku solver and unique-puzzle generator (the embedded default data set, so the demo
//! and the tests need no download).
//!
//! Grids are 81 cells in row-major order, 0 = blank, 1..=9 = digit. The solver is a bitmask
//! backtracking search that always branches on the cell with the fewest candidates; it counts
//! solutions up to a limit (2 is enough to prove uniqueness) and the number of guesses it made,
//! which serves as a difficulty rating (like tdoku's backtrack count in Sudoku-Extreme).

use rand::Rng;
use rand::seq::SliceRandom;

pub type Grid = [u8; 81];

#[inline]
fn box_of(cell: usize) -> usize {
    (cell / 27) * 3 + (cell % 9) / 3
}

/// Search state: which digits each row, column and box already uses (bit d = digit d).
struct State {
    cells: Grid,
    rows: [u16; 9],
    cols: [u16; 9],
    boxes: [u16; 9],
}

impl State {
    fn new(grid: &Grid) -> Option<State> {
        let mut s = State { cells: [0; 81], rows: [0; 9], cols: [0; 9], boxes: [0; 9] };
        for (i, &d) in grid.iter().enumerate() {
            if d == 0 {
                continue;
            }
            if d > 9 || s.used(i) & (1 << d) != 0 {
                return None; // a given contradicts another given
            }
            s.place(i, d);
        }
        Some(s)
    }
    #[inline]
    fn used(&self, i: usize) -> u16 {
        self.rows[i / 9] | self.cols[i % 9] | self.boxes[box_of(i)]
    }
    #[inline]
    fn place(&mut self, i: usize, d: u8) {
        self.cells[i] = d;
        self.rows[i / 9] |= 1 << d;
        self.cols[i % 9] |= 1 << d;
        self.boxes[box_of(i)] |= 1 << d;
    }
    #[inline]
    fn clear(&mut self, i: usize, d: u8) {
        self.cells[i] = 0;
        self.rows[i / 9] &= !(1 << d);
        self.cols[i % 9] &= !(1 << d);
        self.boxes[box_of(i)] &= !(1 << d);
    }
    /// The blank cell with the fewest candidates, with its candidate mask; None when full.
    fn most_constrained(&self) -> Option<(usize, u16)> {
        let mut best: Option<(usize, u16)> = None;
        let mut best_n = 10;
        for i in 0..81 {
            if self.cells[i] != 0 {
                continue;
            }
            let cand = !self.used(i) & 0b11_1111_1110;
            let n = cand.count_ones();
            if n < best_n {
                best = Some((i, cand));
                best_n = n;
                if n <= 1 {
                    break;
                }
            }
        }
        best
    }
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Solved {
    /// Number of solutions found, stopping at the limit.
    pub count: usize,
    /// The first solution found.
    pub solution: Option<Grid>,
    /// Branches that had to be tried beyond the first candidate (a difficulty measure).
    pub guesses: u64,
}

/// Counts the solutions of `grid` up to `limit`, trying candidates in `order` (1..=9 by default).
pub fn solve_with(grid: &Grid, limit: usize, order: Option<&[u8; 9]>) -> Solved {
    let mut out = Solved { count: 0, solution: None, guesses: 0 };
    let Some(mut s) = State::new(grid) else { return out };
    let order = order.copied().unwrap_or([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    search(&mut s, limit, &order, &mut out);
    out
}

/// Counts the solutions of `grid` (up to `limit`).
pub fn solve(grid: &Grid, limit: usize) -> Solved {
    solve_with(grid, limit, None)
}

fn search(s: &mut State, limit: usize, order: &[u8; 9], out: &mut Solved) {
    let Some((cell, cand)) = s.most_constrained() else {
        out.count += 1;
        if out.solution.is_none() {
            out.solution = Some(s.cells);
        }
        return;
    };
    let mut tried = 0;
    for &d in order {
        if cand & (1 << d) == 0 {
            continue;
        }
        if tried > 0 {
            out.guesses += 1;
        }
        tried += 1;
        s.place(cell, d);
        search(s, limit, order, out);
        s.clear(cell, d);
        if out.count >= limit {
            return;
        }
    }
}

/// Whether `grid` has a solution: Some(answer) where a search of at most `max_nodes` nodes
/// settles it, None where it does not (a question of a user's puzzle, answered before the model
/// runs: a hostile puzzle must not keep it for minutes). Besides the fewest-candidates branching
/// of `search` it drops a branch as soon as a row, column or box has a digit left with no cell
/// to go (which plain branching finds only after searching the rest of the grid: minutes for a
/// puzzle built that way, a review found). `search` itself is kept as it is: its guess count
/// rates the generated puzzles.
pub fn has_solution(grid: &Grid, max_nodes: u64) -> Option<bool> {
    let Some(mut s) = State::new(grid) else { return Some(false) }; // givens that clash
    let mut nodes = 0;
    settle(&mut s, &mut nodes, max_nodes)
}

/// Whether every row, column and box still has a cell for each digit it lacks.
fn every_digit_has_a_place(s: &State) -> bool {
    let mut room = [[0u16; 9]; 3]; // digits some blank cell of each row, column, box may take
    for i in (0..81).filter(|&i| s.cells[i] == 0) {
        let cand = !s.used(i) & 0b11_1111_1110;
        room[0][i / 9] |= cand;
        room[1][i % 9] |= cand;
        room[2][box_of(i)] |= cand;
    }
    let used = [s.rows, s.cols, s.boxes];
    (0..3).all(|k| (0..9).all(|u| (used[k][u] | room[k][u]) & 0b11_1111_1110 == 0b11_1111_1110))
}

fn settle(s: &mut State, nodes: &mut u64, max_nodes: u64) -> Option<bool> {
    *nodes += 1;
    if *nodes > max_nodes {
        return None;
    }
    if !every_digit_has_a_place(s) {
        return Some(false);
    }
    let Some((cell, cand)) = s.most_constrained() else { return Some(true) };
    for d in (1..=9u8).filter(|d| cand & (1 << d) != 0) {
        s.place(cell, d);
        let found = settle(s, nodes, max_nodes);
        s.clear(cell, d);
        if found != Some(false) {
            return found;
        }
    }
    Some(false)
}

/// True when `grid` is a complete, valid Sudoku solution.
pub fn is_valid_solution(grid: &Grid) -> bool {
    grid.iter().all(|&d| (1..=9).contains(&d)) && State::new(grid).is_some()
}

/// True when `solution` is valid and agrees with every given of `puzzle`.
pub fn solves(puzzle: &Grid, solution: &Grid) -> bool {
    is_valid_solution(solution) && puzzle.iter().zip(solution).all(|(&p, &s)| p == 0 || p == s)
}

/// Rule violations of a (possibly partial) grid, as human-readable strings (for `trm solve`).
pub fn violations(grid: &Grid) -> Vec<String> {
    let mut v = Vec::new();
    let units: [(&str, fn(usize, usize) -> usize); 3] =
        [("row", |u, k| u * 9 + k), ("column", |u, k| k * 9 + u), ("box", |u, k| (u / 3) * 27 + (u % 3) * 3 + (k / 3) * 9 + k % 3)];
    for (name, cell) in units {
        for u in 0..9 {
            let mut seen = [0u8; 10];
            for k in 0..9 {
                let d = grid[cell(u, k)] as usize;
                if d <= 9 {
                    seen[d] += 1;
                }
            }
            for d in 1..=9 {
                if seen[d] > 1 {
                    v.push(format!("{name} {} has digit {d} {} times", u + 1, seen[d]));
                }
            }
        }
    }
    v
}

/// A random complete grid: a depth-first fill that tries the candidates of every cell in a fresh
/// random order. (One digit order for the whole search would give the same grid every time, up
/// to relabelling the digits: a model trained on such puzzles learns that one grid, not Sudoku.)
pub fn random_full_grid(rng: &mut impl Rng) -> Grid {
    fn fill(s: &mut State, rng: &mut dyn rand::RngCore) -> bool {
        let Some((cell, cand)) = s.most_constrained() else { return true };
        let mut digits: Vec<u8> = (1..=9).filter(|d| cand & (1 << d) != 0).collect();
        digits.shuffle(rng);
        for d in digits {
            s.place(cell, d);
            if fill(s, rng) {
                return true;
            }
            s.clear(cell, d);
        }
        false
    }
    let mut s = State::new(&[0; 81]).expect("the empty grid is consistent");
    assert!(fill(&mut s, rng), "the empty grid has solutions");
    s.cells
}

/// A generated puzzle with its unique solution.
#[derive(Debug, Clone)]
pub struct Generated {
    pub puzzle: Grid,
    pub solution: Grid,
    pub givens: usize,
    /// Guesses the solver needed (difficulty rating).
    pub guesses: u64,
}

/// Generates a puzzle with a unique solution: a random full grid, then clues removed in random
/// order while the solution stays unique, down to `target_givens` (or as low as uniqueness allows).
/// Fewer givens make harder puzzles; 17 is the proven minimum, ~30 is easy.
pub fn generate(rng: &mut impl Rng, target_givens: usize) -> Generated {
    let solution = random_full_grid(rng);
    let mut puzzle = solution;
    let mut cells: Vec<usize> = (0..81).collect();
    cells.shuffle(rng);
    let mut givens = 81;
    for &c in &cells {
        if givens <= target_givens {
            break;
        }
        let keep = puzzle[c];
        puzzle[c] = 0;
        if solve(&puzzle, 2).count == 1 {
            givens -= 1;
        } else {
            puzzle[c] = keep;
        }
    }
    let guesses = solve(&puzzle, 2).guesses;
    Generated { puzzle, solution, givens, guesses }
}

/// Parses an 81-character puzzle (`.` or `0` = blank). Errors say which character is wrong.
pub fn parse_grid(text: &str) -> Result<Grid, String> {
    let chars: Vec<char> = text.trim().chars().filter(|c| !c.is_whitespace()).collect();
    if chars.len() != 81 {
        return Err(format!("a Sudoku needs 81 cells, got {} (whitespace is not counted)", chars.len()));
    }
    let mut g = [0u8; 81];
    for (i, &c) in chars.iter().enumerate() {
        g[i] = match c {
            '.' | '0' | '_' => 0,
            '1'..='9' => c as u8 - b'0',
            _ => return Err(format!("cell {} (row {}, column {}) is '{c}', expected 1-9 or '.'", i + 1, i / 9 + 1, i % 9 + 1)),
        };
    }
    Ok(g)
}

/// Formats a grid as 81 characters, blanks as `.`.
pub fn format_grid(g: &Grid) -> String {
    g.iter().map(|&d| if d == 0 { '.' } else { (b'0' + d) as char }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puzzles built so that no 9 has a place in box 8 (a review's construction): plain
    /// fewest-candidates branching took up to 2 min 46 s (1.9 billion nodes) to find that out.
    #[test]
    fn has_solution_settles_hostile_puzzles_at_once() {
        let dead = [
            "......9.....7...........1.........9..3...9......3.7...924...8.....9.............1",
            "......9.....7...........1...6.....9..3...9......3.7...924...8.....9.......3.....1",
            "......9.....7...........1.........9..3..........3.7...924...8.....9.......3.....1",
        ];
        // Settled within 100 nodes (plain branching: up to 1.9 billion).
        for p in dead {
            assert_eq!(has_solution(&parse_grid(p).unwrap(), 100), Some(false), "{p}");
        }
        assert_eq!(has_solution(&parse_grid(Q).unwrap(), 1_000_000), Some(true));
        assert_eq!(has_solution(&[0; 81], 1_000_000), Some(true));
        // A search past its budget says so, rather than guessing.
        assert_eq!(has_solution(&[0; 81], 10), None);
        // Clashing givens have none.
        assert_eq!(has_solution(&parse_grid(&format!("11{}", ".".repeat(79))).unwrap(), 10), Some(false));
    }

    const Q: &str = ".47.5....6.9.3.4..53..........9..6.....3.6.82.....5.4.79...4..64.37......56.9....";
    const A: &str = "247659318689137425531482967874921653915346782362875149798514236423768591156293874";

    #[test]
    fn solves_a_sudoku_extreme_puzzle_uniquely() {
        let q = parse_grid(Q).unwrap();
        let r = solve(&q, 2);
        assert_eq!(r.count, 1);
        assert_eq!(format_grid(&r.solution.unwrap()), A);
        assert!(solves(&q, &parse_grid(A).unwrap()));
    }

    #[test]
    fn detects_multiple_solutions_and_contradictions() {
        assert_eq!(solve(&[0; 81], 2).count, 2);
        let mut bad = [0u8; 81];
        bad[0] = 5;
        bad[1] = 5;
        assert_eq!(solve(&bad, 2).count, 0);
        assert!(!violations(&bad).is_empty());
    }

    #[test]
    fn generated_puzzles_are_unique_and_consistent() {
        let mut rng = crate::util::rng::derive(7, &[]);
        for _ in 0..5 {
            let g = generate(&mut rng, 26);
            assert!(g.givens >= 26 && g.givens <= 40, "givens {}", g.givens);
            assert_eq!(solve(&g.puzzle, 2).count, 1);
            assert!(solves(&g.puzzle, &g.solution));
        }
    }

    /// The grid with its digits renamed in order of first appearance: equal for two grids that
    /// differ only by relabelling.
    fn canonical(g: &Grid) -> Grid {
        let mut name = [0u8; 10];
        let mut next = 1;
        g.map(|d| {
            if name[d as usize] == 0 {
                name[d as usize] = next;
                next += 1;
            }
            name[d as usize]
        })
    }

    #[test]
    fn generated_solutions_are_different_grids_not_relabellings_of_one() {
        let mut rng = crate::util::rng::derive(11, &[]);
        let grids: Vec<Grid> = (0..50).map(|_| random_full_grid(&mut rng)).collect();
        assert!(grids.iter().all(is_valid_solution));
        let distinct: std::collections::HashSet<Grid> = grids.iter().map(canonical).collect();
        assert_eq!(distinct.len(), grids.len(), "some random grids are relabellings of each other");
        // Not only the first rows: the bottom-right boxes vary too.
        let corners: std::collections::HashSet<Vec<u8>> = grids.iter().map(|g| canonical(g)[60..].to_vec()).collect();
        assert!(corners.len() > 40, "{} distinct bottom thirds in 50 grids", corners.len());
    }

    #[test]
    fn parse_errors_name_the_cell() {
        assert!(parse_grid("123").unwrap_err().contains("81 cells"));
        let mut s = Q.to_string();
        s.replace_range(10..11, "x");
        assert!(parse_grid(&s).unwrap_err().contains("cell 11"));
    }
}
