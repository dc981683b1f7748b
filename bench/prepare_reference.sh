#!/usr/bin/env bash
# Copy the reference PyTorch TRM source (SamsungSAILMontreal/TinyRecursiveModels)
# into a git-ignored directory and patch the copy for CPU. Shared by
# bench/reference_pace.sh (trainer on CPU) and bench/reference_step.sh (step timing).
#
# The reference source is never committed: the copy lives in bench/reference/
# (git-ignored) and the list of what was patched is written beside it, in
# CPU_PATCHES.txt (first line: "reference commit <sha>; ...").
#
# Usage:
#   bench/prepare_reference.sh            # always copy afresh and patch
#   bench/prepare_reference.sh --reuse    # keep an existing prepared copy when it is
#                                         # at the mirror's commit (or, without a
#                                         # mirror, when it exists at all)
#
# Environment:
#   REF_DIR      where the copy goes                  (default bench/reference)
#   REF_MIRROR   git dir of a local reference mirror
#                (default /work/.mirror/SamsungSAILMontreal+TinyRecursiveModels/repo;
#                 if absent, the repository is cloned from GitHub)
#   PYTHON       interpreter used for the patching    (default python3)
#
# Only pretrain.py holds CUDA-specific code at the pinned commit; models/ is
# device-agnostic, so the patched copy's models/ runs unchanged on CUDA too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REF_DIR="${REF_DIR:-$ROOT/bench/reference}"
MIRROR="${REF_MIRROR:-/work/.mirror/SamsungSAILMontreal+TinyRecursiveModels/repo}"
PY="${PYTHON:-python3}"
REUSE=0
for a in "$@"; do
  case "$a" in
    --reuse) REUSE=1 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "prepare_reference.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

REF_ABS=$(realpath -m "$REF_DIR")
case "$REF_ABS" in
  /|"$ROOT"|"$ROOT/bench"|"$(realpath -m "$HOME")"|"$ROOT/src"|"$ROOT/.git") echo "refusing REF_DIR=$REF_DIR" >&2; exit 2 ;;
esac

# --- 0. Reuse an existing prepared copy? --------------------------------------
if [ "$REUSE" = 1 ] && [ -f "$REF_DIR/CPU_PATCHES.txt" ] && [ -f "$REF_DIR/models/recursive_reasoning/trm.py" ]; then
  have=$(sed -n '1s/^reference commit \([0-9a-f]*\).*/\1/p' "$REF_DIR/CPU_PATCHES.txt")
  want=""
  [ -d "$MIRROR" ] && want=$(git --git-dir="$MIRROR" rev-parse HEAD 2>/dev/null || true)
  if [ -z "$want" ] || [ "$have" = "$want" ]; then
    echo "[prepare_reference] reusing $REF_DIR (reference commit ${have:-unknown})"
    exit 0
  fi
  echo "[prepare_reference] $REF_DIR is at ${have:-unknown}, mirror at $want: copying afresh"
fi

# --- 1. Fresh copy of the reference source ----------------------------------
rm -rf "$REF_DIR"
mkdir -p "$REF_DIR"
if [ -d "$MIRROR" ]; then
  git --git-dir="$MIRROR" archive HEAD | tar -x -C "$REF_DIR"
  REF_COMMIT=$(git --git-dir="$MIRROR" rev-parse HEAD)
else
  git clone -q --depth 1 https://github.com/SamsungSAILMontreal/TinyRecursiveModels "$REF_DIR"
  REF_COMMIT=$(git -C "$REF_DIR" rev-parse HEAD)
fi
echo "[prepare_reference] reference commit $REF_COMMIT copied to $REF_DIR"

# --- 2. CPU patches (applied to the copy only) ------------------------------
# Each rule is a regex over the copied .py files; the list of what changed is
# printed and kept in $REF_DIR/CPU_PATCHES.txt.
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
log = [f"reference commit {commit}; CPU patches applied by bench/prepare_reference.sh"]
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
