//! Data parallelism on the CPU: 2 and 3 in-process ranks (threads, `parallel::threads`), each with its
//! share of every batch, end where one rank with the whole batch ends: weights, Adam moments,
//! EMA, puzzle-embedding table and carry, within float32 summation order. Puzzle identifiers
//! repeat within and across ranks. A multi-rank run resumes with another number of ranks. So do
//! micro-batches (`micro_batch_size`): a rank's rows in several passes, one update.

mod common;

use common::tiny_data;
use std::collections::BTreeMap;
use std::path::Path;
use trm::parallel::threads;
use trm::store::checkpoint;
use trm::train::trainer::{TrainJob, TrainSummary, train_with};
use trm::util::tensors::{HostTensor, read_safetensors};

type AD = burn::backend::Autodiff<burn::backend::Flex>;

/// The tiny Sudoku set with identifiers 1..=5 (puzzle p gets 1 + p % 5), so a batch of 12 rows
/// holds several ids, each on several rows and ranks.
fn data_with_ids(dir: &Path) {
    tiny_data(dir);
    for split in ["train", "test"] {
        let d = dir.join(split);
        let mut s = trm::data::format::read_split(&d).unwrap();
        let (_, data) = &mut s.sets[0];
        // Owned copies: the read maps the files, and Windows cannot replace a mapped file.
        data.inputs = data.inputs.to_vec().into();
        data.labels = data.labels.to_vec().into();
        for (p, id) in data.puzzle_identifiers.iter_mut().enumerate() {
            *id = 1 + (p % 5) as i32;
        }
        let mut meta = s.metadata.clone();
        meta.num_puzzle_identifiers = 6;
        trm::data::format::write_split(&d, data, &meta).unwrap();
    }
    let names: Vec<String> = (0..6).map(|i| if i == 0 { "<blank>".into() } else { format!("p{i}") }).collect();
    trm::data::format::write_identifiers(dir, &names).unwrap();
}

fn job(data: &Path, out: &Path, steps: u64, resume: bool) -> TrainJob {
    job_with(data, out, steps, resume, &[])
}

/// `job` with more overrides (`extra`, last).
fn job_with(data: &Path, out: &Path, steps: u64, resume: bool, extra: &[&str]) -> TrainJob {
    let run = [
        "global_batch_size=12",
        "epochs=60",
        "eval_interval=30",
        "eval_max_examples=8",
        "arch.halt_exploration_prob=0.5",
        "checkpoint_interval_steps=3",
        "lr=1e-3",
    ];
    let mut ov: Vec<String> = run.iter().map(|s| s.to_string()).collect();
    ov.push(format!("max_steps={steps}"));
    ov.extend(extra.iter().map(|s| s.to_string()));
    common::tiny_job(data, out, &ov, resume)
}

/// Runs `job` on `world` threads; returns every rank's summary.
fn run_ranks(job: &TrainJob, world: usize) -> Vec<TrainSummary> {
    std::thread::scope(|s| {
        let hs: Vec<_> = threads::group(world)
            .into_iter()
            .map(|mut r| s.spawn(move || train_with::<AD>(job, &Default::default(), &mut r).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn final_state(run: &Path) -> BTreeMap<String, HostTensor> {
    let ckpt = checkpoint::resolve(run).unwrap();
    let mut all = read_safetensors(&ckpt.join("state.safetensors")).unwrap();
    for (k, v) in read_safetensors(&ckpt.join("model.safetensors")).unwrap() {
        all.insert(format!("model/{k}"), v);
    }
    all
}

/// (largest |a - b| over all tensors, the tensor it is in, fraction of values that differ by more
/// than 1e-5).
fn compare(a: &BTreeMap<String, HostTensor>, b: &BTreeMap<String, HostTensor>) -> (f64, String, f64) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (mut worst, mut at, mut differ, mut n) = (0.0f64, String::new(), 0usize, 0usize);
    for (k, va) in a {
        assert_eq!(va.shape, b[k].shape, "{k}");
        for (x, y) in va.values.iter().zip(&b[k].values) {
            let d = (x - y).abs();
            differ += (d > 1e-5) as usize;
            n += 1;
            if d > worst {
                (worst, at) = (d, k.clone());
            }
        }
    }
    (worst, at, differ as f64 / n as f64)
}

#[test]
fn two_and_three_ranks_match_one_rank_and_resume_across_world_sizes() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    data_with_ids(data.path());
    let d = data.path();
    let steps = 6;
    let one = runs.path().join("one");
    let s1 = run_ranks(&job(d, &one, steps, false), 1);
    let reference = final_state(&one);
    assert!(reference.contains_key("carry.z_H") && reference.keys().any(|k| k.starts_with("ema.")));
    // Bound: AdamATan2's update is lr * atan2(m, sqrt v); where a gradient is ~0, summation order
    // can flip its sign, moving that element by up to lr * pi/2 per step (lr = 1e-3).
    let bound = 1e-3 * std::f64::consts::PI / 2.0 * steps as f64;
    for world in [2, 3] {
        let out = runs.path().join(format!("w{world}"));
        let s = run_ranks(&job(d, &out, steps, false), world);
        assert!(s.iter().all(|x| x.steps == steps), "every rank ran {steps} steps");
        let (worst, at, frac) = compare(&reference, &final_state(&out));
        eprintln!("{world} ranks vs 1: max |diff| {worst:.3e} (in {at}), {:.4}% of values differ by > 1e-5", 100.0 * frac);
        assert!(worst <= bound && frac < 1e-3, "{world} ranks: {worst} in {at}, {frac}");
        // Evaluation is sharded and reduced: the same examples, the same scores up to float order.
        let (e1, ew) = (&s1[0].evals.last().unwrap().1, &s[0].evals.last().unwrap().1);
        assert_eq!(e1.count, ew.count);
        assert!((e1.accuracy - ew.accuracy).abs() < 0.05, "{} vs {}", e1.accuracy, ew.accuracy);
        // Every rank got the reduced numbers, not its share's.
        assert!(s.iter().all(|x| x.evals.last().unwrap().1.count == e1.count));
    }
    // 2 ranks to step 3 (a checkpoint), then resumed on 3 ranks to step 6.
    let split = runs.path().join("split");
    run_ranks(&job(d, &split, 3, false), 2);
    let s = run_ranks(&job(d, &split, steps, true), 3);
    assert!(s.iter().all(|x| x.steps == steps));
    let (worst, at, frac) = compare(&reference, &final_state(&split));
    eprintln!("2 ranks, resumed on 3, vs 1: max |diff| {worst:.3e} (in {at}), {:.4}% of values differ by > 1e-5", 100.0 * frac);
    assert!(worst <= bound && frac < 1e-3, "resumed: {worst} in {at}, {frac}");
    // Only rank 0 wrote: one log line per step.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(log.matches("\"split\":\"train\"").count(), steps as usize);
}

/// `micro_batch_size`: a rank's rows in several forward and backward passes, the gradients
/// summed before the one update, ends where one pass per batch ends (weights, moments, EMA,
/// puzzle table, carry), on one rank and on two, with winner-take-all chains too; a run resumes
/// with another split; a split that does not divide the rank's rows is refused, naming the key.
#[test]
fn micro_batches_match_one_pass_per_batch_and_resume_with_another_split() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    data_with_ids(data.path());
    let d = data.path();
    let steps = 6;
    let bound = 1e-3 * std::f64::consts::PI / 2.0 * steps as f64; // as in the test above
    let run = |name: &str, world: usize, steps: u64, resume: bool, extra: &[&str]| {
        let out = runs.path().join(name);
        let s = run_ranks(&job_with(d, &out, steps, resume, extra), world);
        assert!(s.iter().all(|x| x.steps == steps), "{name}: every rank ran {steps} steps");
        final_state(&out)
    };
    let check = |what: &str, reference: &BTreeMap<String, HostTensor>, got: &BTreeMap<String, HostTensor>| {
        let (worst, at, frac) = compare(reference, got);
        eprintln!("{what}: max |diff| {worst:.3e} (in {at}), {:.4}% of values differ by > 1e-5", 100.0 * frac);
        assert!(worst <= bound && frac < 1e-3, "{what}: {worst} in {at}, {frac}");
    };
    let whole = run("whole", 1, steps, false, &[]);
    check("1 rank, micro-batches of 4", &whole, &run("m4", 1, steps, false, &["micro_batch_size=4"]));
    check("1 rank, micro-batches of 1", &whole, &run("m1", 1, steps, false, &["micro_batch_size=1"]));
    check("2 ranks, micro-batches of 3", &whole, &run("w2m3", 2, steps, false, &["micro_batch_size=3"]));
    // Winner-take-all: 2 carry rows per example, so a micro-batch of 3 examples is 6 carry rows.
    let wta_whole = run("wta", 1, steps, false, &["arch.wta_chains=2"]);
    check("winner-take-all, micro-batches of 3", &wta_whole, &run("wta-m3", 1, steps, false, &["arch.wta_chains=2", "micro_batch_size=3"]));
    // To step 3 in micro-batches of 6, resumed in micro-batches of 2 (the key is resume-safe).
    run("split", 1, 3, false, &["micro_batch_size=6"]);
    check("micro-batches of 6, resumed in micro-batches of 2", &whole, &run("split", 1, steps, true, &["micro_batch_size=2"]));
    // The micro-batch must divide the rank's rows (12 on one rank, 6 on each of two).
    for (world, micro) in [(1, 5), (2, 4), (1, 24)] {
        let j = job_with(d, &runs.path().join(format!("bad{world}-{micro}")), 2, false, &[&format!("micro_batch_size={micro}")]);
        let e = std::thread::scope(|s| {
            let hs: Vec<_> = threads::group(world)
                .into_iter()
                .map(|mut r| {
                    let j = &j;
                    s.spawn(move || format!("{:#}", train_with::<AD>(j, &Default::default(), &mut r).unwrap_err()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        assert!(e.iter().all(|e| e.contains(&format!("micro_batch_size {micro} does not divide the {} rows", 12 / world))), "{e:?}");
    }
    let e = format!("{:#}", trm::store::config::resolve("sudoku-tiny", &["micro_batch_size=0".into()]).unwrap_err());
    assert!(e.contains("micro_batch_size must be positive"), "{e}");
}

/// One rank of a transport runs every collective through it (only the plain run skips them):
/// gradients, puzzle rows, metrics, the carry and the answers go through the exchange and come back
/// unchanged. (This is what `trm launch --nproc 1` does with NCCL on one GPU.)
#[test]
fn one_thread_rank_is_bit_identical_to_a_plain_run() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    data_with_ids(data.path());
    let (a, b) = (runs.path().join("a"), runs.path().join("b"));
    trm::train::trainer::train::<AD>(&job(data.path(), &a, 4, false), &Default::default()).unwrap();
    // A transport of one rank exchanges through itself (only the plain run skips collectives).
    assert!(!trm::parallel::Reducer::is_single(&threads::group(1)[0]));
    run_ranks(&job(data.path(), &b, 4, false), 1);
    let (worst, at, _) = compare(&final_state(&a), &final_state(&b));
    assert_eq!(worst, 0.0, "{at}");
}

#[test]
fn a_batch_that_does_not_split_is_refused_on_every_rank() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    data_with_ids(data.path());
    let j = job(data.path(), runs.path(), 2, false);
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = threads::group(5)
            .into_iter()
            .map(|mut r| {
                let j = &j;
                s.spawn(move || format!("{:#}", train_with::<AD>(j, &Default::default(), &mut r).unwrap_err()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errs.iter().all(|e| e.contains("does not split over 5 ranks")), "{errs:?}");
}

/// Without GPUs, `trm launch` and a launcher's environment are refused at once with the reason.
#[test]
fn launching_processes_on_the_cpu_is_a_clear_refusal_not_a_hang() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    data_with_ids(data.path());
    let bin = env!("CARGO_BIN_EXE_trm");
    let train = |c: &mut std::process::Command| {
        c.args(["train", "--device", "cpu", "--quiet", "--data"]).arg(data.path()).arg("--out").arg(runs.path().join("r"));
    };
    let t0 = std::time::Instant::now();
    let mut c = std::process::Command::new(bin);
    c.args(["launch", "--nproc", "2", "--"]);
    train(&mut c);
    let o = c.output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && msg.contains("needs CUDA GPUs"), "{msg}");
    let mut c = std::process::Command::new(bin);
    c.env("RANK", "1").env("WORLD_SIZE", "2").env("MASTER_ADDR", "127.0.0.1");
    train(&mut c);
    let o = c.output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && msg.contains("asks for 2 ranks"), "{msg}");
    // A variable that is not UTF-8 was read as unset: this rank 1 trained alone as rank 0.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut c = std::process::Command::new(bin);
        c.env("RANK", "1").env("WORLD_SIZE", std::ffi::OsStr::from_bytes(b"2\xff"));
        train(&mut c);
        let o = c.output().unwrap();
        let msg = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && msg.contains("WORLD_SIZE=2\u{fffd}: not text"), "{msg}");
    }
    // trm launch in each task of a multi-task srun step would start separate worlds.
    let mut c = std::process::Command::new(bin);
    c.env("SLURM_STEP_NUM_TASKS", "2").env("SLURM_PROCID", "0").args(["launch", "--nproc", "2", "--"]);
    train(&mut c);
    let o = c.output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && msg.contains("this srun step runs 2 tasks"), "{msg}");
    assert!(t0.elapsed().as_secs() < 60, "refused at once");
    assert!(!runs.path().join("r").join("checkpoints").exists(), "nothing was trained");
}

/// `trm bench --micro-batch M`: training steps in passes of M rows, reported as such; refused in
/// evaluation and where M does not divide the batch.
#[test]
fn bench_times_micro_batched_steps_and_refuses_what_cannot_split() {
    let bench = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trm"));
        c.args(["bench", "--shape", "sudoku-mlp", "--batch", "4", "--warmup", "0", "--reps", "1", "--threads", "2", "--json"]);
        c.args(extra).output().unwrap()
    };
    let o = bench(&["--mode", "train", "--micro-batch", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["micro_batch"].as_u64(), r["batch"].as_u64()), (Some(2), Some(4)), "{r}");
    for (extra, want) in [
        (["--mode", "train", "--micro-batch", "3"], "--micro-batch 3 must divide --batch 4"),
        (["--mode", "eval", "--micro-batch", "2"], "it needs --mode train"),
    ] {
        let o = bench(&extra);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(want), "{e}");
    }
}
