//! Training-time schedules of the recursion, from CGAR (Qasim & Zhang, arXiv 2511.08653):
//!
//! * **Progressive depth curriculum** (`depth_curriculum`): the training steps' recursion depth
//!   (T = `H_cycles`, n = `L_cycles`) grows in stages with the progress through the schedule,
//!   `ρ = (step - 1) / total_steps` (the learning-rate schedule's length). CGAR's stages are
//!   (T, n) = (1, 2) from ρ = 0, (2, 4) from 0.3 and (3, 6) from 0.6: `depth_curriculum=cgar`
//!   scales them to the model's own depth. The last stage must be the model's configured depth,
//!   so the checkpoints, evaluations and `trm solve` run the depth the run ends at; evaluations
//!   during the run use that depth too.
//! * **Hierarchical supervision weighting** (`supervision_decay=λ`, `loss::supervision_weight`):
//!   a row's loss at its t-th supervision step (t = 1..N, N = `halt_max_steps`) is weighted
//!   `λ^(t-1) / Z`, with Z the mean of the N weights (so the N weights average 1; an episode that
//!   halts early weighs more per step), and λ = 1 is the reference's loss. (The paper's Z_λ
//!   normalises too; a constant factor on the whole loss changes nothing under Adam-style and
//!   sign-SGD updates, up to their epsilon.) The logged losses stay unweighted.
//!
//! Both are pure functions of the step and the carry, so an interrupted run resumes exactly.

use crate::model::architecture::Architecture;
use crate::model::config::{ArchConfig, ModelConfig};
use crate::model::schedule::Schedule;
use anyhow::{Result, bail, ensure};

/// From progress `from` on, training steps run `h_cycles` × (`l_cycles` + 1) updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthStage {
    pub from: f64,
    pub h_cycles: usize,
    pub l_cycles: usize,
}

/// The stages of a depth curriculum, in order; the first starts at 0 and the last is the model's
/// configured depth.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthCurriculum {
    pub stages: Vec<DepthStage>,
}

/// A training step's work in blocks: every block applied by its forward passes, and twice each
/// differentiated one for its backward.
pub fn step_work(arch: &ArchConfig) -> f64 {
    let s = Schedule::of(arch);
    let applied: usize = s.updates.iter().map(|u| s.nets[u.net].layers).sum();
    (applied * Schedule::forward_passes(arch) + 2 * s.differentiated_blocks()) as f64
}

/// The stage starts of CGAR's schedule.
const CGAR_FROM: [f64; 3] = [0.0, 0.3, 0.6];

impl DepthCurriculum {
    /// Parses `cgar` or `FROM:T:N,FROM:T:N,...` (progress from 0 to 1, then `H_cycles` and
    /// `L_cycles`) against the architecture it will train, refusing what it cannot do.
    pub fn parse(spec: &str, arch: &ArchConfig) -> Result<DepthCurriculum> {
        let key = "depth_curriculum";
        ensure!(!matches!(arch.name, Architecture::TransformersBaseline), "{key}: arch=transformers_baseline has no recursion to schedule");
        let (t, n) = (arch.h_cycles, arch.l_cycles);
        let spec = spec.trim();
        ensure!(!spec.is_empty(), "{key} is empty: give `cgar` or stages FROM:H_cycles:L_cycles,..., or leave the key out");
        let stages: Vec<DepthStage> = if spec.eq_ignore_ascii_case("cgar") {
            // CGAR's (1, 2), (2, 4), (3, 6) for a model of (3, 6): thirds of the model's depth, rounded up.
            // A stage as deep as the one before it is left out (a shallow model has fewer stages).
            let part = |k: usize, of: usize| (k * of).div_ceil(3).max(1);
            let mut out: Vec<DepthStage> = vec![];
            for (&from, k) in CGAR_FROM.iter().zip(1..=3) {
                let s = DepthStage { from, h_cycles: part(k, t), l_cycles: part(k, n) };
                if out.last().is_none_or(|p| (p.h_cycles, p.l_cycles) != (s.h_cycles, s.l_cycles)) {
                    out.push(s);
                }
            }
            out
        } else {
            let mut out = vec![];
            for (i, item) in spec.split(',').enumerate() {
                let parts: Vec<&str> = item.split(':').map(str::trim).collect();
                let bad = || {
                    anyhow::anyhow!(
                        "{key}: stage {} is `{}`; each stage is FROM:H_cycles:L_cycles with FROM the progress (0 to 1) at which it starts, \
                         e.g. `0:1:2,0.3:2:4,0.6:3:6`, or `cgar`",
                        i + 1,
                        item.trim()
                    )
                };
                let [from, h, l] = parts[..] else { return Err(bad()) };
                let from: f64 = from.parse().map_err(|_| bad())?;
                let (h, l): (usize, usize) = (h.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?);
                out.push(DepthStage { from, h_cycles: h, l_cycles: l });
            }
            out
        };
        ensure!(stages.first().is_some_and(|s| s.from == 0.0), "{key}: the first stage must start at progress 0, as in `0:1:2,...`");
        for s in &stages {
            ensure!(s.h_cycles >= 1 && s.l_cycles >= 1, "{key}: H_cycles and L_cycles must be >= 1 in every stage");
            ensure!(
                s.h_cycles <= t && s.l_cycles <= n,
                "{key}: a stage of H_cycles={} L_cycles={} is deeper than the model (arch.H_cycles={t}, arch.L_cycles={n})",
                s.h_cycles,
                s.l_cycles
            );
        }
        for w in stages.windows(2) {
            ensure!(
                w[1].from > w[0].from && w[1].from < 1.0,
                "{key}: stage starts must increase and stay below 1, not {} then {}",
                w[0].from,
                w[1].from
            );
            ensure!(
                w[1].h_cycles >= w[0].h_cycles && w[1].l_cycles >= w[0].l_cycles,
                "{key}: a stage may not be shallower than the one before it (H_cycles={} L_cycles={} after H_cycles={} L_cycles={})",
                w[1].h_cycles,
                w[1].l_cycles,
                w[0].h_cycles,
                w[0].l_cycles
            );
        }
        let last = stages.last().expect("at least one stage");
        if (last.h_cycles, last.l_cycles) != (t, n) {
            bail!(
                "{key}: the last stage (H_cycles={} L_cycles={}) must be the model's depth, arch.H_cycles={t} arch.L_cycles={n}, \
                 so that checkpoints, evaluation and solve run the depth the run ends at",
                last.h_cycles,
                last.l_cycles
            );
        }
        Ok(DepthCurriculum { stages })
    }

    /// The first (1-based) step of stage `i` in a schedule of `total` steps: the first step with
    /// `(step - 1) / total >= from`.
    pub fn first_step(&self, i: usize, total: u64) -> u64 {
        (self.stages[i].from * total as f64).ceil() as u64 + 1
    }

    /// The index of the stage that (1-based) step `step` of `total` runs in.
    pub fn stage_index(&self, step: u64, total: u64) -> usize {
        (0..self.stages.len()).rev().find(|&i| self.first_step(i, total) <= step).unwrap_or(0)
    }

    /// The training work of the whole schedule under this curriculum, as a fraction of the same
    /// schedule at the model's fixed depth (`step_work` of each stage times its share of the steps).
    pub fn work_ratio(&self, arch: &ArchConfig) -> f64 {
        let mut work = 0.0;
        for (i, s) in self.stages.iter().enumerate() {
            let until = self.stages.get(i + 1).map_or(1.0, |n| n.from);
            let staged = ArchConfig { h_cycles: s.h_cycles, l_cycles: s.l_cycles, ..arch.clone() };
            work += (until - s.from) * step_work(&staged);
        }
        work / step_work(arch)
    }

    /// The model configuration step `step` of `total` trains: the model's own with the stage's
    /// `H_cycles` and `L_cycles`.
    pub fn model_at(&self, model: &ModelConfig, step: u64, total: u64) -> ModelConfig {
        let s = self.stages[self.stage_index(step, total)];
        let mut m = model.clone();
        (m.arch.h_cycles, m.arch.l_cycles) = (s.h_cycles, s.l_cycles);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(t: usize, n: usize) -> ArchConfig {
        ArchConfig { h_cycles: t, l_cycles: n, ..ArchConfig::default() }
    }

    #[test]
    fn cgar_is_the_papers_schedule_at_the_papers_depth() {
        let c = DepthCurriculum::parse("cgar", &arch(3, 6)).unwrap();
        let got: Vec<_> = c.stages.iter().map(|s| (s.from, s.h_cycles, s.l_cycles)).collect();
        assert_eq!(got, vec![(0.0, 1, 2), (0.3, 2, 4), (0.6, 3, 6)]);
        // Scaled to another depth, rounded up, never below 1.
        let c = DepthCurriculum::parse("CGAR", &arch(2, 2)).unwrap();
        let got: Vec<_> = c.stages.iter().map(|s| (s.h_cycles, s.l_cycles)).collect();
        assert_eq!(got, vec![(1, 1), (2, 2)]);
        assert_eq!(
            DepthCurriculum::parse("0:1:2, 0.3:2:4 ,0.6:3:6", &arch(3, 6)).unwrap(),
            DepthCurriculum::parse("cgar", &arch(3, 6)).unwrap()
        );
    }

    #[test]
    fn stages_switch_at_their_progress() {
        let c = DepthCurriculum::parse("cgar", &arch(3, 6)).unwrap();
        // 10 steps: steps 1-3 (progress 0, 0.1, 0.2), 4-6 (0.3..0.5), 7-10 (0.6..0.9).
        let got: Vec<usize> = (1..=10).map(|s| c.stage_index(s, 10)).collect();
        assert_eq!(got, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!((c.first_step(1, 10), c.first_step(2, 10)), (4, 7));
        // Every step of a long schedule is in the stage its progress says.
        for total in [1u64, 7, 100, 65_104] {
            for step in 1..=total.min(5000) {
                let rho = (step - 1) as f64 / total as f64;
                let want = c.stages.iter().rposition(|s| rho >= s.from).unwrap();
                assert_eq!(c.stage_index(step, total), want, "step {step} of {total}");
            }
        }
        let base = ModelConfig { arch: arch(3, 6), seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 };
        let m = c.model_at(&base, 1, 10);
        assert_eq!((m.arch.h_cycles, m.arch.l_cycles), (1, 2));
        assert_eq!(c.model_at(&base, 10, 10), base);
    }

    #[test]
    fn work_ratio_counts_the_stages_shares() {
        // TRM of 2 layers at (T, n): T(n+1) applications, n+1 differentiated, no bootstrap pass;
        // in blocks (1, 2) 6 + 12 = 18, (2, 4) 20 + 20 = 40, (3, 6) 42 + 28 = 70.
        let a = arch(3, 6);
        assert_eq!(a.l_layers, 2);
        assert_eq!([step_work(&arch(1, 2)), step_work(&arch(2, 4)), step_work(&a)], [18.0, 40.0, 70.0]);
        let c = DepthCurriculum::parse("cgar", &a).unwrap();
        assert!((c.work_ratio(&a) - (0.3 * 18.0 + 0.3 * 40.0 + 0.4 * 70.0) / 70.0).abs() < 1e-12);
        assert_eq!(DepthCurriculum::parse("0:3:6", &a).unwrap().work_ratio(&a), 1.0);
    }

    #[test]
    fn bad_curricula_are_refused_with_the_reason() {
        let a = arch(3, 6);
        let err = |s: &str| format!("{:#}", DepthCurriculum::parse(s, &a).unwrap_err());
        assert!(err("0:1:2,0.3:2:4").contains("must be the model's depth"), "{}", err("0:1:2,0.3:2:4"));
        assert!(err("0.1:1:2,0.5:3:6").contains("start at progress 0"));
        assert!(err("0:1:2,0.6:2:4,0.3:3:6").contains("must increase"));
        assert!(err("0:1:2,1:3:6").contains("below 1"));
        assert!(err("0:0:2,0.5:3:6").contains(">= 1"));
        assert!(err("0:4:2,0.5:3:6").contains("deeper than the model"));
        assert!(err("0:1,0.5:3:6").contains("stage 1 is `0:1`"));
        assert!(err("shallow").contains("FROM:H_cycles:L_cycles"));
        assert!(err("0:3:6,0.5:1:2,0.9:3:6").contains("shallower than the one before"));
        assert!(err(" ").contains("is empty"));
        let baseline = ArchConfig { name: Architecture::TransformersBaseline, ..arch(1, 1) };
        assert!(format!("{:#}", DepthCurriculum::parse("cgar", &baseline).unwrap_err()).contains("no recursion"));
    }
}
