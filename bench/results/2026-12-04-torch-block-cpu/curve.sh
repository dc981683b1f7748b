#!/bin/bash
cd /work/main
T=./target/dist/trm
D=/tmp/curve/data; R=/tmp/curve/run
[ -d $D/train ] || $T data sudoku --train gpu-kit/data/train.csv --test gpu-kit/data/test_hard.csv.gz --out $D --subsample 1000 --num-aug 8 --test-subsample 512 >/dev/null
rm -rf $R
s=$(date +%s)
$T train --device torch-cpu --data $D --out $R --quiet --config sudoku-tiny max_steps=300 eval_interval=16 eval_max_examples=512 checkpoint_every_eval=False
echo "rc=$? wall=$(( $(date +%s) - s ))s"
