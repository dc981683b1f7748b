//! Hostile files and careless paths (issue 23), each tried as a user would meet it: a real file, a
//! real command. Every case asserts a clear error and that nothing the user had was changed.
//!
//! - torch.save files built to exhaust the reader: a remembered value recalled until it doubles
//!   60 times (under 1 KB), 1 MB of recalls of one list, containers nested 150 000 deep, a shape
//!   whose size overflows, a tensor larger than its file could hold, a key twice; the commands run
//!   with their memory capped (RLIMIT_DATA 256 MB): they must end with a clear error inside it;
//! - `all_config.yaml` files: nested too deep, too large, missing a key the model needs;
//! - outputs that would eat inputs: export over a checkpoint's weights, report over a run's log,
//!   eval --submission over the model, a device as target, an existing file without --force, a
//!   stale all_config.yaml beside exported weights;
//! - planted links (`*.tmp`), leftovers of an interrupted save, flags past their limits, a maze
//!   read from /dev/zero.
//!
//! Unix only: the memory cap is RLIMIT_DATA, and the planted links are symlinks.
#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

type AD = burn::backend::Autodiff<burn::backend::Flex>;

const PUZZLE: &str = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..";

/// Largest data segment (heap and private writable mappings) a hostile-file command may use.
const DATA_CAP: u64 = 256 << 20;

/// Runs trm with its memory capped at `DATA_CAP` (RLIMIT_DATA): returns its exit code (None if a
/// signal ended it, as an allocation failure past the cap does) and stderr.
fn trm_capped<S: AsRef<OsStr>>(args: &[S]) -> (Option<i32>, String) {
    common::trm_capped(args, DATA_CAP)
}

/// `trm solve --checkpoint FILE` (a tiny model's config, a Sudoku), memory capped.
fn solve_capped(file: &Path) -> (Option<i32>, String) {
    trm_capped(&[
        os("solve".as_ref()),
        "--checkpoint".as_ref(),
        os(file),
        "--config".as_ref(),
        "sudoku-tiny".as_ref(),
        "--sudoku".as_ref(),
        PUZZLE.as_ref(),
    ])
}

fn trm<S: AsRef<OsStr>>(args: &[S]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_trm")).args(args).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// A torch.save-shaped zip holding `pkl` as its data.pkl (and `storages`).
fn torch_file(dir: &Path, name: &str, pkl: &[u8], storages: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    for (k, b) in storages {
        z.start_file(format!("archive/data/{k}"), opts).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
    path
}

fn long1(v: i64) -> Vec<u8> {
    let mut b = vec![0x8a, 8];
    b.extend_from_slice(&v.to_le_bytes());
    b
}

fn pstr(s: &str) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// `{"w": _rebuild_tensor_v2(storage(numel), 0, size, stride)}`.
fn one_tensor(numel: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}'];
    p.extend(pstr("w"));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    p.extend(pstr("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(pstr("0"));
    p.extend(pstr("cpu"));
    p.extend(long1(numel));
    p.extend(b"tQ");
    p.extend(long1(0));
    for dims in [size, stride] {
        p.push(b'(');
        dims.iter().for_each(|&d| p.extend(long1(d)));
        p.push(b't');
    }
    p.extend(b"tRs.");
    p
}

#[test]
fn torch_files_built_to_exhaust_the_reader_are_clear_errors_in_little_memory() {
    let t = tempfile::tempdir().unwrap();
    let read = |p: &Path| format!("{:#}", trm::store::checkpoint::read_weights(p).unwrap_err());

    // A remembered value recalled twice per level, 60 levels: 2^60 copies, from 430 bytes.
    let mut laughs = vec![0x80, 2, b']', b'q', 0];
    for k in 1..=60u8 {
        laughs.extend([b'h', k - 1, b'h', k - 1, 0x86, b'q', k]);
    }
    laughs.push(b'.');
    let bomb = torch_file(t.path(), "laughs.pt", &laughs, &[]);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1024);
    let e = read(&bomb);
    assert!(e.contains("laughs.pt") && e.contains("copies of remembered values"), "{e}");

    // The same through a real command, its memory capped: a clear error, exit code 1.
    let (code, err) = solve_capped(&bomb);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("copies of remembered values"), "{err}");

    // Containers nested 150 000 deep (300 KB): refused at depth 64, no stack overflow.
    let n = 150_000;
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b']', n));
    deep.extend(std::iter::repeat_n(b'a', n - 1));
    deep.push(b'.');
    let deep_file = torch_file(t.path(), "deep.pt", &deep, &[]);
    let (code, err) = solve_capped(&deep_file);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nested more than 64 deep"), "{err}");

    // A 1 MB pickle of nothing but recalls of one remembered list of 1000 items.
    let mut wide = vec![0x80, 2, b'('];
    wide.extend(std::iter::repeat_n(b'N', 1000));
    wide.extend([b'l', b'q', 0, b'(']);
    while wide.len() < (1 << 20) - 4 {
        wide.extend([b'h', 0]);
    }
    wide.extend([b'l', b'.']);
    let wide_file = torch_file(t.path(), "wide.pt", &wide, &[]);
    let (code, err) = solve_capped(&wide_file);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("copies of remembered values"), "{err}");

    // A size whose product overflows, a tensor larger than its file could hold.
    let big = 1i64 << 40;
    let e = read(&torch_file(t.path(), "overflow.pt", &one_tensor(4, &[big, big], &[big, 1]), &[]));
    assert!(e.contains("`w`") && e.contains("overflows"), "{e}");
    let e = read(&torch_file(t.path(), "huge.pt", &one_tensor(1 << 31, &[1 << 31], &[1]), &[]));
    assert!(e.contains("`w`") && e.contains("more than a file of this size holds"), "{e}");
    // The same shape with a matching small storage reads.
    let ok = torch_file(t.path(), "ok.pt", &one_tensor(2, &[2], &[1]), &[("0", &[0, 0, 128, 63, 0, 0, 0, 64])]);
    assert_eq!(trm::util::torch_zip::read(&ok, "").unwrap()["w"].values, vec![1.0, 2.0]);

    // A key twice: an error, not first-wins.
    let dup = t.path().join("dup.pt");
    use trm::util::torch_zip_write::Entry;
    let tensors = [Entry::f32("a", vec![1], vec![1.0f32]), Entry::f32("a", vec![1], vec![2.0f32])];
    trm::util::torch_zip_write::write(&dup, &tensors).unwrap();
    let e = read(&dup);
    assert!(e.contains("`a` twice"), "{e}");
}

#[test]
fn configs_too_deep_too_large_or_missing_a_key_are_named() {
    let t = tempfile::tempdir().unwrap();
    let weights = t.path().join("model.safetensors");
    std::fs::write(&weights, trm::infer::bundled::WEIGHTS).unwrap();
    let yaml = t.path().join("all_config.yaml");
    let solve = || trm(&[os("solve".as_ref()), "--checkpoint".as_ref(), os(&weights), "--sudoku".as_ref(), PUZZLE.as_ref()]);
    // The bundled model's own config works from a folder of the user's.
    std::fs::write(&yaml, trm::infer::bundled::CONFIG).unwrap();
    let (ok, out) = solve();
    assert!(ok, "{out}");
    // Without arch.L_cycles: named, not completed from a preset.
    let lacking: String = trm::infer::bundled::CONFIG.lines().filter(|l| !l.contains("L_cycles")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&yaml, &lacking).unwrap();
    let (ok, out) = solve();
    assert!(!ok && out.contains("lacks arch.L_cycles") && out.contains("all_config.yaml"), "{out}");
    // Nested 40 levels deep.
    let deep: String = (0..40).map(|d| format!("{}k{d}:\n", " ".repeat(d))).collect();
    std::fs::write(&yaml, deep).unwrap();
    let (ok, out) = solve();
    assert!(!ok && out.contains("nested more than 16 levels"), "{out}");
    // 2 MB.
    std::fs::write(&yaml, "a: b\n".repeat(420_000)).unwrap();
    let (ok, out) = solve();
    assert!(!ok && out.contains("is at most 1024 KB"), "{out}");
}

fn sha(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// A data set, a run of 2 steps trained on it, a folder of the user's, and the run's checkpoint.
fn trained_run() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let (data, run, user) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::tiny_data(data.path());
    let ov: Vec<String> = ["max_steps=2", "epochs=4", "eval_interval=2", "eval_max_examples=8"].map(String::from).to_vec();
    trm::train::trainer::train::<AD>(&common::tiny_job(data.path(), run.path(), &ov, false), &Default::default()).unwrap();
    let ckpt = trm::store::checkpoint::resolve(run.path()).unwrap();
    (data, run, user, ckpt)
}

#[test]
fn outputs_never_eat_inputs() {
    let (data, run, user, ckpt) = trained_run();
    let weights = ckpt.join("model.safetensors");
    let log = run.path().join("metrics.jsonl");
    let before = (sha(&weights), sha(&log));
    let export = |out: &Path, force: bool| {
        let mut a = vec![os("export".as_ref()), "--checkpoint".as_ref(), os(run.path()), "--out".as_ref(), os(out)];
        if force {
            a.push("--force".as_ref());
        }
        trm(&a)
    };
    // Over the checkpoint's own weights, even with --force; through a link too.
    for force in [false, true] {
        let (ok, out) = export(&weights, force);
        assert!(!ok && out.contains("belongs to") && out.contains("--force does not apply"), "{out}");
    }
    let link = user.path().join("link.pt");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    let (ok, out) = export(&link, true);
    assert!(!ok && out.contains("belongs to"), "{out}");
    // A report over the training log; a submission over the model.
    let (ok, out) = trm(&[os("report".as_ref()), "--run".as_ref(), os(run.path()), "--out".as_ref(), os(&log), "--force".as_ref()]);
    assert!(!ok && out.contains("belongs to the run being reported"), "{out}");
    // Nor over the data set the run recorded, when --data is not given.
    let meta = data.path().join("train/dataset.json");
    let data_before = sha(&meta);
    let (ok, out) = trm(&[os("report".as_ref()), "--run".as_ref(), os(run.path()), "--out".as_ref(), os(&meta), "--force".as_ref()]);
    assert!(!ok && out.contains("belongs to the data set"), "{out}");
    assert_eq!(sha(&meta), data_before);
    let submit = |to: &Path, force: bool| {
        let mut a = vec![os("eval".as_ref()), "--checkpoint".as_ref(), os(run.path()), "--data".as_ref(), os(data.path())];
        a.extend(["--submission".as_ref(), os(to)]);
        if force {
            a.push("--force".as_ref());
        }
        trm(&a)
    };
    let (ok, out) = submit(&weights, true);
    assert!(!ok && out.contains("belongs to the model being evaluated"), "{out}");
    // On Sudoku data --submission would do nothing: refused, nothing written.
    let sub = user.path().join("sub.json");
    let (ok, out) = submit(&sub, false);
    assert!(!ok && out.contains("ARC data only") && !sub.exists(), "{out}");
    assert_eq!((sha(&weights), sha(&log)), before, "a refused write changed the run");
    // A device is never a target; an existing file of the user's only with --force.
    let (ok, out) = export(Path::new("/dev/null"), true);
    assert!(!ok && out.contains("pipe or device"), "{out}");
    let mine = user.path().join("mine.pt");
    std::fs::write(&mine, "my notes").unwrap();
    let (ok, out) = export(&mine, false);
    assert!(!ok && out.contains("pass --force"), "{out}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes");
    // An all_config.yaml of another model beside the target: refused, then replaced with --force.
    let other = user.path().join("all_config.yaml");
    std::fs::write(&other, trm::infer::bundled::CONFIG).unwrap();
    let fresh = user.path().join("fresh.pt");
    let (ok, out) = export(&fresh, false);
    assert!(!ok && out.contains("all_config.yaml") && out.contains("describes other weights"), "{out}");
    assert!(!fresh.exists());
    assert_eq!(std::fs::read_to_string(&other).unwrap(), trm::infer::bundled::CONFIG);
    let (ok, out) = export(&mine, true);
    assert!(ok, "{out}");
    let cfg = trm::store::checkpoint::read_state_json(&ckpt).unwrap().config;
    assert_eq!(std::fs::read_to_string(&other).unwrap(), trm::store::hydra_config::to_yaml(&cfg).unwrap());
    // Exported again beside its own config: no --force needed for the config.
    let (ok, out) = export(&fresh, false);
    assert!(ok, "{out}");
    // Writing the new weights fails (here a folder at the temporary name of trm before
    // 2026-12-07, which a write must remove first; a kill while they are written is the same
    // window): the files are written in full before either is put in place, so the old pair
    // stands as it was.
    std::fs::write(&other, trm::infer::bundled::CONFIG).unwrap();
    let fresh_before = sha(&fresh);
    std::fs::create_dir(user.path().join("fresh.pt.tmp")).unwrap();
    let (ok, out) = export(&fresh, true);
    assert!(!ok && out.contains("fresh.pt.tmp"), "{out}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), trm::infer::bundled::CONFIG);
    assert_eq!(sha(&fresh), fresh_before);
    std::fs::remove_dir(user.path().join("fresh.pt.tmp")).unwrap();
    // Writing the config fails after the weights were written in full: they are removed, not
    // left beside their name (an ARC model's are gigabytes), and the old pair stands.
    std::fs::create_dir(user.path().join("all_config.yaml.tmp")).unwrap();
    let (ok, out) = export(&fresh, true);
    assert!(!ok && out.contains("all_config.yaml.tmp"), "{out}");
    let staged = std::fs::read_dir(user.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    let staged: Vec<_> = staged.filter(|n| n.starts_with("fresh.pt.") && n.ends_with(".tmp")).collect();
    assert!(staged.is_empty(), "the staged weights stayed: {staged:?}");
    assert_eq!((sha(&fresh), std::fs::read_to_string(&other).unwrap()), (fresh_before, trm::infer::bundled::CONFIG.to_string()));
    std::fs::remove_dir(user.path().join("all_config.yaml.tmp")).unwrap();
    // The weights may not take the config's name.
    let (ok, out) = export(&other, true);
    assert!(!ok && out.contains("name the weights otherwise"), "{out}");
    let (ok, out) = export(&fresh, true);
    assert!(ok && other.exists(), "{out}");
}

#[test]
fn planted_links_and_leftovers_of_an_interrupted_save() {
    let t = tempfile::tempdir().unwrap();
    // A planted `x.tmp -> victim`: the victim is untouched, the file written.
    let victim = t.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, t.path().join("out.json.tmp")).unwrap();
    trm::util::fs::write_atomic(&t.path().join("out.json"), b"{}").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(t.path().join("out.json")).unwrap(), "{}");

    // A save interrupted by a full disk leaves step_N.tmp/ and *.tmp files; the next start
    // removes them (with a note) and resumes.
    let (data, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::tiny_data(data.path());
    let ov: Vec<String> = ["max_steps=2", "epochs=8", "eval_interval=2", "eval_max_examples=8"].map(String::from).to_vec();
    trm::train::trainer::train::<AD>(&common::tiny_job(data.path(), run.path(), &ov, false), &Default::default()).unwrap();
    let half = run.path().join("checkpoints/step_00000009.tmp");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("model.safetensors"), vec![0u8; 1000]).unwrap();
    std::fs::write(run.path().join("metrics.jsonl.tmp"), "partial").unwrap();
    std::os::unix::fs::symlink(&victim, run.path().join("checkpoints/planted.tmp")).unwrap();
    let ov4: Vec<String> = ["max_steps=4", "epochs=8", "eval_interval=2", "eval_max_examples=8"].map(String::from).to_vec();
    let s = trm::train::trainer::train::<AD>(&common::tiny_job(data.path(), run.path(), &ov4, true), &Default::default()).unwrap();
    assert_eq!(s.steps, 4);
    assert!(!half.exists() && !run.path().join("metrics.jsonl.tmp").exists() && !run.path().join("checkpoints/planted.tmp").exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me", "a planted link was followed");
}

#[test]
fn flags_and_inputs_past_their_limits_are_refused_at_once() {
    let t0 = std::time::Instant::now();
    let (ok, out) = trm(&["solve", "--sudoku", PUZZLE, "--views", "1000000"]);
    assert!(!ok && out.contains("1000000") && out.contains("1..=256"), "{out}");
    let (ok, out) = trm(&["solve", "--sudoku", PUZZLE, "--steps", "18446744073709551615"]);
    assert!(!ok && out.contains("1..=1024"), "{out}");
    let (ok, out) = trm(&["solve", "--sudoku", PUZZLE, "--steps", "1000000000"]);
    assert!(!ok && out.contains("1..=1024"), "{out}");
    // Sizes that would overflow a count, exhaust memory, or end in a panic instead of a message.
    for (args, says) in [
        (vec!["info", "--config", "sudoku-tiny", "arch.hidden_size=999999999999"], "above 65536"),
        (vec!["info", "--config", "sudoku-tiny", "arch.H_cycles=100000000"], "above 1024"),
        (vec!["bench", "--shape", "sudoku-mlp", "--reps", "0"], "at least one timed step"),
        (vec!["bench", "--shape", "sudoku-mlp", "--peak-tflops", "nan"], "positive number of TFLOP/s"),
        (vec!["bench", "--shape", "sudoku-mlp", "--reps", "1", "--warmup", "18446744073709551615"], "0..=1000000"),
        (vec!["train", "--data", "nowhere", "--out", "nowhere", "--time-limit", "1e300"], "too many minutes"),
        (vec!["demo", "--out", "nowhere", "--minutes", "1e300"], "too many minutes"),
        (vec!["data", "generate", "--out", "nowhere", "--train", "100000000000"], "at most 10,000,000"),
        (vec!["data", "generate", "--out", "nowhere", "--train", "0"], "needs training puzzles"),
        (vec!["data", "generate", "--out", "nowhere", "--num-aug", "1000001"], "0..=1000000"),
        (vec!["data", "generate", "--out", "nowhere", "--train", "10000000", "--num-aug", "1000"], "int32 offsets"),
        (vec!["eval", "--data", "nowhere", "--threads", "0"], "1..=4096"),
        (vec!["train", "--resume", "--data", "nowhere", "--out", "nowhere"], "no run to continue"),
        (vec!["data", "arc", "--input-prefix", "nowhere/x", "--subsets", "a", "a", "--test-set", "a", "--out", "nowhere"], "named twice"),
        (vec!["report", "--run", "nowhere", "--threads", "100000"], "1..=4096"),
    ] {
        let (ok, out) = trm(&args);
        assert!(!ok && out.contains(says) && !out.contains("panicked"), "{args:?}: {out}");
    }
    assert!(!Path::new("nowhere").exists(), "a refused command made its output folder");
    // Maze files are read by `trm solve --maze` once a maze model is loaded.
    let out = format!("{:#}", trm::cli::solve::maze_tokens(Path::new("/dev/zero")).unwrap_err());
    assert!(out.contains("/dev/zero") && out.contains("not a regular file"), "{out}");
    let t = tempfile::tempdir().unwrap();
    let big = t.path().join("maze.txt");
    std::fs::write(&big, "#".repeat(1 << 20)).unwrap();
    let out = format!("{:#}", trm::cli::solve::maze_tokens(&big).unwrap_err());
    assert!(out.contains("at most 64 KB"), "{out}");
    assert!(t0.elapsed().as_secs() < 60, "refusals took {:?}", t0.elapsed());
}

#[test]
fn commands_that_rebuild_a_folder_never_delete_one_they_did_not_make() {
    let t = tempfile::tempdir().unwrap();
    let precious = t.path().join("run/precious.txt");
    std::fs::create_dir_all(precious.parent().unwrap()).unwrap();
    std::fs::write(&precious, "a week of training").unwrap();
    let (ok, out) = trm(&[os("demo".as_ref()), "--out".as_ref(), os(t.path()), "--steps".as_ref(), "2".as_ref()]);
    assert!(!ok && out.contains("was not made by `trm demo`"), "{out}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "a week of training");
    assert!(!t.path().join("data").exists(), "a refused demo made its data folder");
    // Nor over someone's report, or over a data set someone built.
    let mine = tempfile::tempdir().unwrap();
    std::fs::write(mine.path().join("report.html"), "mine").unwrap();
    let (ok, out) = trm(&[os("demo".as_ref()), "--out".as_ref(), os(mine.path()), "--steps".as_ref(), "2".as_ref()]);
    assert!(!ok && out.contains("is not a previous demo's report"), "{out}");
    assert_eq!(std::fs::read_to_string(mine.path().join("report.html")).unwrap(), "mine");
    let built = mine.path().join("built");
    let generate = |force: bool| {
        let mut a = vec![os("data".as_ref()), "generate".as_ref(), "--train".as_ref(), "4".as_ref(), "--out".as_ref(), os(&built)];
        if force {
            a.push("--force".as_ref());
        }
        trm(&a)
    };
    assert!(generate(false).0);
    let before = sha(&built.join("train/all__inputs.npy"));
    let (ok, out) = generate(false);
    assert!(!ok && out.contains("already holds a data set") && out.contains("--force"), "{out}");
    assert_eq!(sha(&built.join("train/all__inputs.npy")), before);
    // --force rebuilds it, and nothing of an older ARC set (its task list) outlives the rebuild.
    std::fs::write(built.join("test_puzzles.json"), "{}").unwrap();
    assert!(generate(true).0, "--force rebuilds it");
    assert!(!built.join("test_puzzles.json").exists());
    // A folder the command made itself is replaced.
    let own = t.path().join("own");
    trm::util::fs::fresh_own_folder(&own, "trm demo").unwrap();
    std::fs::write(own.join("old.txt"), "x").unwrap();
    trm::util::fs::fresh_own_folder(&own, "trm demo").unwrap();
    assert!(!own.join("old.txt").exists());
    assert!(trm::util::fs::fresh_own_folder(&own, "trm adapt").is_err(), "another command's folder");
    // A demo of an older trm marked only its run folder: its data folder (nothing but a data
    // set) is claimed, one holding anything else is still refused.
    let old = t.path().join("old-demo");
    trm::util::fs::fresh_own_folder(&old.join("run"), "trm demo").unwrap();
    common::tiny_data(&old.join("data"));
    trm::util::fs::claim_unmarked_data_folder(&old.join("data"), &old.join("run"), "trm demo").unwrap();
    trm::util::fs::check_own_folder(&old.join("data"), "trm demo").unwrap();
    let mixed = t.path().join("mixed");
    trm::util::fs::fresh_own_folder(&mixed.join("run"), "trm demo").unwrap();
    common::tiny_data(&mixed.join("data"));
    std::fs::write(mixed.join("data/notes.txt"), "mine").unwrap();
    trm::util::fs::claim_unmarked_data_folder(&mixed.join("data"), &mixed.join("run"), "trm demo").unwrap();
    assert!(trm::util::fs::check_own_folder(&mixed.join("data"), "trm demo").is_err());
    // `trm data generate --csv` over the user's own train.csv: refused without --force.
    let csv = t.path().join("train.csv");
    std::fs::write(&csv, "source,question,answer,rating\n").unwrap();
    let (ok, out) = trm(&[
        os("data".as_ref()),
        "generate".as_ref(),
        "--out".as_ref(),
        os(t.path()),
        "--csv".as_ref(),
        "--train".as_ref(),
        "4".as_ref(),
        "--test".as_ref(),
        "2".as_ref(),
    ]);
    assert!(!ok && out.contains("pass --force"), "{out}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "source,question,answer,rating\n");
}

/// The data set is named once: `--data DIR` or the reference's `data_paths=[DIR]`, which trains on
/// DIR and records it. A `data_paths` that names another folder than `--data`, several folders
/// (not implemented) or no data set at all is refused before a run folder is made.
#[test]
fn the_data_set_is_named_once() {
    let d = tempfile::tempdir().unwrap();
    let (data, other) = (d.path().join("data"), d.path().join("other"));
    common::tiny_data(&data);
    let train = |out: &Path, extra: &[String]| {
        let mut args: Vec<String> = ["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--out"].map(String::from).to_vec();
        args.push(out.display().to_string());
        args.extend(common::TINY.iter().map(|s| s.to_string()));
        args.extend(["max_steps=2", "eval_max_examples=8"].map(String::from));
        args.extend(extra.iter().cloned());
        trm(&args)
    };
    let run = d.path().join("by-data-paths");
    let (ok, out) = train(&run, &[format!("data_paths=[{}]", data.display())]);
    assert!(ok && out.contains("trained 2 steps in") && !out.contains("resumed at"), "{out}");
    let ckpt = trm::store::checkpoint::resolve(&run).unwrap();
    let recorded = trm::store::checkpoint::read_state_json(&ckpt).unwrap().config.data_paths;
    assert_eq!(recorded, vec![std::path::absolute(&data).unwrap().display().to_string()]);
    for (extra, says) in [
        (
            vec!["--data".into(), data.display().to_string(), format!("data_paths=[{}]", other.display())],
            "names another data set than --data",
        ),
        (vec![format!("data_paths=[{},{}]", data.display(), other.display())], "not implemented"),
        (vec![], "which data set?"),
    ] {
        let out_dir = d.path().join("refused");
        let (ok, out) = train(&out_dir, &extra);
        assert!(!ok && out.contains(says), "{extra:?}: {out}");
        assert!(!out_dir.exists(), "{extra:?}: a refused run made its folder");
    }
    // The same reference-style command continues with --resume (the recorded path is absolute,
    // the one given relative or not: the same folder).
    let again = [format!("data_paths=[{}]", data.display()), "--resume".into(), "max_steps=3".into()];
    let (ok, out) = train(&run, &again);
    // What this process trained, and where the run is.
    assert!(ok && out.contains("trained 1 step in") && out.contains("(resumed at step 2, now at step 3)"), "{out}");
    let (ok, out) =
        train(&run, &[format!("data_paths=[{}]", other.display()), "--data".into(), data.display().to_string(), "--resume".into()]);
    assert!(!ok && out.contains("names another data set than --data"), "{out}");
}

/// The reference's `load_checkpoint=PATH` is `--init-from PATH`: its empty values (`null`, `None`,
/// `~`) start from fresh weights, a quoted path is the path, and it is refused with `--resume`
/// (not a resume) and beside an `--init-from` of other weights, but not of the same ones.
#[test]
fn load_checkpoint_is_init_from() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::tiny_data(&data);
    let mut args: Vec<String> = ["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"].map(String::from).to_vec();
    args.push(data.display().to_string());
    args.extend(common::TINY.iter().map(|s| s.to_string()));
    args.extend(["max_steps=1", "eval_max_examples=8"].map(String::from));
    let with = |extra: &[String]| trm(&[args.clone(), extra.to_vec()].concat());
    let out = |name: &str| vec!["--out".to_string(), d.path().join(name).display().to_string()];
    // A base run, started with an empty load_checkpoint: fresh weights.
    for (i, empty) in ["null", "None", "~"].iter().enumerate() {
        let (ok, o) = with(&[out(&format!("base{i}")), vec![format!("load_checkpoint={empty}")]].concat());
        assert!(ok, "load_checkpoint={empty}: {o}");
    }
    let base = d.path().join("base0");
    let base_weights = trm::store::checkpoint::resolve(&base).unwrap().join("model.safetensors");
    // Quoted, and beside an --init-from of the same weights (the run folder and its weights file).
    let quoted = format!("load_checkpoint=\"{}\"", base.display());
    let (ok, o) = with(&[out("ft"), vec![quoted.clone(), "--init-from".into(), base_weights.display().to_string()]].concat());
    assert!(ok, "{o}");
    let (ok, o) = with(&[out("ft2"), vec![quoted.clone(), "--init-from".into(), d.path().join("base1").display().to_string()]].concat());
    assert!(!ok && o.contains("name two different starting weights"), "{o}");
    let (ok, o) = trm(&["train".to_string(), "--resume".into(), "--out".into(), d.path().join("ft").display().to_string(), quoted]);
    assert!(!ok && o.contains("cannot be combined with --resume"), "{o}");
    let missing = format!("load_checkpoint={}", d.path().join("nowhere.safetensors").display());
    let (ok, o) = with(&[out("ft3"), vec![missing]].concat());
    assert!(!ok && o.contains("nowhere.safetensors"), "{o}");
}

/// `trm train --out DIR` into a folder that holds someone's files (no checkpoint, so nothing to
/// resume) is refused and leaves every file as it was; an empty folder is a fine start.
#[test]
fn a_new_run_never_writes_over_a_users_files() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::tiny_data(&data);
    let mine = d.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    for f in ["config.toml", "metrics.jsonl", "notes.txt"] {
        std::fs::write(mine.join(f), "mine").unwrap();
    }
    let mut args: Vec<String> = ["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"].map(String::from).to_vec();
    args.push(data.display().to_string());
    args.extend(common::TINY.iter().map(|s| s.to_string()));
    args.extend(["max_steps=1", "eval_max_examples=8", "--out"].map(String::from));
    let (ok, out) = trm(&[args.clone(), vec![mine.display().to_string()]].concat());
    assert!(!ok && out.contains("holds files (config.toml and 2 more) but no checkpoint"), "{out}");
    for f in ["config.toml", "metrics.jsonl", "notes.txt"] {
        assert_eq!(std::fs::read_to_string(mine.join(f)).unwrap(), "mine", "{f} was changed");
    }
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, out) = trm(&[args.clone(), vec![empty.display().to_string()]].concat());
    assert!(ok, "{out}");
    // --resume of a folder no run wrote says so (not "it stopped before its first checkpoint").
    let resume = |dir: &std::path::Path| trm(&["train", "--resume", "--quiet", "--out", dir.to_str().unwrap()].map(String::from));
    let notes = d.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("notes.txt"), "mine").unwrap();
    let (ok, out) = resume(&notes);
    assert!(!ok && out.contains("no run was ever written there"), "{out}");
    // What a run of trm's left when it died before its first checkpoint is started over.
    let died = d.path().join("died");
    std::fs::create_dir(&died).unwrap();
    std::fs::write(died.join(".made-by"), "trm train").unwrap();
    let dead_record = "{\"step\":1,\"split\":\"train\",\"lm_loss\":9.0}";
    std::fs::write(died.join("metrics.jsonl"), format!("{dead_record}\n")).unwrap();
    let (ok, out) = resume(&died);
    assert!(!ok && out.contains("it stopped before its first checkpoint"), "{out}");
    let (ok, out) = trm(&[args.clone(), vec![died.display().to_string()]].concat());
    assert!(ok, "{out}");
    let log = std::fs::read_to_string(died.join("metrics.jsonl")).unwrap();
    assert!(!log.lines().any(|l| l == dead_record) && log.contains("\"split\":\"train\""), "the dead run's log was kept: {log}");
    // A start that fails after taking its lock leaves no folder behind (it made the folder).
    let failed = d.path().join("failed");
    let (ok, out) = trm(&[args.clone(), vec![failed.display().to_string(), "--init-from".into(), "nowhere.safetensors".into()]].concat());
    assert!(!ok && out.contains("nowhere.safetensors"), "{out}");
    assert!(!failed.exists(), "a failed start left {}", failed.display());
    // Nor the parent folders it made for it; an empty parent that was there already stays.
    let kept = d.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    let nested = kept.join("made/for/the/run");
    let (ok, out) = trm(&[args, vec![nested.display().to_string(), "--init-from".into(), "nowhere.safetensors".into()]].concat());
    assert!(!ok && out.contains("nowhere.safetensors"), "{out}");
    assert!(!kept.join("made").exists(), "a failed start left {}", kept.join("made").display());
    assert!(kept.is_dir(), "a failed start removed {}, which it did not make", kept.display());
}

/// A data set whose test split is empty: `trm eval` says there is nothing to evaluate (no accuracy
/// of nothing), and training runs without evaluations, saying so.
#[test]
fn an_empty_test_split_is_named_not_scored() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let (ok, out) = trm(&[
        os("data".as_ref()),
        "generate".as_ref(),
        "--train".as_ref(),
        "20".as_ref(),
        "--test".as_ref(),
        "0".as_ref(),
        "--out".as_ref(),
        os(&data),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = trm(&[os("eval".as_ref()), "--data".as_ref(), os(&data)]);
    assert!(!ok && out.contains("holds no examples: there is nothing to evaluate"), "{out}");
    let mut args: Vec<String> = ["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"].map(String::from).to_vec();
    args.push(data.display().to_string());
    args.extend(["max_steps=1", "--out"].map(String::from));
    args.push(d.path().join("run").display().to_string());
    let (ok, out) = trm(&args);
    assert!(ok && out.contains("training without evaluation"), "{out}");
}

/// `trm data inspect` reads and checks every file, as training would: a truncated array or an
/// identifiers.json that is not a list of names is an error naming the file, not a summary.
#[test]
fn data_inspect_checks_every_file() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::tiny_data(&data);
    let (ok, out) = trm(&[os("data".as_ref()), "inspect".as_ref(), os(&data)]);
    assert!(ok && out.contains("every file checked"), "{out}");
    // --show N: examples as text, question beside answer (a Sudoku answer is nine full rows).
    let (ok, out) =
        trm(&[os("data".as_ref()), "inspect".as_ref(), os(&data), "--show".as_ref(), "2".as_ref(), "--split".as_ref(), "test".as_ref()]);
    assert!(ok && out.contains("test: 2 of 16 examples") && out.contains("example 8 (set all, puzzle 8, identifier 0 `<blank>`)"), "{out}");
    let answers = out.lines().filter(|l| l.len() == 21 && l[12..].chars().all(|c| c.is_ascii_digit() && c != '0')).count();
    assert_eq!(answers, 18, "{out}");
    // A build that stopped between two files leaves its marker: every reader refuses the set.
    let marker = data.join(trm::data::format::BUILDING);
    assert!(!marker.exists(), "a finished build removes its marker");
    std::fs::write(&marker, "").unwrap();
    let (ok, out) = trm(&[os("data".as_ref()), "inspect".as_ref(), os(&data)]);
    assert!(!ok && out.contains("this data set's build did not finish") && out.contains("--force"), "{out}");
    let (ok, out) = trm(&[os("train".as_ref()), "--data".as_ref(), os(&data), "--out".as_ref(), os(&d.path().join("run"))]);
    assert!(!ok && out.contains("this data set's build did not finish"), "{out}");
    std::fs::remove_file(&marker).unwrap();
    let ids = data.join("identifiers.json");
    std::fs::write(&ids, r#"{"a": 1}"#).unwrap();
    let (ok, out) = trm(&[os("data".as_ref()), "inspect".as_ref(), os(&data)]);
    assert!(!ok && out.contains("identifiers.json"), "{out}");
    let npy = data.join("test/all__inputs.npy");
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, out) = trm(&[os("data".as_ref()), "inspect".as_ref(), os(&data)]);
    assert!(!ok && out.contains("test/all__inputs.npy"), "{out}");
}

/// Numbers in well-formed files that would index past one of the model's tables are refused
/// where the file is read, naming the file and the field, never a panic at the first step: a
/// data set's padding token, a checkpoint's Adam moments, a data set or a puzzle of another
/// kind for the model (`trm report`, `trm solve`).
#[test]
fn numbers_that_index_the_model_are_checked_where_they_are_read() {
    let d = tempfile::tempdir().unwrap();
    let (data, run) = (d.path().join("data"), d.path().join("run"));
    common::tiny_data(&data);
    let mut args: Vec<String> = ["train", "--config", "sudoku-tiny", "--quiet", "--threads", "1", "--data"].map(String::from).to_vec();
    args.push(data.display().to_string());
    args.extend(common::TINY.iter().map(|s| s.to_string()));
    args.extend(["max_steps=2", "--out"].map(String::from));
    args.push(run.display().to_string());
    let (ok, out) = trm(&args);
    assert!(ok, "{out}");

    // dataset.json: a padding token outside the vocabulary, read by eval (it used to panic in the
    // first batch's embedding lookup).
    let meta = data.join("test/dataset.json");
    let good = std::fs::read_to_string(&meta).unwrap();
    let mut js: serde_json::Value = serde_json::from_str(&good).unwrap();
    js["pad_id"] = 99.into();
    std::fs::write(&meta, js.to_string()).unwrap();
    let (ok, out) = trm(&[os("eval".as_ref()), "--checkpoint".as_ref(), os(&run), "--data".as_ref(), os(&data)]);
    assert!(!ok && out.contains("test/dataset.json: pad_id 99 is outside the vocabulary 0..11"), "{out}");

    // The same data set declaring a wider vocabulary (its tokens still fit): the report refuses to
    // draw it with the model.
    js["pad_id"] = 0.into();
    js["vocab_size"] = 12.into();
    std::fs::write(&meta, js.to_string()).unwrap();
    let html = d.path().join("report.html");
    let (ok, out) = trm(&[
        os("report".as_ref()),
        "--run".as_ref(),
        os(&run),
        "--data".as_ref(),
        os(&data),
        "--out".as_ref(),
        os(&html),
        "--no-png".as_ref(),
    ]);
    assert!(!ok && out.contains("seq_len 81 / vocab 12 do not match the model's 81 / 11"), "{out}");
    std::fs::write(&meta, good).unwrap();

    // A Sudoku model given a 9x9 maze: 81 tokens, but from the maze's vocabulary.
    let maze = common::write(
        d.path(),
        "maze.txt",
        "#########\n#S      #\n# ##### #\n#     # #\n##### # #\n#     # #\n# ##### #\n#      G#\n#########\n",
    );
    let (ok, out) = trm(&[os("solve".as_ref()), "--checkpoint".as_ref(), os(&run), "--maze".as_ref(), os(&maze)]);
    assert!(!ok && out.contains("the model reads sequences of 81 tokens from a vocabulary of 11"), "{out}");

    // An Adam moment of another shape than its weight (it used to panic in the first update).
    let ckpt = trm::store::checkpoint::resolve(&run).unwrap();
    let state = ckpt.join("state.safetensors");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = trm::util::tensors::read_safetensors(&state)
        .unwrap()
        .into_iter()
        .map(|(k, t)| if k.starts_with("adam_m.lm_head") { (k, vec![4], vec![0.0; 4]) } else { (k, t.shape.clone(), t.f32s()) })
        .collect();
    trm::util::tensors::write_safetensors(&state, &tensors, None).unwrap();
    std::fs::remove_file(ckpt.join("SHA256SUMS")).unwrap(); // as if edited by hand
    let mut resume: Vec<String> = ["train", "--resume", "--quiet", "--threads", "1", "--out"].map(String::from).to_vec();
    resume.push(run.display().to_string());
    let (ok, out) = trm(&resume);
    assert!(!ok && out.contains("`adam_m.lm_head.weight` has shape [4], its weight has"), "{out}");
}

/// `trm demo` and `trm adapt` clear their --out's data and run: while another command holds that
/// folder (here this test, as a running demo would), a second one is refused before it deletes
/// anything (two into one folder wrecked each other and both exited 0).
#[test]
fn a_demo_into_a_folder_in_use_is_refused_before_it_clears_anything() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    std::fs::create_dir_all(out.join("run")).unwrap();
    std::fs::write(out.join("run").join(".made-by"), "trm demo").unwrap();
    std::fs::write(out.join("run").join("metrics.jsonl"), "{}\n").unwrap();
    let held = trm::util::lock::RunLock::acquire_output(&out, "trm demo").unwrap();
    let (ok, msg) = trm(&[os("demo".as_ref()), "--steps".as_ref(), "1".as_ref(), "--out".as_ref(), os(&out)]);
    assert!(!ok && msg.contains(&format!("is in use by another trm process (pid {})", std::process::id())), "{msg}");
    assert!(out.join("run").join("metrics.jsonl").exists(), "the first one's files are kept");
    drop(held);
}

/// A run's own files replaced by a device (a link to /dev/zero, as a pipe in their place would
/// be) are refused when read, not read until memory runs out (or forever); a log that a damaged
/// disk or a diverged run left odd is still reported; and a command given one checkpoint of a
/// run never writes over the rest of the run. Found by a review on 2026-12-08: each of these hung,
/// filled memory, or replaced the run's log.
#[test]
fn run_files_that_are_devices_are_refused_and_the_whole_run_is_protected() {
    let (data, run, user, ckpt) = trained_run();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // Each file, in turn, a link to /dev/zero: (file, command, what the refusal says).
    let html = s(&user.path().join("r.html"));
    let report = vec!["report".to_string(), "--run".into(), s(run.path()), "--out".into(), html.clone(), "--puzzles".into(), "0".into()];
    let export = vec!["export".to_string(), "--checkpoint".into(), s(run.path()), "--out".into(), s(&user.path().join("w.pt"))];
    let cases = [
        (run.path().join("metrics.jsonl"), report.clone(), "metrics.jsonl is not a regular file"),
        (ckpt.join("SHA256SUMS"), export.clone(), "SHA256SUMS is not a regular file"),
        (user.path().join("all_config.yaml"), export.clone(), "pipe or device"),
        // `latest` unreadable: the newest checkpoint is found without it.
        (run.path().join("checkpoints/latest"), export.clone(), ""),
    ];
    for (file, args, says) in cases {
        let kept = file.with_extension("kept");
        if file.exists() {
            std::fs::rename(&file, &kept).unwrap();
        }
        std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        let (code, out) = trm_capped(&args);
        match says {
            "" => assert_eq!(code, Some(0), "{}: {out}", file.display()),
            _ => assert!(code == Some(1) && out.contains(says), "{}: {code:?} {out}", file.display()),
        }
        std::fs::remove_file(&file).unwrap();
        if kept.exists() {
            std::fs::rename(&kept, &file).unwrap();
        }
        let _ = std::fs::remove_file(user.path().join("w.pt"));
        let _ = std::fs::remove_file(user.path().join("all_config.yaml"));
    }
    // A line that is not UTF-8, and a loss of 1e308 (whose chart's span overflowed and whose PNG
    // never ended): reported, the line skipped with its number.
    let log = run.path().join("metrics.jsonl");
    let before = std::fs::read(&log).unwrap();
    let mut odd = before.clone();
    odd.extend_from_slice(b"\xff\xfe{\"x\n{\"lm_loss\":1.7976931348623157e308,\"split\":\"train\",\"step\":3}\n");
    std::fs::write(&log, &odd).unwrap();
    let lines = before.iter().filter(|&&b| b == b'\n').count();
    let (code, out) = trm_capped(&report);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("metrics.jsonl:{}: skipped a line that is not JSON", lines + 1)), "{out}");
    assert!(Path::new(&html).with_extension("png").is_file());
    std::fs::write(&log, &before).unwrap();
    // Given one checkpoint folder, the run around it is still protected, --force or not.
    for target in [log.clone(), run.path().join("checkpoints/latest")] {
        let (ok, out) =
            trm(&[os("export".as_ref()), "--checkpoint".as_ref(), os(&ckpt), "--out".as_ref(), os(&target), "--force".as_ref()]);
        assert!(!ok && out.contains("belongs to the run of the checkpoint being exported"), "{out}");
    }
    let (ok, out) = trm(&[
        os("eval".as_ref()),
        "--checkpoint".as_ref(),
        os(&ckpt.join("model.safetensors")),
        "--data".as_ref(),
        os(data.path()),
        "--save-outputs".as_ref(),
        os(&log),
        "--force".as_ref(),
    ]);
    assert!(!ok && out.contains("belongs to the run of the model being evaluated"), "{out}");
    assert_eq!(std::fs::read(&log).unwrap(), before);
    // An --out that names a folder (`new/`): refused before any work, naming the flag.
    let (ok, out) = trm(&[os("export".as_ref()), "--checkpoint".as_ref(), os(run.path()), "--out".as_ref(), "newdir/".as_ref()]);
    assert!(!ok && out.contains("--out newdir/: ends with a path separator"), "{out}");
    // A configuration file that is a device.
    let (code, out) = trm_capped(&["info", "--config", "/dev/zero"]);
    assert!(code == Some(1) && out.contains("/dev/zero is not a regular file"), "{code:?} {out}");
}
