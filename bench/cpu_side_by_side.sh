#!/usr/bin/env bash
# CPU step times, three ways in one run: trm with the fused CPU block (default), trm with
# burn's generic layers (TRM_FUSED_CPU=0), and the reference PyTorch model
# (bench/reference_step.sh). Prints a markdown table with the ratios.
#
# Usage: bench/cpu_side_by_side.sh [THREADS] [REPS]     (defaults 2 and 3, warm-up 1)
# ISA=avx2 compares like with like on an AVX-512 machine: trm built without its AVX-512 kernels
# (cargo build --release --no-default-features, in target/avx2) and PyTorch with
# ATEN_CPU_CAPABILITY=avx2 (plus MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA for its matrix
# products). The table names the instruction set each side used. burn-flex's own element-wise
# ops (a small share) still dispatch on their own and may use AVX-512.
# Cases: sudoku-att and sudoku-mlp at batch 32, train and eval; arc-att train at batch 4.
# CASES="shape mode batch [arch];..." picks others, e.g. the other architectures at a shape:
#   CASES="sudoku-att train 32 hrm;sudoku-att train 32 transformers_baseline" bench/cpu_side_by_side.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"
REPS="${2:-3}"
if [ "${ISA:-}" = avx2 ]; then
  TRM="${TRM:-target/avx2/release/trm}"
  [ -x "$TRM" ] || cargo build --release --no-default-features --target-dir target/avx2
  # ATen's own kernels, and the BLAS and oneDNN libraries PyTorch calls for matrix products.
  export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
else
  TRM="${TRM:-target/release/trm}"
  [ -x "$TRM" ] || cargo build --release
fi
isa() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get(sys.argv[1], "?"))' "$1"; }
median() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["median_step_s"])'; }
CASES="${CASES:-sudoku-att train 32;sudoku-att eval 32;sudoku-mlp train 32;sudoku-mlp eval 32;arc-att train 4}"
echo "| shape | mode | batch | trm fused | trm generic | reference | fused / reference | fused / generic | ISA trm / torch |"
echo "|---|---|---|---|---|---|---|---|---|"
IFS=';' read -r -a cases <<< "$CASES"
for c in "${cases[@]}"; do
  set -- $c
  arch="${4:-trm}"
  args=(--shape "$1" --arch "$arch" --mode "$2" --batch "$3" --threads "$THREADS" --warmup 1 --reps "$REPS" --json)
  fused_json=$("$TRM" bench "${args[@]}" 2>/dev/null)
  fused=$(echo "$fused_json" | median)
  generic=$(TRM_FUSED_CPU=0 "$TRM" bench "${args[@]}" 2>/dev/null | median)
  ref_json=$(bench/reference_step.sh "${args[@]}" 2>/dev/null | tail -1)
  ref=$(echo "$ref_json" | median)
  label="$1"; [ "$arch" = trm ] || label="$1/$arch"
  python3 -c "import sys; f,g,r=map(float,sys.argv[4:7]); print(f'| {sys.argv[1]} | {sys.argv[2]} | {sys.argv[3]} | {f:.2f} s | {g:.2f} s | {r:.2f} s | {f/r:.2f} | {f/g:.2f} | {sys.argv[7]} / {sys.argv[8]} |')" \
    "$label" "$2" "$3" "$fused" "$generic" "$ref" "$(echo "$fused_json" | isa cpu_isa)" "$(echo "$ref_json" | isa cpu_capability)"
done
