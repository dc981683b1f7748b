#!/usr/bin/env bash
# ARC-AGI-1 at 1000 augmentations on the host, before and after this session's memory work, one
# after the other on the same idle machine: `trm data inspect` (reads and checks every array as
# training does) and 2 training steps of the arc1 preset at batch 4 with the final evaluation
# limited to 8 examples and the final checkpoint. rss.sh samples /proc/PID/status every 0.2 s.
# Usage: side-by-side.sh OLD_TRM NEW_TRM DATA (DATA: trm data arc ... --num-aug 1000, 6.8 GB)
set -u
OLD=$1 NEW=$2 DATA=$3 HERE=$(cd "$(dirname "$0")" && pwd)
for who in old new; do
  bin=$OLD; [ "$who" = new ] && bin=$NEW
  echo "== $who: $bin"
  sync; echo "data inspect: $("$HERE/rss.sh" "$bin" data inspect "$DATA")"
  rm -rf "/tmp/arc-side-$who"
  echo "train 2 steps: $("$HERE/rss.sh" "$bin" train --config arc1 --data "$DATA" --out "/tmp/arc-side-$who" --quiet global_batch_size=4 max_steps=2 eval_max_examples=8)"
done
for f in model state; do
  cmp -s "/tmp/arc-side-old/checkpoints/step_00000002/$f.safetensors" "/tmp/arc-side-new/checkpoints/step_00000002/$f.safetensors" \
    && echo "$f.safetensors: identical" || echo "$f.safetensors: DIFFERENT"
done
