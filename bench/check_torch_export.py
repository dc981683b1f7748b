#!/usr/bin/env python3
"""Loads a model exported by `trm export --format torch` into the reference's own model class and
checks that it answers a Sudoku as trm does, step by step.

Usage (from the repository root; bench/prepare_reference.sh --reuse first; needs torch):
  trm export --checkpoint RUN --out /tmp/step_N
  python3 bench/check_torch_export.py RUN /tmp/step_N [PUZZLE]

RUN is the trm run folder (its config.toml gives the architecture). The reference model is built
with the same configuration, `load_state_dict(torch.load(FILE), strict=True)` must succeed, and
its argmax answer after every supervision step (eval mode) must equal `trm solve --json`'s.
"""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "reference"))
from models.losses import ACTLossHead  # noqa: E402
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1  # noqa: E402

run, exported = Path(sys.argv[1]), Path(sys.argv[2])
puzzle = sys.argv[3] if len(sys.argv) > 3 else "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."
cfg = tomllib.loads((run / "config.toml").read_text())
arch = {k: v for k, v in cfg["arch"].items() if k not in ("name", "loss_type")}
ids = json.loads((run / "identifiers.json").read_text())
model_cfg = dict(arch, batch_size=1, seq_len=81, vocab_size=11, num_puzzle_identifiers=len(ids), causal=False, forward_dtype="float32")
torch.manual_seed(0)
model = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(model_cfg), loss_type=cfg["arch"].get("loss_type", "stablemax_cross_entropy"))
state = torch.load(exported, map_location="cpu", weights_only=True)
own = model.state_dict()
model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
model.eval()

tokens = [1 if c in ".0" else int(c) + 1 for c in puzzle]
batch = dict(inputs=torch.tensor([tokens], dtype=torch.int32), labels=torch.full((1, 81), -100, dtype=torch.int32),
             puzzle_identifiers=torch.zeros(1, dtype=torch.int32))
inner = model.model
steps = arch["halt_max_steps"]
answers = []
with torch.inference_mode():
    carry = inner.initial_carry(batch)
    for _ in range(steps):
        carry, out = inner(carry=carry, batch=batch)
        pred = out["logits"].argmax(-1)[0].tolist()
        answers.append("".join(str(t - 1) if 2 <= t <= 10 else "." for t in pred))

trm = ROOT / "target" / "release" / "trm"
js = json.loads(subprocess.run([str(trm), "solve", "--checkpoint", str(run), "--sudoku", puzzle, "--json"], capture_output=True, text=True, check=True).stdout)
theirs = [s["answer"] for s in js["steps"]]
same = sum(a == b for a, b in zip(answers, theirs))
cells = sum(x == y for a, b in zip(answers, theirs) for x, y in zip(a, b))
print(f"reference loaded {len(state)} tensors strictly; {same}/{len(answers)} steps give the same answer as trm "
      f"({cells}/{81 * len(answers)} cells)")
sys.exit(0 if same == len(answers) else 1)
