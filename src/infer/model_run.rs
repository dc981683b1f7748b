//! The one inference path: a model with the carry and the RoPE tables of a batch of puzzles,
//! answering "run one more supervision step" with the predictions (the argmax of the logits),
//! the logits' Q values and the halting bookkeeping. `trm solve` (one puzzle, step by step), the
//! test-time views (many views in one batch), scaled evaluation and the report all run through it.
//! No labels exist here: the model never sees a solution.

use crate::backend::to_host_f32;
use crate::data::loader::{Batch, IGNORE_LABEL};
use crate::model::act::Carry;
use crate::model::config::ModelConfig;
use crate::model::forward::{deep_recursion, embed_input};
use crate::model::rope::Rope;
use crate::model::weights::Weights;
use burn::prelude::*;

/// A model running on a batch of puzzles, one supervision step per [`ModelRun::step`].
pub struct ModelRun<'a, B: Backend> {
    cfg: &'a ModelConfig,
    w: &'a Weights<B>,
    table: Option<&'a Tensor<B, 2>>,
    rope: Rope<B>,
    carry: Carry<B>,
    batch: Batch,
    max_steps: usize,
    /// Rows whose latent z starts from a drawn state at their next start: (row, seed, number).
    draws: Vec<(usize, u64, u64)>,
}

/// What one supervision step gives, on the host, for every puzzle of the batch.
pub struct StepAnswers {
    /// `[puzzles * seq_len]` tokens: the argmax of the logits.
    pub preds: Vec<i64>,
    /// The halting head's logit per puzzle.
    pub q_halt: Vec<f32>,
    /// The continue head's logit per puzzle (zeros where the model has none).
    pub q_continue: Vec<f32>,
    pub seq_len: usize,
}

impl StepAnswers {
    /// Puzzle `k`'s tokens.
    pub fn tokens(&self, k: usize) -> &[i64] {
        &self.preds[k * self.seq_len..(k + 1) * self.seq_len]
    }
}

impl<'a, B: Backend> ModelRun<'a, B> {
    /// `inputs` holds the puzzles' tokens one after another (`seq_len` each), `puzzle_ids` one
    /// identifier per puzzle; `max_steps` is the step at which every puzzle halts.
    pub fn new(
        cfg: &'a ModelConfig,
        w: &'a Weights<B>,
        table: Option<&'a Tensor<B, 2>>,
        inputs: Vec<i32>,
        puzzle_ids: Vec<i32>,
        max_steps: usize,
    ) -> Self {
        let device = w.device();
        let n = puzzle_ids.len();
        let seq_len = inputs.len() / n.max(1);
        let batch = Batch {
            set: 0,
            batch_size: n,
            seq_len,
            labels: vec![IGNORE_LABEL; inputs.len()],
            inputs,
            puzzle_identifiers: puzzle_ids,
            global_effective: n,
        };
        ModelRun { cfg, w, table, rope: Rope::new(cfg, &device), carry: Carry::new(cfg, n, &device), batch, max_steps, draws: vec![] }
    }

    /// Puzzle `row` starts over on `input` (its tokens) at the next step, from the initial state.
    pub fn start_over(&mut self, row: usize, input: &[i32]) {
        let s = self.batch.seq_len;
        self.batch.inputs[row * s..(row + 1) * s].copy_from_slice(input);
        self.carry.halted[row] = true;
    }

    /// Puzzle `row`'s latent z starts, at its next start, from a std-1 truncated-normal draw
    /// from the stream `(seed, 17, number)` instead of the model's `L_init`.
    pub fn draw_latent(&mut self, row: usize, seed: u64, number: u64) {
        self.draws.retain(|d| d.0 != row);
        self.draws.push((row, seed, number));
    }

    /// One supervision step: rows told to start over (or past `max_steps`) start on their puzzle
    /// from the initial state, every row is refined once, and the step counts advance.
    pub fn step(&mut self) -> StepAnswers {
        let (cfg, w, carry) = (self.cfg, self.w, &mut self.carry);
        let starting = carry.halted.clone();
        carry.reset_and_load(w, &self.batch);
        let draws: Vec<(usize, u64, u64)> = self.draws.iter().copied().filter(|d| starting[d.0]).collect();
        self.draws.retain(|d| !starting[d.0]);
        if !draws.is_empty() {
            let states = crate::model::schedule::Schedule::of(&cfg.arch).states;
            let z = states.iter().position(|s| s.name == "z").expect("drawn latents need a state z");
            let rows: Vec<usize> = draws.iter().map(|d| d.0).collect();
            let stream = |r: usize| {
                let &(_, seed, number) = draws.iter().find(|d| d.0 == r).expect("a drawn row");
                crate::util::rng::derive(seed, &[17, number])
            };
            carry.draw_state(z, &rows, stream);
        }
        let device = w.device();
        let x = embed_input(w, cfg, carry.inputs_tensor(&device), carry.puzzle_rows(self.table));
        let out = deep_recursion(w, cfg, &self.rope, &carry.states, &x);
        carry.states = out.states.clone();
        let (q_halt, q_continue) = (to_host_f32(&out.q_halt), to_host_f32(&out.q_continue));
        // Rows halt at `max_steps` only (or when told to start over): a row the model would stop
        // goes on refining instead of restarting from the initial state, so a trace shows where
        // the model halts (`--halt` stops there) and what more steps make of its answer. Adaptive
        // halting in evaluation (the baseline's `act_inference`) takes the answer at the first
        // halt, as `solve --halt` does.
        carry.advance((&q_halt, &q_continue), cfg.arch.halt_rule(), false, None, self.max_steps);
        let preds = out.logits.argmax(2).into_data().convert::<i64>().to_vec().expect("int predictions");
        StepAnswers { preds, q_halt, q_continue, seq_len: self.batch.seq_len }
    }
}
