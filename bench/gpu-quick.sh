#!/usr/bin/env bash
# A short GPU check for a lease with little time left (about 4 minutes): parity on two golden
# fixtures, `trm bench` on the Sudoku attention training step at batch 768 (bfloat16 and float32)
# and a short sudoku-mlp training run with its test accuracy. Every command shares one deadline.
#
#   bash bench/gpu-quick.sh --kit gpu-kit --out "$OUT" [--seconds 230]
set -uo pipefail
KIT=gpu-kit OUT="" SECONDS_TOTAL=230
while [ $# -gt 0 ]; do
  case "$1" in
    --kit) KIT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    *) echo "gpu-quick.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu-quick.sh: --out is required" >&2; exit 2; }
mkdir -p "$OUT"
T="$KIT/trm"; END=$(( $(date +%s) + SECONDS_TOTAL ))
# Runs a command with at most $1 seconds, never past the deadline; prints its last lines.
step() { local cap=$1; shift; local left=$(( END - $(date +%s) )); [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -le 3 ]; then echo "skipped (deadline): $*"; return; fi
  echo "== [$(( SECONDS_TOTAL - left ))s] $*"; timeout --kill-after=5 "$cap" "$@" 2>&1 | grep -v "^stack backtrace\|^note: Some details" | tail -n 4; echo "   exit ${PIPESTATUS[0]}"; }
export RUST_BACKTRACE=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for fx in trm-small-attn hrm-small; do step 40 "$T" parity "$KIT/fixtures/$fx" --device cuda --quiet; done
for dt in bfloat16 float32; do
  step 50 "$T" bench --device cuda --shape sudoku-att --batch 768 --mode train --dtype "$dt" --warmup 2 --reps 3 --peak-tflops 989
done
"$T" data sudoku --train "$KIT/data/train.csv" --test "$KIT/data/test_hard.csv.gz" --out "$OUT/data" --subsample 1000 --num-aug 1000 --test-subsample 2048 --force >/dev/null 2>&1
left=$(( END - $(date +%s) - 25 )); MIN=$(awk -v s="$left" 'BEGIN { m = s / 60; print (m < 0.3 ? 0.3 : m) }')
step $(( left + 25 )) "$T" train --config sudoku-mlp --device cuda --data "$OUT/data" --out "$OUT/run" --quiet --time-limit "$MIN" eval_max_examples=2048
tail -n 2 "$OUT/run/metrics.jsonl" 2>/dev/null | cut -c1-400
for fx in trm-act-small trm-hier6-small trm-singlez-small baseline-small; do step 30 "$T" parity "$KIT/fixtures/$fx" --device cuda --quiet; done
