"""Prints the test curves of a trm run and a reference run side by side (markdown).

usage: python3 bench/pace_table.py TRM_RUN/metrics.jsonl REFERENCE_METRICS.jsonl
trm logs {"split": "eval", "step", "accuracy", ...}; the reference shim logs
{"step", "all/accuracy", ...} (wandb's names).
"""
import json
import sys


def curve(path, split_key, prefix):
    out = {}
    for line in open(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if split_key is not None and row.get("split") != split_key:
            continue
        if prefix + "accuracy" not in row:
            continue
        out[int(row["step"])] = {k: row.get(prefix + k) for k in ("accuracy", "exact_accuracy", "lm_loss", "q_halt_loss")}
    return out


def main():
    ours = curve(sys.argv[1], "eval", "")
    ref = curve(sys.argv[2], None, "all/")
    print("| step | trm token acc | reference token acc | trm exact | reference exact | trm lm_loss | reference lm_loss |")
    print("|---|---|---|---|---|---|---|")
    for step in sorted(set(ours) | set(ref)):
        a, b = ours.get(step, {}), ref.get(step, {})
        f = lambda d, k: "-" if d.get(k) is None else f"{d[k]:.4f}"
        print(f"| {step} | {f(a, 'accuracy')} | {f(b, 'accuracy')} | {f(a, 'exact_accuracy')} | {f(b, 'exact_accuracy')} | {f(a, 'lm_loss')} | {f(b, 'lm_loss')} |")


if __name__ == "__main__":
    main()
