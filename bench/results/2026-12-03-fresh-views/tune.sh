#!/bin/bash
# Tuning runs on test_hard rows 1-100 (tune.csv), bundled model, 1 thread, niced.
T=/work/main/target/release/trm
run() { # views steps lifetime
  nice -n 10 $T eval --data d-tune --limit 100 --views $1 --view-steps $2 --view-lifetime $3 --threads 1 --json 2>/dev/null | python3 -c "
import json,sys; r=json.load(sys.stdin); s=r['scaled']; print('$1 x $2 life $3', 'scaled', s['exact_accuracy'], 'tried', s['mean_views_tried'], 'vs', s['mean_view_steps'], 's/p', round(s['seconds']/s['count'],2), flush=True)"
}
run 16 16 6
run 16 16 4
run 32 16 6
run 32 16 0
run 24 16 8
