#!/bin/bash
# Training steps side by side: float32 against bfloat16 products (AMX, and AVX512-BF16 on sudoku-att).
cd "$(dirname "$0")"
T="${TRM:-target/release/trm}"
one() { # shape batch precision
  $T bench --mode train --shape $1 --batch $2 --threads 2 --warmup 1 --reps 3 --precision $3 --json 2>/dev/null > train-$1-$3.json
  python3 -c "import json; r=json.load(open('train-$1-$3.json')); print('$1 batch $2', '$3', 'median', round(r['median_step_s'],3), 's/step, min', round(r['min_step_s'],3), 'peak MiB', r['peak_bytes']>>20)" >> train.txt
}
for S in "sudoku-att 32" "sudoku-mlp 32" "arc-att 4"; do for P in float32 bfloat16-amx; do one $S $P; done; done
one sudoku-att 32 bfloat16-avx512
echo done >> train.txt
