//! End-to-end checks of the data builders against the real data sets: ../shared/data when it is
//! beside the checkout, else the samples in tests/data (common::data).

mod common;

use common::{data, write};
use trm::data::{arc, arc_task, format, maze, npy, sudoku};

#[test]
#[cfg_attr(not(trm_full_data), ignore = "needs the full data sets: ../shared beside the checkout, or TRM_SHARED")]
fn maze_npy_from_the_reference_equals_our_build_from_csv() {
    // The reference's own .npy files of all 1000 mazes are only in the full data sets.
    let Some(d) = common::full_data("maze_npy_from_the_reference_equals_our_build_from_csv") else { return };
    let d = d.join("maze-30x30-hard-1k");
    let out = tempfile::tempdir().unwrap();
    maze::build(&d.join("train.csv.gz"), &d.join("test.csv.gz"), out.path(), false).unwrap();
    for split in ["train", "test"] {
        for field in ["inputs", "labels"] {
            let reference = npy::read_u8(&d.join("npy").join(split).join(format!("all__{field}.npy"))).unwrap();
            let ours = npy::read_u8(&format::array_path(&out.path().join(split), "all", field)).unwrap();
            assert_eq!(reference.shape, vec![1000, 900]);
            assert_eq!(ours, reference, "{split} {field}");
        }
        let ref_meta = format::read_metadata(&d.join("npy").join(split)).unwrap();
        let our_meta = format::read_metadata(&out.path().join(split)).unwrap();
        assert_eq!(our_meta, ref_meta, "{split} dataset.json");
    }
    // The whole folder loads through the validating reader.
    let s = format::read_dataset_split(out.path(), "train").unwrap();
    assert_eq!(s.sets[0].1.num_examples(), 1000);
}

#[test]
fn maze_augmentation_gives_eight_members_per_group() {
    let d = data().join("maze-30x30-hard-1k");
    let out = tempfile::tempdir().unwrap();
    let (tr, te) = maze::build(&d.join("train.csv.gz"), &d.join("test.csv.gz"), out.path(), true).unwrap();
    // 1000 mazes per split in the full data set, 64 in the sample.
    let n = tr.num_groups();
    assert!(n == 1000 || n == 64, "{n} mazes");
    assert_eq!(tr.num_puzzles(), 8 * n);
    assert_eq!(te.num_puzzles(), n);
    // Every augmented answer is still a valid path of its augmented question.
    for i in 0..16 {
        maze::check_path(30, tr.example_input(i), tr.example_label(i)).unwrap();
    }
}

#[test]
fn sudoku_build_is_seeded_byte_identical_and_valid() {
    let d = data().join("sudoku-extreme-1k");
    let opt = sudoku::BuildOptions { subsample: Some(100), test_subsample: Some(50), num_aug: 4, seed: 9 };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (tr, te) = sudoku::build(&d.join("train.csv"), &d.join("test_hard.csv.gz"), a.path(), &opt).unwrap();
    sudoku::build(&d.join("train.csv"), &d.join("test_hard.csv.gz"), b.path(), &opt).unwrap();
    for split in ["train", "test"] {
        for f in ["inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"] {
            let pa = std::fs::read(format::array_path(&a.path().join(split), "all", f)).unwrap();
            let pb = std::fs::read(format::array_path(&b.path().join(split), "all", f)).unwrap();
            assert_eq!(pa, pb, "{split}/{f} differs between two runs with the same seed");
        }
    }
    assert_eq!((tr.num_groups(), tr.num_puzzles()), (100, 500));
    assert_eq!((te.num_groups(), te.num_puzzles()), (50, 50));
    // Every training example (original and shuffles) is a valid puzzle/solution pair.
    for i in 0..tr.num_examples() {
        let q: [u8; 81] = std::array::from_fn(|k| tr.example_input(i)[k] - 1);
        let s: [u8; 81] = std::array::from_fn(|k| tr.example_label(i)[k] - 1);
        assert!(trm::data::sudoku_solver::solves(&q, &s), "example {i}");
    }
    let meta = format::read_metadata(&a.path().join("train")).unwrap();
    assert_eq!((meta.seq_len, meta.vocab_size, meta.num_puzzle_identifiers), (81, 11, 1));
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn bad_sudoku_csv_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good_q = ".47.5....6.9.3.4..53..........9..6.....3.6.82.....5.4.79...4..64.37......56.9....";
    let good_a = "247659318689137425531482967874921653915346782362875149798514236423768591156293874";
    let hdr = "source,question,answer,rating\n";
    // truncated line (missing fields)
    let p = write(dir.path(), "trunc.csv", &format!("{hdr}x,{good_q},{good_a},1\nx,{good_q}\n"));
    let e = err_of(sudoku::read_csv(&p));
    assert!(e.contains("trunc.csv:3") && e.contains("truncated"), "{e}");
    // wrong grid size
    let p = write(dir.path(), "size.csv", &format!("{hdr}x,{},{good_a},1\n", &good_q[..80]));
    let e = err_of(sudoku::read_csv(&p));
    assert!(e.contains("size.csv:2") && e.contains("81 cells"), "{e}");
    // non-digit
    let p = write(dir.path(), "digit.csv", &format!("{hdr}x,{good_q},{}x,1\n", &good_a[..80]));
    let e = err_of(sudoku::read_csv(&p));
    assert!(e.contains("digit.csv:2") && e.contains("'x'"), "{e}");
    // answer that breaks the rules
    let bad_a = format!("1{}", &good_a[1..]);
    let p = write(dir.path(), "rules.csv", &format!("{hdr}x,{good_q},{bad_a},1\n"));
    let e = err_of(sudoku::read_csv(&p));
    assert!(e.contains("rules.csv:2") && e.contains("not a complete valid"), "{e}");
    // missing column
    let p = write(dir.path(), "cols.csv", "a,b\n1,2\n");
    assert!(err_of(sudoku::read_csv(&p)).contains("no `question` column"));
}

#[test]
fn bad_maze_csv_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.csv", "question,answer\n\"# SG\",\"# SG\"\n\"# S\",\"# S\"\n");
    let e = err_of(maze::read_csv(&p));
    assert!(e.contains("m.csv:3") && e.contains("not a square"), "{e}");
    // Answers that are no path through their question's maze (3x3: S top middle, a wall below
    // it, G bottom right; the path S, (1,3), (2,3), G): a wall opened, no path at all, path cells
    // off the path. The first row's answer is the path.
    let q = "#S  #   G";
    for (answer, says) in
        [("#So o   G", "changed from '#' to 'o'"), ("#S  #   G", "breaks at (1, 2)"), ("#So #oooG", "2 path cells are not on")]
    {
        let p = write(dir.path(), "p.csv", &format!("question,answer\n\"{q}\",\"#So #o  G\"\n\"{q}\",\"{answer}\"\n"));
        let e = err_of(maze::read_csv(&p));
        assert!(e.contains("p.csv:3") && e.contains("not a path from S to G") && e.contains(says), "{answer}: {e}");
    }
}

#[test]
fn bad_arc_json_names_file_and_task() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x").to_string_lossy().to_string();
    // malformed JSON
    write(dir.path(), "x_a_challenges.json", "{\"t1\": {\"train\": [");
    let e = err_of(arc_task::load_subset(&prefix, "a"));
    assert!(e.contains("x_a_challenges.json") && e.contains("invalid JSON"), "{e}");
    // solution count that does not match the test inputs
    write(
        dir.path(),
        "x_b_challenges.json",
        r#"{"t9": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}, {"input": [[3]]}]}}"#,
    );
    write(dir.path(), "x_b_solutions.json", r#"{"t9": [[[2]]]}"#);
    let e = err_of(arc_task::load_subset(&prefix, "b"));
    assert!(e.contains("task t9") && e.contains("1 solution grids for 2 test inputs"), "{e}");
    // grid too large
    let big = format!("[[{}]]", ["1"; 31].join(","));
    write(dir.path(), "x_c_challenges.json", &format!(r#"{{"t3": {{"train": [{{"input": {big}, "output": [[2]]}}], "test": []}}}}"#));
    let e = err_of(arc_task::load_subset(&prefix, "c"));
    assert!(e.contains("task t3") && e.contains("31 columns"), "{e}");
}

/// A task name in two subsets: the same task (its pairs in another order, as ARC-AGI-2 lists most
/// of ARC-1's tasks again) builds as in the reference, with one entry in test_puzzles.json; two
/// different tasks in two test sets are refused, naming both files; elsewhere they build.
#[test]
fn a_task_name_in_two_subsets_needs_the_same_task_in_two_test_sets() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x").to_string_lossy().to_string();
    let (p1, p2) = (r#"{"input": [[1]], "output": [[2]]}"#, r#"{"input": [[6]], "output": [[7]]}"#);
    let other = r#"{"input": [[1]], "output": [[4]]}"#;
    for (subset, train) in [("a", [p1, p2]), ("b", [other, p2]), ("c", [p2, p1])] {
        let task = format!(r#"{{"t1": {{"train": [{}, {}], "test": [{{"input": [[3]]}}]}}}}"#, train[0], train[1]);
        write(dir.path(), &format!("x_{subset}_challenges.json"), &task);
        write(dir.path(), &format!("x_{subset}_solutions.json"), r#"{"t1": [[[5]]]}"#);
    }
    let opt = |subsets: [&str; 2], test_sets: &[&str]| arc::BuildOptions {
        input_prefix: prefix.clone(),
        subsets: subsets.map(String::from).to_vec(),
        test_sets: test_sets.iter().map(|s| s.to_string()).collect(),
        num_aug: 0,
        seed: 42,
        translate: true,
    };
    let out = tempfile::tempdir().unwrap();
    let e = err_of(arc::build(&out.path().join("ab"), &opt(["a", "b"], &["a", "b"])));
    assert!(e.contains("task `t1` is in the test sets `a` and `b` with different pairs") && e.contains("x_b_challenges.json"), "{e}");
    assert!(!out.path().join("ab").exists());
    // Different, one of them in a test set: built, sharing the identifier.
    let s = arc::build(&out.path().join("ab1"), &opt(["a", "b"], &["b"])).unwrap();
    assert_eq!((s.train.groups, s.test.groups, s.identifiers), (2, 1, 2));
    // The same task, its pairs reordered, in two test sets: one entry in test_puzzles.json.
    let s = arc::build(&out.path().join("ac"), &opt(["a", "c"], &["a", "c"])).unwrap();
    assert_eq!((s.train.groups, s.test.groups, s.identifiers), (2, 2, 2));
    let text = std::fs::read_to_string(out.path().join("ac/test_puzzles.json")).unwrap();
    assert_eq!(text.matches("\"t1\"").count(), 1, "{text}");
}

/// identifiers.json names every puzzle identifier of the data set, no fewer and no more: a list
/// of another build is refused wherever it is read.
#[test]
fn identifiers_json_must_name_each_identifier_once() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_data(dir.path());
    assert_eq!(format::read_identifiers(dir.path()).unwrap(), vec!["<blank>".to_string()]);
    for names in ["[]", r#"["<blank>", "a", "b"]"#] {
        write(dir.path(), "identifiers.json", names);
        let e = err_of(format::read_identifiers(dir.path()));
        assert!(e.contains("identifiers.json") && e.contains("names for 1 puzzle identifiers"), "{names}: {e}");
    }
    // Identifier 0 is the blank one; no name twice (a task named twice is looked up as its first).
    write(dir.path(), "identifiers.json", r#"["x"]"#);
    let e = err_of(format::read_identifiers(dir.path()));
    assert!(e.contains("identifier 0 must be the blank one, `<blank>` (it is `x`)"), "{e}");
    let names: Vec<String> = ["<blank>", "t1|||0", "t2|||0", "t1|||0"].map(String::from).into();
    let e = err_of(format::check_identifier_names(&names, std::path::Path::new("ids.json")));
    assert_eq!(e, "ids.json: `t1|||0` names identifiers 1 and 3; each name must be given once");
    // The reference's builder with puzzle_identifiers_start=3 names identifiers 0 to 2 `<blank>`.
    let names: Vec<String> = ["<blank>", "<blank>", "<blank>", "t1|||0"].map(String::from).into();
    format::check_identifier_names(&names, std::path::Path::new("ids.json")).unwrap();
}

/// A set named twice in dataset.json would be read, and trained on, twice: refused.
#[test]
fn a_set_named_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_data(dir.path());
    let meta = dir.path().join("train/dataset.json");
    let mut js: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    js["sets"] = serde_json::json!(["all", "all"]);
    std::fs::write(&meta, js.to_string()).unwrap();
    let e = err_of(format::read_dataset_split(dir.path(), "train"));
    assert!(e.contains("train/dataset.json") && e.contains("sets names `all` twice (entries 1 and 2)"), "{e}");
}

#[test]
fn arc_build_small_is_consistent_and_invertible() {
    let prefix = data().join("arc/arc-agi").to_string_lossy().to_string();
    // 120 tasks in the full evaluation2 subset (358 demonstration pairs, 172 test pairs: data
    // README), 12 in the sample.
    let n = arc_task::load_subset(&prefix, "evaluation2").unwrap().len();
    assert!(n == 120 || n == 12, "{n} tasks");
    let out = tempfile::tempdir().unwrap();
    let opt = arc::BuildOptions {
        input_prefix: prefix,
        subsets: vec!["evaluation2".into()],
        test_sets: vec!["evaluation2".into()],
        num_aug: 3,
        seed: 42,
        translate: true,
    };
    let s = arc::build(out.path(), &opt).unwrap();
    assert_eq!(s.train.groups, n);
    assert_eq!(s.test.groups, n);
    assert_eq!(s.identifiers, 1 + s.train.puzzles);
    // up to 4 members each (the original and 3 augmentations), rarely fewer (duplicates dropped)
    assert!(s.train.puzzles <= 4 * n && s.train.puzzles > 3 * n, "{} puzzles", s.train.puzzles);
    // every ARC task has at least two demonstrations
    assert!(s.train.examples >= 2 * s.train.puzzles);
    let train = format::read_dataset_split(out.path(), "train").unwrap();
    let test = format::read_dataset_split(out.path(), "test").unwrap();
    assert_eq!(train.metadata.num_puzzle_identifiers, s.identifiers);
    let names = format::read_identifiers(out.path()).unwrap();
    let tasks = arc::read_test_puzzles(out.path()).unwrap();
    assert_eq!(tasks.len(), n);
    // Every test example, cropped and un-augmented by its identifier's name, is the original
    // task's test pair.
    let t = &test.sets[0].1;
    for p in 0..t.num_puzzles() {
        let (task, aug) = arc_task::parse_name(&names[t.puzzle_identifiers[p] as usize]).unwrap();
        let orig = tasks.iter().find(|x| x.name == task).unwrap();
        for (k, e) in (t.puzzle_indices[p] as usize..t.puzzle_indices[p + 1] as usize).enumerate() {
            let input = arc_task::from_canvas(t.example_input(e)).unwrap().unaugment(&aug);
            let output = arc_task::from_canvas(t.example_label(e)).unwrap().unaugment(&aug);
            assert_eq!(input, orig.test[k].input);
            assert_eq!(output, orig.test[k].output);
        }
    }
    // Training examples are translated except one per puzzle: exactly one sits at the origin
    // unless the translation drew (0, 0) by chance.
    let tr = &train.sets[0].1;
    let at_origin = |e: usize| tr.example_input(e)[0] >= 2;
    let mut puzzles_with_origin = 0;
    for p in 0..tr.num_puzzles() {
        if (tr.puzzle_indices[p]..tr.puzzle_indices[p + 1]).any(|e| at_origin(e as usize)) {
            puzzles_with_origin += 1;
        }
    }
    assert_eq!(puzzles_with_origin, tr.num_puzzles());
    // ... and the others are moved: at the origin only that one per puzzle, plus the few whose
    // drawn offset was (0, 0).
    let all_at_origin = (0..tr.num_examples()).filter(|&e| at_origin(e)).count();
    assert!(
        all_at_origin <= tr.num_puzzles() + tr.num_examples() / 10 && all_at_origin < tr.num_examples(),
        "{all_at_origin} of {} examples at the origin, {} puzzles",
        tr.num_examples(),
        tr.num_puzzles()
    );
}

#[test]
fn mazes_need_one_start_and_one_goal_and_arc_tasks_need_pairs() {
    let dir = tempfile::tempdir().unwrap();
    for (row, want) in [
        ("\"#  G\",\"#  G\"", "exactly one start S, found 0"),
        ("\"#SSG\",\"#SSG\"", "exactly one start S, found 2"),
        ("\"# S \",\"# S \"", "exactly one goal G, found 0"),
        ("\"#oSG\",\"#oSG\"", "already contains path cells"),
    ] {
        let p = write(dir.path(), "m.csv", &format!("question,answer\n\"# SG\",\"# SG\"\n{row}\n"));
        let e = err_of(maze::read_csv(&p));
        assert!(e.contains("m.csv:3") && e.contains(want), "{row}: {e}");
    }
    let prefix = dir.path().join("x").to_string_lossy().to_string();
    let pair = r#"{"input": [[1]], "output": [[2]]}"#;
    for (name, body, want) in [
        ("notest", format!(r#"{{"t1": {{"train": [{pair}], "test": []}}}}"#), "task t1 has 1 train and 0 test pairs"),
        ("notrain", format!(r#"{{"t2": {{"train": [], "test": [{pair}]}}}}"#), "task t2 has 0 train and 1 test pairs"),
    ] {
        write(dir.path(), &format!("x_{name}_challenges.json"), &body);
        let e = err_of(arc_task::load_subset(&prefix, name));
        assert!(e.contains(&format!("x_{name}_challenges.json")) && e.contains(want), "{e}");
    }
}
