//! The reference on-disk data set layout, read and written byte-compatibly with the Python
//! builders (`dataset/build_*_dataset.py`) and reader (`puzzle_dataset.py`):
//!
//! ```text
//! DIR/identifiers.json                 ["<blank>", name1, ...]   index = puzzle identifier
//! DIR/test_puzzles.json                (ARC) original test tasks with solutions, for the evaluator
//! DIR/<split>/dataset.json             Metadata
//! DIR/<split>/all__inputs.npy          [examples, seq_len] uint8
//! DIR/<split>/all__labels.npy          [examples, seq_len] uint8
//! DIR/<split>/all__puzzle_identifiers.npy   [puzzles] int32
//! DIR/<split>/all__puzzle_indices.npy       [puzzles + 1] int32  (CSR: puzzle -> examples)
//! DIR/<split>/all__group_indices.npy        [groups + 1] int32   (CSR: group -> puzzles)
//! ```
//! A group is one original puzzle; its puzzles are the original and its augmented copies (each
//! with its own identifier); a puzzle owns one or more input/label examples.

use super::npy;
use super::tokens::Tokens;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `dataset.json`, field for field as the reference's `PuzzleDatasetMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub pad_id: i32,
    pub ignore_label_id: Option<i32>,
    pub blank_identifier_id: i32,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub num_puzzle_identifiers: usize,
    pub total_groups: usize,
    pub mean_puzzle_examples: f64,
    /// Absent in HRM-built data sets; we fill it from the arrays when missing.
    #[serde(default)]
    pub total_puzzles: Option<usize>,
    pub sets: Vec<String>,
}

/// One split (train or test) of one set: its token grids in memory (built) or mapped from the
/// files (read, `data::tokens`), its index arrays in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitData {
    pub seq_len: usize,
    pub inputs: Tokens,
    pub labels: Tokens,
    pub puzzle_identifiers: Vec<i32>,
    pub puzzle_indices: Vec<i32>,
    pub group_indices: Vec<i32>,
}

impl SplitData {
    pub fn new(seq_len: usize) -> Self {
        SplitData { seq_len, puzzle_indices: vec![0], group_indices: vec![0], ..Default::default() }
    }
    pub fn num_examples(&self) -> usize {
        self.inputs.len() / self.seq_len.max(1)
    }
    pub fn num_puzzles(&self) -> usize {
        self.puzzle_identifiers.len()
    }
    pub fn num_groups(&self) -> usize {
        self.group_indices.len() - 1
    }
    /// Appends one input/label example to the puzzle being built.
    pub fn push_example(&mut self, input: &[u8], label: &[u8]) {
        debug_assert_eq!(input.len(), self.seq_len);
        debug_assert_eq!(label.len(), self.seq_len);
        self.inputs.extend_from_slice(input);
        self.labels.extend_from_slice(label);
    }
    /// Closes the current puzzle (all examples pushed since the last call) with its identifier.
    pub fn end_puzzle(&mut self, identifier: i32) {
        self.puzzle_indices.push(self.num_examples() as i32);
        self.puzzle_identifiers.push(identifier);
    }
    /// Closes the current group (all puzzles closed since the last call).
    pub fn end_group(&mut self) {
        self.group_indices.push(self.num_puzzles() as i32);
    }
    pub fn example_input(&self, i: usize) -> &[u8] {
        &self.inputs[i * self.seq_len..(i + 1) * self.seq_len]
    }
    pub fn example_label(&self, i: usize) -> &[u8] {
        &self.labels[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Metadata for this split as the reference builders compute it.
    pub fn metadata(&self, vocab_size: usize, num_puzzle_identifiers: usize, total_puzzles: usize) -> Metadata {
        Metadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size,
            seq_len: self.seq_len,
            num_puzzle_identifiers,
            total_groups: self.num_groups(),
            mean_puzzle_examples: self.num_examples() as f64 / self.num_puzzles().max(1) as f64,
            total_puzzles: Some(total_puzzles),
            sets: vec!["all".into()],
        }
    }
}

pub fn array_path(split_dir: &Path, set: &str, field: &str) -> PathBuf {
    split_dir.join(format!("{set}__{field}.npy"))
}

/// Writes the arrays of one split plus its `dataset.json`.
pub fn write_split(split_dir: &Path, data: &SplitData, meta: &Metadata) -> Result<()> {
    let (n, s) = (data.num_examples(), data.seq_len);
    npy::write(&array_path(split_dir, "all", "inputs"), &[n, s], &data.inputs[..])?;
    npy::write(&array_path(split_dir, "all", "labels"), &[n, s], &data.labels[..])?;
    write_index_arrays(split_dir, data)?;
    crate::util::fs::write_json(&split_dir.join("dataset.json"), meta)
}

/// Writes the three int32 index arrays of a split.
pub fn write_index_arrays(split_dir: &Path, data: &SplitData) -> Result<()> {
    let ids = &data.puzzle_identifiers;
    npy::write(&array_path(split_dir, "all", "puzzle_identifiers"), &[ids.len()], ids)?;
    let pi = &data.puzzle_indices;
    npy::write(&array_path(split_dir, "all", "puzzle_indices"), &[pi.len()], pi)?;
    let gi = &data.group_indices;
    npy::write(&array_path(split_dir, "all", "group_indices"), &[gi.len()], gi)
}

/// The file a builder keeps in a data set folder while it writes (`trm data …`, and the data
/// that `trm demo` and `trm adapt` build): each array is written atomically, but a build
/// stopped between two of them (a kill, a full disk) would leave new arrays beside missing or
/// old ones. Every reader refuses a folder that holds it, so such a set is never trained on.
pub const BUILDING: &str = crate::util::fs::BUILDING;

/// A data set being built: the marker is written before the first array and removed by
/// `finish` after the last file. The builder holds an OS lock on it meanwhile (released however
/// the process ends), so a second build into the same folder is refused while the first runs,
/// and a reader can tell a build in progress from one that stopped.
pub struct Building {
    marker: PathBuf,
    _held: std::fs::File,
}

impl Building {
    pub fn start(out: &Path) -> Result<Self> {
        use std::io::Write;
        let marker = out.join(BUILDING);
        let mut file = crate::util::lock::open_lock_file(&marker)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{}: another trm process is building a data set in this folder now; wait for it to end, or choose another --out",
                out.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", marker.display())),
        }
        file.set_len(0)?;
        writeln!(
            file,
            "trm (pid {}) is building this data set; this file is removed when the build ends. If no build is running, it \
             did not finish: rebuild the data set with --force.",
            std::process::id()
        )?;
        file.sync_all()?;
        Ok(Self { marker, _held: file })
    }
    pub fn finish(self) -> Result<()> {
        std::fs::remove_file(&self.marker).with_context(|| format!("cannot remove {}", self.marker.display()))
    }
}

/// Refuses the split of a data set whose build did not finish (`BUILDING`).
fn check_built(split_dir: &Path) -> Result<()> {
    let marker = split_dir.parent().map(|d| d.join(BUILDING));
    if let Some(m) = marker.filter(|m| m.exists()) {
        let running = std::fs::File::open(&m).is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
        if running {
            bail!(
                "{}: a trm process is building this data set now; use it once the build has ended",
                split_dir.parent().unwrap_or(split_dir).display()
            );
        }
        bail!(
            "{}: this data set's build did not finish ({} is there: the builder was stopped or failed); rerun the command \
             that built it (`trm data …` with --force; `trm demo` and `trm adapt` rebuild their own)",
            split_dir.parent().unwrap_or(split_dir).display(),
            m.display()
        );
    }
    Ok(())
}

/// Writes `identifiers.json` (index = identifier; index 0 is the blank identifier).
pub fn write_identifiers(dir: &Path, names: &[String]) -> Result<()> {
    // As the reference's json.dump: one line, Python's separators.
    crate::util::pyjson::write(&dir.join("identifiers.json"), names)
}

/// Checks an identifier map as read from `path`: identifier 0 is the blank one (`<blank>`, which
/// pads batches), and no other name is given twice (a task named twice would be looked up as its
/// first row, whatever the second was trained as). `<blank>` may repeat: the reference's builder
/// names every identifier below its `puzzle_identifiers_start` so.
pub fn check_identifier_names(names: &[String], path: &Path) -> Result<()> {
    ensure!(
        names.first().is_some_and(|n| n == "<blank>"),
        "{}: identifier 0 must be the blank one, `<blank>` (it is {}): not an identifier map trm or the reference wrote",
        path.display(),
        names.first().map_or("missing".to_string(), |n| format!("`{n}`"))
    );
    let mut seen = std::collections::HashMap::with_capacity(names.len());
    // The reference's builder names every identifier below `puzzle_identifiers_start` `<blank>`.
    for (i, n) in names.iter().enumerate().filter(|(_, n)| *n != "<blank>") {
        if let Some(first) = seen.insert(n.as_str(), i) {
            bail!("{}: `{n}` names identifiers {first} and {i}; each name must be given once", path.display());
        }
    }
    Ok(())
}

/// Reads the data set `dir`'s `identifiers.json`: one name for each puzzle identifier its splits
/// have (`num_puzzle_identifiers` in their dataset.json), checked, so that a list from another
/// build of the data set is not read as this one's.
pub fn read_identifiers(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("identifiers.json");
    let names: Vec<String> =
        crate::util::fs::read_json(&path).with_context(|| format!("{}: a JSON list of identifier names", path.display()))?;
    for split in ["train", "test"] {
        let split_dir = dir.join(split);
        if split_dir.join("dataset.json").is_file() {
            let n = read_metadata(&split_dir)?.num_puzzle_identifiers;
            ensure!(
                names.len() == n,
                "{}: {} names for {n} puzzle identifiers (num_puzzle_identifiers in {}): the list belongs to another \
                 build of the data set? Rebuild it",
                path.display(),
                names.len(),
                split_dir.join("dataset.json").display()
            );
        }
    }
    check_identifier_names(&names, &path)?;
    Ok(names)
}

pub fn read_metadata(split_dir: &Path) -> Result<Metadata> {
    check_built(split_dir)?;
    let file = split_dir.join("dataset.json");
    let m: Metadata = crate::util::fs::read_json(&file)?;
    m.check().with_context(|| file.display().to_string())?;
    Ok(m)
}

/// The largest sequence a data set may declare: far above the field's (ARC's 900), small enough
/// that every size computed from it stays in range.
pub const MAX_SEQ_LEN: usize = 1 << 20;

impl Metadata {
    /// The fields' ranges: tokens are bytes on disk, identifiers are int32, and the padding
    /// token and blank identifier fill rows of every batch, so they must index the model's
    /// tables.
    fn check(&self) -> Result<()> {
        ensure!((1..=256).contains(&self.vocab_size), "vocab_size {} is outside 1..=256 (tokens are stored as bytes)", self.vocab_size);
        ensure!((1..=MAX_SEQ_LEN).contains(&self.seq_len), "seq_len {} is outside 1..={MAX_SEQ_LEN}", self.seq_len);
        ensure!(
            self.num_puzzle_identifiers <= i32::MAX as usize,
            "num_puzzle_identifiers {} does not fit the int32 identifiers",
            self.num_puzzle_identifiers
        );
        ensure!(
            (0..self.vocab_size as i64).contains(&(self.pad_id as i64)),
            "pad_id {} is outside the vocabulary 0..{}",
            self.pad_id,
            self.vocab_size
        );
        // A set named twice would be read, and trained on, twice.
        if let Some((i, set)) = self.sets.iter().enumerate().find(|(i, set)| self.sets[..*i].contains(set)) {
            bail!("sets names `{set}` twice (entries {} and {})", self.sets[..i].iter().position(|s| s == set).unwrap_or(0) + 1, i + 1);
        }
        let ids = self.num_puzzle_identifiers.max(1) as i64;
        ensure!(
            (0..ids).contains(&(self.blank_identifier_id as i64)),
            "blank_identifier_id {} is outside the identifiers 0..{ids}",
            self.blank_identifier_id
        );
        ensure!(
            self.mean_puzzle_examples.is_finite() && self.mean_puzzle_examples >= 0.0,
            "mean_puzzle_examples {} is not a non-negative number",
            self.mean_puzzle_examples
        );
        Ok(())
    }
}

/// A split read from disk: metadata plus one `SplitData` per set (the reference allows several).
#[derive(Debug, Clone)]
pub struct Split {
    pub dir: PathBuf,
    pub metadata: Metadata,
    pub sets: Vec<(String, SplitData)>,
}

impl Split {
    /// Examples over all of the split's sets.
    pub fn num_examples(&self) -> usize {
        self.sets.iter().map(|(_, d)| d.num_examples()).sum()
    }
}

/// Reads and validates a split folder (`DIR/train` or `DIR/test`). Every inconsistency is an error
/// naming the file, never a panic later in training.
pub fn read_split(split_dir: &Path) -> Result<Split> {
    let mut metadata = read_metadata(split_dir)?;
    ensure!(!metadata.sets.is_empty(), "{}: `sets` is empty", split_dir.join("dataset.json").display());
    let mut sets = Vec::new();
    for set in metadata.sets.clone() {
        let data = read_set(split_dir, &set, &metadata)?;
        sets.push((set, data));
    }
    if metadata.total_puzzles.is_none() {
        metadata.total_puzzles = Some(sets.iter().map(|(_, d)| d.num_puzzles()).sum());
    }
    Ok(Split { dir: split_dir.to_path_buf(), metadata, sets })
}

fn read_set(dir: &Path, set: &str, meta: &Metadata) -> Result<SplitData> {
    let s = meta.seq_len;
    let (in_shape, inputs) = npy::read_tokens(&array_path(dir, set, "inputs"))?;
    let (label_shape, labels) = npy::read_tokens(&array_path(dir, set, "labels"))?;
    for (shape, tokens, name) in [(&in_shape, &inputs, "inputs"), (&label_shape, &labels, "labels")] {
        let p = array_path(dir, set, name);
        ensure!(shape.len() == 2 && shape[1] == s, "{}: shape {shape:?}, expected [N, {s}] (seq_len in dataset.json)", p.display());
        if let Some(i) = tokens.position(|v| v as usize >= meta.vocab_size) {
            let v = tokens[i];
            bail!("{}: example {} position {} holds token {v} >= vocab_size {}", p.display(), i / s, i % s, meta.vocab_size);
        }
    }
    ensure!(in_shape == label_shape, "{}: inputs {in_shape:?} and labels {label_shape:?} differ in shape", dir.display());
    let ids = npy::read_i32(&array_path(dir, set, "puzzle_identifiers"))?.data;
    let pidx = npy::read_i32(&array_path(dir, set, "puzzle_indices"))?.data;
    let gidx = npy::read_i32(&array_path(dir, set, "group_indices"))?.data;
    let n = in_shape[0];
    check_csr(&array_path(dir, set, "puzzle_indices"), &pidx, ids.len(), n)?;
    check_csr(&array_path(dir, set, "group_indices"), &gidx, gidx.len().saturating_sub(1), ids.len())?;
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id < 0 || id as usize >= meta.num_puzzle_identifiers) {
        bail!(
            "{}: puzzle {i} has identifier {id}, outside 0..{} (num_puzzle_identifiers)",
            array_path(dir, set, "puzzle_identifiers").display(),
            meta.num_puzzle_identifiers
        );
    }
    Ok(SplitData { seq_len: s, inputs, labels, puzzle_identifiers: ids, puzzle_indices: pidx, group_indices: gidx })
}

/// CSR offsets: `count + 1` entries, starting at 0, non-decreasing, ending at `total`.
fn check_csr(path: &Path, idx: &[i32], count: usize, total: usize) -> Result<()> {
    let p = path.display();
    ensure!(idx.len() == count + 1, "{p}: {} entries, expected {}", idx.len(), count + 1);
    ensure!(idx[0] == 0, "{p}: must start at 0, starts at {}", idx[0]);
    if let Some(w) = idx.windows(2).position(|w| w[1] < w[0]) {
        bail!("{p}: decreasing at entry {}", w + 1);
    }
    ensure!(*idx.last().unwrap() as usize == total, "{p}: ends at {}, expected {total}", idx.last().unwrap());
    Ok(())
}

/// Reads `DIR/<split>` or fails with a message naming the folder.
pub fn read_dataset_split(dir: &Path, split: &str) -> Result<Split> {
    if !dir.exists() {
        bail!(
            "{}: no such data set folder (`trm data generate --out {}` makes a Sudoku one; `trm data sudoku|maze|arc` builds the real ones)",
            dir.display(),
            dir.display()
        );
    }
    let p = dir.join(split);
    read_split(&p).with_context(|| format!("cannot load the {split} split of data set {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One build per folder at a time; a reader tells a build in progress from one that stopped.
    #[test]
    fn a_build_in_progress_is_held_and_named() {
        let t = tempfile::tempdir().unwrap();
        let split = t.path().join("test");
        let first = Building::start(t.path()).unwrap();
        let e = format!("{:#}", Building::start(t.path()).err().expect("a second build is refused"));
        assert!(e.contains("another trm process is building a data set in this folder now"), "{e}");
        let e = format!("{:#}", read_metadata(&split).unwrap_err());
        assert!(e.contains("a trm process is building this data set now"), "{e}");
        drop(first); // as a kill: the lock goes, the marker stays
        let e = format!("{:#}", read_metadata(&split).unwrap_err());
        assert!(e.contains("this data set's build did not finish"), "{e}");
        let again = Building::start(t.path()).unwrap();
        again.finish().unwrap();
        assert!(!t.path().join(BUILDING).exists());
    }
}
