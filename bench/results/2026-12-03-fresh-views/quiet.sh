#!/bin/bash
T=/work/main/target/release/trm
while pgrep -f "trm eval --data d-final" >/dev/null; do sleep 3; done
for c in "16 16" "32 16"; do set -- $c
  $T eval --data d-final --limit 60 --views $1 --view-steps $2 --json 2>/dev/null | python3 -c "
import json,sys; r=json.load(sys.stdin); s=r['scaled']; print('quiet $1 x $2 life default: scaled', s['exact_accuracy'], 'vs', s['mean_view_steps'], 's/p', round(s['seconds']/s['count'],3), 'plain s/p', round(r['seconds']/r['count'],4), flush=True)"
done
# trm solve, one process per puzzle (process start and model load included), default budget
start=$(date +%s.%N); ok=0
for q in $(sed -n 2,21p final.csv | cut -d, -f2); do $T solve --sudoku "$q" --json > /tmp/solve.json 2>/dev/null && python3 -c "import json; r=json.load(open('/tmp/solve.json')); exit(0 if r['result']['checked'] else 1)" && ok=$((ok+1)); done
end=$(date +%s.%N); echo "trm solve default, 20 puzzles: checked $ok, $(python3 -c "print(round(($end-$start)/20,3))") s per puzzle with process start"
