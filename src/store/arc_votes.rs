//! The ARC vote pool: for every test input of every task, the distinct grids predicted for it
//! (in the original frame) with their votes and summed Q-halt probabilities. One evaluation fills
//! one (`eval::arc_vote`); a run that pools its evaluations (the reference's
//! `aggregated_voting=True`) merges each into its own and keeps it in its checkpoints, as
//! `arc_votes.jsonl.gz`, so that a resumed run votes as an uninterrupted one.
//!
//! The file is gzipped JSON lines: a header `{"format", "empty", "inputs"}`, then one line per
//! test input `{"task", "input", "candidates": [[grid, votes, q_sum], ...]}`, where `input` is the
//! hex SHA-256 of the input grid (`Grid::hash`) and `grid` is written `HxW:cells` (one digit a
//! cell, row-major). Lines are sorted (inputs by task and hash, candidates by grid hash), so the
//! same pool always makes the same file.

use crate::data::arc_task::{Grid, MAX_SIDE, from_canvas, parse_name};
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

/// The pool's file name in a checkpoint folder.
pub const FILE: &str = "arc_votes.jsonl.gz";
const FORMAT: &str = "trm-arc-votes-1";

/// One distinct predicted grid for one test input, with its votes.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub grid: Grid,
    pub votes: usize,
    /// Sum of sigmoid(q_halt) over the votes (mean = q_sum / votes).
    pub q_sum: f64,
}

impl Candidate {
    pub fn mean_q(&self) -> f64 {
        self.q_sum / self.votes as f64
    }
}

/// A test input: its task and the hash of its grid in the original frame.
pub type InputKey = (String, [u8; 32]);

/// Vote pool: test input -> candidates by grid hash.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Votes {
    pool: HashMap<InputKey, HashMap<[u8; 32], Candidate>>,
    /// Test inputs that were evaluated (with or without a usable answer).
    seen: HashSet<InputKey>,
    /// Predictions that decoded to no grid at all.
    pub empty: usize,
}

impl Votes {
    /// Adds the model's answer for one augmented test example: `name` is its identifier name
    /// (`task|||tN|||map` or `task`), `input`/`pred` are 900-token canvases, `q` = sigmoid(q_halt).
    pub fn add(&mut self, name: &str, input: &[u8], pred: &[u8], q: f64) -> Result<()> {
        // A NaN (diverged weights) would make the ranking meaningless and the pool unwritable.
        ensure!((0.0..=1.0).contains(&q), "test example of `{name}`: its Q-halt probability is {q}");
        let (task, aug) = parse_name(name)?;
        let shown = from_canvas(input).with_context(|| format!("test example of `{name}`: its input canvas holds no grid"))?;
        let key = (task, shown.unaugment(&aug).hash());
        self.seen.insert(key.clone());
        let Some(pred) = from_canvas(pred) else {
            self.empty += 1;
            return Ok(());
        };
        self.add_grid(key, pred.unaugment(&aug), q);
        Ok(())
    }

    /// Adds one vote for `grid` (already in the original frame) as the answer to `key`.
    pub fn add_grid(&mut self, key: InputKey, grid: Grid, q: f64) {
        self.seen.insert(key.clone());
        let c = self.pool.entry(key).or_default().entry(grid.hash()).or_insert(Candidate { grid, votes: 0, q_sum: 0.0 });
        c.votes += 1;
        c.q_sum += q;
    }

    /// Records that `key` was evaluated, though no vote came of it.
    pub fn mark_evaluated(&mut self, key: InputKey) {
        self.seen.insert(key);
    }

    /// Whether any test input was evaluated.
    pub fn evaluated_any(&self) -> bool {
        !self.seen.is_empty()
    }

    /// Every test input evaluated: its task and the hash of its grid.
    pub fn evaluated_inputs(&self) -> impl Iterator<Item = &InputKey> {
        self.seen.iter()
    }

    /// Whether the test input `input` of `task` was evaluated.
    pub fn evaluated(&self, task: &str, input: &Grid) -> bool {
        self.seen.contains(&(task.to_string(), input.hash()))
    }

    /// Adds every vote of `other` (another evaluation's) to this pool: votes and Q sums add, as
    /// if `other`'s predictions had been voted here.
    pub fn merge(&mut self, other: &Votes) {
        self.seen.extend(other.seen.iter().cloned());
        self.empty += other.empty;
        for (key, cands) in &other.pool {
            let mine = self.pool.entry(key.clone()).or_default();
            for (h, c) in cands {
                let m = mine.entry(*h).or_insert(Candidate { grid: c.grid.clone(), votes: 0, q_sum: 0.0 });
                m.votes += c.votes;
                m.q_sum += c.q_sum;
            }
        }
    }

    /// Candidates for one test input, best first: more votes, then higher mean q; the grid hash
    /// orders exact ties so the ranking never depends on the order votes arrived in.
    pub fn ranked(&self, task: &str, input: &Grid) -> Vec<&Candidate> {
        let Some(m) = self.pool.get(&(task.to_string(), input.hash())) else {
            return vec![];
        };
        let mut v: Vec<(&[u8; 32], &Candidate)> = m.iter().collect();
        v.sort_by(|(ha, a), (hb, b)| b.votes.cmp(&a.votes).then(b.mean_q().total_cmp(&a.mean_q())).then(ha.cmp(hb)));
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// Distinct candidates over all test inputs.
    pub fn candidates(&self) -> usize {
        self.pool.values().map(HashMap::len).sum()
    }

    /// Writes the pool to `path` (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut keys: Vec<&InputKey> = self.seen.iter().chain(self.pool.keys()).collect();
        keys.sort();
        keys.dedup();
        if let Some((c, key)) = self.pool.iter().flat_map(|(k, m)| m.values().map(move |c| (c, k))).find(|(c, _)| !c.q_sum.is_finite()) {
            bail!("the ARC vote pool holds a Q sum of {} for a test input of `{}`; not written", c.q_sum, key.0);
        }
        crate::util::fs::write_atomic_with(path, |w| {
            let mut z = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            let header = Header { format: FORMAT.into(), empty: self.empty, inputs: keys.len() };
            writeln!(z, "{}", serde_json::to_string(&header)?)?;
            for key in keys {
                let mut cands: Vec<(&[u8; 32], &Candidate)> = self.pool.get(key).map(|m| m.iter().collect()).unwrap_or_default();
                cands.sort_by_key(|(h, _)| **h);
                let line = Line {
                    task: key.0.clone(),
                    input: hex(&key.1),
                    candidates: cands.iter().map(|(_, c)| (grid_text(&c.grid), c.votes, c.q_sum)).collect(),
                };
                writeln!(z, "{}", serde_json::to_string(&line)?)?;
            }
            z.finish()?;
            Ok(())
        })
        .with_context(|| format!("cannot write the ARC vote pool to {}", path.display()))
    }

    /// Reads a pool `write` wrote; an error names the file and the line.
    pub fn read(path: &Path) -> Result<Votes> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut lines = std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines();
        let at = |n: usize| format!("{}, line {n}", path.display());
        let first = lines.next().ok_or_else(|| anyhow!("{}: empty", path.display()))?.with_context(|| at(1))?;
        let header: Header = serde_json::from_str(&first).with_context(|| at(1))?;
        ensure!(header.format == FORMAT, "{}: format `{}`, expected `{FORMAT}`", at(1), header.format);
        let mut v = Votes { empty: header.empty, ..Default::default() };
        let mut n = 1;
        for line in lines {
            n += 1;
            let line: Line = serde_json::from_str(&line.with_context(|| at(n))?).with_context(|| at(n))?;
            let key = (line.task, unhex(&line.input).with_context(|| at(n))?);
            ensure!(v.seen.insert(key.clone()), "{}: the test input {} of `{}` is listed twice", at(n), line.input, key.0);
            let mut cands = HashMap::new();
            for (g, votes, q_sum) in line.candidates {
                let grid = parse_grid(&g).with_context(|| at(n))?;
                ensure!(
                    votes >= 1 && q_sum.is_finite() && (0.0..=votes as f64).contains(&q_sum),
                    "{}: {g} has {votes} votes and a Q sum of {q_sum}",
                    at(n)
                );
                ensure!(cands.insert(grid.hash(), Candidate { grid, votes, q_sum }).is_none(), "{}: the grid {g} is listed twice", at(n));
            }
            if !cands.is_empty() {
                v.pool.insert(key, cands);
            }
        }
        ensure!(n - 1 == header.inputs, "{}: {} test inputs, its header says {} (a cut file?)", path.display(), n - 1, header.inputs);
        Ok(v)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    empty: usize,
    inputs: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    task: String,
    input: String,
    candidates: Vec<(String, usize, f64)>,
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; 32]> {
    ensure!(s.len() == 64 && s.is_ascii(), "`{s}` is not a 64-digit hex hash");
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| anyhow!("`{s}` is not a 64-digit hex hash"))?;
    }
    Ok(out)
}

fn grid_text(g: &Grid) -> String {
    let cells: String = g.cells.iter().map(|&c| (b'0' + c) as char).collect();
    format!("{}x{}:{cells}", g.h, g.w)
}

fn parse_grid(s: &str) -> Result<Grid> {
    let bad = || anyhow!("`{s}` is not a grid (HxW:cells)");
    let (shape, cells) = s.split_once(':').ok_or_else(bad)?;
    let (h, w) = shape.split_once('x').ok_or_else(bad)?;
    let (h, w): (usize, usize) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
    if !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) || cells.len() != h * w {
        bail!("`{s}`: a {h}x{w} grid of {} cells (sides 1..={MAX_SIDE})", cells.len());
    }
    let cells = cells.bytes().map(|c| if c.is_ascii_digit() { Ok(c - b'0') } else { Err(bad()) }).collect::<Result<Vec<u8>>>()?;
    Ok(Grid { h, w, cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(rows: &[&[u8]]) -> Grid {
        Grid { h: rows.len(), w: rows[0].len(), cells: rows.concat() }
    }

    fn sample() -> Votes {
        let mut v = Votes::default();
        let (i1, i2) = (g(&[&[1, 2]]), g(&[&[3], &[4]]));
        v.add_grid(("a".into(), i1.hash()), g(&[&[5]]), 0.25);
        v.add_grid(("a".into(), i1.hash()), g(&[&[5]]), 0.1 + 0.2);
        v.add_grid(("a".into(), i1.hash()), g(&[&[0, 9], &[9, 0]]), 0.7);
        v.add_grid(("b".into(), i2.hash()), g(&[&[7]]), 1.0 / 3.0);
        v.mark_evaluated(("c".into(), i1.hash()));
        v.empty = 4;
        v
    }

    #[test]
    fn a_written_pool_reads_back_the_same_to_the_bit() {
        let dir = tempfile::tempdir().unwrap();
        let v = sample();
        v.write(&dir.path().join(FILE)).unwrap();
        let back = Votes::read(&dir.path().join(FILE)).unwrap();
        assert_eq!(back, v);
        assert!(back.evaluated("c", &g(&[&[1, 2]])) && back.ranked("c", &g(&[&[1, 2]])).is_empty());
        // The same pool makes the same bytes, read back or built with its votes in another order.
        let bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        back.write(&dir.path().join("again.gz")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("again.gz")).unwrap(), bytes);
        let mut reversed = Votes::default();
        let (i1, i2) = (g(&[&[1, 2]]), g(&[&[3], &[4]]));
        reversed.mark_evaluated(("c".into(), i1.hash()));
        reversed.add_grid(("b".into(), i2.hash()), g(&[&[7]]), 1.0 / 3.0);
        reversed.add_grid(("a".into(), i1.hash()), g(&[&[0, 9], &[9, 0]]), 0.7);
        reversed.add_grid(("a".into(), i1.hash()), g(&[&[5]]), 0.1 + 0.2);
        reversed.add_grid(("a".into(), i1.hash()), g(&[&[5]]), 0.25);
        reversed.empty = 4;
        assert_eq!(reversed, v);
        reversed.write(&dir.path().join("reversed.gz")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("reversed.gz")).unwrap(), bytes);
    }

    #[test]
    fn a_q_that_is_not_a_probability_casts_no_vote_and_is_never_written() {
        let mut v = Votes::default();
        let canvas = |c: u8| {
            let mut x = vec![0u8; 900];
            x[0] = c;
            x
        };
        let e = v.add("t", &canvas(3), &canvas(4), f64::NAN).unwrap_err().to_string();
        assert!(e.contains("Q-halt probability is NaN"), "{e}");
        assert!(!v.evaluated_any());
        v.add("t", &canvas(3), &canvas(4), 1.0).unwrap();
        v.add_grid(("u".into(), g(&[&[1]]).hash()), g(&[&[2]]), f64::NAN);
        let dir = tempfile::tempdir().unwrap();
        let e = v.write(&dir.path().join(FILE)).unwrap_err().to_string();
        assert!(e.contains("Q sum of NaN") && e.contains("`u`"), "{e}");
        assert!(!dir.path().join(FILE).exists());
    }

    #[test]
    fn merging_two_evaluations_votes_as_one_evaluation_of_both() {
        let (mut one, mut a, mut b) = (Votes::default(), Votes::default(), Votes::default());
        let key = |t: &str| (t.to_string(), g(&[&[1]]).hash());
        for (target, t, grid, q) in [(0, "x", 2, 0.5), (0, "x", 3, 0.25), (1, "x", 2, 0.75), (1, "y", 4, 0.5), (1, "x", 3, 0.125)] {
            one.add_grid(key(t), g(&[&[grid]]), q);
            let part = if target == 0 { &mut a } else { &mut b };
            part.add_grid(key(t), g(&[&[grid]]), q);
        }
        b.empty = 2;
        a.merge(&b);
        assert_eq!(a.ranked("x", &g(&[&[1]])), one.ranked("x", &g(&[&[1]])));
        assert_eq!((a.ranked("x", &g(&[&[1]]))[0].votes, a.ranked("x", &g(&[&[1]]))[0].q_sum), (2, 1.25));
        assert_eq!((a.empty, a.candidates()), (2, 3));
        assert!(a.evaluated("y", &g(&[&[1]])));
    }

    /// A pool of paper scale at its worst (ARC-1's 419 test inputs, 1000 distinct 15x15 grids
    /// each: every view of every input predicted differently), written and read back; prints
    /// the file's size and the times. A measurement: `cargo test --release --lib
    /// large_pool -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn a_large_pool_writes_and_reads_back() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut v = Votes::default();
        for i in 0..419u32 {
            let key = (format!("task{}", i / 2), g(&[&[(i % 10) as u8, (i / 10 % 10) as u8]]).hash());
            for _ in 0..1000 {
                let cells: Vec<u8> = (0..225).map(|_| rng.random_range(0..10u8)).collect();
                v.add_grid(key.clone(), Grid { h: 15, w: 15, cells }, rng.random_range(0.0..1.0));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let t = std::time::Instant::now();
        v.write(&path).unwrap();
        let written = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let back = Votes::read(&path).unwrap();
        let read = t.elapsed().as_secs_f64();
        assert_eq!(back, v);
        let mib = std::fs::metadata(&path).unwrap().len() as f64 / (1 << 20) as f64;
        eprintln!("{} candidates: {mib:.1} MiB, written in {written:.2} s, read in {read:.2} s", v.candidates());
    }

    #[test]
    fn a_damaged_pool_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let gz = |text: &str| {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(text.as_bytes()).unwrap();
            std::fs::write(&path, z.finish().unwrap()).unwrap();
            format!("{:#}", Votes::read(&path).unwrap_err())
        };
        let head = "{\"format\":\"trm-arc-votes-1\",\"empty\":0,\"inputs\":1}\n";
        let h = "00".repeat(32);
        assert!(gz("{\"format\":\"other\",\"empty\":0,\"inputs\":0}\n").contains("line 1: format `other`"));
        assert!(gz(&format!("{head}{{\"task\":\"a\",\"input\":\"{h}\",\"candidates\":[[\"2x2:123\",1,0.5]]}}\n")).contains("line 2"));
        assert!(gz(&format!("{head}{{\"task\":\"a\",\"input\":\"zz\",\"candidates\":[]}}\n")).contains("hex hash"));
        assert!(gz(&format!("{head}{{\"task\":\"a\",\"input\":\"{h}\",\"candidates\":[[\"1x1:3\",1,2.0]]}}\n")).contains("Q sum"));
        assert!(gz(head).contains("0 test inputs, its header says 1"));
        std::fs::write(&path, b"not gzip").unwrap();
        assert!(format!("{:#}", Votes::read(&path).unwrap_err()).contains(FILE));
    }
}
