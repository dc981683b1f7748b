#!/bin/bash
cd "$(dirname "$0")"
T="${TRM:-target/release/trm}"
for S in sudoku-mlp sudoku-att; do for P in float32 bfloat16-amx bfloat16-avx512; do
  $T bench --mode eval --shape $S --batch 64 --threads 2 --warmup 1 --reps 3 --precision $P --json 2>/dev/null > bench-$S-$P.json
  python3 -c "import json; r=json.load(open('bench-$S-$P.json')); print('$S', '$P', 'median', round(r['median_step_s'],3), 's/step, min', round(r['min_step_s'],3))" >> bench.txt
done; done
for P in bfloat16-avx512 bfloat16-amx float32; do
  $T eval --data "${DATA:?test_hard rows 1001-1500 in the reference layout, see ../2026-12-04-amx/README.md}" --limit 100 --views 64 --view-steps 16 --threads 2 --precision $P --json 2>/dev/null > quiet-$P-64-100.json
  python3 -c "
import json; r=json.load(open('quiet-$P-64-100.json')); s=r['scaled']
print('$P views 64 rows 1001-1100', 'plain', r['exact_accuracy'], 'scaled', s['exact_accuracy'], 'view-steps', round(s['mean_view_steps'],1), 's/puzzle', round(s['seconds']/s['count'],3), 'precision', r.get('precision'))" >> quiet.txt
done
echo done >> quiet.txt
