"""Mean and spread of several bench/pace.sh seeds, trm vs the reference, at every evaluation.

usage: python3 bench/pace_summary.py TAG SEED [SEED ...]    (reads bench/out/pace-trm-TAG-sS and
       bench/out/pace-ref-TAG-sS.jsonl; PACE_OUT overrides bench/out)
Prints test token accuracy per step: each seed, then the mean and standard deviation per side,
the mean difference trm - reference and its standard error over seeds (paired by seed).
"""
import os
import statistics as st
import sys
from pathlib import Path

out = Path(os.environ.get("PACE_OUT", Path(__file__).resolve().parent / "out"))
tag, seeds = sys.argv[1], sys.argv[2:]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from pace_table import curve  # noqa: E402


def accuracy(path, split, prefix):
    return {step: row["accuracy"] for step, row in curve(path, split, prefix).items()}


trm = {s: accuracy(out / f"pace-trm-{tag}-s{s}" / "metrics.jsonl", "eval", "") for s in seeds}
ref = {s: accuracy(out / f"pace-ref-{tag}-s{s}.jsonl", None, "all/") for s in seeds}
steps = sorted(set.intersection(*[set(c) for c in list(trm.values()) + list(ref.values())]))
print("| step | " + " | ".join(f"seed {s} trm / ref" for s in seeds) + " | trm mean ± sd | ref mean ± sd | trm − ref (± s.e.) |")
print("|---" * (len(seeds) + 4) + "|")
for k in steps:
    a = [trm[s][k] for s in seeds]
    b = [ref[s][k] for s in seeds]
    d = [x - y for x, y in zip(a, b)]
    se = st.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
    cells = " | ".join(f"{x:.3f} / {y:.3f}" for x, y in zip(a, b))
    sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
    print(f"| {k} | {cells} | {st.mean(a):.3f} ± {sd(a):.3f} | {st.mean(b):.3f} ± {sd(b):.3f} | {st.mean(d):+.3f} (± {se:.3f}) |")
