//! What a new user meets first: the help's pointers and examples, and errors for a missing data
//! set or run that say which command makes one.

use std::process::Command;

fn trm(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn help_starts_with_what_to_run_and_every_command_has_an_example() {
    let (ok, top) = trm(&["--help"]);
    assert!(ok && top.contains("Start here: `trm demo`"), "{top}");
    for cmd in ["data", "train", "export", "eval", "solve", "demo", "report", "bench", "info", "parity", "adapt", "launch"] {
        let (ok, help) = trm(&[cmd, "--help"]);
        assert!(ok && help.contains("Example"), "trm {cmd} --help has no example:\n{help}");
    }
}

#[test]
fn a_missing_data_set_or_run_names_the_command_that_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let m = missing.to_str().unwrap();
    let (ok, out) = trm(&["eval", "--checkpoint", m, "--data", m]);
    assert!(!ok && (out.contains("trm train --out") || out.contains("trm data generate")), "{out}");
    let (ok, out) = trm(&["train", "--config", "sudoku-tiny", "--data", m, "--out", dir.path().join("run").to_str().unwrap()]);
    assert!(!ok && out.contains("trm data generate"), "{out}");
    let (ok, out) =
        trm(&["solve", "--checkpoint", m, "--sudoku", "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"]);
    assert!(!ok && out.contains("trm train --out"), "{out}");
}

/// The command of `trm solve --help` (the bundled model, its default views), with `--json` to
/// read the result: its answer checks, and it is the puzzle's one solution.
#[test]
fn the_example_in_solve_help_works_as_typed() {
    let (_, help) = trm(&["solve", "--help"]);
    let example = help.split("Example").nth(1).and_then(|s| s.split("trm ").nth(1)).expect("an example command");
    let puzzle = example.split("--sudoku '").nth(1).and_then(|s| s.split('\'').next()).expect("an example puzzle");
    assert_eq!(example.trim(), format!("solve --sudoku '{puzzle}'"), "the example is one plain solve");
    let o = Command::new(env!("CARGO_BIN_EXE_trm")).args(["solve", "--sudoku", puzzle, "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let js: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(js["result"]["checked"], true, "{js}");
    assert_eq!(js["valid"], true, "`valid` as without views: {js}");
    let grid = trm::data::sudoku_solver::parse_grid(puzzle).unwrap();
    let solved = trm::data::sudoku_solver::solve(&grid, 2);
    assert_eq!(solved.count, 1, "the example has one solution");
    assert_eq!(js["answer"], trm::data::sudoku_solver::format_grid(&solved.solution.unwrap()), "{js}");
}
