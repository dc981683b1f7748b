#!/usr/bin/env bash
# Prepare what a GPU check needs in one git-ignored folder, gpu-kit/ (well under the 64 MiB a GPU
# machine is sent): the stripped libtorch build of trm (profile `dist`, linked against pip's
# PyTorch 2.11, which the GPU machine has), the golden fixtures, the Sudoku-Extreme CSVs of the
# short training run, the CPU loss curve that run is compared with (cpu-curve.jsonl, computed
# here), and the reference's models/ for the side-by-side timings. Then, on the GPU machine:
#
#   bash bench/gpu-check.sh --kit gpu-kit --out "$OUT"
#
# Usage: bench/gpu-kit.sh [--bin PATH]   (--bin: take that trm binary instead of building one, e.g.
#        target/release/trm for a CPU rehearsal: bash bench/gpu-check.sh --device cpu --tiny)
# Environment: SHARED (default ../shared), CARGO_FEATURES (default libtorch; `libtorch,cubecl`
# adds the second engine, ~30 MB more before compression), WHEELS (a folder of the reference's
# einops and pydantic wheels; by default they are downloaded here for the GPU image's Python,
# GPU_PYTHON, default 3.12: its image has einops but not pydantic, and it cannot download).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED="${SHARED:-$ROOT/../shared}"
KIT="$ROOT/gpu-kit"
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-kit.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
if [ -z "$BIN" ]; then
  export LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1
  cargo build --profile dist --features "${CARGO_FEATURES:-libtorch}"
  BIN=target/dist/trm
fi
rm -rf "$KIT" && mkdir -p "$KIT/fixtures" "$KIT/data" "$KIT/reference"
# Compressed (40 MB -> 7 MB): room for the data and fixtures under the 64 MiB a lease carries.
xz -T0 -6 -c "$BIN" > "$KIT/trm.xz"
cp -r "$SHARED/fixtures/trm-small-attn" "$KIT/fixtures/"
# Parity fixtures only (a folder with expected.safetensors; tests/fixtures/torch is not one).
for f in tests/fixtures/*/; do if [ -f "$f/expected.safetensors" ]; then cp -r "$f" "$KIT/fixtures/"; fi; done
cp "$SHARED/data/sudoku-extreme-1k/train.csv" "$SHARED/data/sudoku-extreme-1k/test_hard.csv.gz" "$KIT/data/"
# The reference's model code only (bench/reference_step.py imports models/); prepared by
# bench/prepare_reference.sh from the mirror, never committed.
PYTHON="${PYTHON:-python3}" bench/prepare_reference.sh --reuse >&2 || {
  echo "gpu-kit.sh: the reference's source could not be prepared: put a mirror of its repository at REF_MIRROR" \
    "(see bench/prepare_reference.sh) or give this machine the network; no kit was made" >&2
  rm -rf "$KIT"; exit 1
}
cp -r bench/reference/models bench/reference/LICENSE bench/reference/CPU_PATCHES.txt "$KIT/reference/"
git rev-parse HEAD > "$KIT/COMMIT.txt"
# The CPU run the GPU's 300-step curve is compared with: the same data, command and seed as
# gpu-check.sh's stage 5, on the CPU backend (about a minute on 2 cores).
CURVE_STEPS=${CURVE_STEPS:-300}
TMPD=$(mktemp -d); trap 'rm -rf "$TMPD"' EXIT
"$BIN" data sudoku --train "$KIT/data/train.csv" --test "$KIT/data/test_hard.csv.gz" --out "$TMPD/data" \
  --subsample 1000 --num-aug 8 --test-subsample 512 >/dev/null
"$BIN" train --device cpu --data "$TMPD/data" --out "$TMPD/run" --quiet --config sudoku-tiny max_steps="$CURVE_STEPS" \
  eval_interval=16 eval_max_examples="$([ "$CURVE_STEPS" -le 20 ] && echo 64 || echo 512)" checkpoint_every_eval=False >/dev/null
cp "$TMPD/run/metrics.jsonl" "$KIT/cpu-curve.jsonl"
# The reference's two small dependencies, for a machine without a package index.
if [ -n "${WHEELS:-}" ]; then
  cp -r "$WHEELS" "$KIT/wheels"
elif ! "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$KIT/wheels" einops pydantic==2.13.4 pydantic_core==2.46.4 annotated_types typing_inspection >&2; then
  echo "gpu-kit.sh: could not download the reference's wheels (no package index?): its stage 4 needs pydantic on the GPU machine; set WHEELS" >&2
  rm -rf "$KIT/wheels"
fi
find "$KIT" -name __pycache__ -prune -exec rm -rf {} +
du -sh "$KIT" && ls -la "$KIT/trm.xz"
