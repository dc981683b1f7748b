#!/usr/bin/env bash
# Time the reference PyTorch TRM training/evaluation step at a `trm bench` shape,
# so `trm bench` numbers can be shown as ratios. Prepares the reference copy
# (bench/prepare_reference.sh --reuse: copied and CPU-patched once, reused while
# it matches the mirror's commit), then runs bench/reference_step.py with all
# arguments passed through.
#
# Usage:
#   bench/reference_step.sh --shape sudoku-att --batch 32 --threads 2 --json
#   bench/reference_step.sh --shape maze-att --batch 64 --device cuda --compile --json
#   bench/reference_step.sh --help
#
# Side by side (same shape, batch, threads; trm bench times one mode per run):
#   trm bench --shape sudoku-att --batch 32 --threads 2 --mode train --json
#   bench/reference_step.sh --shape sudoku-att --batch 32 --threads 2 --mode train --json
#
# Environment: REF_DIR, REF_MIRROR (see prepare_reference.sh), PYTHON (default python3).
# Python packages: torch, einops, pydantic (the reference's models/ imports nothing else).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY="${PYTHON:-python3}"
export REF_DIR="${REF_DIR:-$BENCH/reference}"

if ! "$PY" -c "import torch, einops, pydantic" 2>/dev/null; then
  echo "[reference_step] installing missing Python packages" >&2
  "$PY" -m pip install -q einops pydantic
fi

PYTHON="$PY" "$BENCH/prepare_reference.sh" --reuse >&2
exec "$PY" "$BENCH/reference_step.py" "$@"
