#!/usr/bin/env bash
# CGAR side by side on the CPU (2026-12-05): the demo recipe at the paper's recursion depth
# (H_cycles=3, L_cycles=6) over a schedule of 16 epochs (750 steps of batch 64), one run after the
# other on an otherwise idle machine: fixed depth, depth curriculum (`depth_curriculum=cgar`),
# and curriculum + supervision weighting (`supervision_decay=0.7`); then `trm eval` of each on
# the 300 held-out puzzles. Usage: run.sh [SEED] (training seed; the data is the same for all).
set -u
SEED=${1:-0}
cd "${WORK:-/tmp/cg}"
T=./trm
[ -d data ] || $T data generate --out data --train 3000 --test 300 --givens 40 --num-aug 3 --seed 0
common=(--config demo --data data --quiet --threads 2 seed=$SEED arch.H_cycles=3 arch.L_cycles=6 epochs=16 eval_interval=8 checkpoint_interval_steps=0 eval_max_examples=300)
R=runs-s$SEED; mkdir -p $R
for name in fixed pdc cgar; do
  case $name in
    fixed) extra=() ;;
    pdc) extra=(depth_curriculum=cgar) ;;
    cgar) extra=(depth_curriculum=cgar supervision_decay=0.7) ;;
  esac
  rm -rf $R/$name
  s=$(date +%s.%N)
  /usr/bin/time -v $T train "${common[@]}" --out $R/$name "${extra[@]}" > $R/logs-$name.txt 2> $R/err-$name.txt
  rc=$?
  e=$(date +%s.%N)
  echo "$name train_seconds $(echo "$e - $s" | bc) rc $rc" >> $R/summary.txt
  $T eval --checkpoint $R/$name --data data --json > $R/eval-$name.json 2> $R/eval-err-$name.txt
done
echo done >> $R/summary.txt
