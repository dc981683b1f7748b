#!/bin/bash
# ev.sh BIN DATA CKPT|bundled [views] [rows] [drawn]: V views x 16 steps on the first N rows of DATA, 1 thread.
# A 6th argument "drawn" adds --drawn-latents. Prints plain and scaled accuracy, views tried, s per puzzle.
BIN=$1; D=$2; ck=$3; V=${4:-16}; N=${5:-100}
[ "$ck" = bundled ] && arg="" || arg="--checkpoint $ck"
[ "${6:-}" = drawn ] && arg="$arg --drawn-latents"
$BIN eval --data "$D" --limit "$N" --views "$V" --view-steps 16 $arg --threads 1 --json 2>/dev/null | python3 -c "
import json,sys; r=json.load(sys.stdin); s=r['scaled']
print('$ck', '${6:-L_init}', 'views $V rows $N', 'plain', r['exact_accuracy'], 'token', round(r['accuracy'],3),
      'scaled', s['exact_accuracy'], 'tried', s['mean_views_tried'], 's/p', round(s['seconds']/s['count'],2))"
