//! The recursion of one supervision step, as data: which states the model carries, which
//! networks exist, the ordered list of updates, and where the gradient starts. One interpreter
//! (`forward.rs`) runs every architecture from this description; TRM, HRM, their ablations and
//! the transformer baseline differ only here and in their configuration.
//!
//! An update writes `state <- net(Σ hidden + Σ injection)`: the hidden states are summed left to
//! right, the injection terms likewise, then the two sums are added (the reference's
//! `ReasoningModule(hidden, injection)` adds the injection once, before the blocks).
//!
//! | architecture | states | one recursion (repeated T = H_cycles times) | differentiated |
//! |---|---|---|---|
//! | trm | y (z_H), z (z_L) | n × `z <- L(z, y + x)`, then `y <- L(y, z)` (H if H_layers > 0) | last recursion (n + 1) |
//! | hrm | z_H, z_L | n × `z_L <- L(z_L, z_H + x)`, then `z_H <- H(z_H, z_L)` | last L and H update (2) |
//! | trm_singlez | z | n × `z <- L(z + x)`, then `z <- L(z)` | last recursion |
//! | trm_hier6 | y, z_1..z_6 | for l < n: `z_l <- L(Σ z, y + x)`, then `y <- L(y, Σ z)` | last recursion |
//! | transformers_baseline | y | `y <- H(y, x)` once | everything (1) |
//!
//! HRM's schedule is TRM's with a separate H network: the reference writes it as "all but the
//! last L update under no_grad, then one L and one H update", which is the same list with the
//! gradient starting two updates from the end. `one_step_grad` moves TRM's cut there too.

use super::architecture::Architecture;
use super::config::ArchConfig;

/// A term of an update's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// A carried state, by index.
    State(usize),
    /// The input embedding x.
    Input,
}

/// `states[target] <- nets[net](Σ hidden + Σ injection)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub target: usize,
    pub net: usize,
    pub hidden: Vec<usize>,
    pub injection: Vec<Term>,
}

/// A state carried across supervision steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpec {
    /// The paper's name (y, z, z1..).
    pub name: String,
    /// The reference's carry field (z_H, z_L, z_L1..), used in checkpoints and fixtures.
    pub key: String,
    /// Its fixed start vector (a buffer, never trained): H_init, L_init, L1_init..
    pub init: String,
}

/// A stack of blocks, serialised as `{name}.layers.{i}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub name: &'static str,
    pub layers: usize,
}

/// Everything one supervision step does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub states: Vec<StateSpec>,
    pub nets: Vec<NetSpec>,
    pub updates: Vec<Update>,
    /// `updates[grad_from..]` are differentiated in training; the ones before run without a graph.
    pub grad_from: usize,
    /// The state the heads read (logits and Q).
    pub answer: usize,
}

fn state(name: &str, key: &str, init: &str) -> StateSpec {
    StateSpec { name: name.into(), key: key.into(), init: init.into() }
}

impl Schedule {
    /// The schedule of an architecture configuration.
    pub fn of(a: &ArchConfig) -> Schedule {
        let (t, n) = (a.h_cycles, a.l_cycles);
        let mut nets = vec![NetSpec { name: "L_level", layers: a.l_layers }];
        // The answer's network: H_level when it exists, else the shared L_level.
        let h_net = if a.h_layers > 0 {
            nets.push(NetSpec { name: "H_level", layers: a.h_layers });
            nets.len() - 1
        } else {
            0
        };
        let mut updates = Vec::new();
        let (states, tail) = match a.name {
            Architecture::Trm | Architecture::Hrm => {
                let (y, z) = (0, 1);
                for _ in 0..t {
                    for _ in 0..n {
                        updates.push(Update { target: z, net: 0, hidden: vec![z], injection: vec![Term::State(y), Term::Input] });
                    }
                    updates.push(Update { target: y, net: h_net, hidden: vec![y], injection: vec![Term::State(z)] });
                }
                (vec![state("y", "z_H", "H_init"), state("z", "z_L", "L_init")], n + 1)
            }
            Architecture::TrmSinglez => {
                for _ in 0..t {
                    for _ in 0..n {
                        updates.push(Update { target: 0, net: 0, hidden: vec![0], injection: vec![Term::Input] });
                    }
                    updates.push(Update { target: 0, net: 0, hidden: vec![0], injection: vec![] });
                }
                (vec![state("z", "z_L", "L_init")], n + 1)
            }
            Architecture::TrmHier6 => {
                let zs: Vec<usize> = (1..=6).collect();
                for _ in 0..t {
                    for l in 0..n {
                        updates.push(Update { target: 1 + l, net: 0, hidden: zs.clone(), injection: vec![Term::State(0), Term::Input] });
                    }
                    updates.push(Update {
                        target: 0,
                        net: h_net,
                        hidden: vec![0],
                        injection: zs.iter().map(|&i| Term::State(i)).collect(),
                    });
                }
                let mut states = vec![state("y", "z_H", "H_init")];
                states.extend((1..=6).map(|i| state(&format!("z{i}"), &format!("z_L{i}"), &format!("L{i}_init"))));
                (states, n + 1)
            }
            Architecture::TransformersBaseline => {
                nets = vec![NetSpec { name: "H_level", layers: a.h_layers }];
                updates.push(Update { target: 0, net: 0, hidden: vec![0], injection: vec![Term::Input] });
                (vec![state("y", "z_H", "H_init")], 1)
            }
        };
        let differentiated = if a.one_step_grad && a.name != Architecture::TransformersBaseline { 2 } else { tail };
        let grad_from = updates.len().saturating_sub(differentiated);
        Schedule { states, nets, updates, grad_from, answer: 0 }
    }

    /// Blocks applied in one supervision step: the paper's effective depth T·(n+1)·layers.
    pub fn effective_depth(&self) -> usize {
        self.updates.iter().map(|u| self.nets[u.net].layers).sum()
    }

    /// Network applications in one supervision step.
    pub fn applications(&self) -> usize {
        self.updates.len()
    }

    /// Network applications the gradient flows through.
    pub fn differentiated_applications(&self) -> usize {
        self.updates.len() - self.grad_from
    }

    /// Blocks the gradient flows through.
    pub fn differentiated_blocks(&self) -> usize {
        self.updates[self.grad_from..].iter().map(|u| self.nets[u.net].layers).sum()
    }

    /// Forward passes per optimisation step (the paper's NFP): one, plus the bootstrap pass of
    /// the Q-continue target.
    pub fn forward_passes(a: &ArchConfig) -> usize {
        1 + a.continue_target() as usize
    }

    /// Index of a network by its serialised name.
    pub fn net(&self, name: &str) -> Option<usize> {
        self.nets.iter().position(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(name: Architecture, f: impl FnOnce(&mut ArchConfig)) -> Schedule {
        let mut a = name.defaults();
        f(&mut a);
        Schedule::of(&a)
    }

    #[test]
    fn trm_runs_t_recursions_of_n_latent_updates_and_one_answer_update() {
        let s = arch(Architecture::Trm, |_| {});
        assert_eq!(s.applications(), 3 * 7);
        assert_eq!(s.effective_depth(), 42); // the paper's Table 1
        assert_eq!(s.differentiated_applications(), 7);
        assert_eq!(s.nets.len(), 1);
        let u = &s.updates[0];
        assert_eq!((u.target, u.net, u.hidden.clone(), u.injection.clone()), (1, 0, vec![1], vec![Term::State(0), Term::Input]));
        let y = &s.updates[6];
        assert_eq!((y.target, y.hidden.clone(), y.injection.clone()), (0, vec![0], vec![Term::State(1)]));
    }

    #[test]
    fn hrm_is_trm_with_two_networks_and_the_one_step_gradient() {
        let h = arch(Architecture::Hrm, |_| {});
        assert_eq!(h.effective_depth(), 24); // 2 (2 + 1) 4: the paper's Table 1
        assert_eq!(h.differentiated_applications(), 2);
        let last: Vec<usize> = h.updates[h.grad_from..].iter().map(|u| u.net).collect();
        assert_eq!(last, vec![0, 1], "one L update then one H update");
        // Four L and two H updates per step (reference: H_cycles * L_cycles and H_cycles).
        assert_eq!(h.updates.iter().filter(|u| u.net == 0).count(), 4);
        assert_eq!(h.updates.iter().filter(|u| u.net == 1).count(), 2);
        // TRM with a separate answer network and the cut moved is the same schedule.
        let t = arch(Architecture::Trm, |a| {
            (a.h_cycles, a.l_cycles, a.l_layers, a.h_layers, a.one_step_grad) = (2, 2, 4, 4, true);
        });
        assert_eq!(t.updates, h.updates);
        assert_eq!(t.grad_from, h.grad_from);
    }

    #[test]
    fn the_ablations_have_the_papers_depths() {
        assert_eq!(arch(Architecture::Trm, |a| (a.l_layers, a.l_cycles) = (4, 3)).effective_depth(), 48);
        assert_eq!(arch(Architecture::Trm, |a| (a.h_cycles, a.l_cycles) = (2, 2)).effective_depth(), 12);
        let sep = arch(Architecture::Trm, |a| a.h_layers = 2);
        assert_eq!((sep.effective_depth(), sep.nets.len()), (42, 2));
        assert_eq!(arch(Architecture::Trm, |a| a.one_step_grad = true).differentiated_applications(), 2);
        let single = arch(Architecture::TrmSinglez, |_| {});
        assert_eq!((single.states.len(), single.effective_depth()), (1, 42));
        assert!(single.updates.iter().step_by(7).all(|u| u.injection == vec![Term::Input]));
        assert!(single.updates[6].injection.is_empty());
        let h6 = arch(Architecture::TrmHier6, |_| {});
        assert_eq!((h6.states.len(), h6.effective_depth()), (7, 42));
        assert_eq!(h6.updates[5].target, 6);
        let base = arch(Architecture::TransformersBaseline, |_| {});
        assert_eq!((base.effective_depth(), base.differentiated_applications(), base.nets[0].name), (8, 1, "H_level"));
    }
}
