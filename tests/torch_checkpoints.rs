//! The reference's checkpoints (`torch.save` state dicts) read directly: both key prefixes,
//! wrapped and nested dicts, bfloat16/float16 storages, views at an offset, and the strictness
//! errors. The files are made by tests/fixtures/torch/make.py with the reference's model class;
//! `trm parity` of a reference fixture with its weights as a torch file gives the reference's
//! logits.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use trm::store::checkpoint::{load_model, read_weights};
use trm::util::tensors::{F32Tensor, read_safetensors_f32};

type B = burn::backend::Flex;
type AD = burn::backend::Autodiff<B>;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn weights(name: &str) -> BTreeMap<String, F32Tensor> {
    read_weights(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e:#}")).1
}

/// The truth, by canonical name (prefix `prefix` stripped).
fn truth(file: &str, prefix: &str) -> BTreeMap<String, F32Tensor> {
    read_safetensors_f32(&dir().join(file))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.strip_prefix(prefix).unwrap().strip_prefix("model.inner.").unwrap().to_string(), v))
        .collect()
}

fn err(spec: &str) -> String {
    format!("{:#}", read_weights(&dir().join(spec)).unwrap_err())
}

#[test]
fn state_dicts_in_every_published_shape_read_bit_exactly() {
    let want = truth("values.safetensors", "");
    assert!(want.len() >= 10 && want.contains_key("H_init") && want.contains_key("puzzle_emb.weights"));
    assert_eq!(weights("plain.pt"), want, "plain prefix");
    assert_eq!(weights("compiled.pt"), want, "_orig_mod. prefix");
    assert_eq!(weights("wrapped.pt"), want, "the one state dict inside a wrapper");
    assert_eq!(weights("nested.pt#model"), want, "#model");
    assert_eq!(weights("nested.pt#ema"), truth("ema_values.safetensors", "ema."), "#ema");
    let e = err("nested.pt");
    assert!(e.contains("several state dicts") && e.contains("#"), "{e}");
    assert!(err("nested.pt#optimizer").contains("no entry `optimizer`"));
    // bfloat16 buffers (H_init, L_init) widened exactly.
    assert_eq!(weights("bf16.pt"), truth("bf16_values.safetensors", ""));
    // float16 and bfloat16 storages; views at an offset in a shared storage.
    let h = weights("half.pt");
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    assert_eq!((h["a"].values.clone(), h["a"].shape.clone()), (x.clone(), vec![3, 4]));
    assert_eq!(h["b"].values, x);
    let o = weights("offset.pt");
    assert_eq!((o["a"].values.clone(), o["a"].shape.clone()), (x[4..].to_vec(), vec![2, 4]));
    assert_eq!((o["b"].values.clone(), o["b"].shape.clone()), (x[..4].to_vec(), vec![4]));
}

/// A copy of plain.pt with one storage entry rewritten (None = dropped).
fn with_storage(edit: Option<usize>, dir_out: &Path) -> PathBuf {
    let src = dir().join("plain.pt");
    let mut zin = zip::ZipArchive::new(std::fs::File::open(&src).unwrap()).unwrap();
    let out = dir_out.join("edited.pt");
    let mut zout = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut bytes = vec![];
        f.read_to_end(&mut bytes).unwrap();
        if name == "plain/data/3" {
            match edit {
                None => continue,
                Some(n) => bytes.truncate(n),
            }
        }
        zout.start_file(name, opts).unwrap();
        zout.write_all(&bytes).unwrap();
    }
    zout.finish().unwrap();
    out
}

#[test]
fn broken_files_are_errors_naming_what_is_wrong() {
    let e = err("transposed.pt");
    assert!(e.contains("`a`") && e.contains("non-contiguous") && e.contains("stride [1, 4]"), "{e}");
    assert!(err("legacy.pt").contains("legacy (pre-1.6"), "legacy");
    let t = tempfile::tempdir().unwrap();
    let e = format!("{:#}", read_weights(&with_storage(None, t.path())).unwrap_err());
    assert!(e.contains("plain/data/3 is missing"), "{e}");
    let e = format!("{:#}", read_weights(&with_storage(Some(5), t.path())).unwrap_err());
    assert!(e.contains("plain/data/3 has 5 bytes"), "{e}");
    let junk = t.path().join("junk.pt");
    std::fs::write(&junk, b"PK\x03\x04 not really a zip").unwrap();
    assert!(format!("{:#}", read_weights(&junk).unwrap_err()).contains("not a torch zip checkpoint"));
}

#[test]
fn weights_of_another_architecture_are_refused_by_name() {
    // HRM's weights (a separate H network) into the TRM of the same size: every extra tensor named.
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.join("trm-act-small/config.json")).unwrap()).unwrap();
    let trm = trm::eval::parity::model_config(&cfg).unwrap();
    let hrm = fx.join("hrm-small/weights.safetensors");
    let e = format!("{:#}", load_model::<B>(&hrm, &trm, &Default::default()).unwrap_err());
    assert!(e.contains("H_level.layers.0") && e.contains("does not have"), "{e}");
    // The torch file of the right model loads.
    load_model::<B>(&dir().join("plain.pt"), &trm, &Default::default()).unwrap();
}

/// Reference fixtures replayed with their weights read from the reference's torch files: the
/// initial model (plain.pt), and the model after 30 steps of the reference's own
/// `pretrain.train_batch` (trained.pt, written by bench/make_fixture.py --pretrain-steps 30
/// --save-torch): logits, losses, gradients and optimiser steps all match the reference.
#[test]
fn reference_fixtures_replayed_from_their_torch_files_match_the_reference() {
    for (fixture, file) in [("trm-act-small", "plain.pt"), ("trm-act-trained", "trained.pt")] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let t = tempfile::tempdir().unwrap();
        for f in ["batch.safetensors", "expected.safetensors", "config.json"] {
            std::fs::copy(src.join(f), t.path().join(f)).unwrap();
        }
        // The loader goes by the bytes, not the name: the torch file stands in for weights.safetensors.
        std::fs::copy(dir().join(file), t.path().join("weights.safetensors")).unwrap();
        let checks = trm::eval::parity::run::<AD>(t.path(), &Default::default()).unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
        assert!(checks.len() > 200 && failed.is_empty(), "{fixture}: {failed:#?}");
    }
}

/// A tiny model trained (TINY, then `overrides`) and exported with `trm export` to `name` in its
/// run folder: (data, run, export, what export printed).
fn trained_and_exported(overrides: &[&str], name: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, String) {
    let (data, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::tiny_data(data.path());
    let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    trm::train::trainer::train::<AD>(&common::tiny_job(data.path(), run.path(), &ov, false), &Default::default()).unwrap();
    let out = run.path().join(name);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
        .args(["export", "--checkpoint"])
        .arg(run.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (data, run, out, String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `trm export --format torch` writes what the reference loads (checked against the reference's
/// own model class by bench/check_torch_export.py); here: it reads back to the checkpoint's
/// evaluation weights, every one, bit for bit.
#[test]
fn export_writes_the_checkpoints_weights_in_torch_format() {
    let (_data, run, out, _) = trained_and_exported(&["max_steps=2", "epochs=4", "eval_interval=2", "eval_max_examples=8"], "step_2");
    let ckpt = trm::store::checkpoint::resolve(run.path()).unwrap();
    let (_, ours) = read_weights(&ckpt.join("model.safetensors")).unwrap();
    let (_, back) = read_weights(&out).unwrap();
    assert_eq!(back, ours);
    assert!(trm::util::torch_zip::is_torch_file(&out));
    // `trm solve` on the bare torch file (with the run's config) answers as on the run itself.
    let puzzle = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..";
    let solve = |extra: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trm"))
            .args(["solve", "--json", "--sudoku", puzzle])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["steps"].clone()
    };
    let cfg = run.path().join("config.toml");
    let on_run = solve(&["--checkpoint".as_ref(), run.path().as_os_str()]);
    let on_file = solve(&["--checkpoint".as_ref(), out.as_os_str(), "--config".as_ref(), cfg.as_os_str()]);
    assert_eq!(on_run, on_file);
    // Export wrote the run's configuration beside the file as the reference's all_config.yaml,
    // and the bare file then needs no --config.
    assert!(run.path().join("all_config.yaml").is_file());
    let on_file_alone = solve(&["--checkpoint".as_ref(), out.as_os_str()]);
    assert_eq!(on_run, on_file_alone);
}

/// A model whose forward runs in bfloat16 is exported with the dtypes of the reference's own
/// files: float32 weights and puzzle table, H_init and L_init as bfloat16 buffers (its
/// `load_checkpoint` keeps a file's dtypes, so float32 buffers would run its carries in float32).
/// The buffers were made with bfloat16's values (as the reference makes them in bfloat16), so the
/// export keeps them exactly: `trm solve` on the exported file answers as on the run (it did not
/// before 2026-12-08, when a float32 draw was rounded by the export).
#[test]
fn a_bfloat16_model_exports_its_state_inits_as_bfloat16() {
    let ov = ["max_steps=1", "epochs=4", "eval_interval=4", "eval_max_examples=8", "arch.forward_dtype=bfloat16"];
    let (_data, run, out, stdout) = trained_and_exported(&ov, "step_1");
    assert!(stdout.contains("H_init/L_init bfloat16"));
    let ckpt = trm::store::checkpoint::resolve(run.path()).unwrap();
    let (_, ours) = read_weights(&ckpt.join("model.safetensors")).unwrap();
    let (_, back) = read_weights(&out).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>());
    let mut buffers = 0;
    for (name, t) in &ours {
        if name.ends_with("_init") {
            buffers += 1;
            assert!(t.values.iter().all(|&v| half::bf16::from_f32(v).to_f32() == v), "{name}: made with bfloat16's values");
            assert_eq!(back[name].values, t.values, "{name}");
        } else {
            assert_eq!(&back[name], t, "{name}");
        }
    }
    assert_eq!(buffers, 2, "H_init and L_init");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.windows(15).filter(|w| *w == b"BFloat16Storage").count(), 2);
}
