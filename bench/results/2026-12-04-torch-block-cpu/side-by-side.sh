#!/bin/bash
# side-by-side: fused torch block vs burn's generic layers on torch-cpu
cd /work/main
for round in 1 2; do
for shape in sudoku-att sudoku-mlp; do
for dtype in float32 bfloat16; do
for v in fused generic; do
  off=$([ $v = generic ] && echo 0 || echo 1)
  r=$(TRM_FUSED_TORCH=$off ./target/dist/trm bench --device torch-cpu --shape $shape --batch 16 --mode train --dtype $dtype --warmup 1 --reps 4 --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(d[\"median_step_s\"], d[\"min_step_s\"], d[\"first_step_s\"], d[\"peak_bytes\"])")
  echo "$round $shape $dtype $v $r"
done; done; done; done
