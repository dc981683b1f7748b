//! Golden parity with the reference PyTorch code: every expected tensor within its tolerance,
//! for the shared TRM fixture and for the fixtures bench/make_fixture.py made of every other
//! architecture (tests/fixtures: HRM, single z, six latents, the transformer baseline, TRM with
//! the ACT continue loss).

mod common;

type AD = burn::backend::Autodiff<burn::backend::Flex>;

fn assert_parity(dir: &std::path::Path, min_tensors: usize) {
    let checks = trm::eval::parity::run::<AD>(dir, &Default::default()).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
    assert!(checks.len() >= min_tensors, "{}: only {} tensors compared", dir.display(), checks.len());
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    assert!(failed.is_empty(), "{}: {failed:#?}", dir.display());
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn trm_small_attn_fixture_matches_the_reference() {
    assert_parity(&fixture("trm-small-attn"), 200);
}

#[test]
fn hrm_fixture_matches_the_reference() {
    // Two networks, the 1-step gradient, the Q-continue loss and its bootstrap pass.
    assert_parity(&fixture("hrm-small"), 200);
}

#[test]
fn single_z_fixture_matches_the_reference() {
    assert_parity(&fixture("trm-singlez-small"), 150);
}

#[test]
fn six_latent_fixture_matches_the_reference() {
    assert_parity(&fixture("trm-hier6-small"), 200);
}

#[test]
fn transformer_baseline_fixture_matches_the_reference() {
    // 3 heads on a width of 20 (attention width 18), adaptive halting in evaluation.
    assert_parity(&fixture("baseline-small"), 150);
}

#[test]
fn trm_with_the_act_continue_loss_matches_the_reference_with_its_unpacking_bug_fixed() {
    assert_parity(&fixture("trm-act-small"), 200);
    // The same model after 30 steps of the reference's own pretrain.train_batch.
    assert_parity(&fixture("trm-act-trained"), 200);
}

#[test]
fn a_fixture_with_a_wrong_shape_is_a_clear_error() {
    let src = fixture("trm-small-attn");
    let dir = tempfile::tempdir().unwrap();
    for f in ["weights.safetensors", "batch.safetensors", "expected.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["model_config_effective"]["hidden_size"] = 32.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = format!("{:#}", trm::eval::parity::run::<AD>(dir.path(), &Default::default()).unwrap_err());
    assert!(e.contains("shape"), "{e}");
}

#[test]
fn a_fixture_without_its_expected_tensors_is_refused() {
    let src = fixture("hrm-small");
    let dir = tempfile::tempdir().unwrap();
    for f in ["weights.safetensors", "batch.safetensors", "config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // An expected file holding a single tensor.
    let entries = vec![("train.step1.steps".to_string(), vec![3], vec![1.0f32, 1.0, 1.0])];
    trm::util::tensors::write_safetensors(&dir.path().join("expected.safetensors"), &entries, None).unwrap();
    let e = format!("{:#}", trm::eval::parity::run::<AD>(dir.path(), &Default::default()).unwrap_err());
    assert!(e.contains("not a complete fixture"), "{e}");
}

/// A copy of a fixture with one of its files rewritten by `edit`.
fn edited_fixture(
    name: &str,
    file: &str,
    edit: impl Fn(&mut std::collections::BTreeMap<String, trm::util::tensors::HostTensor>),
) -> tempfile::TempDir {
    let src = fixture(name);
    let dir = tempfile::tempdir().unwrap();
    for f in ["weights.safetensors", "batch.safetensors", "config.json", "expected.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut t = trm::util::tensors::read_safetensors(&src.join(file)).unwrap();
    edit(&mut t);
    let entries: Vec<_> = t.into_iter().map(|(k, v)| (k, v.shape.clone(), v.f32s())).collect();
    trm::util::tensors::write_safetensors(&dir.path().join(file), &entries, None).unwrap();
    dir
}

#[test]
fn bad_batches_and_mis_shaped_expected_tensors_are_errors_not_panics() {
    let cases: Vec<(&str, Box<dyn Fn(&mut std::collections::BTreeMap<String, trm::util::tensors::HostTensor>)>, &str)> = vec![
        ("batch.safetensors", Box::new(|t| t.get_mut("inputs").unwrap().values[5] = 99.0), "outside the vocabulary"),
        ("batch.safetensors", Box::new(|t| t.get_mut("puzzle_identifiers").unwrap().values[0] = 1e6), "outside 0.."),
        ("batch.safetensors", Box::new(|t| t.get_mut("labels").unwrap().values[0] = -7.0), "neither a token"),
        (
            "batch.safetensors",
            Box::new(|t| {
                let x = t.get_mut("inputs").unwrap();
                x.shape = vec![x.values.len()];
            }),
            "expected [batch,",
        ),
        (
            "expected.safetensors",
            Box::new(|t| {
                let k = t.keys().find(|k| k.starts_with("grad.model.inner.")).unwrap().clone();
                let g = t.get_mut(&k).unwrap();
                g.values.truncate(3);
                g.shape = vec![3];
            }),
            "what it is compared with has",
        ),
        (
            "expected.safetensors",
            Box::new(|t| {
                let g = t.get_mut("train.step1.logits").unwrap();
                g.values.pop();
                g.shape = vec![g.values.len()];
            }),
            "train.step1.logits",
        ),
    ];
    for (file, edit, want) in cases {
        let dir = edited_fixture("hrm-small", file, edit);
        let e = format!("{:#}", trm::eval::parity::run::<AD>(dir.path(), &Default::default()).unwrap_err());
        assert!(e.contains(want), "{file}: {e}");
    }
}

/// A NaN in an expected tensor is a failure, not a value the maximum skips (issue 23).
#[test]
fn a_nan_in_an_expected_tensor_fails_parity() {
    let dir = edited_fixture("hrm-small", "expected.safetensors", |t| {
        let key = t.keys().find(|k| k.ends_with(".logits")).unwrap().clone();
        t.get_mut(&key).unwrap().values[3] = f64::NAN;
    });
    let checks = trm::eval::parity::run::<AD>(dir.path(), &Default::default()).unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    assert!(failed.iter().any(|c| c.name.ends_with(".logits")), "a NaN passed: {failed:?}");
}

/// An expected tensor with its dimensions swapped (the same number of values) is refused.
#[test]
fn an_expected_tensor_with_swapped_dimensions_is_refused() {
    let dir = edited_fixture("hrm-small", "expected.safetensors", |t| {
        let key =
            t.iter().find(|(k, v)| k.starts_with("grad.model.inner.") && v.shape.len() == 2 && v.shape[0] != v.shape[1]).unwrap().0.clone();
        let v = t.get_mut(&key).unwrap();
        v.shape.swap(0, 1);
    });
    let e = format!("{:#}", trm::eval::parity::run::<AD>(dir.path(), &Default::default()).unwrap_err());
    assert!(e.contains("shape"), "{e}");
}
