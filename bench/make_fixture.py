#!/usr/bin/env python3
"""Golden fixtures from the reference PyTorch code, for any architecture and configuration.

Writes a folder in exactly the format of shared/fixtures/trm-small-attn (weights.safetensors,
batch.safetensors, expected.safetensors, config.json, README.md), which `trm parity DIR`
replays. The reference's own code does all the work: the model class and loss head from the
prepared copy in bench/reference/ (bench/prepare_reference.sh), `pretrain.create_model` for the
model and its optimisers (sign-SGD on the puzzle table, AdamATan2 on the weights, the latter
from bench/adam_atan2_torch.py since the package is a CUDA extension), and `pretrain.train_batch`
for the real training steps. CPU, float32, one thread, deterministic algorithms, no compile.

Experiments (as the trm-small-attn README describes them):
  train.stepK.*  K calls of the ACT model in training mode, weights fixed, same batch;
  eval.stepK.*   the same in eval mode;
  grad.*, after_step.*, ema.*, trainstep1.logged.*  one pretrain.train_batch from a fresh carry;
  trainstep2.*   a second train_batch with the persisted carry and the updated weights.
Architectures with a Q-continue loss (hrm; trm with --act-continue) add
  <mode>.stepK.target_q_continue and <mode>.stepK.loss.q_continue_loss.
Debug intermediates are named after the network of the first update:
  debug.train.step1.<net>_block0_call1_out and debug.train.step1.<net>_call1_out.
The float32-vs-float64 noise floor comes from re-running both rollouts in float64.

Deliberate changes to the reference initialisation, so every path carries signal: the puzzle
table N(0, 0.1^2) (reference: zeros), q_head.weight N(0, 1/D) and q_head.bias chosen
(reference: zeros and -5), so that some rows halt early. The perturbation seed is searched until
every halting decision of the training rollout has a margin of at least --min-margin.

Usage (from the repository root; bench/prepare_reference.sh --reuse first):
  python3 bench/make_fixture.py --arch hrm --out tests/fixtures/hrm-small --hidden 32 --heads 2 \
      --H-layers 1 --L-layers 1 --H-cycles 2 --L-cycles 2 --seq-len 24 --batch 3
  python3 bench/make_fixture.py --regenerate ../shared/fixtures/trm-small-attn --out /tmp/check
      (re-runs an existing fixture's weights and batch and compares every tensor)
"""
import argparse
import copy
import hashlib
import json
import math
import os
import sys
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REF = Path(os.environ.get("REF_DIR", BENCH / "reference"))
SHARED = Path(os.environ.get("TRM_SHARED", ROOT.parent / "shared"))

MODULES = {
    "trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "hrm": "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1",
    "trm_singlez": "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
    "trm_hier6": "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1",
    "transformers_baseline": "recursive_reasoning.transformers_baseline@Model_ACTV2",
}
# The carry fields of each architecture, in trm's schedule order (answer state first).
STATES = {
    "trm": ["z_H", "z_L"],
    "hrm": ["z_H", "z_L"],
    "trm_singlez": ["z_L"],
    "trm_hier6": ["z_H"] + [f"z_L{i}" for i in range(1, 7)],
    "transformers_baseline": ["z_H"],
}


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(MODULES), default="trm")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=1234, help="torch seed before the model is built (pretrain's seed)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--expansion", type=float, default=4.0)
    p.add_argument("--H-cycles", type=int, default=2)
    p.add_argument("--L-cycles", type=int, default=3)
    p.add_argument("--H-layers", type=int, default=None, help="hrm / baseline (default 2 / 2); trm ignores it")
    p.add_argument("--L-layers", type=int, default=2)
    p.add_argument("--mlp-t", action="store_true")
    p.add_argument("--pos", choices=["rope", "learned", "none"], default="rope")
    p.add_argument("--puzzle-emb-ndim", type=int, default=None, help="default: hidden")
    p.add_argument("--puzzle-emb-len", type=int, default=16, help="trm variants only (0 = ceil(ndim / hidden))")
    p.add_argument("--halt-max-steps", type=int, default=4)
    p.add_argument("--calls", type=int, default=None, help="ACT calls per rollout (default halt_max_steps)")
    p.add_argument("--act-continue", action="store_true",
                   help="trm variants: no_ACT_continue=False, with the reference's unpacking bug fixed as HRM does it")
    p.add_argument("--act-inference", action="store_true", help="transformers_baseline: adaptive halting in eval")
    p.add_argument("--no-act-enabled", action="store_true", help="transformers_baseline: act_enabled=False")
    p.add_argument("--loss-type", default="stablemax_cross_entropy", choices=["stablemax_cross_entropy", "softmax_cross_entropy"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=81, help="first N cells of each Sudoku (parity needs tokens, not puzzles)")
    p.add_argument("--rows", default="0,1,2,3", help="0-based rows of sudoku-extreme-1k/train.csv, cycled to --batch")
    p.add_argument("--ids", default="0,1,2,1", help="puzzle identifiers, cycled to --batch (repeat one: sign-SGD sums)")
    p.add_argument("--num-ids", type=int, default=3)
    p.add_argument("--min-margin", type=float, default=0.02, help="smallest |halting decision| of the training rollout")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--puzzle-lr", type=float, default=1e-2)
    p.add_argument("--regenerate", type=Path, help="reuse this fixture's config, weights and batch; compare every tensor")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="first train the weights this many steps with the reference's own pretrain.train_batch on the batch "
                        "(the fixture then starts from the trained weights, with fresh optimisers)")
    p.add_argument("--save-torch", type=Path, help="torch.save the fixture's starting state_dict here, as pretrain.py saves checkpoints")
    return p.parse_args()


def setup_reference(fix_trm_continue):
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if not (REF / "models" / "recursive_reasoning" / "trm.py").exists():
        sys.exit(f"no reference copy at {REF}: run bench/prepare_reference.sh first")
    sys.path.insert(0, str(BENCH))
    from adam_atan2_torch import AdamATan2

    mod = types.ModuleType("adam_atan2")
    mod.AdamATan2 = AdamATan2
    sys.modules["adam_atan2"] = mod
    os.environ["DISABLE_COMPILE"] = "1"
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, str(REF))
    if fix_trm_continue:
        # The TRM files unpack five values from an inner call that returns three when
        # no_ACT_continue=False (reference-spec §4.2); take the Q logits as HRM does.
        for name in ["trm", "trm_singlez", "trm_hier6"]:
            path = REF / "models" / "recursive_reasoning" / f"{name}.py"
            src = path.read_text()
            bad = "_, _, (next_q_halt_logits, next_q_continue_logits), _, _ = self.inner(new_inner_carry, new_current_data)"
            good = "next_q_halt_logits, next_q_continue_logits = self.inner(new_inner_carry, new_current_data)[-1]"
            assert bad in src, f"{path}: the unpacking line changed; update make_fixture.py"
            m = types.ModuleType(f"models.recursive_reasoning.{name}")
            m.__file__ = str(path)
            import models.recursive_reasoning  # noqa: F401  (the package, so the module can live in it)

            exec(compile(src.replace(bad, good), str(path), "exec"), m.__dict__)
            sys.modules[m.__name__] = m
    import pretrain

    return pretrain


def sudoku_rows(rows, seq_len):
    import csv

    with open(SHARED / "data" / "sudoku-extreme-1k" / "train.csv", newline="") as f:
        all_rows = list(csv.reader(f))[1:]
    out = []
    for r in rows:
        source, q, a, rating = all_rows[r][:4]
        tok = [1 if c == "." else int(c) + 1 for c in q][:seq_len]
        lab = [int(c) + 1 for c in a][:seq_len]
        out.append(dict(row=r, source=source, question=q, answer=a, rating=int(rating), inputs=tok, labels=lab))
    return out


def arch_config(a):
    ndim = a.hidden if a.puzzle_emb_ndim is None else a.puzzle_emb_ndim
    c = dict(hidden_size=a.hidden, num_heads=a.heads, expansion=a.expansion, puzzle_emb_ndim=ndim,
             pos_encodings=a.pos, halt_max_steps=a.halt_max_steps, halt_exploration_prob=0.0,
             forward_dtype="float32")
    if a.arch == "transformers_baseline":
        c.update(H_cycles=1, H_layers=2 if a.H_layers is None else a.H_layers,
                 act_enabled=not a.no_act_enabled, act_inference=a.act_inference)
    elif a.arch == "hrm":
        c.update(H_cycles=a.H_cycles, L_cycles=a.L_cycles, H_layers=2 if a.H_layers is None else a.H_layers,
                 L_layers=a.L_layers, mlp_t=a.mlp_t)
    else:
        c.update(H_cycles=a.H_cycles, L_cycles=a.L_cycles, H_layers=0, L_layers=a.L_layers, mlp_t=a.mlp_t,
                 puzzle_emb_len=a.puzzle_emb_len, no_ACT_continue=not a.act_continue)
    return c


def main():
    a = parse()
    regen = None
    if a.regenerate:
        regen = json.loads((a.regenerate / "config.json").read_text())
        m = regen["model_config_effective"]
        name = regen["pretrain_config"]["arch"]["name"]
        a.arch = next(k for k, v in MODULES.items() if v.split("@")[0] == name.split("@")[0])
        a.act_continue = not m.get("no_ACT_continue", True) and a.arch != "hrm"
    pretrain = setup_reference(a.act_continue)
    import torch
    from safetensors.torch import load_file
    from dataset.common import PuzzleDatasetMetadata
    from models.ema import EMAHelper

    if regen:
        arch = {k: v for k, v in regen["pretrain_config"]["arch"].items() if k not in ("name", "loss")}
        loss_type = regen["pretrain_config"]["arch"]["loss"]["loss_type"]
        m = regen["model_config_effective"]
        seq_len, vocab, num_ids, batch_size = m["seq_len"], m["vocab_size"], m["num_puzzle_identifiers"], m["batch_size"]
        b = load_file(a.regenerate / "batch.safetensors")
        batch = {k: v.to(torch.int32) for k, v in b.items()}
        rows = regen.get("batch_rows", [])
        seed = regen["pretrain_config"]["seed"]
        hp = regen["pretrain_config"]
    else:
        arch, loss_type = arch_config(a), a.loss_type
        seq_len, vocab, num_ids, batch_size = a.seq_len, 11, a.num_ids, a.batch
        row_ids = [int(x) for x in a.rows.split(",")]
        row_ids = [row_ids[i % len(row_ids)] for i in range(batch_size)]
        rows = sudoku_rows(row_ids, seq_len)
        ids = [int(x) for x in a.ids.split(",")]
        batch = dict(
            inputs=torch.tensor([r["inputs"] for r in rows], dtype=torch.int32),
            labels=torch.tensor([r["labels"] for r in rows], dtype=torch.int32),
            puzzle_identifiers=torch.tensor([ids[i % len(ids)] for i in range(batch_size)], dtype=torch.int32),
        )
        seed = a.seed
        hp = dict(global_batch_size=batch_size, epochs=1, lr=a.lr, lr_min_ratio=1.0, lr_warmup_steps=0, weight_decay=0.1,
                  beta1=0.9, beta2=0.95, puzzle_emb_lr=a.puzzle_lr, puzzle_emb_weight_decay=0.1, ema=True, ema_rate=0.999)
    metadata = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=-100, blank_identifier_id=0, vocab_size=vocab, seq_len=seq_len,
                                     num_puzzle_identifiers=num_ids, total_groups=batch_size, mean_puzzle_examples=1.0,
                                     total_puzzles=batch_size, sets=["all"])
    keys = ("global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps", "weight_decay", "beta1", "beta2",
            "puzzle_emb_lr", "puzzle_emb_weight_decay", "ema", "ema_rate")
    config = pretrain.PretrainConfig(
        arch=pretrain.ArchConfig(name=MODULES[a.arch], loss=pretrain.LossConfig(name="losses@ACTLossHead", loss_type=loss_type), **arch),
        data_paths=[], seed=seed, **{k: hp[k] for k in keys})

    def build(dtype="float32"):
        cfg = copy.deepcopy(config)
        cfg.arch.__pydantic_extra__["forward_dtype"] = dtype
        torch.random.manual_seed(seed)
        real_stdout = sys.stdout
        sys.stdout = sys.stderr  # create_model prints the module tree
        try:
            model, optimizers, lrs = pretrain.create_model(cfg, metadata, rank=0, world_size=1)
        finally:
            sys.stdout = real_stdout
        return model, optimizers, lrs

    model, optimizers, lrs = build()
    inner = model.model.inner
    P = inner.puzzle_emb_len
    states = STATES[a.arch]

    # ---- weights: the reference init, perturbed so that halting happens (or the fixture's) ----
    if regen:
        w = load_file(a.regenerate / "weights.safetensors")
        model.load_state_dict(w, strict=False)
        pert_seed = regen.get("seeds", {}).get("perturbation generator seed (torch.Generator, draws puzzle table then q_head.weight with randn)")
    else:
        base_state = copy.deepcopy(model.state_dict())
        pert_seed = None
        for trial in range(200):
            g = torch.Generator().manual_seed(5685 + trial)
            model.load_state_dict(base_state)
            with torch.no_grad():
                if hasattr(inner, "puzzle_emb"):
                    inner.puzzle_emb.weights.copy_(torch.randn(inner.puzzle_emb.weights.shape, generator=g) * 0.1)
                inner.q_head.weight.copy_(torch.randn(inner.q_head.weight.shape, generator=g) / math.sqrt(a.hidden))
                inner.q_head.bias.copy_(torch.tensor([-1.5, -0.5]) if a.arch == "trm" and not a.act_continue else torch.randn(2, generator=g))
            margins, halts = rollout_margins(model, batch, a)
            if margins >= a.min_margin and halts:
                pert_seed = 5685 + trial
                break
        if pert_seed is None:
            sys.exit("no perturbation seed gave early halts with the requested margin; change sizes or --min-margin")

    # ---- optional: real training steps with the reference's own train_batch ------------------
    if a.pretrain_steps:
        state = pretrain.TrainState(model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=0,
                                    total_steps=a.pretrain_steps)
        model.train()
        for _ in range(a.pretrain_steps):
            pretrain.train_batch(config, state, batch, global_batch_size=batch_size, rank=0, world_size=1)
        trained = copy.deepcopy(model.state_dict())
        model, optimizers, lrs = build()  # fresh optimisers (and EMA) for the fixture's own steps
        model.load_state_dict(trained)
        inner = model.model.inner
    if a.save_torch:
        torch.save(model.state_dict(), a.save_torch)

    # ---- 1 + 2. ACT rollouts with fixed weights -------------------------------------------
    calls = (a.calls if not regen else None) or config.arch.__pydantic_extra__["halt_max_steps"]
    if regen:
        calls = max(int(k.split(".")[1][4:]) for k in load_file(a.regenerate / "expected.safetensors") if k.startswith("train.step"))
    expected = {}
    debug = capture_debug(model, batch, a, states)
    expected.update(debug)
    for mode in ("train", "eval"):
        expected.update(rollout(model, batch, mode, calls, states))

    # ---- 3. one real training step, 4. a second one ------------------------------------------
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    ts = pretrain.TrainState(model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=0, total_steps=10**9)
    ema = EMAHelper(mu=config.ema_rate)
    ema.register(model)
    grads = {}

    def snapshot_grads(opt, name_of):
        orig = opt.step

        def step(*args, **kw):
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None and id(p) in name_of:
                        grads.setdefault(name_of[id(p)], p.grad.detach().clone())
            return orig(*args, **kw)

        opt.step = step

    name_of = {id(p): n for n, p in model.named_parameters()}
    if hasattr(inner, "puzzle_emb"):
        name_of[id(inner.puzzle_emb.local_weights)] = "model.inner.puzzle_emb.local_weights"
    for opt in optimizers:
        snapshot_grads(opt, name_of)
    captured = {}
    proxy = CaptureProxy(model, captured)
    ts.model = proxy
    logged = pretrain.train_batch(config, ts, {k: v.clone() for k, v in batch.items()}, config.global_batch_size, 0, 1)
    for k, v in grads.items():
        expected[f"grad.{k}"] = v
    sd = model.state_dict()
    for n, p in model.named_parameters():
        expected[f"after_step.{n}"] = p.detach().clone()
    if hasattr(inner, "puzzle_emb"):
        expected["after_step.model.inner.puzzle_emb.weights"] = sd["model.inner.puzzle_emb.weights"].clone()
    ema.update(model)
    for n, v in ema.state_dict().items():
        expected[f"ema.{n}"] = v.clone()
    for k, v in logged.items():
        expected[f"trainstep1.logged.{k}"] = torch.tensor(float(v), dtype=torch.float64)
    captured.clear()
    pretrain.train_batch(config, ts, {k: v.clone() for k, v in batch.items()}, config.global_batch_size, 0, 1)
    out, carry, loss, metrics = captured["out"], captured["carry"], captured["loss"], captured["metrics"]
    for k in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue"):
        if k in out:
            expected[f"trainstep2.{k}"] = out[k].detach().float()
    expected["trainstep2.steps"] = carry.steps.to(torch.int32)
    expected["trainstep2.halted"] = carry.halted.clone()
    expected["trainstep2.loss.total"] = loss.detach().to(torch.float64)
    for k in ("lm_loss", "q_halt_loss", "q_continue_loss"):
        if k in metrics:
            expected[f"trainstep2.loss.{k}"] = metrics[k].detach()

    # ---- the float32-vs-float64 noise floor of the rollouts ----------------------------------
    model64, _, _ = build("float64")
    model64.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in weights_before.items()}, strict=False)
    noise = {}
    for mode in ("train", "eval"):
        r64 = rollout(model64, batch, mode, calls, states)
        for key, v in r64.items():
            what = key.split(".", 2)[2]
            if not v.is_floating_point() or v.ndim == 0 or key not in expected:
                continue
            ref = expected[key].to(torch.float64)
            noise.setdefault(f"{mode}.{what}", {})[key.split(".")[1]] = float(
                f"{((ref - v.to(torch.float64)).abs().max() / ref.abs().max().clamp_min(1e-30)).item():.3g}")

    margins = discrete_margins(expected, noise, calls)
    if not regen and margins["problems"]:
        print("ill-conditioned fixture, not written:\n  " + "\n  ".join(margins["problems"]), file=sys.stderr)
        sys.exit(3)
    write(a, expected, weights_before, batch, config, arch, loss_type, seq_len, vocab, num_ids, batch_size, rows, seed,
          pert_seed, noise, calls, P, states, margins)
    if regen:
        compare(a.regenerate, a.out)


def discrete_margins(expected, noise, calls, max_floor=1e-3):
    """Whether float32 can reproduce the fixture's discrete outputs: the reference's own float32
    run must stay close to float64 (noise floor below max_floor at every call), and every argmax
    of the stored logits must win by more than 10x the float32 noise of those logits."""
    problems, worst_floor, min_gap = [], 0.0, float("inf")
    for key, per_call in noise.items():
        for step, f in per_call.items():
            worst_floor = max(worst_floor, f)
            if f > max_floor:
                problems.append(f"the reference's float32 {key} at {step} is {f:.3g} (relative to max) from float64")
    for mode in ("train", "eval"):
        for k in range(1, calls + 1):
            logits = expected[f"{mode}.step{k}.logits"].double()
            top2 = logits.topk(2, dim=-1).values
            gap = (top2[..., 0] - top2[..., 1]).min().item()
            floor = noise.get(f"{mode}.logits", {}).get(f"step{k}", 1e-6)
            noise_abs = 10 * max(floor, 1e-6) * logits.abs().max().item()
            min_gap = min(min_gap, gap)
            if gap < noise_abs:
                problems.append(f"{mode} call {k}: an argmax wins by {gap:.3g}, within 10x the float32 noise ({noise_abs:.3g})")
    return {"min_top1_top2_logit_gap": min_gap, "worst_fp32_vs_fp64_noise_floor": worst_floor, "problems": problems}


class CaptureProxy:
    """Stands in for the model inside pretrain.train_batch and keeps its outputs."""

    def __init__(self, model, store):
        self.model, self.store = model, store

    def initial_carry(self, batch):
        return self.model.initial_carry(batch)

    def parameters(self):
        return self.model.parameters()

    def __call__(self, carry, batch, return_keys):
        keys = ["logits", "q_halt_logits", "q_continue_logits", "target_q_continue"]
        new_carry, loss, metrics, out, halted = self.model(carry=carry, batch=batch, return_keys=keys)
        self.store.update(out=out, carry=new_carry, loss=loss, metrics=metrics)
        return new_carry, loss, metrics, {}, halted


def inner_states(carry, states):
    ic = carry.inner_carry
    return {s: getattr(ic, s) for s in states}


def rollout(model, batch, mode, calls, states):
    import torch

    out = {}
    model.train(mode == "train")
    keys = ["logits", "q_halt_logits", "q_continue_logits", "target_q_continue", "preds"]
    ctx = torch.inference_mode() if mode == "eval" else torch.enable_grad()
    with ctx:
        carry = model.initial_carry(batch)
        for k in range(1, calls + 1):
            carry, loss, metrics, o, all_halted = model(carry=carry, batch=batch, return_keys=keys)
            p = f"{mode}.step{k}"
            for key in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue"):
                if key in o:
                    out[f"{p}.{key}"] = o[key].detach().clone()
            out[f"{p}.preds"] = o["preds"].detach().to(torch.int64).clone()
            for s, v in inner_states(carry, states).items():
                out[f"{p}.{s}"] = v.detach().clone()
            out[f"{p}.halted"] = carry.halted.clone()
            out[f"{p}.steps"] = carry.steps.to(torch.int32).clone()
            out[f"{p}.all_halted"] = torch.tensor(bool(all_halted))
            out[f"{p}.loss.total"] = loss.detach().to(torch.float64).clone()
            for m in ("lm_loss", "q_halt_loss", "q_continue_loss"):
                if m in metrics:
                    out[f"{p}.loss.{m}"] = metrics[m].detach().clone()
            for m in ("count", "exact_accuracy", "q_halt_accuracy", "steps"):
                out[f"{p}.metrics.{m}"] = metrics[m].detach().to(torch.int64).clone()
            out[f"{p}.metrics.accuracy"] = metrics["accuracy"].detach().to(torch.float32).clone()
    model.train()
    return out


def rollout_margins(model, batch, a):
    """Smallest |halting decision| of a training rollout, and whether some row halts early while
    some row goes on (so both branches of the halting rule are exercised)."""
    import torch

    calls = a.calls or a.halt_max_steps
    if a.arch == "transformers_baseline" and a.no_act_enabled:
        return float("inf"), True  # no adaptive halting in training: every row runs to the limit
    model.train()
    keys = ["q_halt_logits", "q_continue_logits"]
    margin, early, kept = float("inf"), False, False
    versus = a.arch in ("hrm", "transformers_baseline") or a.act_continue
    with torch.no_grad():
        carry = model.initial_carry(batch)
        for _ in range(calls):
            carry, _, _, o, _ = model(carry=carry, batch=batch, return_keys=keys)
            d = o["q_halt_logits"] - (o["q_continue_logits"] if versus else 0.0)
            margin = min(margin, d.abs().min().item())
            early |= bool((carry.halted & (carry.steps < a.halt_max_steps)).any())
            kept |= bool((~carry.halted).any())
    return margin, early and kept


def capture_debug(model, batch, a, states):
    """x, the first network application and its first block, on a fresh carry in training mode."""
    import torch

    inner = model.model.inner
    first_net = "H_level" if a.arch == "transformers_baseline" else "L_level"
    net = getattr(inner, first_net)
    got = {}
    h1 = net.register_forward_hook(lambda m, i, o: got.setdefault("net", o.detach().clone()))
    h2 = net.layers[0].register_forward_hook(lambda m, i, o: got.setdefault("block0", o.detach().clone()))
    orig = inner._input_embeddings

    def emb(*args, **kw):
        x = orig(*args, **kw)
        got.setdefault("x", x.detach().clone())
        return x

    inner._input_embeddings = emb
    model.train()
    with torch.no_grad():
        model(carry=model.initial_carry(batch), batch=batch, return_keys=[])
    h1.remove()
    h2.remove()
    del inner._input_embeddings
    out = {
        "debug.train.step1.input_embeddings": got["x"],
        f"debug.train.step1.{first_net}_call1_out": got["net"],
        f"debug.train.step1.{first_net}_block0_call1_out": got["block0"],
    }
    if hasattr(inner, "rotary_emb"):
        cos, sin = inner.rotary_emb()
        out["debug.rope.cos"], out["debug.rope.sin"] = cos.detach().clone(), sin.detach().clone()
    return out


def describe(key):
    parts = key.split(".")
    if key.startswith("grad."):
        return "gradient of total/global_batch_size after one pretrain.train_batch from a fresh carry"
    if key.startswith("after_step."):
        return "after sign-SGD (puzzle table) then AdamATan2 (weights), as pretrain.create_model wires them"
    if key.startswith("ema."):
        return "EMA shadow (rate ema_rate) after the first step, initialised from the initial weights"
    if key.startswith("debug."):
        return "debug intermediate of call 1 in training mode (fresh carry)"
    if key.startswith("trainstep"):
        return "second pretrain.train_batch (persisted carry, updated weights)" if key.startswith("trainstep2") else "logged by pretrain.train_batch"
    return f"{parts[-1]} after call {parts[1][4:]} of the ACT model in {parts[0]} mode, fixed weights, same batch"


def write(a, expected, weights, batch, config, arch, loss_type, seq_len, vocab, num_ids, batch_size, rows, seed, pert_seed, noise,
          calls, P, states, margins):
    import torch
    from safetensors.torch import save_file

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in weights.items() if not k.endswith(("local_weights", "local_ids"))}
    expected = {k: v.contiguous() for k, v in expected.items()}
    save_file(weights, out / "weights.safetensors")
    save_file({k: v.contiguous() for k, v in batch.items()}, out / "batch.safetensors")
    save_file(expected, out / "expected.safetensors")
    sha = {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in ("weights.safetensors", "batch.safetensors", "expected.safetensors")}
    model_cfg = dict(arch, batch_size=batch_size, vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=num_ids, causal=False)
    effective = dict(config.arch.__pydantic_extra__)
    effective.update(batch_size=batch_size, vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=num_ids,
                     rms_norm_eps=1e-5, rope_theta=10000.0)
    if "puzzle_emb_len" in effective and effective["puzzle_emb_len"] == 0:
        effective["puzzle_emb_len"] = P
    pc = json.loads(config.model_dump_json())
    cfg = {
        "fixture_set": out.name,
        "model": MODULES[a.arch],
        "generator": "bench/make_fixture.py (trm repository)",
        "command": "python3 bench/make_fixture.py " + " ".join(sys.argv[1:]),
        "reference_repo": "SamsungSAILMontreal/TinyRecursiveModels (copy prepared by bench/prepare_reference.sh; see its CPU_PATCHES.txt)"
        + ("; trm.py's no_ACT_continue unpacking bug fixed as in hrm.py" if a.act_continue else ""),
        "environment": {"torch": torch.__version__, "python": sys.version.split()[0], "device": "cpu", "torch_num_threads": 1,
                        "torch.use_deterministic_algorithms": True, "torch_compile": False},
        "seeds": {"torch.random.manual_seed (before model construction, as pretrain.py does with seed+rank)": seed,
                  "perturbation generator seed (torch.Generator, draws puzzle table then q_head.weight with randn)": pert_seed},
        "model_config_passed_to_model": model_cfg,
        "model_config_effective": effective,
        "derived": {"prefix_len_P": P, "total_len_T": seq_len + P, "states": states, "calls": calls},
        "pretrain_config": pc,
        "batch_rows": rows,
        "puzzle_identifiers": batch["puzzle_identifiers"].tolist(),
        "perturbations_of_reference_init": {
            "model.inner.puzzle_emb.weights": "N(0, 0.1^2) instead of zeros",
            "model.inner.q_head.weight": "N(0, 1/D) instead of zeros",
            "model.inner.q_head.bias": f"{weights['model.inner.q_head.bias'].tolist()} instead of [-5, -5]",
        },
        "fp32_vs_fp64_noise_floor_rel_to_max": noise,
        "discrete_margins": {k: v for k, v in margins.items() if k != "problems"},
        "tolerances_suggested": {"forward, call 1": 1e-5, "forward, later calls": "10x the noise floor, at least 1e-5", "grad.*": 1e-4,
                                 "losses": "derived from the tolerances of their inputs (trm parity --help)", "discrete": "exact"},
        "sha256": sha,
        "weights": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in sorted(weights.items())},
        "batch": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in batch.items()},
        "expected": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "description": describe(k)}
                     for k, v in sorted(expected.items())},
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    total = sum((out / f).stat().st_size for f in sha)
    halting = []
    for k in range(1, calls + 1):
        halting.append(f"| {k} | {expected[f'train.step{k}.steps'].tolist()} | {expected[f'train.step{k}.halted'].tolist()} |")
    (out / "README.md").write_text(f"""# Golden fixture `{out.name}`

Made by `python3 bench/make_fixture.py {" ".join(sys.argv[1:])}`
from the reference PyTorch code ({MODULES[a.arch]}), CPU, float32,
one thread, deterministic algorithms, torch {torch.__version__}. Same format and experiments as
`shared/fixtures/trm-small-attn` (see its README); `trm parity {out}` replays it. config.json lists
every configuration value, seed and tensor. {total} bytes in all.

Architecture `{a.arch}`: hidden {arch['hidden_size']}, heads {arch['num_heads']}, H_cycles {arch.get('H_cycles')},
L_cycles {arch.get('L_cycles', '-')}, H_layers {arch.get('H_layers')}, L_layers {arch.get('L_layers', '-')}, mlp_t {arch.get('mlp_t', False)},
positions {arch['pos_encodings']}, puzzle_emb_ndim {arch['puzzle_emb_ndim']}, prefix {P}, sequence {seq_len} (first cells of
Sudoku-Extreme rows), batch {batch_size}, halt_max_steps {arch['halt_max_steps']}, exploration 0, loss {loss_type}.
Carried states: {', '.join(states)}.{' The TRM file was run with its no_ACT_continue unpacking bug fixed (as hrm.py does it).' if a.act_continue else ''}

Training-mode halting pattern (steps, halted per row):

| call | steps | halted |
|---|---|---|
""" + "\n".join(halting) + "\n")
    print(f"wrote {out} ({total} bytes; {len(expected)} expected tensors)")


def compare(old, new):
    import torch
    from safetensors.torch import load_file

    a, b = load_file(old / "expected.safetensors"), load_file(new / "expected.safetensors")
    missing = sorted(set(a) - set(b))
    worst, diff = 0.0, []
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.shape != y.shape:
            diff.append(f"{k}: shape {list(x.shape)} vs {list(y.shape)}")
            continue
        if x.dtype == torch.bool or not x.is_floating_point():
            if not torch.equal(x, y.to(x.dtype)):
                diff.append(f"{k}: discrete values differ")
            continue
        d = ((x.double() - y.double()).abs().max() / x.double().abs().max().clamp_min(1e-30)).item()
        worst = max(worst, d)
        if d > 0:
            diff.append(f"{k}: rel diff {d:.3g}")
    print(f"regenerated {len(set(a) & set(b))} of {len(a)} tensors of {old}; missing {missing}; worst relative difference {worst:.3g}")
    for line in diff[:20]:
        print("  " + line)


if __name__ == "__main__":
    main()
