//! Maze-Hard builder (`trm data maze`), as the reference `build_maze_dataset.py`: a square grid of
//! characters `# SGo` (wall, open, start, goal, path) becomes tokens 1..=5 (0 = PAD); vocab 6,
//! one puzzle identifier. `--aug` adds the 8 dihedral transforms of each training maze as members
//! of its group (the reference README's command does not pass it).

use super::dihedral;
use super::format::{self, SplitData};
use anyhow::{Result, bail};
use std::path::Path;

pub const CHARSET: &[u8; 5] = b"# SGo";
pub const VOCAB: usize = 6;
/// The token of a path cell `o` (in answers; a question has none).
pub const PATH: u8 = 5;

/// A maze as tokens (1..=5), side x side.
#[derive(Debug, Clone, PartialEq)]
pub struct Maze {
    pub side: usize,
    pub question: Vec<u8>,
    pub answer: Vec<u8>,
}

/// Token of a maze character, or None.
pub fn token(c: u8) -> Option<u8> {
    CHARSET.iter().position(|&x| x == c).map(|i| i as u8 + 1)
}

/// Character of a token (for printing).
pub fn char_of(t: u8) -> char {
    match t {
        1..=5 => CHARSET[t as usize - 1] as char,
        _ => '?',
    }
}

/// Parses one maze string of `side * side` characters; `what` names it in errors.
pub fn parse(text: &str, what: &str) -> Result<(usize, Vec<u8>)> {
    let chars: Vec<char> = text.chars().collect();
    let side = (chars.len() as f64).sqrt().round() as usize;
    if side == 0 || side * side != chars.len() {
        bail!("{what}: {} characters is not a square grid", chars.len());
    }
    let mut out = Vec::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        match u8::try_from(c).ok().and_then(token) {
            Some(t) => out.push(t),
            None => bail!("{what}: character {c:?} at row {}, column {} is not one of \"# SGo\"", i / side + 1, i % side + 1),
        }
    }
    Ok((side, out))
}

/// Checks that a maze has exactly one start `S` and one goal `G`.
pub fn check_endpoints(tokens: &[u8], what: &str) -> Result<()> {
    for (t, name) in [(3u8, "start S"), (4, "goal G")] {
        let n = tokens.iter().filter(|&&x| x == t).count();
        anyhow::ensure!(n == 1, "{what}: a maze needs exactly one {name}, found {n}");
    }
    Ok(())
}

/// Reads a maze CSV (`question`, `answer` columns); all mazes must share one side length.
pub fn read_csv(path: &Path) -> Result<Vec<Maze>> {
    let mut out: Vec<Maze> = Vec::new();
    for row in super::csv_rows::read(path)? {
        let at = format!("{}:{}", path.display(), row.line);
        let (side, question) = parse(&row.question, &format!("{at}: question"))?;
        let (side_a, answer) = parse(&row.answer, &format!("{at}: answer"))?;
        if side != side_a {
            bail!("{at}: question is {side}x{side} but answer is {side_a}x{side_a}");
        }
        check_endpoints(&question, &format!("{at}: question"))?;
        check_endpoints(&answer, &format!("{at}: answer"))?;
        anyhow::ensure!(!question.contains(&PATH), "{at}: the question already contains path cells 'o'");
        // A label that is no path through its own maze would be learned as one.
        if let Err(e) = check_path(side, &question, &answer) {
            bail!("{at}: the answer is not a path from S to G through the question's maze: {e}");
        }
        if let Some(first) = out.first().filter(|m| m.side != side) {
            bail!("{at}: maze is {side}x{side} but earlier mazes are {0}x{0}", first.side);
        }
        out.push(Maze { side, question, answer });
    }
    Ok(out)
}

/// Builds one split; with `aug`, each maze's group holds its 8 dihedral images.
pub fn build_split(mazes: &[Maze], aug: bool) -> SplitData {
    let side = mazes.first().map_or(0, |m| m.side);
    let mut split = SplitData::new(side * side);
    for m in mazes {
        for tid in 0..if aug { 8 } else { 1 } {
            let q = dihedral::transform(&m.question, side, side, tid);
            let a = dihedral::transform(&m.answer, side, side, tid);
            split.push_example(&q, &a);
            split.end_puzzle(0);
        }
        split.end_group();
    }
    split
}

/// `trm data maze`: CSV files in, reference layout out. Augmentation is deterministic (all 8
/// transforms), so the seed is unused but accepted for a uniform command line.
pub fn build(train_csv: &Path, test_csv: &Path, out: &Path, aug: bool) -> Result<(SplitData, SplitData)> {
    let train = read_csv(train_csv)?;
    let test = read_csv(test_csv)?;
    if train[0].side != test[0].side {
        bail!(
            "{} has {}x{} mazes but {} has {}x{}",
            train_csv.display(),
            train[0].side,
            train[0].side,
            test_csv.display(),
            test[0].side,
            test[0].side
        );
    }
    let building = format::Building::start(out)?;
    let tr = build_split(&train, aug);
    let te = build_split(&test, false);
    format::write_split(&out.join("train"), &tr, &tr.metadata(VOCAB, 1, tr.num_groups()))?;
    format::write_split(&out.join("test"), &te, &te.metadata(VOCAB, 1, te.num_groups()))?;
    format::write_identifiers(out, &["<blank>".to_string()])?;
    crate::util::fs::drop_stale_arc_tasks(out)?;
    building.finish()?;
    Ok((tr, te))
}

/// Checks a predicted maze answer: same walls/start/goal as the question, and the `o` cells with
/// S and G form one 4-connected path from S to G (each path cell has exactly two path neighbours).
pub fn check_path(side: usize, question: &[u8], answer: &[u8]) -> Result<usize, String> {
    let (s_tok, g_tok, o_tok, open) = (3u8, 4u8, 5u8, 2u8);
    for i in 0..side * side {
        let (q, a) = (question[i], answer[i]);
        let ok = if q == open { a == open || a == o_tok } else { a == q };
        if !ok {
            return Err(format!("cell ({}, {}) changed from {:?} to {:?}", i / side + 1, i % side + 1, char_of(q), char_of(a)));
        }
    }
    let on_path = |t: u8| t == s_tok || t == g_tok || t == o_tok;
    let start = answer.iter().position(|&t| t == s_tok).ok_or("no start S")?;
    let goal = answer.iter().position(|&t| t == g_tok).ok_or("no goal G")?;
    let neighbours = |i: usize| {
        let (r, c) = (i / side, i % side);
        let mut v = Vec::with_capacity(4);
        if r > 0 {
            v.push(i - side)
        }
        if r + 1 < side {
            v.push(i + side)
        }
        if c > 0 {
            v.push(i - 1)
        }
        if c + 1 < side {
            v.push(i + 1)
        }
        v
    };
    // Walk from S along path cells; a simple path never has a choice.
    let (mut prev, mut cur, mut len) = (usize::MAX, start, 0usize);
    while cur != goal {
        let next: Vec<usize> = neighbours(cur).into_iter().filter(|&n| n != prev && on_path(answer[n])).collect();
        if next.len() != 1 {
            return Err(format!("path branches or breaks at ({}, {})", cur / side + 1, cur % side + 1));
        }
        (prev, cur) = (cur, next[0]);
        len += 1;
        if len > side * side {
            return Err("path loops".into());
        }
    }
    let path_cells = answer.iter().filter(|&&t| t == o_tok).count();
    if path_cells + 1 != len {
        return Err(format!("{} path cells are not on the S-G path", path_cells + 1 - len.min(path_cells + 1)));
    }
    Ok(len)
}

/// Moves on a shortest S-to-G path through the question's open cells (None: G unreachable).
pub fn shortest_len(side: usize, question: &[u8]) -> Option<usize> {
    let start = question.iter().position(|&t| t == 3)?;
    let mut dist = vec![usize::MAX; side * side];
    let mut queue = std::collections::VecDeque::from([start]);
    dist[start] = 0;
    while let Some(i) = queue.pop_front() {
        if question[i] == 4 {
            return Some(dist[i]);
        }
        let (r, c) = (i / side, i % side);
        let near = [(r > 0).then(|| i - side), (r + 1 < side).then(|| i + side), (c > 0).then(|| i - 1), (c + 1 < side).then(|| i + 1)];
        for n in near.into_iter().flatten() {
            if question[n] != 1 && dist[n] == usize::MAX {
                dist[n] = dist[i] + 1;
                queue.push_back(n);
            }
        }
    }
    None
}

/// A maze answer that is a valid S-G path (`check_path`) and a shortest one: what Maze-Hard asks.
pub fn solves(side: usize, question: &[u8], answer: &[u8]) -> bool {
    matches!((check_path(side, question, answer), shortest_len(side, question)), (Ok(len), Some(best)) if len == best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_paths_only_solve() {
        // S at (0,0), G at (0,2) of a 3x3 with a wall at (0,1): shortest is 4 moves round the wall.
        let q = [3, 1, 4, 2, 2, 2, 2, 2, 2];
        assert_eq!(shortest_len(3, &q), Some(4));
        let short = [3, 1, 4, 5, 5, 5, 2, 2, 2];
        assert!(solves(3, &q, &short));
        let long = [3, 1, 4, 5, 2, 5, 5, 5, 5];
        assert!(check_path(3, &q, &long).is_ok() && !solves(3, &q, &long));
    }

    #[test]
    fn parse_rejects_bad_characters_and_shapes() {
        assert!(parse("# SG", "m").is_ok());
        assert!(format!("{:#}", parse("# S", "m").unwrap_err()).contains("not a square"));
        assert!(format!("{:#}", parse("# SX", "m").unwrap_err()).contains("row 2, column 2"));
    }

    #[test]
    fn path_check_accepts_a_path_and_rejects_a_break() {
        let q = parse("S  #  # G", "q").unwrap().1;
        let good = parse("So #o #oG", "a").unwrap().1;
        assert_eq!(check_path(3, &q, &good), Ok(4));
        let broken = parse("So #  #oG", "a").unwrap().1;
        assert!(check_path(3, &q, &broken).is_err());
        let branching = parse("Soo#o #oG", "a").unwrap().1;
        assert!(check_path(3, &q, &branching).is_err());
        let wall_moved = parse("So  o #oG", "a").unwrap().1;
        assert!(check_path(3, &q, &wall_moved).is_err());
    }
}
