#!/bin/bash
# trm on libtorch's CPU (torch-cpu, the fused block) against the reference's eager PyTorch on the
# same libtorch (torch 2.11.0, CPU-patched copy), training steps, AdamATan2 on both sides,
# 2 threads, interleaved rounds. Prints: round shape dtype side median_s min_s peak_rss_bytes.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-32}
for round in 1 2; do
for shape in sudoku-att sudoku-mlp; do
for dtype in bfloat16 float32; do
  r=$(./target/dist/trm bench --device torch-cpu --shape $shape --batch $B --mode train --dtype $dtype --threads 2 --warmup 1 --reps 3 --json 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["median_step_s"], d["min_step_s"], d["peak_bytes"], d["block"])')
  echo "$round $shape $dtype trm $r"
  r=$(python3 bench/reference_step.py --ref-dir bench/reference --shape $shape --batch $B --mode train --dtype $dtype --threads 2 --warmup 1 --reps 3 --optimizer adam-atan2 --json 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["median_step_s"], d["min_step_s"], d["peak_bytes"], "eager")')
  echo "$round $shape $dtype reference $r"
done; done; done
