#!/usr/bin/env python3
"""The table of run.sh's runs: training wall time, mean step time per depth, evaluations, and the
final `trm eval` with its 95% interval. Usage: summarise.py DIR (run.sh's runs-sSEED folder:
summary.txt, NAME/metrics.jsonl, eval-NAME.json)."""
import json
import sys
from collections import defaultdict
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
walls = {}
for line in (root / "summary.txt").read_text().splitlines():
    parts = line.split()
    if len(parts) >= 3 and parts[1] == "train_seconds":
        walls[parts[0]] = float(parts[2])
print("| run | training wall | steps | mean step s by (H_cycles, L_cycles) | eval exact (step) | trm eval exact [95% CI] | token acc |")
print("|---|---|---|---|---|---|---|")
for name in ["fixed", "pdc", "cgar"]:
    m = root / name / "metrics.jsonl"
    if not m.exists():
        continue
    recs = [json.loads(l) for l in m.read_text().splitlines()]
    train = [r for r in recs if r.get("split") == "train"]
    by = defaultdict(list)
    for r in train:
        by[(int(r.get("H_cycles", 3)), int(r.get("L_cycles", 6)))].append(r["step_seconds"])
    steps = ", ".join(f"{k}: {sum(v)/len(v):.3f} ({len(v)})" for k, v in sorted(by.items()))
    evals = ", ".join(f"{r['exact_accuracy']:.3f} ({r['step']})" for r in recs if r.get("split") == "eval")
    e = root / f"eval-{name}.json"
    fin = "-"
    tok = "-"
    if e.exists() and e.stat().st_size:
        d = json.loads(e.read_text())
        lo, hi = d["exact_accuracy_ci95"]
        fin = f"{d['exact_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
        tok = f"{d['accuracy']:.4f}"
    print(f"| {name} | {walls.get(name, float('nan')):.0f} s | {len(train)} | {steps} | {evals} | {fin} | {tok} |")
