#!/usr/bin/env bash
# A short GPU check for a lease with little time left (about 4 minutes): parity on two golden
# fixtures, `trm bench` on the Sudoku attention training step at batch 768 (bfloat16 and float32)
# and a short sudoku-mlp training run with its test accuracy. Every command shares one deadline.
#
#   bash bench/gpu-quick.sh --kit gpu-kit --out "$OUT" [--seconds 230] [--device cuda]
# (--device torch-cpu or cpu rehearses it on a CPU: the same stages, cut by their caps.)
set -uo pipefail
KIT=gpu-kit OUT="" SECONDS_TOTAL=230 DEV=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --kit) KIT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    --device) DEV=$2; shift 2 ;;
    *) echo "gpu-quick.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu-quick.sh: --out is required" >&2; exit 2; }
mkdir -p "$OUT"
END=$(( $(date +%s) + SECONDS_TOTAL ))
# Only results go to $OUT (a lease returns a few files); the data and the run go here.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/trm-gpu-quick.XXXXXX"); trap 'rm -rf "$SCRATCH"' EXIT
PY="${PYTHON:-python3}"
# The kit carries trm compressed (xz) when it was built for a lease (bench/gpu-kit.sh).
if [ -f "$KIT/trm.xz" ]; then
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$KIT/trm.xz" "$SCRATCH/trm"
  chmod +x "$SCRATCH/trm"; T="$SCRATCH/trm"
else
  T="$KIT/trm"
fi
# The libtorch trm links: this machine's PyTorch (the binary's run path names the build machine's).
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
[ -n "$TORCH_LIB" ] && export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Runs a command with at most $1 seconds, never past the deadline; prints its last lines.
step() { local cap=$1; shift; local left=$(( END - $(date +%s) )); [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -le 3 ]; then echo "skipped (deadline): $*"; return; fi
  echo "== [$(( SECONDS_TOTAL - left ))s] $*"; timeout --kill-after=5 "$cap" "$@" 2>&1 | grep -v "^stack backtrace\|^note: Some details" | tail -n 4; echo "   exit ${PIPESTATUS[0]}"; }
export RUST_BACKTRACE=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (device $DEV)"
for fx in trm-small-attn hrm-small; do step 40 "$T" parity "$KIT/fixtures/$fx" --device "$DEV" --quiet; done
for dt in bfloat16 float32; do
  step 50 "$T" bench --device "$DEV" --shape sudoku-att --batch 768 --mode train --dtype "$dt" --warmup 2 --reps 3 --peak-tflops 989
done
"$T" data sudoku --train "$KIT/data/train.csv" --test "$KIT/data/test_hard.csv.gz" --out "$SCRATCH/data" --subsample 1000 --num-aug 1000 --test-subsample 2048 --force >/dev/null 2>&1
left=$(( END - $(date +%s) - 25 )); MIN=$(awk -v s="$left" 'BEGIN { m = s / 60; print (m < 0.3 ? 0.3 : m) }')
step $(( left + 25 )) "$T" train --config sudoku-mlp --device "$DEV" --data "$SCRATCH/data" --out "$SCRATCH/run" --quiet --time-limit "$MIN" eval_max_examples=2048
cp "$SCRATCH/run/metrics.jsonl" "$OUT/" 2>/dev/null
tail -n 2 "$OUT/metrics.jsonl" 2>/dev/null | cut -c1-400
for fx in trm-act-small trm-hier6-small trm-singlez-small baseline-small; do step 30 "$T" parity "$KIT/fixtures/$fx" --device "$DEV" --quiet; done
