//! ARC tasks in the Kaggle JSON format (`*_challenges.json` + `*_solutions.json`), grids, and
//! the augmentation naming scheme that lets the evaluator undo every augmentation:
//! `"<task>|||t<dihedral id>|||<colour map, 10 digits>"`, as the reference names them.

use super::dihedral;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

pub const MAX_SIDE: usize = 30;

/// A grid of colours 0..=9, row-major.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grid {
    pub h: usize,
    pub w: usize,
    pub cells: Vec<u8>,
}

impl Grid {
    /// Parses a JSON grid (list of equal-length rows of ints 0..9, 1..30 each way).
    pub fn from_json(v: &Value, what: &str) -> Result<Grid> {
        let rows = v.as_array().ok_or_else(|| anyhow!("{what}: grid is not a list of rows"))?;
        if rows.is_empty() || rows.len() > MAX_SIDE {
            bail!("{what}: grid has {} rows, expected 1..={MAX_SIDE}", rows.len());
        }
        let mut cells = Vec::new();
        let mut w = 0;
        for (r, row) in rows.iter().enumerate() {
            let row = row.as_array().ok_or_else(|| anyhow!("{what}: row {r} is not a list"))?;
            if r == 0 {
                w = row.len();
                if w == 0 || w > MAX_SIDE {
                    bail!("{what}: grid has {w} columns, expected 1..={MAX_SIDE}");
                }
            } else if row.len() != w {
                bail!("{what}: row {r} has {} cells, row 0 has {w} (grids must be rectangular)", row.len());
            }
            for (c, x) in row.iter().enumerate() {
                match x.as_u64() {
                    Some(k) if k <= 9 => cells.push(k as u8),
                    _ => bail!("{what}: cell ({r}, {c}) is {x}, expected a colour 0..9"),
                }
            }
        }
        Ok(Grid { h: rows.len(), w, cells })
    }
    pub fn to_json(&self) -> Value {
        Value::Array(self.cells.chunks(self.w).map(|r| Value::Array(r.iter().map(|&x| Value::from(x)).collect())).collect())
    }
    /// Applies a colour map then a dihedral transform (the reference's augmentation order).
    pub fn augment(&self, aug: &Augmentation) -> Grid {
        let mapped: Vec<u8> = self.cells.iter().map(|&c| aug.colours[c as usize]).collect();
        let (h, w) = dihedral::out_shape(aug.tid, self.h, self.w);
        Grid { h, w, cells: dihedral::transform(&mapped, self.h, self.w, aug.tid) }
    }
    /// Undoes `augment`: inverse dihedral transform, then inverse colour map.
    pub fn unaugment(&self, aug: &Augmentation) -> Grid {
        let inv = aug.inverse_colours();
        let t = dihedral::inverse(&self.cells, self.h, self.w, aug.tid);
        let (h, w) = dihedral::out_shape(dihedral::INVERSE[aug.tid as usize], self.h, self.w);
        Grid { h, w, cells: t.iter().map(|&c| inv[c as usize]).collect() }
    }
    /// SHA-256 of (one byte per dimension, then the cells), as the reference's grid hash.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([self.h as u8, self.w as u8]);
        h.update(&self.cells);
        h.finalize().into()
    }
}

/// One input/output pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub input: Grid,
    pub output: Grid,
}

/// A task: demonstration (`train`) pairs and `test` pairs (outputs from the solutions file).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
    /// The task's JSON object lists `test` before `train` (as the Kaggle files do). The
    /// reference keeps the file's order, in a puzzle's examples and in `test_puzzles.json`.
    pub test_first: bool,
}

/// A task as the reference writes it into `test_puzzles.json`: its lists in the file's order,
/// each pair `{"input": grid, "output": grid}` (serialise with `util::pyjson` for its bytes).
pub struct TaskJson<'a>(pub &'a Task);

impl serde::Serialize for TaskJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Pairs<'a>(&'a [Pair]);
        impl serde::Serialize for Pairs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|p| {
                    let rows = |g: &Grid| g.cells.chunks(g.w).map(|r| r.to_vec()).collect::<Vec<_>>();
                    let mut m = std::collections::BTreeMap::new(); // "input" < "output"
                    m.insert("input", rows(&p.input));
                    m.insert("output", rows(&p.output));
                    m
                }))
            }
        }
        let t = self.0;
        let mut m = s.serialize_map(Some(2))?;
        let lists = [("train", &t.train), ("test", &t.test)];
        let order = if t.test_first { [1, 0] } else { [0, 1] };
        for i in order {
            m.serialize_entry(lists[i].0, &Pairs(lists[i].1))?;
        }
        m.end()
    }
}

/// The order of a challenges file: task names as listed, and whether each lists `test` first.
struct FileOrder(Vec<(String, bool)>);

impl<'de> serde::Deserialize<'de> for FileOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};
        struct TestFirst(bool);
        impl<'de> serde::Deserialize<'de> for TestFirst {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = TestFirst;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a task object")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<TestFirst, A::Error> {
                        let (mut seen_train, mut test_first) = (false, false);
                        while let Some(k) = m.next_key::<String>()? {
                            m.next_value::<IgnoredAny>()?;
                            test_first |= k == "test" && !seen_train;
                            seen_train |= k == "train";
                        }
                        Ok(TestFirst(test_first))
                    }
                }
                d.deserialize_map(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tasks")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<FileOrder, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    let TestFirst(t) = m.next_value()?;
                    out.push((k, t));
                }
                Ok(FileOrder(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Task {
    /// The task as Kaggle-style JSON with the test outputs included (`test_puzzles.json`).
    pub fn to_json(&self) -> Value {
        let pairs = |ps: &[Pair]| {
            Value::Array(ps.iter().map(|p| serde_json::json!({"input": p.input.to_json(), "output": p.output.to_json()})).collect())
        };
        serde_json::json!({"train": pairs(&self.train), "test": pairs(&self.test)})
    }
}

/// Parses one task object `{"train": [{input, output}], "test": [{input[, output]}]}`.
pub fn task_from_json(name: &str, v: &Value, solutions: Option<(&Value, &str)>, what: &str) -> Result<Task> {
    let at = format!("{what}: task {name}");
    // `|||` separates a task's name from its augmentation in identifier names (`parse_name`).
    anyhow::ensure!(!name.contains("|||"), "{at}: a task name may not contain `|||` (it separates the augmentation in identifiers)");
    // Errors in a solution grid name the solutions file, not the challenges file.
    let sol_at = solutions.map(|(_, file)| format!("{file}: task {name}")).unwrap_or_default();
    let list =
        |key: &str| -> Result<&Vec<Value>> { v.get(key).and_then(Value::as_array).ok_or_else(|| anyhow!("{at}: missing `{key}` list")) };
    let mut train = Vec::new();
    for (i, p) in list("train")?.iter().enumerate() {
        let input = Grid::from_json(p.get("input").unwrap_or(&Value::Null), &format!("{at}: train pair {i}: input"))?;
        let output = Grid::from_json(p.get("output").unwrap_or(&Value::Null), &format!("{at}: train pair {i}: output"))?;
        train.push(Pair { input, output });
    }
    let tests = list("test")?;
    let sols: Option<&Vec<Value>> = match solutions {
        Some((s, _)) => {
            let s = s.as_array().ok_or_else(|| anyhow!("{sol_at}: solutions entry is not a list of grids"))?;
            if s.len() != tests.len() {
                bail!("{sol_at}: {} solution grids for {} test inputs", s.len(), tests.len());
            }
            Some(s)
        }
        None => None,
    };
    let mut test = Vec::new();
    for (i, p) in tests.iter().enumerate() {
        let input = Grid::from_json(p.get("input").unwrap_or(&Value::Null), &format!("{at}: test pair {i}: input"))?;
        let output = match (sols, p.get("output")) {
            (Some(s), _) => Grid::from_json(&s[i], &format!("{sol_at}: solution {i}"))?,
            (None, Some(o)) => Grid::from_json(o, &format!("{at}: test pair {i}: output"))?,
            // No solutions known: a dummy 1x1 output, as the reference does.
            (None, None) => Grid { h: 1, w: 1, cells: vec![0] },
        };
        test.push(Pair { input, output });
    }
    Ok(Task { name: name.to_string(), train, test, test_first: false })
}

/// Loads `<prefix>_<subset>_challenges.json` and, if present, `<prefix>_<subset>_solutions.json`.
/// Tasks come back in the file's order (the builder then shuffles them, as the reference).
pub fn load_subset(prefix: &str, subset: &str) -> Result<Vec<Task>> {
    let ch_path = format!("{prefix}_{subset}_challenges.json");
    let sol_path = format!("{prefix}_{subset}_solutions.json");
    let challenges: Value = crate::util::fs::read_json(Path::new(&ch_path))?;
    // serde_json's objects are sorted; the reference keeps the file's order (tasks, then each
    // task's lists), which decides the shuffle and the order of examples.
    let text = crate::util::fs::read_text_capped(Path::new(&ch_path), crate::util::fs::MAX_JSON_BYTES, "a JSON file")?;
    let FileOrder(order) = serde_json::from_str(&text).with_context(|| format!("{ch_path}: invalid JSON"))?;
    let solutions: Option<Value> = if Path::new(&sol_path).exists() {
        Some(crate::util::fs::read_json(Path::new(&sol_path))?)
    } else {
        eprintln!(
            "warning: {sol_path} not found: the test outputs of {subset}'s tasks are unknown, and are written as 1x1 \
             placeholder grids (as the reference does, for tasks whose answers are secret); an evaluation on this data \
             scores against the placeholders, so its accuracy means nothing"
        );
        None
    };
    let obj = challenges.as_object().with_context(|| format!("{ch_path}: expected an object of tasks"))?;
    let sols = solutions.as_ref().map(|s| s.as_object().with_context(|| format!("{sol_path}: expected an object of tasks"))).transpose()?;
    let mut tasks = Vec::with_capacity(obj.len());
    for (name, test_first) in &order {
        let v = &obj[name.as_str()];
        let sol = match sols {
            Some(s) => Some(s.get(name).with_context(|| format!("{sol_path}: no solutions for task {name}"))?),
            None => None,
        };
        let mut t = task_from_json(name, v, sol.map(|s| (s, sol_path.as_str())), &ch_path)?;
        t.test_first = *test_first;
        anyhow::ensure!(
            !t.train.is_empty() && !t.test.is_empty(),
            "{ch_path}: task {name} has {} train and {} test pairs; every task needs at least one of each",
            t.train.len(),
            t.test.len()
        );
        tasks.push(t);
    }
    if let Some(extra) = sols.and_then(|s| s.keys().find(|k| !obj.contains_key(*k))) {
        bail!("{sol_path}: task {extra} has solutions but is not in {ch_path}");
    }
    anyhow::ensure!(order.len() == obj.len(), "{ch_path}: a task name appears twice");
    Ok(tasks)
}

/// One augmentation: colour map (colour 0 fixed) then dihedral transform `tid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augmentation {
    pub tid: u8,
    pub colours: [u8; 10],
}

impl Augmentation {
    pub const IDENTITY: Augmentation = Augmentation { tid: 0, colours: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] };

    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
    pub fn inverse_colours(&self) -> [u8; 10] {
        let mut inv = [0u8; 10];
        for (c, &m) in self.colours.iter().enumerate() {
            inv[m as usize] = c as u8;
        }
        inv
    }
    /// The identifier name of task `task` under this augmentation (the original keeps its name).
    pub fn name(&self, task: &str) -> String {
        if self.is_identity() {
            return task.to_string();
        }
        let map: String = self.colours.iter().map(|&c| (b'0' + c) as char).collect();
        format!("{task}|||t{}|||{map}", self.tid)
    }
}

/// Splits an identifier name into (original task, augmentation). Names without `|||` are
/// un-augmented.
pub fn parse_name(name: &str) -> Result<(String, Augmentation)> {
    let parts: Vec<&str> = name.split("|||").collect();
    match parts.as_slice() {
        [task] => Ok((task.to_string(), Augmentation::IDENTITY)),
        [task, t, map] => {
            let tid: u8 = t
                .strip_prefix('t')
                .and_then(|x| x.parse().ok())
                .filter(|&x| x < 8)
                .ok_or_else(|| anyhow!("identifier `{name}`: bad transform `{t}`"))?;
            let bytes = map.as_bytes();
            let mut colours = [0u8; 10];
            let mut seen = [false; 10];
            if bytes.len() != 10 {
                bail!("identifier `{name}`: colour map `{map}` must have 10 digits");
            }
            for (i, &b) in bytes.iter().enumerate() {
                let c = b.wrapping_sub(b'0');
                if c > 9 || seen[c as usize] {
                    bail!("identifier `{name}`: colour map `{map}` is not a permutation of 0..9");
                }
                seen[c as usize] = true;
                colours[i] = c;
            }
            Ok((task.to_string(), Augmentation { tid, colours }))
        }
        _ => bail!("identifier `{name}`: expected `task` or `task|||tN|||map`"),
    }
}

// ---------------------------------------------------------------------------------------------
// 30x30 canvas serialisation. Tokens: 0 = PAD, 1 = EOS, 2..=11 = colours 0..9.

/// Places `g` at (pad_r, pad_c) on a 30x30 PAD canvas, colours + 2, with an EOS (1) row just
/// below the grid over its columns and an EOS column just right of it over its rows, where those
/// fit; the diagonal corner stays PAD. Writes 900 tokens into `out`.
pub fn to_canvas(g: &Grid, pad_r: usize, pad_c: usize, out: &mut [u8]) {
    debug_assert_eq!(out.len(), MAX_SIDE * MAX_SIDE);
    out.fill(0);
    for r in 0..g.h {
        for c in 0..g.w {
            out[(pad_r + r) * MAX_SIDE + pad_c + c] = g.cells[r * g.w + c] + 2;
        }
    }
    let (eos_r, eos_c) = (pad_r + g.h, pad_c + g.w);
    if eos_r < MAX_SIDE {
        out[eos_r * MAX_SIDE + pad_c..eos_r * MAX_SIDE + eos_c].fill(1);
    }
    if eos_c < MAX_SIDE {
        for r in pad_r..eos_r {
            out[r * MAX_SIDE + eos_c] = 1;
        }
    }
}

/// Reads a grid back from 900 tokens as the reference evaluator does: the largest top-left
/// rectangle of colour tokens, where each row may only shorten the width found so far (first
/// maximum wins). Returns None when the first cell is not a colour.
pub fn from_canvas(tokens: &[u8]) -> Option<Grid> {
    let is_colour = |t: u8| (2..=11).contains(&t);
    let (mut best_area, mut best) = (0usize, (0usize, 0usize));
    let mut num_c = MAX_SIDE;
    for r in 1..=MAX_SIDE {
        let row = &tokens[(r - 1) * MAX_SIDE..r * MAX_SIDE];
        if let Some(c) = row[..num_c].iter().position(|&t| !is_colour(t)) {
            num_c = c;
        }
        let area = r * num_c;
        if area > best_area {
            best_area = area;
            best = (r, num_c);
        }
    }
    if best_area == 0 {
        return None;
    }
    let (h, w) = best;
    let mut cells = Vec::with_capacity(h * w);
    for r in 0..h {
        cells.extend(tokens[r * MAX_SIDE..r * MAX_SIDE + w].iter().map(|&t| t - 2));
    }
    Some(Grid { h, w, cells })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_grid() -> impl Strategy<Value = Grid> {
        (1usize..=30, 1usize..=30)
            .prop_flat_map(|(h, w)| proptest::collection::vec(0u8..10, h * w).prop_map(move |cells| Grid { h, w, cells }))
    }

    fn arb_aug() -> impl Strategy<Value = Augmentation> {
        (
            0u8..8,
            any::<u64>().prop_map(|seed| {
                use rand::seq::SliceRandom;
                let mut p = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
                p.shuffle(&mut crate::util::rng::derive(seed, &[]));
                p
            }),
        )
            .prop_map(|(tid, p)| {
                let mut colours = [0u8; 10];
                colours[1..].copy_from_slice(&p);
                Augmentation { tid, colours }
            })
    }

    proptest! {
        #[test]
        fn augmentation_roundtrips_through_its_name_and_inverse(g in arb_grid(), aug in arb_aug()) {
            let a = g.augment(&aug);
            let (task, parsed) = parse_name(&aug.name("abc123")).unwrap();
            prop_assert_eq!(task, "abc123");
            prop_assert_eq!(parsed, aug);
            prop_assert_eq!(a.unaugment(&parsed), g.clone());
            // Colour 0 (black) is never remapped.
            prop_assert_eq!(g.cells.iter().filter(|&&c| c == 0).count(), a.cells.iter().filter(|&&c| c == 0).count());
        }

        #[test]
        fn canvas_roundtrip_at_origin(g in arb_grid()) {
            let mut buf = vec![0u8; 900];
            to_canvas(&g, 0, 0, &mut buf);
            prop_assert_eq!(from_canvas(&buf), Some(g));
        }
    }

    #[test]
    fn canvas_eos_border_rule() {
        let g = Grid { h: 2, w: 3, cells: vec![0, 1, 2, 3, 4, 5] };
        let mut buf = vec![0u8; 900];
        to_canvas(&g, 1, 2, &mut buf);
        let at = |r: usize, c: usize| buf[r * 30 + c];
        assert_eq!(at(1, 2), 2); // colour 0 -> token 2
        assert_eq!(at(2, 4), 7);
        assert_eq!((at(3, 2), at(3, 3), at(3, 4)), (1, 1, 1)); // EOS row below, over the grid's columns
        assert_eq!((at(1, 5), at(2, 5)), (1, 1)); // EOS column right, over the grid's rows
        assert_eq!(at(3, 5), 0); // corner stays PAD
        assert_eq!(at(0, 2), 0);
        // A 30x30 grid has no room for EOS.
        let full = Grid { h: 30, w: 30, cells: vec![3; 900] };
        to_canvas(&full, 0, 0, &mut buf);
        assert!(buf.iter().all(|&t| t == 5));
    }

    #[test]
    fn bad_json_names_task_and_cell() {
        let v: Value = serde_json::json!({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []});
        let e = format!("{:#}", task_from_json("t1", &v, None, "f.json").unwrap_err());
        assert!(e.contains("task t1") && e.contains("rectangular"), "{e}");
        let v: Value = serde_json::json!({"train": [], "test": [{"input": [[1]]}, {"input": [[2]]}]});
        let sols = serde_json::json!([[[1]]]);
        let e = format!("{:#}", task_from_json("t2", &v, Some((&sols, "s.json")), "f.json").unwrap_err());
        assert!(e.contains("s.json: task t2: 1 solution grids for 2 test inputs"), "{e}");
        let bad = serde_json::json!([[[1]], [[12]]]);
        let e = format!("{:#}", task_from_json("t2", &v, Some((&bad, "s.json")), "f.json").unwrap_err());
        assert!(e.contains("s.json: task t2: solution 1") && !e.contains("f.json"), "{e}");
        let v: Value = serde_json::json!({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []});
        let e = format!("{:#}", task_from_json("t3", &v, None, "f.json").unwrap_err());
        assert!(e.contains("cell (0, 1)"), "{e}");
        let v: Value = serde_json::json!({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]});
        let e = format!("{:#}", task_from_json("x|||t1|||0123456789", &v, None, "f.json").unwrap_err());
        assert!(e.contains("f.json: task x|||t1|||0123456789: a task name may not contain `|||`"), "{e}");
    }
}
