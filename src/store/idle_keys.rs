//! Keys given on the command line that the configuration they resolve into would not use: an
//! attention setting of an MLP-mixing model, a learning rate of frozen weights. Accepted, such a
//! key would be recorded in the run and change nothing, so it is refused, naming what makes it
//! idle. Keys from presets, TOML files and the reference's `all_config.yaml` are not checked:
//! the reference writes every key of its model family, used or not. A resumed run checks only the
//! keys that change its saved value (`resume::resume_config`).

use super::config::TrainConfig;
use super::overrides::override_key;
use crate::model::config::PosEncoding;
use anyhow::{Result, bail};

/// Why `key` changes nothing in `cfg`, or None where it does (or may).
fn idle_because(cfg: &TrainConfig, key: &str) -> Option<String> {
    let a = &cfg.arch;
    let rope = a.pos_encodings == PosEncoding::Rope;
    let why = match key {
        "arch.num_heads" if a.mlp_t => "arch.mlp_t=True mixes the tokens with an MLP, not attention, so there are no heads".into(),
        "arch.rope_theta" if a.mlp_t => "rope rotates attention's queries and keys, and arch.mlp_t=True has no attention".into(),
        "arch.rope_theta" if !rope => {
            format!("rope_theta is the rotary encoding's base, and arch.pos_encodings is {:?}", a.pos_encodings).to_lowercase()
        }
        "arch.pos_encodings" if a.mlp_t && rope => "rope rotates attention's queries and keys, and arch.mlp_t=True has no attention: \
                                                    give arch.pos_encodings=none (as the reference's Sudoku-MLP command does) or learned"
            .into(),
        "arch.halt_exploration_prob" if !a.adaptive_in_training() => "halting is not adaptive in training (arch.act_enabled=False)".into(),
        "arch.halt_exploration_prob" if a.halt_max_steps == 1 => "arch.halt_max_steps=1 halts after every first step".into(),
        "puzzle_emb_lr" | "puzzle_emb_weight_decay" if a.puzzle_emb_ndim == 0 => {
            "arch.puzzle_emb_ndim=0: there is no puzzle embedding".into()
        }
        "lr" | "beta1" | "beta2" | "weight_decay" if cfg.freeze_weights => {
            "freeze_weights=True trains only the puzzle embeddings (their keys: puzzle_emb_lr, puzzle_emb_weight_decay)".into()
        }
        _ => return None,
    };
    Some(why)
}

/// Refuses the first of `overrides` whose key `cfg` would not use.
pub fn refuse_idle(cfg: &TrainConfig, overrides: &[String]) -> Result<()> {
    for ov in overrides {
        if let Some(why) = idle_because(cfg, override_key(ov)) {
            bail!("{ov} would change nothing: {why}; drop it");
        }
    }
    Ok(())
}

/// A note where `cfg` carries rope under mlp_t from its preset (not given: `refuse_idle` refuses
/// that): the run behaves as with `arch.pos_encodings=none` and records rope.
pub fn idle_default_note(cfg: &TrainConfig) -> Option<String> {
    (cfg.arch.mlp_t && cfg.arch.pos_encodings == PosEncoding::Rope).then(|| {
        "arch.mlp_t=True has no attention, so arch.pos_encodings=rope does nothing: the model has no position encoding \
         (as with arch.pos_encodings=none, the reference's Sudoku-MLP setting)"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::super::config::resolve;
    use super::*;

    fn refused(preset: &str, ov: &[&str]) -> Option<String> {
        let ov: Vec<String> = ov.iter().map(|s| s.to_string()).collect();
        let cfg = resolve(preset, &ov).unwrap();
        refuse_idle(&cfg, &ov).err().map(|e| format!("{e:#}"))
    }

    #[test]
    fn a_key_the_model_would_not_use_is_refused_naming_why() {
        // sudoku-tiny is an MLP-mixing model (arch.mlp_t=True, pos_encodings=none).
        let e = refused("sudoku-tiny", &["arch.num_heads=1"]).unwrap();
        assert!(e.starts_with("arch.num_heads=1 would change nothing: arch.mlp_t=True") && e.ends_with("drop it"), "{e}");
        assert!(refused("sudoku-tiny", &["arch.rope_theta=7"]).unwrap().contains("no attention"));
        assert!(refused("sudoku-tiny", &["arch.pos_encodings=rope"]).unwrap().contains("arch.pos_encodings=none"));
        assert!(refused("sudoku-att", &["arch.pos_encodings=learned", "arch.rope_theta=7"]).unwrap().contains("is learned"));
        assert!(refused("sudoku-att", &["arch.halt_max_steps=1", "arch.halt_exploration_prob=0.5"]).unwrap().contains("halt_max_steps=1"));
        let baseline = ["arch=transformers_baseline", "arch.act_enabled=False", "arch.halt_exploration_prob=0.5"];
        assert!(refused("sudoku-att", &baseline).unwrap().contains("act_enabled=False"));
        assert!(refused("sudoku-att", &["arch.puzzle_emb_ndim=0", "arch.puzzle_emb_len=0", "puzzle_emb_lr=0.1"]).is_some());
        assert!(refused("sudoku-att", &["freeze_weights=True", "weight_decay=0.5"]).unwrap().contains("puzzle_emb_lr"));
        // Where they do something: accepted.
        for ok in [
            &["arch.num_heads=4"][..],
            &["arch.rope_theta=7"],
            &["arch.halt_exploration_prob=0.5"],
            &["puzzle_emb_lr=0.1", "lr=0.001"],
            &["freeze_weights=True", "puzzle_emb_lr=0.1"],
        ] {
            assert_eq!(refused("sudoku-att", ok), None, "{ok:?}");
        }
        // The preset's own rope under mlp_t is not refused, only noted.
        let cfg = resolve("sudoku-att", &["arch.mlp_t=True".into()]).unwrap();
        assert!(refuse_idle(&cfg, &["arch.mlp_t=True".into()]).is_ok() && idle_default_note(&cfg).is_some());
        assert!(idle_default_note(&resolve("sudoku-tiny", &[]).unwrap()).is_none());
    }
}
