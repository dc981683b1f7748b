//! The per-row part of a checkpoint's ACT carry (`state.json`'s `carry`): the supervision steps,
//! the halted flags and the data every row of the global batch is working on. The carried states
//! themselves are tensors in `state.safetensors`.
//!
//! A resumed run indexes the model's tables with these numbers, so they are checked against the
//! run's configuration before anything runs: a hand-edited or damaged `state.json` is an error
//! naming the field, never a panic on the first step.

use crate::data::loader::IGNORE_LABEL;
use crate::model::config::ModelConfig;
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarryRows {
    pub steps: Vec<u32>,
    pub halted: Vec<bool>,
    pub inputs: Vec<i32>,
    pub labels: Vec<i32>,
    pub puzzle_ids: Vec<i32>,
}

impl CarryRows {
    /// Checks the rows against the run: one row per example of the global batch (times
    /// `arch.wta_chains`), `seq_len` tokens per row, every token, label, identifier and step
    /// count in the range the model has.
    pub fn check(&self, model: &ModelConfig, global_batch: usize, file: &Path) -> Result<()> {
        let f = file.display();
        let rows = global_batch.saturating_mul(model.arch.wta_chains);
        ensure!(
            self.steps.len() == rows,
            "{f}: carry.steps has {} rows, the run's batch has {rows} (global_batch_size {global_batch} x arch.wta_chains {})",
            self.steps.len(),
            model.arch.wta_chains
        );
        let per_row = [("halted", self.halted.len(), 1), ("puzzle_ids", self.puzzle_ids.len(), 1)];
        let per_token = [("inputs", self.inputs.len(), model.seq_len), ("labels", self.labels.len(), model.seq_len)];
        for (field, len, width) in per_row.into_iter().chain(per_token) {
            ensure!(len == rows * width, "{f}: carry.{field} has {len} entries, expected {} ({rows} rows x {width})", rows * width);
        }
        let outside = |values: &[i32], ok: &dyn Fn(i32) -> bool| values.iter().position(|&v| !ok(v));
        let vocab = model.vocab_size as i64;
        if let Some(i) = outside(&self.inputs, &|v| (0..vocab).contains(&(v as i64))) {
            bail!("{f}: carry.inputs[{i}] is {}, outside the vocabulary 0..{vocab}", self.inputs[i]);
        }
        if let Some(i) = outside(&self.labels, &|v| v == IGNORE_LABEL || (0..vocab).contains(&(v as i64))) {
            bail!("{f}: carry.labels[{i}] is {}, neither {IGNORE_LABEL} (ignored) nor in 0..{vocab}", self.labels[i]);
        }
        let ids = model.num_puzzle_identifiers.max(1) as i64;
        if let Some(i) = outside(&self.puzzle_ids, &|v| (0..ids).contains(&(v as i64))) {
            bail!("{f}: carry.puzzle_ids[{i}] is {}, outside the model's identifiers 0..{ids}", self.puzzle_ids[i]);
        }
        let max = model.arch.halt_max_steps as u32;
        if let Some(i) = self.steps.iter().position(|&s| s > max) {
            bail!("{f}: carry.steps[{i}] is {}, above arch.halt_max_steps {max}", self.steps[i]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{PosEncoding, block_test_config};

    fn rows(n: usize, s: usize) -> CarryRows {
        CarryRows {
            steps: vec![1; n],
            halted: vec![false; n],
            inputs: vec![2; n * s],
            labels: vec![IGNORE_LABEL; n * s],
            puzzle_ids: vec![0; n],
        }
    }

    #[test]
    fn damaged_carry_rows_are_refused_with_the_field_named() {
        let model = block_test_config(PosEncoding::Rope, false, 64, 4, 19);
        let file = Path::new("run/checkpoints/step_00000002/state.json");
        let ok = rows(4, 19);
        ok.check(&model, 4, file).unwrap();
        let err = |r: CarryRows, batch: usize| format!("{:#}", r.check(&model, batch, file).unwrap_err());
        assert!(err(ok.clone(), 8).contains("carry.steps has 4 rows, the run's batch has 8"));
        let cases: [(fn(&mut CarryRows), &str); 7] = [
            (|r| r.halted.truncate(3), "carry.halted has 3 entries"),
            (|r| r.inputs.truncate(50), "carry.inputs has 50 entries"),
            (|r| r.labels.push(1), "carry.labels has 77 entries"),
            (|r| r.inputs[5] = 99, "carry.inputs[5] is 99"),
            (|r| r.labels[0] = -7, "carry.labels[0] is -7"),
            (|r| r.puzzle_ids[3] = 7, "carry.puzzle_ids[3] is 7"),
            (|r| r.steps[1] = u32::MAX, "carry.steps[1] is 4294967295"),
        ];
        for (damage, says) in cases {
            let mut r = ok.clone();
            damage(&mut r);
            let e = err(r, 4);
            assert!(e.contains(says) && e.starts_with("run/checkpoints/step_00000002/state.json: "), "{e}");
        }
    }
}
