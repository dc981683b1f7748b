#!/bin/bash
# fin.sh PREC VIEWS [rows]: final rows 1001-1500 (/work/s26/d-final), 2 threads
P=$1; V=$2; N=${3:-500}
${BIN:-/work/s28/trm-amx} eval --data /work/s26/d-final --limit $N --views $V --view-steps 16 --threads 2 --precision $P --json 2>/dev/null > fin-$P-$V-$N.json
python3 -c "
import json; r=json.load(open('fin-$P-$V-$N.json')); s=r['scaled']
print('$P views $V rows $N', 'plain', r['exact_accuracy'], 'scaled', s['exact_accuracy'], s['exact_accuracy_ci95'], 'checked', s['checked'], 'count', s['count'], 'vs', round(s['mean_view_steps'],1), 's/p', round(s['seconds']/s['count'],3))"
