#!/usr/bin/env bash
# Builds ARC data with the reference's own builder and with `trm data arc`, from the same files
# and seed, and compares every output file byte for byte (issue 15). Needs the reference prepared
# by bench/prepare_reference.sh, and numpy, pydantic and argdantic for it.
#
# Usage: bench/check_arc_reference.sh [NUM_AUG] [SUBSETS] [TEST_SET]
#   defaults: 8 "training evaluation concept" evaluation (ARC-1 as the reference builds it)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NUM_AUG=${1:-8}; SUBSETS=${2:-training evaluation concept}; TEST_SET=${3:-evaluation}
PREFIX=$(realpath "$ROOT/../shared/data/arc")/arc-agi
TRM=${TRM:-$ROOT/target/release/trm}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
"$ROOT/bench/prepare_reference.sh" --reuse >&2
# shellcheck disable=SC2086
(cd "$ROOT/bench/reference" && time python3 -m dataset.build_arc_dataset --input-file-prefix "$PREFIX" \
  --output-dir "$WORK/reference" --subsets $SUBSETS --test-set-name "$TEST_SET" --num-aug "$NUM_AUG" >/dev/null)
# shellcheck disable=SC2086
time "$TRM" data arc --input-prefix "$PREFIX" --subsets $SUBSETS --test-set "$TEST_SET" --num-aug "$NUM_AUG" --out "$WORK/trm" >/dev/null
bad=0
for f in $(cd "$WORK/reference" && find . -type f | sort); do
  if cmp -s "$WORK/reference/$f" "$WORK/trm/$f"; then echo "same  $f"; else echo "DIFF  $f"; bad=1; fi
done
[ "$(cd "$WORK/trm" && find . -type f | wc -l)" = "$(cd "$WORK/reference" && find . -type f | wc -l)" ] || { echo "the file lists differ"; bad=1; }
exit $bad
