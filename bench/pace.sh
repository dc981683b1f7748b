#!/usr/bin/env bash
# Learning pace, trm vs the PyTorch reference, on CPU: the same tiny recipe on the same data
# (Sudoku-Extreme 1k train with 10 augmentations, 500 test_hard puzzles) through both trainers,
# then both test curves side by side. See docs/benchmarks.md for the results.
#   bench/pace.sh                                   # TRM-MLP, seed 0
#   SEED=1 bench/pace.sh                            # another seed
#   ARCH=hrm ARCH_ARGS="arch.L_layers=2 arch.H_layers=2" bench/pace.sh    # a tiny HRM
#   EVAL_INTERVAL=2 bench/pace.sh                   # evaluate every 2 epochs (finer curves)
#   SIDE=trm bench/pace.sh                          # one side only (trm or reference)
# Needs: a release build of trm, python3 with torch (bench/reference_pace.sh installs the rest).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${TRM_SHARED:-$ROOT/../shared}
OUT=${PACE_OUT:-$ROOT/bench/out}
DATA=${PACE_DATA:-$OUT/pace-data}
SEED=${SEED:-0}
ARCH=${ARCH:-trm}
read -r -a EXTRA <<< "${ARCH_ARGS:-}"
EVAL_INTERVAL=${EVAL_INTERVAL:-8}
SIDE=${SIDE:-both}
TAG=${TAG:-$ARCH}
TRM=${TRM:-$ROOT/target/release/trm}
mkdir -p "$OUT"
[ -x "$TRM" ] || (cd "$ROOT" && cargo build --release)

# The data, built by trm in the reference layout (both trainers read it).
if [ ! -f "$DATA/train/dataset.json" ]; then
  "$TRM" data sudoku --train "$SHARED/data/sudoku-extreme-1k/train.csv" \
    --test "$SHARED/data/sudoku-extreme-1k/test_hard.csv.gz" --num-aug 10 --test-subsample 500 --out "$DATA" --force
fi

# The recipe of issue 6, in the reference's key names; both sides get exactly these.
RECIPE=(arch.mlp_t=True arch.pos_encodings=none arch.hidden_size=64 arch.H_cycles=2 arch.L_cycles=2
  arch.halt_max_steps=8 global_batch_size=64 lr=1e-3 lr_warmup_steps=100 weight_decay=1.0
  puzzle_emb_weight_decay=1.0 puzzle_emb_lr=1e-3 ema=False epochs=16 eval_interval="$EVAL_INTERVAL"
  arch.forward_dtype=float32 seed="$SEED")

if [ "$SIDE" != reference ]; then
  rm -rf "$OUT/pace-trm-$TAG-s$SEED"
  /usr/bin/time -f "trm: %e s wall, %M KB peak" "$TRM" train --config sudoku-tiny --data "$DATA" \
    --out "$OUT/pace-trm-$TAG-s$SEED" --threads 2 --quiet "arch=$ARCH" "${RECIPE[@]}" "${EXTRA[@]}"
fi
if [ "$SIDE" != trm ]; then
  ARCH="$ARCH" PACE_DATA="$DATA" REF_OUT="$OUT/ref-$TAG-s$SEED" REF_METRICS="$OUT/pace-ref-$TAG-s$SEED.jsonl" \
    /usr/bin/time -f "reference: %e s wall, %M KB peak" "$ROOT/bench/reference_pace.sh" "${RECIPE[@]}" "${EXTRA[@]}" \
    > "$OUT/pace-ref-$TAG-s$SEED.log"
fi
if [ "$SIDE" = both ]; then
  python3 "$ROOT/bench/pace_table.py" "$OUT/pace-trm-$TAG-s$SEED/metrics.jsonl" "$OUT/pace-ref-$TAG-s$SEED.jsonl"
fi
