#!/usr/bin/env bash
# Run the reference PyTorch TRM trainer (SamsungSAILMontreal/TinyRecursiveModels)
# on CPU, on the small "pace" Sudoku run, and record its train/eval metrics as
# JSONL so its accuracy curve can be laid beside ours.
#
# The reference source is never committed: every run copies it afresh into
# bench/reference/ (git-ignored) and patches the copy for CPU, both done by
# bench/prepare_reference.sh, and writes all outputs under bench/out/ (git-ignored).
#
# Usage:
#   bench/reference_pace.sh [extra hydra overrides...]
#   e.g. bench/reference_pace.sh epochs=2 eval_interval=1     # quick smoke test
#
# Environment:
#   PACE_DATA    dataset dir in the reference layout   (default /work/pace-data)
#   REF_MIRROR   git dir of a local reference mirror
#                (default /work/.mirror/SamsungSAILMontreal+TinyRecursiveModels/repo;
#                 if absent, the repository is cloned from GitHub)
#   REF_OUT      output dir                            (default bench/out)
#   REF_METRICS  JSONL metrics file                    (default $REF_OUT/reference_metrics.jsonl)
#   REF_THREADS  torch CPU threads                     (default 2)
#   REF_ATAN2    "kernel" (default, same update as the adam-atan2 CUDA kernel) or "hat"
#   ARCH         the reference's arch group: trm (default), hrm, trm_singlez, ...
#   PYTHON       interpreter                           (default python3)
#
# Python packages (installed on demand if an import fails):
#   pip install torch numpy einops pydantic omegaconf hydra-core wandb coolname argdantic tqdm pyyaml
# (adam-atan2 is a CUDA extension; bench/reference_cpu_shim.py supplies a
#  pure-PyTorch AdamATan2 instead. numba is only needed by the dataset builders.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
REF_DIR="$BENCH/reference"
OUT_DIR=$(mkdir -p "${REF_OUT:-$BENCH/out}" && cd "${REF_OUT:-$BENCH/out}" && pwd)
DATA="${PACE_DATA:-/work/pace-data}"
MIRROR="${REF_MIRROR:-/work/.mirror/SamsungSAILMontreal+TinyRecursiveModels/repo}"
PY="${PYTHON:-python3}"
export REF_METRICS="${REF_METRICS:-$OUT_DIR/reference_metrics.jsonl}"
export REF_THREADS="${REF_THREADS:-2}"

[ -f "$DATA/train/dataset.json" ] && [ -f "$DATA/test/dataset.json" ] \
  || { echo "no dataset at $DATA (expected train/ and test/ with dataset.json)" >&2; exit 1; }

# --- 1. Python dependencies -------------------------------------------------
if ! "$PY" -c "import torch, numpy, einops, pydantic, omegaconf, hydra, wandb, coolname, argdantic, tqdm, yaml" 2>/dev/null; then
  echo "[reference_pace] installing missing Python packages"
  "$PY" -m pip install -q numpy einops pydantic omegaconf hydra-core wandb coolname argdantic tqdm pyyaml
fi

# --- 2+3. Fresh copy of the reference source, patched for CPU ----------------
# (bench/prepare_reference.sh, shared with bench/reference_step.sh; it prints
#  the commit and the list of patches, kept in bench/reference/CPU_PATCHES.txt)
REF_DIR="$REF_DIR" REF_MIRROR="$MIRROR" PYTHON="$PY" "$BENCH/prepare_reference.sh"

# --- 4. Train + eval ----------------------------------------------------------
# Defaults for the pace comparison; anything in "$@" is appended (later wins).
ARGS=(
  "arch=${ARCH:-trm}"
  "data_paths=['$DATA']"
  "evaluators=[]"
  arch.mlp_t=True arch.pos_encodings=none arch.hidden_size=64
  arch.H_cycles=2 arch.L_cycles=2 arch.halt_max_steps=8
  arch.forward_dtype=float32
  global_batch_size=64 lr=1e-3 lr_warmup_steps=100
  weight_decay=1.0 puzzle_emb_weight_decay=1.0 puzzle_emb_lr=1e-3
  ema=False epochs=16 eval_interval=8
  +run_name=pace +project_name=pace
  "+checkpoint_path=$OUT_DIR/checkpoints"
  "hydra.run.dir=$OUT_DIR/hydra"
)
echo "[reference_pace] metrics -> $REF_METRICS"
rm -rf "$OUT_DIR/checkpoints" "$OUT_DIR/hydra"   # no stale checkpoints from earlier runs
cd "$REF_DIR"
DISABLE_COMPILE=1 WANDB_MODE=disabled WANDB_SILENT=true \
  "$PY" "$BENCH/reference_cpu_shim.py" "${ARGS[@]}" "$@" 2>&1 | tee "$OUT_DIR/reference_run.log"
echo "[reference_pace] done; metrics in $REF_METRICS, log in $OUT_DIR/reference_run.log"
