//! A bounded fuzzing harness (proptest) for every parser users feed files to: Sudoku and Maze CSV
//! rows, ARC JSON tasks, `.npy` headers and data set folders, safetensors checkpoints, TOML
//! configs and key=value overrides. Each input is a mutation of a valid seed (bytes flipped,
//! inserted, deleted, truncated, spliced with tokens the format uses) or random text. A parser may
//! accept or refuse an input; it must never panic. Inputs per target: `TRM_FUZZ_CASES` (default
//! 1000; CI runs the default). Each target prints how many inputs it tried.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;

fn cases() -> u32 {
    std::env::var("TRM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(i, x) if !b.is_empty() => b[i % n] ^= x,
            Edit::Insert(i, s) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, s.iter().copied());
            }
            Edit::Delete(i, k) if !b.is_empty() => {
                let at = i % n;
                let end = (at + k).min(b.len());
                b.drain(at..end);
            }
            Edit::Truncate(i) => b.truncate(i % (b.len() + 1)),
            _ => {}
        }
    }
    b
}

/// Edits that splice in `tokens` of the format (delimiters, numbers, keywords) as well as bytes.
fn edits(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let token = prop::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec());
    let edit = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<usize>(), prop_oneof![token, prop::collection::vec(any::<u8>(), 1..8)]).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..64).prop_map(|(i, k)| Edit::Delete(i, k)),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..6)
}

/// Runs `check` on mutations of `seed`, counting inputs; a panic fails the test with the input.
fn fuzz(name: &str, seed: &[u8], tokens: &'static [&'static str], check: impl FnMut(&[u8])) {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let (tried, check) = (std::cell::Cell::new(0usize), std::cell::RefCell::new(check));
    let strategy = prop_oneof![4 => edits(tokens).prop_map(Some), 1 => Just(None)]
        .prop_flat_map(|e| (Just(e), prop::collection::vec(any::<u8>(), 0..200)));
    let result = runner.run(&strategy, |(e, random)| {
        tried.set(tried.get() + 1);
        let input = match e {
            Some(e) => apply(seed, &e),
            None => random,
        };
        (check.borrow_mut())(&input);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    eprintln!("fuzz {name}: {} inputs, no panic", tried.get());
}

fn in_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const CSV_TOKENS: &[&str] =
    &[",", "\n", "\"", "\r\n", ".", "0", "9", "10", "#", "S", "G", "o", " ", "question", "answer", "source", "rating"];

/// Each seed is a valid input (asserted), so the mutations explore the accepted path and its edges.
#[test]
fn fuzz_sudoku_csv_rows() {
    let dir = tempfile::tempdir().unwrap();
    let q = ".47.5....6.9.3.4..53..........9..6.....3.6.82.....5.4.79...4..64.37......56.9....";
    let a = "247659318689137425531482967874921653915346782362875149798514236423768591156293874";
    let seed = format!("source,question,answer,rating\nx,{q},{a},3\n");
    trm::data::sudoku::read_csv(&in_file(dir.path(), "s.csv", seed.as_bytes())).expect("the seed CSV reads");
    trm::cli::solve::sudoku_tokens(q).expect("the seed puzzle reads");
    fuzz("sudoku csv", seed.as_bytes(), CSV_TOKENS, |b| {
        let _ = trm::data::sudoku::read_csv(&in_file(dir.path(), "s.csv", b));
    });
    fuzz("sudoku text", q.as_bytes(), CSV_TOKENS, |b| {
        let _ = trm::cli::solve::sudoku_tokens(&String::from_utf8_lossy(b));
    });
}

#[test]
fn fuzz_maze_csv_rows_and_maze_files() {
    let dir = tempfile::tempdir().unwrap();
    let seed = "source,question,answer,rating\nx,\"# SG\",\"# SG\",2\nx,\"S  G\",\"So G\",1\n";
    let maze = "#S#\n   \n#G#\n";
    trm::data::maze::read_csv(&in_file(dir.path(), "m.csv", seed.as_bytes())).expect("the seed CSV reads");
    trm::cli::solve::maze_tokens(&in_file(dir.path(), "m.txt", maze.as_bytes())).expect("the seed maze reads");
    fuzz("maze csv", seed.as_bytes(), CSV_TOKENS, |b| {
        let _ = trm::data::maze::read_csv(&in_file(dir.path(), "m.csv", b));
    });
    fuzz("maze file", maze.as_bytes(), CSV_TOKENS, |b| {
        let _ = trm::cli::solve::maze_tokens(&in_file(dir.path(), "m.txt", b));
    });
}

const JSON_TOKENS: &[&str] =
    &["{", "}", "[", "]", ",", ":", "\"", "train", "test", "input", "output", "[[1]]", "[]", "null", "-1", "30", "1e9", "\"a\""];

#[test]
fn fuzz_arc_json_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("x").to_string_lossy().to_string();
    let seed = r#"{"t1": {"train": [{"input": [[1,2],[3,4]], "output": [[4,3],[2,1]]}], "test": [{"input": [[0,9]], "output": [[9,0]]}]}}"#;
    let sols = r#"{"t1": [[[9,0]]]}"#;
    fuzz("arc json", seed.as_bytes(), JSON_TOKENS, |b| {
        in_file(dir.path(), "x_a_challenges.json", b);
        let _ = trm::data::arc_task::load_subset(&prefix, "a");
        in_file(dir.path(), "x_b_challenges.json", seed.as_bytes());
        in_file(dir.path(), "x_b_solutions.json", b);
        let _ = trm::data::arc_task::load_subset(&prefix, "b");
        let _ = trm::cli::adapt::read_tasks(&in_file(dir.path(), "task.json", b), None);
        let _ = trm::cli::adapt::read_tasks(&dir.path().join("x_b_challenges.json"), Some(&in_file(dir.path(), "s.json", sols.as_bytes())));
    });
}

const NPY_TOKENS: &[&str] =
    &["\u{93}NUMPY", "{", "}", "'descr'", "'<i4'", "'|u1'", "'<f8'", "'fortran_order'", "True", "(", ")", ",", "81", "-1", "999999999999"];

#[test]
fn fuzz_npy_headers_and_data_set_folders() {
    let data = tempfile::tempdir().unwrap();
    common::tiny_data(data.path());
    let split = data.path().join("train");
    let inputs = trm::data::format::array_path(&split, "all", "inputs");
    let seed_u8 = std::fs::read(&inputs).unwrap();
    let ids = trm::data::format::array_path(&split, "all", "puzzle_indices");
    let seed_i32 = std::fs::read(&ids).unwrap();
    let meta = std::fs::read(split.join("dataset.json")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // Header-sized seeds: the mutations land in the header, where the parser works hardest.
    fuzz("npy u8", &seed_u8[..seed_u8.len().min(400)], NPY_TOKENS, |b| {
        let _ = trm::data::npy::read_u8(&in_file(scratch.path(), "a.npy", b));
    });
    fuzz("npy i32", &seed_i32, NPY_TOKENS, |b| {
        let _ = trm::data::npy::read_i32(&in_file(scratch.path(), "b.npy", b));
    });
    // Whole split folders: one file mutated at a time, the rest intact.
    let copy = scratch.path().join("split");
    for f in std::fs::read_dir(&split).unwrap() {
        let f = f.unwrap().path();
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let targets = ["all__puzzle_indices.npy", "all__group_indices.npy", "all__puzzle_identifiers.npy", "all__labels.npy"];
    let mut k = 0;
    fuzz("data set split", &meta, JSON_TOKENS, |b| {
        in_file(&copy, "dataset.json", b);
        let _ = trm::data::format::read_split(&copy);
        std::fs::write(copy.join("dataset.json"), &meta).unwrap();
        // the same input as an index array
        let t = targets[k % targets.len()];
        k += 1;
        let orig = std::fs::read(split.join(t)).unwrap();
        std::fs::write(copy.join(t), b).unwrap();
        let _ = trm::data::format::read_split(&copy);
        std::fs::write(copy.join(t), orig).unwrap();
    });
}

#[test]
fn fuzz_safetensors_checkpoints() {
    type B = burn::backend::Flex;
    let data = tempfile::tempdir().unwrap();
    common::tiny_data(data.path());
    let run = tempfile::tempdir().unwrap();
    let ov: Vec<String> =
        common::TINY.iter().map(|s| s.to_string()).chain(["max_steps=1".into(), "epochs=4".into(), "eval_interval=2".into()]).collect();
    let job = trm::train::trainer::TrainJob {
        config: trm::store::config::resolve("sudoku-tiny", &ov).unwrap(),
        data: data.path().into(),
        out: run.path().into(),
        resume: false,
        overrides: vec![],
        quiet: true,
        init_from: None,
        time_limit: None,
        engine_flags: String::new(),
        memory_check: true,
    };
    trm::train::trainer::train::<burn::backend::Autodiff<B>>(&job, &Default::default()).unwrap();
    let ckpt = trm::store::checkpoint::resolve(run.path()).unwrap();
    let model = trm::store::checkpoint::read_state_json(&ckpt).unwrap().model;
    let seed = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // Mutations near the header (where lengths and offsets live) and anywhere in the file.
    let head = &seed[..seed.len().min(2048)];
    const ST_TOKENS: &[&str] =
        &["{", "}", "\"dtype\"", "\"F32\"", "\"BF16\"", "\"I64\"", "\"shape\"", "\"data_offsets\"", "[0,4]", "__metadata__", "\u{0}"];
    fuzz("safetensors header", head, ST_TOKENS, |b| {
        let mut file = b.to_vec();
        file.extend_from_slice(&seed[head.len()..]);
        let f = in_file(scratch.path(), "model.safetensors", &file);
        let _ = trm::util::tensors::read_safetensors(&f);
        let _ = trm::store::checkpoint::load_model::<B>(&f, &model, &Default::default());
    });
    fuzz("safetensors body", &seed, ST_TOKENS, |b| {
        let f = in_file(scratch.path(), "model.safetensors", b);
        let _ = trm::store::checkpoint::load_model::<B>(&f, &model, &Default::default());
    });
    // Checkpoint folders: mutated state.json and SHA256SUMS are refused or verified, never a panic.
    let copy = scratch.path().join("ckpt");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&ckpt).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let state = std::fs::read(ckpt.join("state.json")).unwrap();
    let sums = std::fs::read(ckpt.join("SHA256SUMS")).unwrap();
    fuzz("checkpoint folder", &state, JSON_TOKENS, |b| {
        std::fs::write(copy.join("state.json"), b).unwrap();
        trm::store::integrity::forget(&copy);
        let _ = trm::store::checkpoint::resolve(&copy);
        let _ = trm::store::checkpoint::load_state::<B>(&copy, &Default::default());
        std::fs::write(copy.join("state.json"), &state).unwrap();
        std::fs::write(copy.join("SHA256SUMS"), apply(&sums, &[Edit::Insert(b.len(), b.to_vec())])).unwrap();
        trm::store::integrity::forget(&copy);
        let _ = trm::store::checkpoint::resolve(&copy);
        std::fs::write(copy.join("SHA256SUMS"), &sums).unwrap();
    });
}

const TOML_TOKENS: &[&str] = &[
    "=",
    "\n",
    "[",
    "]",
    "[arch]",
    "\"",
    "'",
    "true",
    "False",
    "1e400",
    "-1",
    "0",
    "nan",
    "inf",
    "{}",
    "arch",
    "name",
    "hrm",
    "trm",
    "H_cycles",
    "L_cycles",
    "hidden_size",
    "lr",
    "global_batch_size",
    "epochs",
    "eval_interval",
    ".",
    "+",
    "#",
];

#[test]
fn fuzz_toml_configs_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let seed = trm::store::config::resolve("sudoku-tiny", &[]).unwrap().to_toml();
    fuzz("toml config", seed.as_bytes(), TOML_TOKENS, |b| {
        let f = in_file(dir.path(), "c.toml", b);
        let _ = trm::store::config::resolve(&f.to_string_lossy(), &[]);
    });
    let seed = "arch=hrm arch.H_cycles=2 lr=1e-4 global_batch_size=8 ema=True +run_name=x arch.loss.loss_type=softmax_cross_entropy";
    let base = trm::store::config::resolve("sudoku-tiny", &[]).unwrap();
    fuzz("key=value overrides", seed.as_bytes(), TOML_TOKENS, |b| {
        let ov: Vec<String> = String::from_utf8_lossy(b).split(' ').map(String::from).collect();
        if let Ok(c) = trm::store::config::resolve("sudoku-tiny", &ov) {
            // What resolves also builds a model or is refused by the model's own checks.
            let m = trm::model::config::ModelConfig { arch: c.arch.clone(), seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 2 };
            let _ = m.validate();
        }
        let _ = trm::store::resume::resume_config(&base, &ov);
    });
}

/// Peak resident memory of this test process so far, in MB (0 where the OS reports none).
fn peak_mb() -> u64 {
    trm::util::alloc::peak_rss().map_or(0, |b| b >> 20)
}

/// The memory cap of the parser targets: what the whole test process may have reached.
const PEAK_CAP_MB: u64 = 1024;

/// Pickle opcodes (ASCII ones; the others come from byte edits): memo puts and gets, containers,
/// marks, calls, persistent ids.
const PICKLE_TOKENS: &[&str] = &[
    "q\0",
    "q\u{1}",
    "h\0",
    "h\u{1}",
    "j\0\0\0\0",
    "r\0\0\0\0",
    "]",
    ")",
    "}",
    "(",
    "t",
    "l",
    "d",
    "a",
    "e",
    "s",
    "u",
    "R",
    "Q",
    "N",
    ".",
    "K\u{5}",
    "ctorch._utils\n_rebuild_tensor_v2\n",
    "ctorch\nFloatStorage\n",
    "ccollections\nOrderedDict\n",
    "X\u{1}\0\0\0w",
    "X\u{7}\0\0\0storage",
];

/// A torch.save zip around `pkl` (stored entries, as torch writes them), plus the storages of
/// `like` so that tensors the pickle names can be found.
fn torch_zip_with(pkl: &[u8], like: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("plain/data.pkl", opts).unwrap();
    std::io::Write::write_all(&mut z, pkl).unwrap();
    for (name, bytes) in like.iter().filter(|(n, _)| !n.ends_with("data.pkl")) {
        z.start_file(name.as_str(), opts).unwrap();
        std::io::Write::write_all(&mut z, bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

#[test]
fn fuzz_torch_save_files() {
    use std::io::Read;
    let seed_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch/plain.pt");
    let seed = std::fs::read(&seed_file).unwrap();
    let mut zin = zip::ZipArchive::new(std::io::Cursor::new(&seed)).unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..zin.len())
        .map(|i| {
            let mut f = zin.by_index(i).unwrap();
            let mut b = vec![];
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect();
    let pkl = entries.iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1.clone();
    let scratch = tempfile::tempdir().unwrap();
    // The pickle, where the reader works hardest, inside an intact zip.
    fuzz("torch pickle", &pkl, PICKLE_TOKENS, |b| {
        let f = in_file(scratch.path(), "p.pt", &torch_zip_with(b, &entries));
        let _ = trm::util::torch_zip::read(&f, "");
        let _ = trm::store::checkpoint::read_weights(&f);
    });
    // The whole file: zip headers, directory, storages.
    fuzz("torch zip", &seed, PICKLE_TOKENS, |b| {
        let f = in_file(scratch.path(), "z.pt", b);
        let _ = trm::store::checkpoint::read_weights(&f);
    });
    let peak = peak_mb();
    eprintln!("fuzz torch: peak memory of the test process {peak} MB");
    assert!(peak < PEAK_CAP_MB, "peak memory {peak} MB");
}

const YAML_TOKENS: &[&str] = &[
    ":",
    ": ",
    "\n",
    "  ",
    "    ",
    "- ",
    "-",
    "'",
    "\"",
    "''",
    "null",
    "~",
    "[]",
    "{}",
    "[1]",
    "&a",
    "*a",
    "|",
    ">",
    "!!",
    "#",
    "arch",
    "name",
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "H_cycles",
    "L_cycles",
    "hidden_size",
    "1e999",
    "-1",
    "\\u0000",
];

#[test]
fn fuzz_all_config_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let seed = trm::infer::bundled::CONFIG.as_bytes();
    fuzz("all_config.yaml", seed, YAML_TOKENS, |b| {
        let f = in_file(dir.path(), "all_config.yaml", b);
        let _ = trm::store::hydra_config::overrides_from_file(&f);
        let _ = trm::store::hydra_config::resolve_for_weights(&dir.path().join("model.safetensors"), None, &[]);
    });
    let peak = peak_mb();
    eprintln!("fuzz yaml: peak memory of the test process {peak} MB");
    assert!(peak < PEAK_CAP_MB, "peak memory {peak} MB");
}
