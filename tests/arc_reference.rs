//! `trm data arc` writes the reference builder's bytes: every array, identifiers.json,
//! test_puzzles.json and dataset.json of two builds have the SHA-256 of the files the reference's
//! own `build_arc_dataset.py` wrote from the same inputs and seed (tests/fixtures/arc-reference).
//! Identical data is what lets a published ARC checkpoint's puzzle table pair with trm's data.

use sha2::{Digest, Sha256};
use std::path::Path;
use trm::data::arc;

mod common;

/// The builds need every task of the full ARC files (../shared/data).
fn check(sums: &str, subsets: &[&str], test_set: &str, num_aug: usize) {
    let Some(data) = common::full_data(sums) else { return };
    let out = tempfile::tempdir().unwrap();
    let opt = arc::BuildOptions {
        input_prefix: data.join("arc/arc-agi").to_string_lossy().to_string(),
        subsets: subsets.iter().map(|s| s.to_string()).collect(),
        test_sets: vec![test_set.to_string()],
        num_aug,
        seed: 42,
        translate: true,
    };
    arc::build(out.path(), &opt).unwrap();
    let listed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arc-reference").join(sums)).unwrap();
    let mut files = 0;
    for line in listed.lines() {
        let (want, file) = line.split_once("  ").unwrap();
        let got = hex(&Sha256::digest(std::fs::read(out.path().join(file)).unwrap()));
        assert_eq!(got, want, "{sums}: {file} differs from the reference builder's");
        files += 1;
    }
    assert_eq!(files, 14, "{sums}: every output file is listed");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[cfg_attr(not(trm_full_data), ignore = "needs the full data sets: ../shared beside the checkout, or TRM_SHARED")]
fn arc1_with_8_augmentations_is_the_reference_builders() {
    check("arc1-aug8.sha256", &["training", "evaluation", "concept"], "evaluation", 8);
}

/// The full ARC-1 build (6.8 GB written, about 30 s): `cargo test --release --test arc_reference -- --ignored`.
#[test]
#[ignore = "writes 6.8 GB; run on demand"]
fn arc1_with_1000_augmentations_is_the_reference_builders() {
    check("arc1-aug1000.sha256", &["training", "evaluation", "concept"], "evaluation", 1000);
}

#[test]
#[cfg_attr(not(trm_full_data), ignore = "needs the full data sets: ../shared beside the checkout, or TRM_SHARED")]
fn arc2_with_60_augmentations_is_the_reference_builders() {
    check("arc2-aug60.sha256", &["training2", "evaluation2", "concept"], "evaluation2", 60);
}
