#!/usr/bin/env bash
# Run the reference PyTorch TRM trainer (SamsungSAILMontreal/TinyRecursiveModels)
# on CPU, on the small "pace" Sudoku run, and record its train/eval metrics as
# JSONL so its accuracy curve can be laid beside ours.
#
# The reference source is never committed: every run copies it afresh into
# bench/reference/ (git-ignored), patches the copy for CPU, and writes all
# outputs under bench/out/ (git-ignored).
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

# --- 2. Fresh copy of the reference source ----------------------------------
rm -rf "$REF_DIR"
mkdir -p "$REF_DIR"
if [ -d "$MIRROR" ]; then
  git --git-dir="$MIRROR" archive HEAD | tar -x -C "$REF_DIR"
  REF_COMMIT=$(git --git-dir="$MIRROR" rev-parse HEAD)
else
  git clone -q --depth 1 https://github.com/SamsungSAILMontreal/TinyRecursiveModels "$REF_DIR"
  REF_COMMIT=$(git -C "$REF_DIR" rev-parse HEAD)
fi
echo "[reference_pace] reference commit $REF_COMMIT copied to $REF_DIR"

# --- 3. CPU patches (applied to the copy only) ------------------------------
# Each rule is a regex over the copied .py files; the list of what changed is
# printed and kept in bench/reference/CPU_PATCHES.txt.
"$PY" - "$REF_DIR" "$REF_COMMIT" <<'PYEOF'
import pathlib, re, sys

root, commit = pathlib.Path(sys.argv[1]), sys.argv[2]
rules = [
    # (description, pattern, replacement)
    ("tensor.cuda() -> tensor.cpu()",                 r"\.cuda\(\)",                    ".cpu()"),
    ('torch.device("cuda") -> torch.device("cpu")',   r"torch\.device\(\s*[\"']cuda[\"']\s*\)", 'torch.device("cpu")'),
    ('map_location="cuda" -> "cpu"',                  r"map_location\s*=\s*[\"']cuda[\"']", 'map_location="cpu"'),
    ('device="cuda" -> "cpu"',                        r"(?<![\w.])device\s*=\s*[\"']cuda[\"']", 'device="cpu"'),
    ("DataLoader pin_memory=True -> False",           r"pin_memory\s*=\s*True",         "pin_memory=False"),
    ('dist backend "nccl" -> "gloo"',                 r"backend\s*=\s*[\"']nccl[\"']",  'backend="gloo"'),
    ("torch.cuda.set_device(...) -> no-op",           r"^(\s*)(torch\.cuda\.set_device\(.*\))\s*$", r"\1pass  # [cpu patch] \2"),
]
log = [f"reference commit {commit}; CPU patches applied by bench/reference_pace.sh"]
for path in sorted(root.rglob("*.py")):
    src = path.read_text()
    new = src
    for desc, pat, rep in rules:
        new, n = re.subn(pat, rep, new, flags=re.M)
        if n:
            log.append(f"{path.relative_to(root)}: {desc} (x{n})")
    if new != src:
        path.write_text(new)

# Things handled outside the source: say so, and check the hooks still exist.
pre = (root / "pretrain.py").read_text()
checks = {
    "from adam_atan2 import AdamATan2": "adam_atan2 -> pure-PyTorch AdamATan2 registered by reference_cpu_shim.py",
    "DISABLE_COMPILE": "torch.compile skipped via env DISABLE_COMPILE=1",
    "wandb.log(": "wandb.log wrapped by reference_cpu_shim.py -> REF_METRICS JSONL (WANDB_MODE=disabled)",
    '"LOCAL_RANK" in os.environ': "single process: LOCAL_RANK/RANK/WORLD_SIZE unset by the shim",
}
for needle, note in checks.items():
    if needle not in pre:
        sys.exit(f"pretrain.py no longer contains {needle!r}; the CPU shim needs updating")
    log.append(f"pretrain.py: {note} (no source edit)")
leftover = [f"{p.relative_to(root)}:{i+1}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines())
            if re.search(r"[\"']cuda[\"']|\.cuda\(|torch\.cuda\.", line) and not line.lstrip().startswith("#")
            and "[cpu patch]" not in line]
if leftover:
    log.append("WARNING: CUDA references left: " + ", ".join(leftover))
(root / "CPU_PATCHES.txt").write_text("\n".join(log) + "\n")
print("\n".join("[patch] " + l for l in log))
PYEOF

# --- 4. Train + eval ----------------------------------------------------------
# Defaults for the pace comparison; anything in "$@" is appended (later wins).
ARGS=(
  arch=trm
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
