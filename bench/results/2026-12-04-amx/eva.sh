#!/bin/bash
# eva.sh SHARE [lifetime] [views]: bundled, tuning rows 1-100, adopt share
S=$1; L=${2:-8}; V=${3:-16}
TRM_XP_ADOPT=$S nice -n 2 ${BIN:-/work/s28/trm-adopt} eval --data ${D:-/work/s26/d-tune} --limit ${N:-100} --views $V --view-steps 16 --view-lifetime $L --threads 1 --json 2>/dev/null | python3 -c "
import json,sys; r=json.load(sys.stdin); s=r['scaled']
print('adopt $S life $L views $V', 'plain', r['exact_accuracy'], 'scaled', s['exact_accuracy'], 'tried', s['mean_views_tried'], 'steps', round(s['mean_steps'],2), 's/p', round(s['seconds']/s['count'],2), flush=True)"
