#!/usr/bin/env bash
# A mini Table 1 of the TRM paper on CPU: every ablation of TRM-MLP at a tiny scale, same data
# (Sudoku-Extreme 1k x 10 augmentations, 500 test_hard puzzles, as bench/pace.sh), same budget
# (16 epochs = 250 optimiser steps of 64), seeds 0 and 1. Prints a markdown table of test token
# and exact accuracy per row and seed (docs/variants.md has the results).
#   bench/mini_table1.sh            # all rows, seeds 0 1
#   ROWS="trm no-ema" SEEDS="0" bench/mini_table1.sh
# The base is the paper's TRM (T = 3, n = 6, 2 layers, mlp_t, EMA) at width 64 with the pace
# recipe; EMA uses rate 0.99 because 250 steps are too few for 0.999 to move off the init.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${TRM_SHARED:-$ROOT/../shared}
OUT=${T1_OUT:-$ROOT/bench/out/table1}
DATA=${PACE_DATA:-$ROOT/bench/out/pace-data}
TRM=${TRM:-$ROOT/target/release/trm}
SEEDS=${SEEDS:-"0 1"}
ROWS=${ROWS:-"hrm trm w-act separate-fh-fl no-ema 4-layers-n3 self-attention t2-n2 1-step-gradient"}
mkdir -p "$OUT"
[ -x "$TRM" ] || (cd "$ROOT" && cargo build --release)
if [ ! -f "$DATA/train/dataset.json" ]; then
  "$TRM" data sudoku --train "$SHARED/data/sudoku-extreme-1k/train.csv" \
    --test "$SHARED/data/sudoku-extreme-1k/test_hard.csv.gz" --num-aug 10 --test-subsample 500 --out "$DATA" --force
fi
TINY=(arch.hidden_size=64 arch.halt_max_steps=8 arch.forward_dtype=float32)
RECIPE=(global_batch_size=64 lr=1e-3 lr_warmup_steps=100 weight_decay=1.0 puzzle_emb_weight_decay=1.0
  puzzle_emb_lr=1e-3 ema=True ema_rate=0.99 epochs=16 eval_interval=16)
BASE=(arch=trm arch.mlp_t=True arch.pos_encodings=none arch.H_cycles=3 arch.L_cycles=6 arch.L_layers=2)
row_args() {
  case "$1" in
    hrm) echo "arch=hrm arch.num_heads=4 arch.L_layers=4 arch.H_layers=4 arch.H_cycles=2 arch.L_cycles=2" ;;
    trm) echo "${BASE[*]}" ;;
    w-act) echo "${BASE[*]} arch.no_ACT_continue=False" ;;
    separate-fh-fl) echo "${BASE[*]} arch.H_layers=2" ;;
    no-ema) echo "${BASE[*]} ema=False" ;;
    4-layers-n3) echo "${BASE[*]} arch.L_layers=4 arch.L_cycles=3" ;;
    self-attention) echo "${BASE[*]} arch.mlp_t=False arch.pos_encodings=rope arch.num_heads=4" ;;
    t2-n2) echo "${BASE[*]} arch.H_cycles=2 arch.L_cycles=2" ;;
    1-step-gradient) echo "${BASE[*]} arch.one_step_grad=True" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}
for row in $ROWS; do
  for seed in $SEEDS; do
    run="$OUT/$row-s$seed"
    [ -f "$run/done" ] && continue
    rm -rf "$run"
    read -r -a args <<< "$(row_args "$row")"
    start=$(date +%s)
    # The row's overrides come last, so they win over the recipe (no-ema's ema=False).
    "$TRM" train --config sudoku-tiny --data "$DATA" --out "$run" --threads 2 --quiet \
      "${TINY[@]}" "${RECIPE[@]}" "seed=$seed" "${args[@]}" > "$run.log" 2>&1
    echo $(( $(date +%s) - start )) > "$run/done"
  done
done
python3 - "$OUT" "$TRM" $ROWS <<'PY'
import json, subprocess, sys, pathlib
out, trm, rows = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
print("| row | params | depth | NFP | seed | test token acc | test exact acc | wall s |")
print("|---|---|---|---|---|---|---|---|")
for row in rows:
    for run in sorted(out.glob(f"{row}-s*")):
        if not run.is_dir():
            continue
        recs = [json.loads(l) for l in open(run / "metrics.jsonl")]
        info = next(r for r in recs if r.get("split") == "info")
        ev = [r for r in recs if r.get("split") == "eval"][-1]
        wall = (run / "done").read_text().strip()
        i = json.loads(subprocess.run([trm, "info", "--json", "--shape", "sudoku", "--config", str(run / "config.toml")],
                                      capture_output=True, text=True, check=True).stdout)
        seed = run.name.rsplit("-s", 1)[1]
        print(f"| {row} | {int(info['num_params']):,} | {i['effective_depth']} | {i['nfp']} | {seed} | {ev['accuracy']:.4f} | {ev['exact_accuracy']:.4f} | {wall} |")
PY
