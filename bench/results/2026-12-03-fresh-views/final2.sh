#!/bin/bash
T=/work/main/target/release/trm
while pgrep -f "trm eval --data d-final --limit 500 --views 16 --view-steps 16 --view-lifetime 8" >/dev/null; do sleep 5; done
show() { python3 -c "
import json; r=json.load(open('$1')); s=r['scaled']
print('$1', 'plain', r['exact_accuracy'], r['exact_accuracy_ci95'], 'scaled', s['exact_accuracy'], s['exact_accuracy_ci95'], 'tried', s['mean_views_tried'], 'vs', s['mean_view_steps'], 's/p', round(s['seconds']/s['count'],2), flush=True)"; }
show final-16x16-life8.json
for c in "16 16 0 500" "32 16 8 300" "8 16 8 300" "32 16 0 300" "8 16 0 300"; do
  set -- $c
  f=final-$1x$2-life$3-n$4.json
  $T eval --data d-final --limit $4 --views $1 --view-steps $2 --view-lifetime $3 --threads 1 --json 2>/dev/null > $f
  show $f
done
