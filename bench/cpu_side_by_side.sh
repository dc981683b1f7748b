#!/usr/bin/env bash
# CPU step times, three ways in one run: trm with the fused CPU block (default), trm with
# burn's generic layers (TRM_FUSED_CPU=0), and the reference PyTorch model
# (bench/reference_step.sh). Prints a markdown table with the ratios.
#
# Usage: bench/cpu_side_by_side.sh [THREADS] [REPS]     (defaults 2 and 3, warm-up 1)
# Cases: sudoku-att and sudoku-mlp at batch 32, train and eval; arc-att train at batch 4.
# CASES="shape mode batch [arch];..." picks others, e.g. the other architectures at a shape:
#   CASES="sudoku-att train 32 hrm;sudoku-att train 32 transformers_baseline" bench/cpu_side_by_side.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
REPS="${2:-3}"
TRM="${TRM:-target/release/trm}"
[ -x "$TRM" ] || cargo build --release
median() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["median_step_s"])'; }
CASES="${CASES:-sudoku-att train 32;sudoku-att eval 32;sudoku-mlp train 32;sudoku-mlp eval 32;arc-att train 4}"
echo "| shape | mode | batch | trm fused | trm generic | reference | fused / reference | fused / generic |"
echo "|---|---|---|---|---|---|---|---|"
IFS=';' read -r -a cases <<< "$CASES"
for c in "${cases[@]}"; do
  set -- $c
  arch="${4:-trm}"
  args=(--shape "$1" --arch "$arch" --mode "$2" --batch "$3" --threads "$THREADS" --warmup 1 --reps "$REPS" --json)
  fused=$("$TRM" bench "${args[@]}" | median)
  generic=$(TRM_FUSED_CPU=0 "$TRM" bench "${args[@]}" | median)
  ref=$(bench/reference_step.sh "${args[@]}" 2>/dev/null | tail -1 | median)
  label="$1"; [ "$arch" = trm ] || label="$1/$arch"
  python3 -c "import sys; f,g,r=map(float,sys.argv[4:]); print(f'| {sys.argv[1]} | {sys.argv[2]} | {sys.argv[3]} | {f:.2f} s | {g:.2f} s | {r:.2f} s | {f/r:.2f} | {f/g:.2f} |')" "$label" "$2" "$3" "$fused" "$generic" "$ref"
done
