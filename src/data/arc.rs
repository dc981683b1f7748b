//! ARC builder (`trm data arc`), following the reference `build_arc_dataset.py` (TRM version):
//!
//! Every random draw comes from one numpy legacy stream (`util::np_random`, `np.random.seed(seed)`)
//! in the reference's order, so the arrays, `identifiers.json` and `test_puzzles.json` are
//! byte-identical to the reference builder's on the same files and seed (tests/arc_reference.rs),
//! and published ARC checkpoints pair with trm-built data.
//!
//! 1. Each subset's tasks are shuffled, then augmented (2.), subset after subset. A task's
//!    demonstration pairs always go to the train split; its test pairs go to the test split if
//!    the subset is a test set, else to train as well, in the order the task's JSON lists them.
//!    So the evaluation tasks' demonstrations are trained on, with their own identifiers.
//! 2. Each task becomes a group: the original plus up to `num_aug` augmentations (dihedral x
//!    colour permutation fixing 0), drawn in up to `5 * num_aug` trials; a trial whose augmented
//!    puzzle (the multiset of its pairs' grid hashes) was already seen is rejected.
//! 3. Identifiers 1.. in order of first appearance (train split first), 0 = blank. The same
//!    augmented puzzle has the same identifier in both splits.
//! 4. Each pair becomes two 900-token sequences on the 30x30 canvas (see `arc_task::to_canvas`).
//!    In the train split every example but one random one per puzzle is translated to a random
//!    offset (same for input and output); the test split is never translated. The offsets are
//!    drawn first, in order; the tokens are then made in parallel.
//!
//! Tokens for all augmentations are produced on the fly from (task, augmentation) and streamed to
//! disk, so building ARC-1 x 1000 (3.6M examples, 6.5 GB of tokens) needs little memory.

use super::arc_task::{self, Augmentation, Grid, MAX_SIDE, Task};
use super::format::{self, SplitData};
use super::npy::U8Stream;
use crate::util::np_random::LegacyRandom;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub const SEQ_LEN: usize = MAX_SIDE * MAX_SIDE;
pub const VOCAB: usize = 12;
/// Trials per wanted augmentation before giving up on a low-symmetry task (reference: 5).
const RETRIES_FACTOR: usize = 5;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Path prefix of the JSON files: `<prefix>_<subset>_challenges.json`.
    pub input_prefix: String,
    pub subsets: Vec<String>,
    /// Subsets whose test pairs form the test split.
    pub test_sets: Vec<String>,
    pub num_aug: usize,
    pub seed: u64,
    /// Random translation of training examples (reference: on).
    pub translate: bool,
}

/// One group: a task, where its test pairs go, and its member augmentations (first = identity).
struct Group {
    task: Task,
    test_to_test_split: bool,
    members: Vec<Augmentation>,
}

impl Group {
    /// The pairs this group contributes to `split` (0 = train, 1 = test), un-augmented, in the
    /// order the task's JSON lists them.
    fn pairs(&self, split: usize) -> Vec<&arc_task::Pair> {
        let t = &self.task;
        match (split, self.test_to_test_split) {
            (0, true) => t.train.iter().collect(),
            (0, false) if t.test_first => t.test.iter().chain(&t.train).collect(),
            (0, false) => t.train.iter().chain(&t.test).collect(),
            (_, true) => self.task.test.iter().collect(),
            (_, false) => Vec::new(),
        }
    }
}

/// Hash of an augmented puzzle: SHA-256 over the sorted (input hash, output hash) of all pairs,
/// so two augmentations that map the task's pair set onto itself count as duplicates.
fn puzzle_hash(task: &Task, aug: &Augmentation) -> [u8; 32] {
    let mut keys: Vec<[u8; 64]> = task
        .train
        .iter()
        .chain(&task.test)
        .map(|p| {
            let mut k = [0u8; 64];
            k[..32].copy_from_slice(&p.input.augment(aug).hash());
            k[32..].copy_from_slice(&p.output.augment(aug).hash());
            k
        })
        .collect();
    keys.sort_unstable();
    let mut h = Sha256::new();
    for k in &keys {
        h.update(k);
    }
    h.finalize().into()
}

/// Draws the distinct augmentations of one task: per trial `randint(0, 8)` for the dihedral
/// transform, then `permutation(1..=9)` for the colours.
fn plan_members(task: &Task, num_aug: usize, rng: &mut LegacyRandom) -> Vec<Augmentation> {
    let mut members = vec![Augmentation::IDENTITY];
    if num_aug == 0 {
        return members;
    }
    let mut seen = HashSet::from([puzzle_hash(task, &Augmentation::IDENTITY)]);
    for _ in 0..RETRIES_FACTOR * num_aug {
        let tid = rng.randint(0, 8) as u8;
        let mut perm = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        rng.shuffle(&mut perm);
        let mut colours = [0u8; 10];
        colours[1..].copy_from_slice(&perm);
        let aug = Augmentation { tid, colours };
        if seen.insert(puzzle_hash(task, &aug)) {
            members.push(aug);
            if members.len() > num_aug {
                break;
            }
        }
    }
    members
}

/// Counts of one written split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitStats {
    pub groups: usize,
    pub puzzles: usize,
    pub examples: usize,
}

/// What `build` produced.
#[derive(Debug, Clone)]
pub struct BuildSummary {
    pub identifiers: usize,
    pub train: SplitStats,
    pub test: SplitStats,
    pub groups_below_full: usize,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})").unwrap().progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

/// `trm data arc`: builds DIR/train, DIR/test, DIR/identifiers.json, DIR/test_puzzles.json.
pub fn build(out: &Path, opt: &BuildOptions) -> Result<BuildSummary> {
    for list in [&opt.subsets, &opt.test_sets] {
        if let Some((_, s)) = list.iter().enumerate().find(|(i, s)| list[..*i].contains(s)) {
            bail!("subset `{s}` is named twice: its tasks would be built twice");
        }
    }
    for t in &opt.test_sets {
        if !opt.subsets.contains(t) {
            bail!("test set `{t}` is not one of the subsets {:?}", opt.subsets);
        }
    }
    let mut subsets: Vec<Vec<(Task, bool)>> = Vec::new();
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new(); // task name -> (subset, index)
    for (si, subset) in opt.subsets.iter().enumerate() {
        let is_test = opt.test_sets.contains(subset);
        let tasks = arc_task::load_subset(&opt.input_prefix, subset)?;
        // A name in two subsets is one puzzle identifier and one entry of test_puzzles.json, as in
        // the reference, which builds both silently. The same task (ARC-AGI-2 lists most of ARC-1's
        // tasks again, their pairs in another order) is built twice, as there. Two different
        // tasks in two test sets are refused: test_puzzles.json would hold one, the test split
        // both. Elsewhere they share an embedding, with a warning.
        for (ti, t) in tasks.iter().enumerate() {
            let Some(&(sj, tj)) = seen.get(&t.name) else {
                seen.insert(t.name.clone(), (si, ti));
                continue;
            };
            let (first, first_is_test) = &subsets[sj][tj];
            if same_pairs(first, t) {
                continue;
            }
            let (other, files) =
                (&opt.subsets[sj], format!("{0}_{1}_challenges.json, {0}_{subset}_challenges.json", opt.input_prefix, opt.subsets[sj]));
            if *first_is_test && is_test {
                bail!(
                    "task `{}` is in the test sets `{other}` and `{subset}` with different pairs ({files}): test_puzzles.json \
                     would hold one of them and the test split both. Build such subsets into separate data sets",
                    t.name
                );
            }
            eprintln!(
                "warning: task `{}` is in subsets `{other}` and `{subset}` with different pairs ({files}); as in the reference, the \
                 two share one puzzle identifier",
                t.name
            );
        }
        subsets.push(tasks.into_iter().map(|t| (t, is_test)).collect());
    }
    build_subsets(out, subsets, vec!["<blank>".to_string()], opt)
}

/// The two tasks hold the same pairs, in whatever order.
fn same_pairs(a: &Task, b: &Task) -> bool {
    let key = |pairs: &[arc_task::Pair]| {
        let mut k: Vec<([u8; 32], [u8; 32])> = pairs.iter().map(|p| (p.input.hash(), p.output.hash())).collect();
        k.sort_unstable();
        k
    };
    key(&a.train) == key(&b.train) && key(&a.test) == key(&b.test)
}

/// Builds the data set from tasks in memory: `(task, its test pairs go to the test split)`, as
/// one subset. Identifiers continue after `names` (first entry: the blank identifier), so a data
/// set for new tasks can extend a trained model's identifier map (`trm adapt`); names already
/// there keep their identifier.
pub fn build_tasks(out: &Path, loaded: Vec<(Task, bool)>, names: Vec<String>, opt: &BuildOptions) -> Result<BuildSummary> {
    build_subsets(out, vec![loaded], names, opt)
}

fn build_subsets(out: &Path, subsets: Vec<Vec<(Task, bool)>>, mut names: Vec<String>, opt: &BuildOptions) -> Result<BuildSummary> {
    for (t, is_test) in subsets.iter().flatten() {
        // Dropping such a task silently would change what is trained or scored.
        anyhow::ensure!(!t.train.is_empty(), "task {}: no train pairs, so its puzzle embedding would never be trained", t.name);
        anyhow::ensure!(!*is_test || !t.test.is_empty(), "task {}: no test pairs to evaluate", t.name);
    }
    // The most examples a split can get (every augmentation found), against the format's int32
    // offsets, before the augmentations are drawn.
    let pairs: usize = subsets.iter().flatten().map(|(t, _)| t.train.len() + t.test.len()).sum();
    if pairs.checked_mul(opt.num_aug + 1).is_none_or(|n| n > i32::MAX as usize) {
        bail!(
            "{pairs} pairs x (1 + --num-aug {}) examples may pass the {} examples the data format's int32 offsets hold: lower --num-aug",
            opt.num_aug,
            i32::MAX
        );
    }
    let seed = u32::try_from(opt.seed).context("--seed: the reference's numpy stream takes a seed in [0, 2^32)")?;
    let mut rng = LegacyRandom::new(seed);
    // 1-2. Shuffle each subset, then augment its tasks, in the reference's order (one stream).
    let pb = bar(subsets.iter().map(Vec::len).sum::<usize>() as u64, "augmenting");
    let mut groups: Vec<Group> = Vec::new();
    for mut tasks in subsets {
        rng.shuffle(&mut tasks);
        for (task, test_to_test_split) in tasks {
            let members = plan_members(&task, opt.num_aug, &mut rng);
            pb.inc(1);
            groups.push(Group { task, test_to_test_split, members });
        }
    }
    pb.finish();
    // The test puzzles, in processing order, as the reference's dict: a name listed again keeps
    // its first place and takes the later task.
    let mut test_puzzles: Vec<(&str, arc_task::TaskJson)> = Vec::new();
    for g in groups.iter().filter(|g| g.test_to_test_split) {
        let entry = (g.task.name.as_str(), arc_task::TaskJson(&g.task));
        match test_puzzles.iter().position(|(n, _)| *n == entry.0) {
            Some(i) => test_puzzles[i] = entry,
            None => test_puzzles.push(entry),
        }
    }
    let groups_below_full = groups.iter().filter(|g| g.members.len() < opt.num_aug + 1).count();

    // 3. Identifiers in order of first appearance, train split first.
    let mut ids: HashMap<String, i32> = names.iter().enumerate().skip(1).map(|(i, n)| (n.clone(), i as i32)).collect();
    let mut group_ids: Vec<Vec<i32>> = vec![Vec::new(); groups.len()];
    for split in 0..2 {
        for (gi, g) in groups.iter().enumerate() {
            if g.pairs(split).is_empty() || !group_ids[gi].is_empty() {
                continue;
            }
            group_ids[gi] = g
                .members
                .iter()
                .map(|aug| {
                    let name = aug.name(&g.task.name);
                    *ids.entry(name.clone()).or_insert_with(|| {
                        names.push(name);
                        (names.len() - 1) as i32
                    })
                })
                .collect();
        }
    }

    // 4. Serialise both splits (the test split's draws come last and move nothing: skipped).
    let building = format::Building::start(out)?;
    let offsets = draw_offsets(&groups, &mut rng, opt.translate);
    let mut stats = [SplitStats { groups: 0, puzzles: 0, examples: 0 }; 2];
    for (split, name) in ["train", "test"].iter().enumerate() {
        stats[split] = write_split(&out.join(name), &groups, &group_ids, split, &offsets, names.len())?;
    }
    format::write_identifiers(out, &names)?;
    crate::util::pyjson::write(&out.join("test_puzzles.json"), &crate::util::pyjson::Ordered(test_puzzles))?;
    building.finish()?;
    Ok(BuildSummary { identifiers: names.len(), train: stats[0], test: stats[1], groups_below_full })
}

/// The canvas offset of every train-split example, per group, drawn in the reference's order:
/// per puzzle `randint(0, examples)` picks the one left in place, then every other example draws
/// its row and column offset (`randint(0, 30 - max side + 1)`, input and output together).
fn draw_offsets(groups: &[Group], rng: &mut LegacyRandom, translate: bool) -> Vec<Vec<[u8; 2]>> {
    groups
        .iter()
        .map(|g| {
            let pairs = g.pairs(0);
            let mut offsets = Vec::with_capacity(g.members.len() * pairs.len());
            for aug in g.members.iter().filter(|_| !pairs.is_empty()) {
                let keep_in_place = rng.randint(0, pairs.len() as i64) as usize;
                for (pi, p) in pairs.iter().enumerate() {
                    let mut at = [0u8; 2];
                    if translate && pi != keep_in_place {
                        let (ha, wa) = super::dihedral::out_shape(aug.tid, p.input.h, p.input.w);
                        let (hb, wb) = super::dihedral::out_shape(aug.tid, p.output.h, p.output.w);
                        at[0] = rng.randint(0, (MAX_SIDE - ha.max(hb) + 1) as i64) as u8;
                        at[1] = rng.randint(0, (MAX_SIDE - wa.max(wb) + 1) as i64) as u8;
                    }
                    offsets.push(at);
                }
            }
            offsets
        })
        .collect()
}

/// Tokens of one group for one split: all members' examples, at their offsets in the train split.
fn serialise_group(g: &Group, split: usize, offsets: &[[u8; 2]]) -> (Vec<u8>, Vec<u8>) {
    let pairs = g.pairs(split);
    let n = g.members.len() * pairs.len();
    let (mut inputs, mut labels) = (vec![0u8; n * SEQ_LEN], vec![0u8; n * SEQ_LEN]);
    let mut k = 0;
    for aug in &g.members {
        for p in &pairs {
            let (a, b): (Grid, Grid) = (p.input.augment(aug), p.output.augment(aug));
            let [pr, pc] = if split == 0 { offsets[k].map(usize::from) } else { [0, 0] };
            arc_task::to_canvas(&a, pr, pc, &mut inputs[k * SEQ_LEN..(k + 1) * SEQ_LEN]);
            arc_task::to_canvas(&b, pr, pc, &mut labels[k * SEQ_LEN..(k + 1) * SEQ_LEN]);
            k += 1;
        }
    }
    (inputs, labels)
}

fn write_split(
    dir: &Path,
    groups: &[Group],
    group_ids: &[Vec<i32>],
    split: usize,
    offsets: &[Vec<[u8; 2]>],
    num_ids: usize,
) -> Result<SplitStats> {
    // Index arrays first (small), so the token files can be streamed with a known shape.
    let mut index = SplitData::new(SEQ_LEN);
    let mut members: Vec<usize> = Vec::new();
    let mut examples = 0usize;
    for (gi, g) in groups.iter().enumerate() {
        let np = g.pairs(split).len();
        if np == 0 {
            continue;
        }
        for &id in &group_ids[gi] {
            examples += np;
            anyhow::ensure!(
                examples <= i32::MAX as usize,
                "more than {} examples in a split: past the data format's int32 offsets",
                i32::MAX
            );
            index.puzzle_indices.push(examples as i32);
            index.puzzle_identifiers.push(id);
        }
        index.group_indices.push(index.puzzle_identifiers.len() as i32);
        members.push(gi);
    }
    let stats = SplitStats { groups: members.len(), puzzles: index.puzzle_identifiers.len(), examples };
    let mut inputs = U8Stream::create(&format::array_path(dir, "all", "inputs"), examples, SEQ_LEN)?;
    let mut labels = U8Stream::create(&format::array_path(dir, "all", "labels"), examples, SEQ_LEN)?;
    let pb = bar(examples as u64, if split == 0 { "train split" } else { "test split" });
    for chunk in members.chunks(8) {
        let bufs: Vec<(Vec<u8>, Vec<u8>)> = chunk.par_iter().map(|&gi| serialise_group(&groups[gi], split, &offsets[gi])).collect();
        for (i, l) in bufs {
            inputs.write(&i)?;
            labels.write(&l)?;
            pb.inc((i.len() / SEQ_LEN) as u64);
        }
    }
    pb.finish();
    inputs.finish()?;
    labels.finish()?;
    format::write_index_arrays(dir, &index)?;
    let meta = format::Metadata {
        pad_id: 0,
        ignore_label_id: Some(0),
        blank_identifier_id: 0,
        vocab_size: VOCAB,
        seq_len: SEQ_LEN,
        num_puzzle_identifiers: num_ids,
        total_groups: stats.groups,
        mean_puzzle_examples: examples as f64 / stats.puzzles.max(1) as f64,
        total_puzzles: Some(stats.puzzles),
        sets: vec!["all".into()],
    };
    crate::util::pyjson::write(&dir.join("dataset.json"), &meta)?;
    Ok(stats)
}

/// Reads `test_puzzles.json` back into tasks (for the evaluator).
pub fn read_test_puzzles(dir: &Path) -> Result<Vec<Task>> {
    let path = dir.join("test_puzzles.json");
    let v: serde_json::Value = crate::util::fs::read_json(&path)?;
    let obj = v.as_object().ok_or_else(|| anyhow::anyhow!("{}: expected an object of tasks", path.display()))?;
    let what = path.display().to_string();
    obj.iter().map(|(name, t)| arc_task::task_from_json(name, t, None, &what)).collect()
}
