//! `trm solve` input parsing and its error messages (Sudoku text, maze files, ARC task files).

mod common;

use common::write;
use trm::cli::adapt::read_tasks;
use trm::cli::solve::{maze_tokens, sudoku_tokens};

const PUZZLE: &str = "98314.26714.267.83...98.....395....46....8...571.36.........716418.7.5...5.31..2.";

fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn sudoku_text_becomes_tokens_with_blanks_as_1() {
    let (grid, tokens) = sudoku_tokens(PUZZLE).unwrap();
    assert_eq!(tokens.len(), 81);
    assert_eq!(&tokens[..6], &[10, 9, 4, 2, 5, 1]);
    assert_eq!(grid[5], 0);
    // '0' is a blank too, and whitespace (a grid pasted over 9 lines) is ignored
    let spaced: String = PUZZLE.replace('.', "0").as_bytes().chunks(9).map(|r| String::from_utf8_lossy(r) + "\n").collect();
    assert_eq!(sudoku_tokens(&spaced).unwrap().1, tokens);
    // A file that holds the puzzle (--sudoku puzzle.txt) reads as the puzzle; its errors name it.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "puzzle.txt", &spaced);
    assert_eq!(sudoku_tokens(file.to_str().unwrap()).unwrap().1, tokens);
    let short = write(dir.path(), "short.txt", &PUZZLE[..70]);
    let e = err(sudoku_tokens(short.to_str().unwrap()));
    assert!(e.contains("--sudoku") && e.contains("short.txt") && e.contains("81 cells, got 70"), "{e}");
    // A file saved with a byte-order mark (Windows editors write one) reads the same: the mark
    // was counted as an 82nd cell.
    let bom = write(dir.path(), "bom.txt", &format!("\u{feff}{spaced}"));
    assert_eq!(sudoku_tokens(bom.to_str().unwrap()).unwrap().1, tokens);
}

/// Givens that break no rule can still leave no solution: refused at once (it ran 64 views for
/// 16 steps and printed an answer that did not check).
#[test]
fn a_sudoku_or_maze_with_no_solution_is_refused() {
    let dead = format!("12345678.........9{}", ".".repeat(63));
    let e = err(sudoku_tokens(&dead));
    assert!(e.contains("no solution") && e.contains("no two givens clash"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let walled = write(dir.path(), "walled.txt", "#####\n#S# #\n### #\n#  G#\n#####\n");
    let e = err(maze_tokens(&walled));
    assert!(e.contains("walled.txt") && e.contains("no path"), "{e}");
    let bom = write(dir.path(), "bom.txt", "\u{feff}#####\n#S  #\n# # #\n#  G#\n#####\n");
    assert_eq!(maze_tokens(&bom).unwrap().0, 5);
}

#[test]
fn sudoku_errors_say_what_is_wrong_and_where() {
    let e = err(sudoku_tokens(&PUZZLE[..80]));
    assert!(e.contains("--sudoku") && e.contains("81 cells, got 80"), "{e}");
    let bad = format!("{}x{}", &PUZZLE[..10], &PUZZLE[11..]);
    let e = err(sudoku_tokens(&bad));
    assert!(e.contains("cell 11 (row 2, column 2) is 'x'"), "{e}");
    // Two 9s in the first row: the givens themselves break the rules.
    let clash = format!("99{}", &PUZZLE[2..]);
    let e = err(sudoku_tokens(&clash));
    assert!(e.contains("givens break the rules") && e.contains("row 1"), "{e}");
    // What looks like a file name is answered as one.
    let e = err(sudoku_tokens("puzzles/missing.txt"));
    assert!(e.contains("puzzles/missing.txt: no such file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = err(sudoku_tokens(dir.path().to_str().unwrap()));
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn maze_files_parse_and_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), "ok.txt", "#####\n#S  #\n# # #\n#  G#\n#####\n");
    let (side, tokens) = maze_tokens(&ok).unwrap();
    assert_eq!((side, tokens.len()), (5, 25));
    assert_eq!(tokens[6], 3, "S is token 3");
    let ragged = write(dir.path(), "ragged.txt", "#####\n#S  #\n# #\n#  G#\n#####\n");
    let e = err(maze_tokens(&ragged));
    assert!(e.contains("ragged.txt") && e.contains("line 3 has 3 characters"), "{e}");
    let no_goal = write(dir.path(), "nogoal.txt", "#####\n#S  #\n# # #\n#   #\n#####\n");
    let e = err(maze_tokens(&no_goal));
    assert!(e.contains("nogoal.txt") && e.contains("exactly one goal G, found 0"), "{e}");
    let bad_char = write(dir.path(), "bad.txt", "#####\n#S  #\n# x #\n#  G#\n#####\n");
    let e = err(maze_tokens(&bad_char));
    assert!(e.contains("bad.txt") && e.contains("row 3, column 3"), "{e}");
    let e = err(maze_tokens(&dir.path().join("missing.txt")));
    assert!(e.contains("missing.txt"), "{e}");
    // A question with a path cell drawn in: no answer could then check, so it is refused.
    let drawn = write(dir.path(), "drawn.txt", "#####\n#So #\n# # #\n#  G#\n#####\n");
    let e = err(maze_tokens(&drawn));
    assert!(e.contains("drawn.txt") && e.contains("row 2, column 3") && e.contains("path cell"), "{e}");
    // Characters, not bytes: a line of 5 characters, one of them two bytes long, is 5 wide.
    let accent = write(dir.path(), "accent.txt", "#####\n#S  #\n# é #\n#  G#\n#####\n");
    let e = err(maze_tokens(&accent));
    assert!(e.contains("accent.txt") && e.contains("'é' at row 3, column 3"), "{e}");
}

/// Flags that would do nothing in a combination are refused, never silently ignored.
#[test]
fn solve_and_friends_refuse_flags_that_would_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let maze = write(dir.path(), "m.txt", "#####\n#S  #\n# # #\n#  G#\n#####\n");
    let task = write(dir.path(), "t.json", r#"{"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}"#);
    let empty = write(dir.path(), "empty.json", "{}");
    let maze = maze.to_str().unwrap();
    let (task, empty) = (task.to_str().unwrap(), empty.to_str().unwrap());
    let cases: [(&[&str], &str); 15] = [
        // Found by a read-only audit of every flag (2026-12-08): each was accepted and did nothing.
        (&["data", "maze", "--train", "m.csv", "--test", "m.csv", "--out", "o", "--seed", "5"], "draws nothing at random"),
        (&["data", "sudoku", "--train", "s.csv", "--test", "s.csv", "--out", "o", "--seed", "5"], "--seed draws --subsample"),
        (&["data", "inspect", ".", "--split", "test"], "without --show it would do nothing"),
        (&["info", "--list", "--shape", "arc"], "cannot be used with"),
        (&["report", "--run", ".", "--out", "r.html", "--puzzles", "0", "--steps", "3"], "with --puzzles 0 none are drawn"),
        (&["bench", "--shape", "sudoku-mlp", "--batch", "2", "--dtype", "bfloat16"], "this would time float32"),
        // One view, the puzzle itself, never replaced within 4 steps: nothing to seed or draw.
        (&["solve", "--sudoku", PUZZLE, "--views", "1", "--steps", "4", "--seed", "5"], "nothing is drawn at random"),
        (&["solve", "--sudoku", PUZZLE, "--views", "1", "--steps", "4", "--drawn-latents"], "--drawn-latents: with --views 1"),
        (&["solve", "--sudoku", PUZZLE, "--task", "foo"], "--arc-task"),
        (&["solve", "--arc-task", task, "--views", "8"], "--views"),
        (&["solve", "--maze", maze, "--views", "4", "--seed", "7"], "--seed"),
        (&["eval", "--data", ".", "--force"], "--submission"),
        (&["info", "--data", ".", "--shape", "arc"], "--shape"),
        (&["launch", "--nproc", "1", "--master-port", "0", "--", "train"], "--master-port"),
        (&["adapt", "--checkpoint", ".", "--tasks", empty, "--out", "x"], "no tasks in the file"),
    ];
    for (args, says) in cases {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(args).current_dir(dir.path()).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(says) && !e.contains("panicked"), "{args:?}: {e}");
    }
    // `trm info --list --json` is JSON.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(["info", "--list", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["presets"].as_array().unwrap().iter().any(|p| p == "sudoku-mlp") && !v["paper_rows"].as_array().unwrap().is_empty());
    // A reference command line's load_checkpoint=PATH (what trm train starts from) is shown, not
    // refused as an unknown key.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["info", "--config", "sudoku-tiny", "load_checkpoint=runs/x/step_1/model.safetensors", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["starts_from"], "runs/x/step_1/model.safetensors");
    // --halt with the bundled model runs the plain model (its default 64 views do not combine
    // with --halt; it was refused, naming --views, which was never given).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm")).args(["solve", "--sudoku", PUZZLE, "--halt", "--json"]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.get("views").is_none() && v.get("steps").is_some(), "{v}");
}

/// A command whose reader has gone (`trm info --list | head -1`) ends quietly with 141, as a
/// tool SIGPIPE stopped does, and removes its temporary files on the way: it once panicked on the
/// failed write (exit 101, with a backtrace), and ending by SIGPIPE itself would leave the bundled
/// model's temporary folder behind.
#[test]
fn a_closed_output_ends_a_command_quietly_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    let cases: [&[&str]; 2] = [&["info", "--list"], &["solve", "--sudoku", puzzle, "--views", "1", "--steps", "1", "--json"]];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // closed before trm writes a byte
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(args)
            .env("TMPDIR", tmp.path())
            .env("TMP", tmp.path())
            .env("TEMP", tmp.path())
            .stdout(writer)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert_eq!(o.status.code(), Some(141), "{args:?}: {:?}: {e}", o.status);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|d| d.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{args:?} left {left:?} in its temporary folder");
    }
}

#[test]
fn arc_task_files_single_or_challenges_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let one = write(
        dir.path(),
        "mytask.json",
        r#"{"train": [{"input": [[1,2]], "output": [[2,1]]}], "test": [{"input": [[3,4]], "output": [[4,3]]}]}"#,
    );
    let t = read_tasks(&one, None).unwrap();
    assert_eq!((t.len(), t[0].name.as_str()), (1, "mytask"));
    assert_eq!(t[0].test[0].output.cells, vec![4, 3]);
    let many = write(
        dir.path(),
        "ch.json",
        r#"{"b": {"train": [], "test": [{"input": [[1]]}]}, "a": {"train": [], "test": [{"input": [[2]]}, {"input": [[3]]}]}}"#,
    );
    let sols = write(dir.path(), "sol.json", r#"{"a": [[[5]], [[6]]], "b": [[[7]]]}"#);
    let t = read_tasks(&many, Some(&sols)).unwrap();
    assert_eq!(t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(t[0].test[1].output.cells, vec![6]);
    let bad = write(dir.path(), "bad.json", r#"{"train": [{"input": [[1,2],[3]], "output": [[1]]}], "test": []}"#);
    let e = err(read_tasks(&bad, None));
    assert!(e.contains("bad.json") && e.contains("train pair 0") && e.contains("rectangular"), "{e}");
    let colour = write(dir.path(), "colour.json", r#"{"train": [], "test": [{"input": [[12]]}]}"#);
    let e = err(read_tasks(&colour, None));
    assert!(e.contains("cell (0, 0) is 12"), "{e}");
    // A single task without its `test` list says so (it used to report a missing `train` list).
    let no_test = write(dir.path(), "notest.json", r#"{"train": [{"input": [[1]], "output": [[2]]}]}"#);
    let e = err(read_tasks(&no_test, None));
    assert!(e.contains("notest.json") && e.contains("`test`"), "{e}");
    let not_a_task = write(dir.path(), "list.json", r#"{"x": [1, 2]}"#);
    assert!(err(read_tasks(&not_a_task, None)).contains("entry `x` is not a task object"));
    let wrong_count = write(dir.path(), "sol2.json", r#"{"a": [[[5]]], "b": [[[7]]]}"#);
    let e = err(read_tasks(&many, Some(&wrong_count)));
    assert!(e.contains("1 solution grids for 2 test inputs"), "{e}");
    // One task, a solutions file that does not have it: an error, not a task scored as failed.
    let other = write(dir.path(), "other.json", r#"{"other": [[[1]]]}"#);
    let e = err(read_tasks(&one, Some(&other)));
    assert!(e.contains("other.json") && e.contains("no solutions for task `mytask`"), "{e}");
    let no_inputs = write(dir.path(), "noinputs.json", r#"{"train": [{"input": [[1]], "output": [[2]]}], "test": []}"#);
    let e = err(read_tasks(&no_inputs, None));
    assert!(e.contains("noinputs.json") && e.contains("no test inputs"), "{e}");
    let bare = write(dir.path(), "bare.json", r#"[[[4,3]]]"#);
    assert_eq!(read_tasks(&one, Some(&bare)).unwrap()[0].test[0].output.cells, vec![4, 3]);
}

/// `trm solve --maze` end to end on a tiny maze model trained for two steps: the plain answer is
/// printed and checked as an S-G path (valid or not, said), and the views run with their check.
#[test]
fn solve_maze_runs_plain_and_with_views() {
    type AD = burn::backend::Autodiff<burn::backend::Flex>;
    let (data, run, t) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = common::data().join("maze-30x30-hard-1k");
    trm::data::maze::build(&d.join("train.csv.gz"), &d.join("test.csv.gz"), data.path(), false).unwrap();
    let ov: Vec<String> =
        ["max_steps=2", "epochs=2", "eval_interval=2", "eval_max_examples=4", "global_batch_size=8", "arch.halt_max_steps=2"]
            .map(String::from)
            .to_vec();
    let mut job = common::tiny_job(data.path(), run.path(), &ov, false);
    job.config = trm::store::config::resolve("maze", &[common::TINY.map(String::from).to_vec(), ov].concat()).unwrap();
    trm::train::trainer::train::<AD>(&job, &Default::default()).unwrap();
    // The first test maze, as a text file of 30 rows.
    let split = trm::data::format::read_dataset_split(data.path(), "test").unwrap();
    let set = &split.sets[0].1;
    let rows: String =
        set.inputs[..900].chunks(30).map(|r| r.iter().map(|&t| trm::data::maze::char_of(t)).collect::<String>() + "\n").collect();
    let maze = write(t.path(), "maze.txt", &rows);
    for extra in [&[][..], &["--views", "8"][..]] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(["solve", "--checkpoint"])
            .arg(run.path())
            .arg("--maze")
            .arg(&maze)
            .args(extra)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        let said = if extra.is_empty() { out.contains("valid") } else { out.contains("checked") && out.contains("8 views x") };
        assert!(said, "{extra:?}: {out}");
    }
    // A maze's views are fixed: `trm eval --seed` is refused there, as `trm solve --seed` is.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["eval", "--views", "8", "--seed", "5", "--checkpoint"])
        .arg(run.path())
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nothing random to seed"), "{err}");
}
