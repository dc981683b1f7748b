//! Golden parity with the reference PyTorch code (shared/fixtures): every expected tensor
//! within the fixture README's tolerance.

mod common;

#[test]
fn trm_small_attn_fixture_matches_the_reference() {
    type AD = burn::backend::Autodiff<burn::backend::Flex>;
    let dir = common::shared().join("fixtures/trm-small-attn");
    let checks = trm::eval::parity::run::<AD>(&dir, &Default::default()).unwrap();
    assert!(checks.len() > 200, "only {} tensors compared", checks.len());
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_fixture_with_a_wrong_shape_is_a_clear_error() {
    type AD = burn::backend::Autodiff<burn::backend::Flex>;
    let src = common::shared().join("fixtures/trm-small-attn");
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
