#!/bin/bash
cd /work/s28
while pgrep -f "queue2.sh" >/dev/null; do sleep 3; done
for P in bfloat16 float32; do
/work/s28/trm-new eval --data /work/s26/d-final --limit 100 --views 64 --view-steps 16 --threads 2 --precision $P --json 2>/dev/null > quiet-$P-64-100.json
python3 -c "
import json; r=json.load(open('quiet-$P-64-100.json')); s=r['scaled']
print('quiet $P views 64 rows 100', 'plain', r['exact_accuracy'], 'scaled', s['exact_accuracy'], 'vs', round(s['mean_view_steps'],1), 's/p', round(s['seconds']/s['count'],3), 'precision', r.get('precision'))" >> quiet.txt
done
# trm solve, one process per puzzle, defaults, rows 1001-1020 of test_hard
tail -n +2 /work/s26/final.csv | head -20 | cut -d, -f2 > q20.txt
t0=$(date +%s.%N); ok=0
while read q; do /work/s28/trm-new solve --sudoku "$q" --json 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); print(v['result']['checked'], v['precision'])" >> solve20.txt; done < q20.txt
t1=$(date +%s.%N)
echo "trm solve defaults, 20 puzzles, one process each: $(python3 -c "print(round(($t1-$t0)/20,3))") s per puzzle; checked $(grep -c True solve20.txt)/20" >> quiet.txt
echo "famous, new default:" >> quiet.txt; ./famous.sh /work/s28/trm-new >> quiet.txt
echo "famous, old default (16 views, float32):" >> quiet.txt; ./famous.sh /work/s28/trm-new --views 16 --steps 16 --precision float32 >> quiet.txt
echo done >> quiet.txt
