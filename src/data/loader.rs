//! Batches for training and evaluation, sampled as the reference `puzzle_dataset.py` does, but
//! fully seeded (the reference draws examples within a puzzle from an unseeded global RNG):
//!
//! * **train**: per iteration (= `epochs_per_iter` epochs) a fresh stream seeded by
//!   `(seed, iteration)`. The group order is `epochs_per_iter` random permutations of all groups.
//!   Walking it, each group contributes one random member puzzle, whose examples (random order,
//!   without replacement) fill the global batch; a puzzle cut by the batch boundary loses the
//!   rest; the last incomplete batch is dropped. Rank `r` takes rows `[r*B, (r+1)*B)`.
//! * **test**: every example once, in file order, in global windows; the last window is padded.
//!
//! Batches are assembled on a background thread (`prefetch`) so the model never waits.

use super::format::{Split, SplitData};
use crate::util::rng;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use std::sync::Arc;
use std::sync::mpsc;

/// Label value that the losses ignore (the reference's `IGNORE_LABEL_ID`).
pub const IGNORE_LABEL: i32 = -100;

/// One per-rank batch, ready for the model. Padding rows have `inputs = pad`, all labels ignored,
/// and the blank puzzle identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Index of the set (data set part) within the split; the reference names it (`all`).
    pub set: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    /// `[batch_size * seq_len]`
    pub inputs: Vec<i32>,
    /// `[batch_size * seq_len]`, `IGNORE_LABEL` where not supervised
    pub labels: Vec<i32>,
    /// `[batch_size]`
    pub puzzle_identifiers: Vec<i32>,
    /// Real (non-padding) rows in the global batch.
    pub global_effective: usize,
}

impl Batch {
    /// Rows `rows` of this batch on their own (a micro-batch); `global_effective` stays the
    /// global batch's.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let s = self.seq_len;
        Batch {
            set: self.set,
            batch_size: rows.len(),
            seq_len: s,
            inputs: self.inputs[rows.start * s..rows.end * s].to_vec(),
            labels: self.labels[rows.start * s..rows.end * s].to_vec(),
            puzzle_identifiers: self.puzzle_identifiers[rows].to_vec(),
            global_effective: self.global_effective,
        }
    }
}

/// Where a training loader stands: iteration number (0-based) and batches already taken in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub iteration: u64,
    pub batch: u64,
}

/// Gathers the rows `examples` (with their puzzle indices) of `data` into a padded batch.
fn collate(split: &Split, set: usize, rows: &[(usize, usize)], batch_size: usize, global_effective: usize) -> Batch {
    let data = &split.sets[set].1;
    let meta = &split.metadata;
    let s = data.seq_len;
    let mut b = Batch {
        set,
        batch_size,
        seq_len: s,
        inputs: vec![meta.pad_id; batch_size * s],
        labels: vec![IGNORE_LABEL; batch_size * s],
        puzzle_identifiers: vec![meta.blank_identifier_id; batch_size],
        global_effective,
    };
    for (r, &(ex, puzzle)) in rows.iter().enumerate() {
        for (dst, &t) in b.inputs[r * s..(r + 1) * s].iter_mut().zip(data.example_input(ex)) {
            *dst = t as i32;
        }
        for (dst, &t) in b.labels[r * s..(r + 1) * s].iter_mut().zip(data.example_label(ex)) {
            *dst = if Some(t as i32) == meta.ignore_label_id { IGNORE_LABEL } else { t as i32 };
        }
        b.puzzle_identifiers[r] = data.puzzle_identifiers[puzzle];
    }
    b
}

/// Training sampler configuration.
#[derive(Debug, Clone)]
pub struct TrainSampler {
    pub split: Arc<Split>,
    pub global_batch: usize,
    pub rank: usize,
    pub world: usize,
    pub seed: u64,
    pub epochs_per_iter: usize,
    /// A recorded order to replay instead of sampling (`batch_order` in the config).
    pub recorded: Option<Arc<RecordedOrder>>,
}

/// A sampler's batches recorded elsewhere (the reference's, by bench/record_reference_order.py):
/// for each iteration, its global batches of `(example, puzzle)` rows of set 0.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedOrder {
    pub iterations: Vec<Vec<Vec<(usize, usize)>>>,
}

impl RecordedOrder {
    /// Reads an int `.npy` of shape `[iterations, batches, global_batch, 2]` (example index,
    /// puzzle index) and checks it against the split and the global batch.
    pub fn read(path: &std::path::Path, split: &Split, global_batch: usize) -> anyhow::Result<RecordedOrder> {
        let a = super::npy::read_i32(path)?;
        anyhow::ensure!(
            a.shape.len() == 4 && a.shape[2] == global_batch && a.shape[3] == 2,
            "{}: shape {:?}, expected [iterations, batches, {global_batch}, 2]",
            path.display(),
            a.shape
        );
        anyhow::ensure!(split.sets.len() == 1, "{}: a recorded order covers one set; the split has {}", path.display(), split.sets.len());
        let data = &split.sets[0].1;
        let (its, nb) = (a.shape[0], a.shape[1]);
        let mut iterations = Vec::with_capacity(its);
        for i in 0..its {
            let mut batches = Vec::with_capacity(nb);
            for b in 0..nb {
                let rows: Vec<(usize, usize)> = (0..global_batch)
                    .map(|r| {
                        let at = ((i * nb + b) * global_batch + r) * 2;
                        (a.data[at] as usize, a.data[at + 1] as usize)
                    })
                    .collect();
                for &(ex, p) in &rows {
                    anyhow::ensure!(
                        p < data.num_puzzles() && (data.puzzle_indices[p] as usize..data.puzzle_indices[p + 1] as usize).contains(&ex),
                        "{}: iteration {i} batch {b}: example {ex} is not in puzzle {p}",
                        path.display()
                    );
                }
                batches.push(rows);
            }
            iterations.push(batches);
        }
        Ok(RecordedOrder { iterations })
    }
}

impl TrainSampler {
    pub fn local_batch(&self) -> usize {
        self.global_batch / self.world
    }

    /// The global batches of one iteration of one set: `(example, puzzle)` rows, exactly
    /// `global_batch` each, drawn one batch at a time as they are asked for. Only the group order
    /// is held (`epochs_per_iter` × groups entries, as the reference holds it): an ARC iteration
    /// of 10,000 epochs has 40 million rows, which as a list would take gigabytes on every rank.
    pub fn plan(&self, iteration: u64, set: usize) -> PlanBatches {
        if let Some(rec) = &self.recorded {
            // The trainer checks that the recording covers every iteration of the run.
            let batches = rec.iterations.get(iteration as usize).cloned().unwrap_or_default();
            return PlanBatches { draw: None, recorded: batches.into_iter() };
        }
        let data: &SplitData = &self.split.sets[set].1;
        let mut rng = rng::derive(self.seed, &[10, iteration, set as u64]);
        let n_groups = data.num_groups();
        let mut order: Vec<usize> = Vec::with_capacity(n_groups * self.epochs_per_iter);
        for _ in 0..self.epochs_per_iter {
            let mut p: Vec<usize> = (0..n_groups).collect();
            p.shuffle(&mut rng);
            order.extend(p);
        }
        let draw = Draw { split: self.split.clone(), set, order: order.into_iter(), rng, global_batch: self.global_batch };
        PlanBatches { draw: Some(draw), recorded: Vec::new().into_iter() }
    }

    /// Whether an iteration holds at least one full global batch (in any set).
    pub fn has_batches(&self) -> bool {
        (0..self.split.sets.len()).any(|s| self.plan(0, s).next().is_some())
    }

    /// Batches of iteration `pos.iteration`, skipping the first `pos.batch` (resume).
    pub fn iteration(&self, pos: Position) -> impl Iterator<Item = Batch> + Send + 'static {
        let me = self.clone();
        let b = self.local_batch();
        (0..self.split.sets.len())
            .flat_map(move |set| me.plan(pos.iteration, set).map(move |rows| (set, rows)))
            .skip(pos.batch as usize)
            .map({
                let split = self.split.clone();
                let (rank, global) = (self.rank, self.global_batch);
                move |(set, rows)| collate(&split, set, &rows[rank * b..(rank + 1) * b], b, global)
            })
    }
}

/// The batches of `TrainSampler::plan`, in order.
pub struct PlanBatches {
    draw: Option<Draw>,
    recorded: std::vec::IntoIter<Vec<(usize, usize)>>,
}

/// The state of one iteration's draw: the group order left to walk and the stream.
struct Draw {
    split: Arc<Split>,
    set: usize,
    order: std::vec::IntoIter<usize>,
    rng: rand_chacha::ChaCha8Rng,
    global_batch: usize,
}

impl Iterator for PlanBatches {
    type Item = Vec<(usize, usize)>;

    /// Walking the group order, each group contributes one random member puzzle, whose examples
    /// (random order, without replacement) fill the global batch; a puzzle cut by the batch
    /// boundary loses the rest; the last incomplete batch is dropped.
    fn next(&mut self) -> Option<Self::Item> {
        let Some(d) = &mut self.draw else { return self.recorded.next() };
        let data: &SplitData = &d.split.sets[d.set].1;
        let mut cur: Vec<(usize, usize)> = Vec::with_capacity(d.global_batch);
        for g in d.order.by_ref() {
            let (g0, g1) = (data.group_indices[g] as usize, data.group_indices[g + 1] as usize);
            if g1 == g0 {
                continue;
            }
            let puzzle = d.rng.random_range(g0..g1);
            let (p0, p1) = (data.puzzle_indices[puzzle] as usize, data.puzzle_indices[puzzle + 1] as usize);
            let take = (p1 - p0).min(d.global_batch - cur.len());
            let all: Vec<usize> = (p0..p1).collect();
            cur.extend(all.choose_multiple(&mut d.rng, take).map(|&e| (e, puzzle)));
            if cur.len() == d.global_batch {
                return Some(cur);
            }
        }
        None // the incomplete last batch is dropped
    }
}

/// Evaluation batches: every example of every set once, in order, padded to the local batch.
pub fn test_batches(split: Arc<Split>, global_batch: usize, rank: usize, world: usize) -> impl Iterator<Item = Batch> + Send + 'static {
    let b = global_batch / world;
    (0..split.sets.len()).flat_map(move |set| {
        let split = split.clone();
        let data = &split.sets[set].1;
        // example -> puzzle, from the CSR offsets
        let mut owner = vec![0usize; data.num_examples()];
        for p in 0..data.num_puzzles() {
            for e in data.puzzle_indices[p] as usize..data.puzzle_indices[p + 1] as usize {
                owner[e] = p;
            }
        }
        let n = data.num_examples();
        (0..n.div_ceil(global_batch)).map(move |w| {
            let start = w * global_batch;
            let end = (start + global_batch).min(n);
            let lo = (start + rank * b).min(end);
            let hi = (start + (rank + 1) * b).min(end);
            let rows: Vec<(usize, usize)> = (lo..hi).map(|e| (e, owner[e])).collect();
            collate(&split, set, &rows, b, end - start)
        })
    })
}

/// Runs `iter` on a background thread, keeping up to `depth` items ready.
pub fn prefetch<T: Send + 'static>(iter: impl Iterator<Item = T> + Send + 'static, depth: usize) -> impl Iterator<Item = T> {
    let (tx, rx) = mpsc::sync_channel(depth.max(1));
    std::thread::Builder::new()
        .name("trm-loader".into())
        .spawn(move || {
            for item in iter {
                if tx.send(item).is_err() {
                    break; // consumer gone
                }
            }
        })
        .expect("cannot start the data loader thread");
    rx.into_iter()
}

/// Total optimiser steps as the reference computes them:
/// `int(epochs * total_groups * mean_puzzle_examples / global_batch)`.
pub fn total_steps(split: &Split, epochs: usize, global_batch: usize) -> u64 {
    total_steps_of(&split.metadata, epochs, global_batch)
}

/// `total_steps` from a split's metadata alone.
pub fn total_steps_of(m: &super::format::Metadata, epochs: usize, global_batch: usize) -> u64 {
    (epochs as f64 * m.total_groups as f64 * m.mean_puzzle_examples / global_batch as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::format::Metadata;

    fn toy_split() -> Arc<Split> {
        // 3 groups: group 0 has 2 puzzles of 3 examples, groups 1 and 2 one puzzle of 2 examples.
        let mut d = SplitData::new(2);
        let mut e = 0u8;
        for (g, puzzles) in [vec![3, 3], vec![2], vec![2]].iter().enumerate() {
            for (p, &n) in puzzles.iter().enumerate() {
                for _ in 0..n {
                    d.push_example(&[e, 1], &[0, e]);
                    e += 1;
                }
                d.end_puzzle((g * 10 + p + 1) as i32);
            }
            d.end_group();
        }
        let metadata = Metadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size: 100,
            seq_len: 2,
            num_puzzle_identifiers: 30,
            total_groups: 3,
            mean_puzzle_examples: 2.5,
            total_puzzles: Some(4),
            sets: vec!["all".into()],
        };
        Arc::new(Split { dir: ".".into(), metadata, sets: vec![("all".into(), d)] })
    }

    /// The sampler as it was before batches were drawn lazily: every batch of the iteration in
    /// one list. The lazy draw must give exactly these (exact resume and the recorded runs
    /// depend on it).
    fn eager_plan(s: &TrainSampler, iteration: u64, set: usize) -> Vec<Vec<(usize, usize)>> {
        let data: &SplitData = &s.split.sets[set].1;
        let mut r = rng::derive(s.seed, &[10, iteration, set as u64]);
        let n_groups = data.num_groups();
        let mut order: Vec<usize> = Vec::new();
        for _ in 0..s.epochs_per_iter {
            let mut p: Vec<usize> = (0..n_groups).collect();
            p.shuffle(&mut r);
            order.extend(p);
        }
        let mut batches = Vec::new();
        let mut cur: Vec<(usize, usize)> = Vec::new();
        for &g in &order {
            let (g0, g1) = (data.group_indices[g] as usize, data.group_indices[g + 1] as usize);
            if g1 == g0 {
                continue;
            }
            let puzzle = r.random_range(g0..g1);
            let (p0, p1) = (data.puzzle_indices[puzzle] as usize, data.puzzle_indices[puzzle + 1] as usize);
            let take = (p1 - p0).min(s.global_batch - cur.len());
            let all: Vec<usize> = (p0..p1).collect();
            cur.extend(all.choose_multiple(&mut r, take).map(|&e| (e, puzzle)));
            if cur.len() == s.global_batch {
                batches.push(std::mem::take(&mut cur));
            }
        }
        batches
    }

    #[test]
    fn lazy_batches_are_the_eager_lists_batches() {
        // A split with groups of 0..4 puzzles of 1..5 examples each, drawn at random.
        let mut r = rng::derive(99, &[]);
        let mut d = SplitData::new(1);
        let mut id = 1;
        for _ in 0..37 {
            for _ in 0..r.random_range(0..4) {
                for _ in 0..r.random_range(1..6) {
                    d.push_example(&[1], &[1]);
                }
                d.end_puzzle(id);
                id += 1;
            }
            d.end_group();
        }
        let mut split = (*toy_split()).clone();
        split.sets.push(("more".into(), d));
        let split = Arc::new(split);
        for (seed, global_batch, epochs) in [(0, 4, 3), (7, 5, 1), (11, 16, 6)] {
            let s = TrainSampler { split: split.clone(), global_batch, rank: 0, world: 1, seed, epochs_per_iter: epochs, recorded: None };
            for iteration in 0..3 {
                for set in 0..2 {
                    let lazy: Vec<_> = s.plan(iteration, set).collect();
                    assert!(!lazy.is_empty());
                    assert_eq!(lazy, eager_plan(&s, iteration, set), "seed {seed}, batch {global_batch}, iteration {iteration}, set {set}");
                }
            }
            assert!(s.has_batches());
        }
        let too_big = TrainSampler { split, global_batch: 10_000, rank: 0, world: 1, seed: 0, epochs_per_iter: 1, recorded: None };
        assert!(!too_big.has_batches());
    }

    #[test]
    fn train_batches_are_full_seeded_and_consistent() {
        let s = TrainSampler { split: toy_split(), global_batch: 4, rank: 0, world: 1, seed: 3, epochs_per_iter: 4, recorded: None };
        let a: Vec<Batch> = s.iteration(Position::default()).collect();
        let b: Vec<Batch> = s.iteration(Position::default()).collect();
        assert_eq!(a, b, "same seed, same batches");
        assert!(!a.is_empty());
        for batch in &a {
            assert_eq!(batch.inputs.len(), 8);
            for r in 0..4 {
                let ex = batch.inputs[r * 2];
                // label 0 (ignore id) became IGNORE_LABEL; label 1 is the example number
                assert_eq!(batch.labels[r * 2], IGNORE_LABEL);
                assert_eq!(batch.labels[r * 2 + 1], if ex == 0 { IGNORE_LABEL } else { ex });
                let id = batch.puzzle_identifiers[r];
                let expect = match ex {
                    0..=2 => 1,
                    3..=5 => 2,
                    6 | 7 => 11,
                    _ => 21,
                };
                assert_eq!(id, expect, "example {ex} carries its puzzle's identifier");
            }
        }
        // resume skips exactly the consumed batches
        let tail: Vec<Batch> = s.iteration(Position { iteration: 0, batch: 2 }).collect();
        assert_eq!(tail, a[2..].to_vec());
        // a different iteration draws a different order
        let c: Vec<Batch> = s.iteration(Position { iteration: 1, batch: 0 }).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn ranks_split_the_global_batch() {
        let split = toy_split();
        let whole = TrainSampler { split: split.clone(), global_batch: 4, rank: 0, world: 1, seed: 1, epochs_per_iter: 2, recorded: None };
        let r0 = TrainSampler { rank: 0, world: 2, ..whole.clone() };
        let r1 = TrainSampler { rank: 1, world: 2, ..whole.clone() };
        for ((w, a), b) in
            whole.iteration(Position::default()).zip(r0.iteration(Position::default())).zip(r1.iteration(Position::default()))
        {
            assert_eq!(&w.inputs[..4], &a.inputs[..]);
            assert_eq!(&w.inputs[4..], &b.inputs[..]);
        }
    }

    #[test]
    fn test_batches_cover_every_example_once_with_padding() {
        let split = toy_split();
        let batches: Vec<Batch> = test_batches(split, 4, 0, 1).collect();
        assert_eq!(batches.len(), 3); // 10 examples in windows of 4
        let seen: Vec<i32> = batches.iter().flat_map(|b| (0..b.batch_size).map(|r| b.inputs[r * 2]).collect::<Vec<_>>()).collect();
        assert_eq!(&seen[..10], &(0..10).collect::<Vec<i32>>()[..]);
        let last = &batches[2];
        assert_eq!(last.global_effective, 2);
        assert_eq!(last.puzzle_identifiers[2..], [0, 0]);
        assert!(last.labels[4..].iter().all(|&l| l == IGNORE_LABEL));
    }

    #[test]
    fn prefetch_preserves_order() {
        let v: Vec<u32> = prefetch(0..100u32, 3).collect();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
