//! The model's parameters as plain tensors (llm.c style), named exactly as the reference's
//! `state_dict` (without the `model.inner.` prefix), plus initialisation. Which networks and
//! init buffers exist comes from the architecture's schedule (`schedule.rs`).
//!
//! Training keeps the master copy on the inner (non-autodiff) backend; each step maps it to
//! autodiff leaves (`require_grad`) for the differentiated cycle. Optimisers, EMA and
//! checkpoints work on the flat `named` list.

use super::config::{ForwardDtype, ModelConfig, PosEncoding};
use super::schedule::Schedule;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;

/// `y = x W^T (+ b)`; weight `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    pub weight: Tensor<B, 2>,
    pub bias: Option<Tensor<B, 1>>,
}

/// Token mixing of a block.
#[derive(Debug, Clone)]
pub enum Mixer<B: Backend> {
    /// `qkv_proj [3D, D]`, `o_proj [D, D]`.
    Attention { qkv: Linear<B>, o: Linear<B> },
    /// SwiGLU across the sequence axis: `gate_up [2 I_T, T]`, `down [T, I_T]`.
    MlpT { gate_up: Linear<B>, down: Linear<B> },
}

/// One post-norm block: mixer then channel SwiGLU (`gate_up [2I, D]`, `down [D, I]`).
#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    pub mixer: Mixer<B>,
    pub gate_up: Linear<B>,
    pub down: Linear<B>,
}

impl<B: Backend> Block<B> {
    /// The same block with each weight mapped by `f` (tests: a block's weights moved onto the
    /// autodiff backend). Blocks have no biases.
    #[cfg(test)]
    pub(crate) fn map_weights<B2: Backend>(&self, f: impl Fn(Tensor<B, 2>) -> Tensor<B2, 2>) -> Block<B2> {
        let lin = |l: &Linear<B>| {
            assert!(l.bias.is_none(), "blocks have no biases");
            Linear { weight: f(l.weight.clone()), bias: None }
        };
        let mixer = match &self.mixer {
            Mixer::Attention { qkv, o } => Mixer::Attention { qkv: lin(qkv), o: lin(o) },
            Mixer::MlpT { gate_up, down } => Mixer::MlpT { gate_up: lin(gate_up), down: lin(down) },
        };
        Block { mixer, gate_up: lin(&self.gate_up), down: lin(&self.down) }
    }
}

/// All trainable parameters and the fixed init buffers.
#[derive(Debug, Clone)]
pub struct Weights<B: Backend> {
    /// `[vocab, D]`
    pub embed_tokens: Tensor<B, 2>,
    /// `[T, D]` when pos_encodings = learned
    pub embed_pos: Option<Tensor<B, 2>>,
    /// `[vocab, D]`, no bias
    pub lm_head: Linear<B>,
    /// `[2, D]` + bias `[2]`: (halt, continue) logits read at position 0
    pub q_head: Linear<B>,
    /// The blocks of each network, in the schedule's network order (`L_level`, `H_level`).
    pub nets: Vec<Vec<Block<B>>>,
    /// Fixed random start vector of each carried state, `[D]`, in the schedule's state order
    /// (`H_init`, `L_init`, ...); buffers, never trained.
    pub inits: Vec<Tensor<B, 1>>,
    /// The serialised names of the networks and init buffers (from the schedule).
    pub net_names: Vec<&'static str>,
    pub init_names: Vec<String>,
}

/// The reference's name of one block's tensors: `{net}.layers.{i}.{self_attn|mlp_t|mlp}...`.
fn block_names(net: &str, i: usize, mlp_t: bool) -> [String; 4] {
    let p = format!("{net}.layers.{i}");
    let (m1, m2) = if mlp_t { ("mlp_t.gate_up_proj", "mlp_t.down_proj") } else { ("self_attn.qkv_proj", "self_attn.o_proj") };
    [format!("{p}.{m1}.weight"), format!("{p}.{m2}.weight"), format!("{p}.mlp.gate_up_proj.weight"), format!("{p}.mlp.down_proj.weight")]
}

/// A tensor of any rank up to 2, flattened to `[rows, cols]` with its real shape kept.
#[derive(Debug, Clone)]
pub struct Named<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub tensor: Tensor<B, 2>,
    /// False for the H_init / L_init buffers.
    pub trainable: bool,
}

fn flat2<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Tensor<B, 2>) {
    (t.dims().to_vec(), t)
}
fn flat1<B: Backend>(t: Tensor<B, 1>) -> (Vec<usize>, Tensor<B, 2>) {
    let n = t.dims()[0];
    (vec![n], t.reshape([1, n]))
}

impl<B: Backend> Weights<B> {
    /// Every tensor with its reference name, in a fixed order.
    pub fn into_named(self) -> Vec<Named<B>> {
        let mut out = Vec::new();
        let mut push =
            |name: String, (shape, tensor): (Vec<usize>, Tensor<B, 2>), trainable: bool| out.push(Named { name, shape, tensor, trainable });
        push("embed_tokens.embedding_weight".into(), flat2(self.embed_tokens), true);
        if let Some(p) = self.embed_pos {
            push("embed_pos.embedding_weight".into(), flat2(p), true);
        }
        push("lm_head.weight".into(), flat2(self.lm_head.weight), true);
        push("q_head.weight".into(), flat2(self.q_head.weight), true);
        push("q_head.bias".into(), flat1(self.q_head.bias.expect("q_head has a bias")), true);
        for (net, blocks) in self.net_names.iter().zip(self.nets) {
            for (i, b) in blocks.into_iter().enumerate() {
                let (m1, m2, mlp_t) = match b.mixer {
                    Mixer::Attention { qkv, o } => (qkv, o, false),
                    Mixer::MlpT { gate_up, down } => (gate_up, down, true),
                };
                let [n1, n2, n3, n4] = block_names(net, i, mlp_t);
                push(n1, flat2(m1.weight), true);
                push(n2, flat2(m2.weight), true);
                push(n3, flat2(b.gate_up.weight), true);
                push(n4, flat2(b.down.weight), true);
            }
        }
        for (name, init) in self.init_names.iter().zip(self.inits) {
            push(name.clone(), flat1(init), false);
        }
        out
    }

    /// Rebuilds the struct from named tensors (any order); errors name missing, misshapen or
    /// unexpected keys. Reads names once, at the edges (loading, saving); the training step
    /// rebuilds through `from_ordered`.
    pub fn from_named(cfg: &ModelConfig, named: Vec<Named<B>>) -> anyhow::Result<Self> {
        let mut map: std::collections::HashMap<String, Named<B>> = named.into_iter().map(|n| (n.name.clone(), n)).collect();
        let mut ordered = Vec::new();
        for (name, want) in expected_shapes(cfg) {
            let n = map.remove(&name).ok_or_else(|| missing_weight(cfg, &name, &map))?;
            anyhow::ensure!(n.shape == want, "weight `{name}` has shape {:?}, the config needs {:?}", n.shape, want);
            ordered.push(n.tensor);
        }
        if let Some(k) = map.keys().next() {
            anyhow::bail!("unexpected weight `{k}` for this configuration (arch={})", cfg.arch.name.name());
        }
        Ok(Self::from_ordered(cfg, ordered))
    }

    /// Rebuilds the struct from its tensors in `into_named`'s order (`[rows, cols]` as there),
    /// with no names read: the per-step path, for tensors that `from_named` checked once.
    /// Panics when there are fewer tensors than the configuration has (and, in debug builds,
    /// when there are more).
    pub fn from_ordered(cfg: &ModelConfig, tensors: Vec<Tensor<B, 2>>) -> Self {
        let mut it = tensors.into_iter();
        let mut next = || it.next().expect("one tensor per weight of the configuration");
        let lin = |w: Tensor<B, 2>| Linear { weight: w, bias: None };
        let d = cfg.d();
        let embed_tokens = next();
        let embed_pos = (cfg.arch.pos_encodings == PosEncoding::Learned).then(&mut next);
        let lm_head = lin(next());
        let q_weight = next();
        let q_head = Linear { weight: q_weight, bias: Some(next().reshape([2])) };
        let sched = Schedule::of(&cfg.arch);
        let mut nets = Vec::new();
        for net in &sched.nets {
            let mut blocks = Vec::new();
            for _ in 0..net.layers {
                let (w1, w2) = (lin(next()), lin(next()));
                let mixer = if cfg.arch.mlp_t { Mixer::MlpT { gate_up: w1, down: w2 } } else { Mixer::Attention { qkv: w1, o: w2 } };
                blocks.push(Block { mixer, gate_up: lin(next()), down: lin(next()) });
            }
            nets.push(blocks);
        }
        let inits = sched.states.iter().map(|_| next().reshape([d])).collect();
        debug_assert!(it.next().is_none(), "more tensors than the configuration has weights");
        Weights {
            embed_tokens,
            embed_pos,
            lm_head,
            q_head,
            nets,
            inits,
            net_names: sched.nets.iter().map(|n| n.name).collect(),
            init_names: sched.states.iter().map(|s| s.init.clone()).collect(),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.device()
    }

    /// Applies `f` to every tensor (e.g. move to autodiff leaves, cast, clone to a device).
    pub fn map<B2: Backend>(self, cfg: &ModelConfig, mut f: impl FnMut(&str, bool, Tensor<B, 2>) -> Tensor<B2, 2>) -> Weights<B2> {
        Weights::from_ordered(cfg, self.into_named().into_iter().map(|n| f(&n.name, n.trainable, n.tensor)).collect())
    }

    /// Number of trainable parameters (the reference's `num_params`; excludes the puzzle table).
    pub fn num_params(&self) -> usize {
        self.clone().into_named().iter().filter(|n| n.trainable).map(|n| n.shape.iter().product::<usize>()).sum()
    }
}

/// The error for a weight the configuration needs and the file lacks. One case gets its cause:
/// a reference TRM file whose config carries a non-zero `H_layers`, which the reference's TRM
/// ignores (its weights have no `H_level` network) and trm reads as the separate answer network.
fn missing_weight<T>(cfg: &ModelConfig, name: &str, present: &std::collections::HashMap<String, T>) -> anyhow::Error {
    let separate_answer_net = cfg.arch.name == super::architecture::Architecture::Trm && cfg.arch.h_layers > 0;
    if separate_answer_net && name.starts_with("H_level.") && !present.keys().any(|k| k.starts_with("H_level.")) {
        return anyhow::anyhow!(
            "missing weight `{name}`: arch.H_layers={} makes trm build a separate answer network (H_level), and these \
             weights have none. The reference's TRM ignores H_layers, so its files may carry any value there; load \
             them with `--set arch.H_layers=0`",
            cfg.arch.h_layers
        );
    }
    anyhow::anyhow!("missing weight `{name}`")
}

/// Names and shapes of all tensors for a config, in `into_named` order.
pub fn expected_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, v, t) = (cfg.d(), cfg.vocab_size, cfg.total_len());
    let mut out: Vec<(String, Vec<usize>)> = vec![("embed_tokens.embedding_weight".into(), vec![v, d])];
    if cfg.arch.pos_encodings == PosEncoding::Learned {
        out.push(("embed_pos.embedding_weight".into(), vec![t, d]));
    }
    out.push(("lm_head.weight".into(), vec![v, d]));
    out.push(("q_head.weight".into(), vec![2, d]));
    out.push(("q_head.bias".into(), vec![2]));
    let (i, it, aw) = (cfg.mlp_inner(), cfg.mlp_t_inner(), cfg.attention_width());
    let sched = Schedule::of(&cfg.arch);
    for net in &sched.nets {
        for l in 0..net.layers {
            let [n1, n2, n3, n4] = block_names(net.name, l, cfg.arch.mlp_t);
            if cfg.arch.mlp_t {
                out.push((n1, vec![2 * it, t]));
                out.push((n2, vec![t, it]));
            } else {
                out.push((n1, vec![3 * aw, d]));
                out.push((n2, vec![d, aw]));
            }
            out.push((n3, vec![2 * i, d]));
            out.push((n4, vec![d, i]));
        }
    }
    out.extend(sched.states.iter().map(|s| (s.init.clone(), vec![d])));
    out
}

/// Trainable parameters of a configuration (the reference's `num_params`: the puzzle-embedding
/// table and the init buffers excluded), from the shapes alone.
pub fn count_params(cfg: &ModelConfig) -> usize {
    expected_shapes(cfg).iter().filter(|(n, _)| !is_init_buffer(n)).map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// Whether a tensor name is a fixed init buffer (never trained, not averaged by the EMA).
pub fn is_init_buffer(name: &str) -> bool {
    name.ends_with("_init")
}

/// Truncated-normal sample with the reference's corrected std: a standard normal truncated to
/// [-2, 2] times `1.1368472343385565 * std`, so the empirical std equals `std`.
pub fn trunc_normal(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    const COMP: f64 = 1.1368472343385565;
    let mut out = Vec::with_capacity(n);
    if std == 0.0 {
        out.resize(n, 0.0);
        return out;
    }
    while out.len() < n {
        // Box-Muller, rejecting draws outside [-2, 2].
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        for z in [r * (std::f64::consts::TAU * u2).cos(), r * (std::f64::consts::TAU * u2).sin()] {
            if z.abs() <= 2.0 && out.len() < n {
                out.push((z * COMP * std) as f32);
            }
        }
    }
    out
}

/// Fresh weights with the reference initialisation: truncated LeCun normal for linear layers,
/// `1/sqrt(D)` for embeddings, std-1 init states, zero Q head with bias -5.
pub fn init<B: Backend>(cfg: &ModelConfig, rng: &mut impl Rng, device: &B::Device) -> Weights<B> {
    let named = expected_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name == "q_head.weight" {
                vec![0.0; n]
            } else if name == "q_head.bias" {
                vec![-5.0; n]
            } else if name.ends_with("embedding_weight") {
                trunc_normal(rng, n, 1.0 / (cfg.d() as f64).sqrt())
            } else if is_init_buffer(&name) {
                // The reference makes these in the forward dtype: under bfloat16 their values are
                // bfloat16's, whatever engine runs them (a float32 CPU run included), so an
                // export in the reference's dtypes keeps them exactly.
                let v = trunc_normal(rng, n, 1.0);
                match cfg.arch.forward_dtype {
                    ForwardDtype::Bfloat16 => v.into_iter().map(|x| half::bf16::from_f32(x).to_f32()).collect(),
                    ForwardDtype::Float32 => v,
                }
            } else {
                trunc_normal(rng, n, 1.0 / (shape[1] as f64).sqrt()) // LeCun: 1/sqrt(fan_in)
            };
            let (r, c) = if shape.len() == 1 { (1, shape[0]) } else { (shape[0], shape[1]) };
            let tensor = Tensor::<B, 2>::from_data(TensorData::new(values, [r, c]), device);
            let trainable = !is_init_buffer(&name);
            Named { name, shape, tensor, trainable }
        })
        .collect();
    Weights::from_named(cfg, named).expect("init builds every weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_buffers_hold_the_forward_dtypes_values() {
        type B = burn::backend::Flex;
        let mut cfg = crate::model::config::block_test_config(PosEncoding::Rope, false, 64, 4, 19);
        let buffers = |cfg: &ModelConfig| -> Vec<f32> {
            let w = init::<B>(cfg, &mut crate::util::rng::derive(1, &[]), &Default::default()).into_named();
            w.into_iter().filter(|n| !n.trainable).flat_map(|n| crate::backend::to_host_f32(&n.tensor)).collect()
        };
        let is_bf16 = |x: &f32| half::bf16::from_f32(*x).to_f32() == *x;
        cfg.arch.forward_dtype = ForwardDtype::Bfloat16;
        let v = buffers(&cfg);
        assert!(!v.is_empty() && v.iter().all(is_bf16));
        cfg.arch.forward_dtype = ForwardDtype::Float32;
        assert!(!buffers(&cfg).iter().all(is_bf16), "float32 buffers keep float32's values");
    }

    #[test]
    fn reference_trm_weights_under_a_nonzero_h_layers_name_the_fix() {
        type B = burn::backend::Flex;
        let mut cfg = crate::model::config::block_test_config(PosEncoding::Rope, false, 64, 4, 19);
        let weights = init::<B>(&cfg, &mut crate::util::rng::derive(1, &[]), &Default::default()).into_named();
        // The same weights, read under the config a reference file with `H_layers: 2` gives.
        cfg.arch.h_layers = 2;
        let Err(e) = Weights::<B>::from_named(&cfg, weights.clone()) else { panic!("H_level is missing") };
        let err = format!("{e:#}");
        assert!(err.contains("missing weight `H_level.layers.0.") && err.contains("--set arch.H_layers=0"), "{err}");
        // Any other missing weight keeps the plain message.
        cfg.arch.h_layers = 0;
        let fewer: Vec<_> = weights.into_iter().filter(|n| n.name != "lm_head.weight").collect();
        let Err(e) = Weights::<B>::from_named(&cfg, fewer) else { panic!("lm_head is missing") };
        let err = format!("{e:#}");
        assert_eq!(err, "missing weight `lm_head.weight`");
    }

    #[test]
    fn trunc_normal_has_the_requested_std_and_bounds() {
        let mut r = crate::util::rng::derive(1, &[]);
        let v = trunc_normal(&mut r, 200_000, 0.5);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((std - 0.5).abs() < 0.005, "std {std}");
        assert!(v.iter().all(|&x| x.abs() as f64 <= 2.273_694_468_677_113 * 0.5 + 1e-6));
    }
}
