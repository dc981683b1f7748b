//! An evaluation's outputs, example by example, saved as the reference saves them (its
//! `eval_save_outputs` key; HRM's `evaluate.py` `save_outputs`): a `torch.save` dict of CPU
//! tensors, `torch.load(path)` in Python, which HRM's `arc_eval.ipynb` reads. A training run
//! writes one per evaluation, `step_<N>_all_preds.<rank>` in its folder, as the reference does;
//! `trm eval --save-outputs FILE` writes one.
//!
//! Only the real examples are saved, in the test split's order (the reference also saves its
//! padding rows, which have puzzle identifier 0 and only ignored labels). The model's values are
//! those of the step whose answer the evaluation scores: the last supervision step, or a row's
//! first halt where evaluation halts adaptively. Logits are float32 (the reference's are in its
//! forward dtype, bfloat16 for the paper's models).

use crate::data::loader::Batch;
use crate::util::torch_zip_write::Entry;
use anyhow::{Result, bail};

/// What can be saved of each example, by the reference's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `[N, seq_len]` int32: the puzzle's tokens.
    Inputs,
    /// `[N, seq_len]` int32: the answer's tokens, -100 where unsupervised.
    Labels,
    /// `[N]` int32.
    PuzzleIdentifiers,
    /// `[N, seq_len]` int64: the argmax of the logits, the model's answer.
    Preds,
    /// `[N, seq_len, vocab]` float32.
    Logits,
    /// `[N]` float32: the halting head's logit.
    QHaltLogits,
    /// `[N]` float32: the continue head's logit.
    QContinueLogits,
}

impl Output {
    pub const ALL: [Output; 7] = [
        Output::Inputs,
        Output::Labels,
        Output::PuzzleIdentifiers,
        Output::Preds,
        Output::Logits,
        Output::QHaltLogits,
        Output::QContinueLogits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Output::Inputs => "inputs",
            Output::Labels => "labels",
            Output::PuzzleIdentifiers => "puzzle_identifiers",
            Output::Preds => "preds",
            Output::Logits => "logits",
            Output::QHaltLogits => "q_halt_logits",
            Output::QContinueLogits => "q_continue_logits",
        }
    }

    /// The outputs `names` asks for (`what` names the setting in errors), each once, in the
    /// order given.
    pub fn parse(names: &[String], what: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for n in names {
            let Some(o) = Output::ALL.into_iter().find(|o| o.name() == n.trim()) else {
                bail!(
                    "{what}: `{n}` is not an output an evaluation can save; the outputs are {}",
                    Output::ALL.map(Output::name).join(", ")
                );
            };
            if !out.contains(&o) {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// What a batch's evaluation gives the recorder: this rank's rows, of which the first `real` are
/// examples (the rest pad the batch).
pub struct BatchOutputs<'a> {
    pub batch: &'a Batch,
    pub real: usize,
    pub preds: &'a [i64],
    pub q_halt: &'a [f32],
    pub q_continue: &'a [f32],
    /// `[rows, seq_len, vocab]`, when `Recorder::wants_logits`.
    pub logits: Option<&'a [f32]>,
}

/// The outputs of an evaluation, gathered batch by batch in memory until written.
pub struct Recorder {
    keys: Vec<Output>,
    rows: usize,
    seq_len: usize,
    vocab: usize,
    inputs: Vec<i32>,
    labels: Vec<i32>,
    ids: Vec<i32>,
    preds: Vec<i64>,
    logits: Vec<f32>,
    q_halt: Vec<f32>,
    q_continue: Vec<f32>,
}

impl Recorder {
    pub fn new(keys: Vec<Output>, seq_len: usize, vocab: usize) -> Self {
        Recorder {
            keys,
            rows: 0,
            seq_len,
            vocab,
            inputs: vec![],
            labels: vec![],
            ids: vec![],
            preds: vec![],
            logits: vec![],
            q_halt: vec![],
            q_continue: vec![],
        }
    }

    /// Room for `examples` examples, reserved once: grown batch by batch, the buffers' size (what
    /// `ulimit -v` counts) would reach up to twice the outputs. An error, not an abort, when the
    /// memory is not there.
    pub fn reserve(&mut self, examples: usize) -> Result<()> {
        let (s, v) = (self.seq_len, self.vocab);
        let n = |per: usize| {
            examples.checked_mul(per).ok_or_else(|| anyhow::anyhow!("the outputs of {examples} examples: more than memory can address"))
        };
        let failed =
            |e: std::collections::TryReserveError| anyhow::anyhow!("cannot reserve memory for the outputs of {examples} examples: {e}");
        for o in self.keys.clone() {
            match o {
                Output::Inputs => self.inputs.try_reserve_exact(n(s)?).map_err(failed)?,
                Output::Labels => self.labels.try_reserve_exact(n(s)?).map_err(failed)?,
                Output::PuzzleIdentifiers => self.ids.try_reserve_exact(examples).map_err(failed)?,
                Output::Preds => self.preds.try_reserve_exact(n(s)?).map_err(failed)?,
                Output::Logits => self.logits.try_reserve_exact(n(s.saturating_mul(v))?).map_err(failed)?,
                Output::QHaltLogits => self.q_halt.try_reserve_exact(examples).map_err(failed)?,
                Output::QContinueLogits => self.q_continue.try_reserve_exact(examples).map_err(failed)?,
            }
        }
        Ok(())
    }

    fn wants(&self, o: Output) -> bool {
        self.keys.contains(&o)
    }

    /// The logits are copied off the device only when they are to be saved.
    pub fn wants_logits(&self) -> bool {
        self.wants(Output::Logits)
    }

    /// Bytes one example adds, for memory estimates.
    pub fn bytes_per_example(&self) -> usize {
        let s = self.seq_len;
        self.keys
            .iter()
            .map(|o| match o {
                Output::Inputs | Output::Labels => 4 * s,
                Output::Preds => 8 * s,
                Output::Logits => 4 * s * self.vocab,
                Output::PuzzleIdentifiers | Output::QHaltLogits | Output::QContinueLogits => 4,
            })
            .sum()
    }

    /// Takes the real rows of a batch.
    pub fn add(&mut self, o: &BatchOutputs) -> Result<()> {
        let (n, s, v) = (o.real, self.seq_len, self.vocab);
        anyhow::ensure!(o.batch.seq_len == s, "a batch of sequence length {} for outputs of {s}", o.batch.seq_len);
        if self.wants(Output::Inputs) {
            self.inputs.extend_from_slice(&o.batch.inputs[..n * s]);
        }
        if self.wants(Output::Labels) {
            self.labels.extend_from_slice(&o.batch.labels[..n * s]);
        }
        if self.wants(Output::PuzzleIdentifiers) {
            self.ids.extend_from_slice(&o.batch.puzzle_identifiers[..n]);
        }
        if self.wants(Output::Preds) {
            self.preds.extend_from_slice(&o.preds[..n * s]);
        }
        if self.wants(Output::Logits) {
            let Some(l) = o.logits else { bail!("the evaluation kept no logits to save") };
            self.logits.extend_from_slice(&l[..n * s * v]);
        }
        if self.wants(Output::QHaltLogits) {
            self.q_halt.extend_from_slice(&o.q_halt[..n]);
        }
        if self.wants(Output::QContinueLogits) {
            self.q_continue.extend_from_slice(&o.q_continue[..n]);
        }
        self.rows += n;
        Ok(())
    }

    /// Examples taken so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The tensors, named as the reference names them, in the order asked for (moved, not copied:
    /// they can be gigabytes).
    pub fn into_entries(mut self) -> Vec<Entry> {
        let (n, s, v) = (self.rows, self.seq_len, self.vocab);
        let mut out = Vec::with_capacity(self.keys.len());
        for o in std::mem::take(&mut self.keys) {
            let take_i32 = |x: &mut Vec<i32>| std::mem::take(x);
            out.push(match o {
                Output::Inputs => Entry::i32(o.name(), vec![n, s], take_i32(&mut self.inputs)),
                Output::Labels => Entry::i32(o.name(), vec![n, s], take_i32(&mut self.labels)),
                Output::PuzzleIdentifiers => Entry::i32(o.name(), vec![n], take_i32(&mut self.ids)),
                Output::Preds => Entry::i64(o.name(), vec![n, s], std::mem::take(&mut self.preds)),
                Output::Logits => Entry::f32(o.name(), vec![n, s, v], std::mem::take(&mut self.logits)),
                Output::QHaltLogits => Entry::f32(o.name(), vec![n], std::mem::take(&mut self.q_halt)),
                Output::QContinueLogits => Entry::f32(o.name(), vec![n], std::mem::take(&mut self.q_continue)),
            });
        }
        out
    }

    /// Writes the outputs to `path`, atomically: a stop or an error leaves no partial file. The
    /// peak memory is the outputs themselves (`bytes_per_example` each) and a small buffer.
    pub fn write(self, path: &std::path::Path) -> Result<()> {
        crate::util::torch_zip_write::write(path, &self.into_entries())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::torch_zip_write::Values;

    #[test]
    fn outputs_are_named_as_the_reference_names_them() {
        let keys: Vec<String> = ["preds", "inputs", "preds", " q_halt_logits"].map(String::from).to_vec();
        assert_eq!(Output::parse(&keys, "x").unwrap(), [Output::Preds, Output::Inputs, Output::QHaltLogits]);
        let e = format!("{:#}", Output::parse(&["pred".into()], "eval_save_outputs").unwrap_err());
        assert!(e.starts_with("eval_save_outputs: `pred` is not an output") && e.contains("preds, logits"), "{e}");
    }

    /// Two batches, the second with a padding row: only real rows are kept, in order, each output
    /// with its shape.
    #[test]
    fn the_real_rows_of_each_batch_are_kept_in_order() {
        let batch = |first: i32, rows: usize| Batch {
            set: 0,
            batch_size: rows,
            seq_len: 2,
            inputs: (0..2 * rows as i32).map(|i| first + i).collect(),
            labels: vec![-100; 2 * rows],
            puzzle_identifiers: (0..rows as i32).map(|i| first + i).collect(),
            global_effective: rows,
        };
        let mut r = Recorder::new(Output::ALL.to_vec(), 2, 3);
        let (a, b) = (batch(10, 2), batch(20, 2));
        let logits: Vec<f32> = (0..12).map(|i| i as f32).collect();
        for (batch, real) in [(&a, 2), (&b, 1)] {
            let o =
                BatchOutputs { batch, real, preds: &[1, 2, 3, 4], q_halt: &[0.5, -0.5], q_continue: &[1.5, -1.5], logits: Some(&logits) };
            r.add(&o).unwrap();
        }
        assert_eq!(r.rows(), 3);
        assert_eq!(r.bytes_per_example(), 4 * 2 + 4 * 2 + 4 + 8 * 2 + 4 * 2 * 3 + 4 + 4);
        let e = r.into_entries();
        let get = |name: &str| e.iter().find(|x| x.name == name).unwrap();
        assert_eq!(get("inputs").shape, [3, 2]);
        assert_eq!(get("inputs").values, Values::I32(vec![10, 11, 12, 13, 20, 21]));
        assert_eq!(get("puzzle_identifiers").values, Values::I32(vec![10, 11, 20]));
        assert_eq!(get("preds").values, Values::I64(vec![1, 2, 3, 4, 1, 2]));
        assert_eq!(get("logits").shape, [3, 2, 3]);
        assert_eq!(get("logits").values, Values::F32([&logits[..], &logits[..6]].concat()));
        assert_eq!(get("q_continue_logits").values, Values::F32(vec![1.5, -1.5, 1.5]));
    }
}
