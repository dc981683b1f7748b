#!/bin/bash
# The learning comparison: the bundled model's recipe for 800 steps, float32 against bfloat16
# products, seed 42; then float32 with seed 43 (how far two float32 runs drift apart).
# TRM: a release build of trm; run in a scratch folder.
set -e
T="${TRM:?a release build of trm}"
"$T" data generate --out data --train 20000 --test 300 --givens 30-40 --num-aug 1 --seed 42 --force
run() { # precision seed
  "$T" train --config demo --data data --out run-$1-$2 --quiet --precision $1 \
    arch.hidden_size=128 arch.L_cycles=3 lr=2e-3 lr_warmup_steps=200 ema=true epochs=100 \
    eval_interval=100 eval_max_examples=300 checkpoint_interval_steps=500 seed=$2 max_steps=800 > log-$1-$2.txt 2>&1
}
run bfloat16-amx 42
run float32 42
run float32 43
