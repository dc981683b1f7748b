#!/usr/bin/env bash
# Learning pace, trm vs the PyTorch reference, on CPU: the same tiny TRM-MLP recipe on the same
# data (Sudoku-Extreme 1k train with 10 augmentations, 500 test_hard puzzles), then both test
# curves side by side. See docs/benchmarks.md for the results.
#   bench/pace.sh            # seed 0;  SEED=1 bench/pace.sh for another seed
# Needs: a release build of trm, python3 with torch (bench/reference_pace.sh installs the rest).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${TRM_SHARED:-$ROOT/../shared}
OUT=${PACE_OUT:-$ROOT/bench/out}
DATA=${PACE_DATA:-$OUT/pace-data}
SEED=${SEED:-0}
TRM=${TRM:-$ROOT/target/release/trm}
mkdir -p "$OUT"
[ -x "$TRM" ] || (cd "$ROOT" && cargo build --release)

# The data, built by trm in the reference layout (both trainers read it).
if [ ! -f "$DATA/train/dataset.json" ]; then
  "$TRM" data sudoku --train "$SHARED/data/sudoku-extreme-1k/train.csv" \
    --test "$SHARED/data/sudoku-extreme-1k/test_hard.csv.gz" --num-aug 10 --test-subsample 500 --out "$DATA"
fi

# The recipe of the issue, in the reference's key names; both sides get exactly these.
RECIPE=(arch.mlp_t=True arch.pos_encodings=none arch.hidden_size=64 arch.H_cycles=2 arch.L_cycles=2
  arch.halt_max_steps=8 global_batch_size=64 lr=1e-3 lr_warmup_steps=100 weight_decay=1.0
  puzzle_emb_weight_decay=1.0 puzzle_emb_lr=1e-3 ema=False epochs=16 eval_interval=8
  arch.forward_dtype=float32 seed="$SEED")

rm -rf "$OUT/pace-trm-s$SEED"
/usr/bin/time -f "trm: %e s wall, %M KB peak" "$TRM" train --config sudoku-tiny --data "$DATA" \
  --out "$OUT/pace-trm-s$SEED" --threads 2 --quiet "${RECIPE[@]}"

PACE_DATA="$DATA" REF_OUT="$OUT" REF_METRICS="$OUT/pace-ref-s$SEED.jsonl" \
  /usr/bin/time -f "reference: %e s wall, %M KB peak" "$ROOT/bench/reference_pace.sh" "${RECIPE[@]}" > "$OUT/pace-ref-s$SEED.log"

python3 "$ROOT/bench/pace_table.py" "$OUT/pace-trm-s$SEED/metrics.jsonl" "$OUT/pace-ref-s$SEED.jsonl"
