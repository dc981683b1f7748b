#!/usr/bin/env bash
# Fixtures the parity runner has never seen: random architectures, sizes, seeds, position
# encodings, prefix lengths and layer counts, each made by the reference code
# (bench/make_fixture.py) and replayed by `trm parity`. Prints one line per fixture with its worst
# error/tolerance ratio; exits non-zero if any fails.
#   bench/parity_sweep.sh [N=12] [SEED=2026]
# Needs python3 with torch and a prepared reference copy (bench/prepare_reference.sh --reuse).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-12}
SEED=${2:-2026}
TRM=${TRM:-$ROOT/target/release/trm}
OUT=${SWEEP_OUT:-$ROOT/bench/out/parity-sweep}
[ -x "$TRM" ] || (cd "$ROOT" && cargo build --release)
"$ROOT/bench/prepare_reference.sh" --reuse >/dev/null
mkdir -p "$OUT"
fail=0
python3 - "$N" "$SEED" > "$OUT/configs.txt" <<'PY'
import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
for i in range(n):
    arch = rng.choice(["trm", "hrm", "trm_singlez", "trm_hier6", "transformers_baseline", "trm"])
    heads = rng.choice([1, 2, 3, 4])
    hd = rng.choice([4, 6, 8])
    # The baseline may have heads that do not divide the width (head dim = hidden // heads).
    hidden = heads * hd + (rng.choice([0, 0, 1]) if arch == "transformers_baseline" and heads > 1 else 0)
    a = [f"--arch {arch}", f"--hidden {hidden}", f"--heads {heads}", f"--seed {rng.randint(1, 10**6)}",
         f"--seq-len {rng.choice([9, 16, 25, 40])}", f"--batch {rng.choice([2, 3, 4])}", f"--halt-max-steps {rng.choice([3, 4, 5])}"]
    pos = rng.choice(["rope", "learned", "none"])
    if arch == "transformers_baseline":
        pos = rng.choice(["rope", "learned"])
        a += [f"--H-layers {rng.choice([1, 2, 3])}"] + rng.sample(["--act-inference", "--no-act-enabled", ""], 1)
    else:
        a += [f"--L-layers {rng.choice([1, 2])}", f"--H-cycles {rng.choice([1, 2, 3])}", f"--L-cycles {rng.choice([1, 2, 3])}"]
        if rng.random() < 0.4:
            a += ["--mlp-t"]
        if arch == "hrm":
            a += [f"--H-layers {rng.choice([1, 2])}"]
        else:
            a += [f"--puzzle-emb-len {rng.choice([0, 1, 2, 4])}"]
            if arch == "trm" and rng.random() < 0.4:
                a += ["--act-continue"]
    a += [f"--pos {pos}", f"--puzzle-emb-ndim {rng.choice([hidden, hidden // 2 + 1, 2 * hidden])}"]
    print(f"sweep-{i:02d} " + " ".join(a))
PY
while read -r name args; do
  python3 "$ROOT/bench/make_fixture.py" --out "$OUT/$name" $args > "$OUT/$name.gen.log" 2>&1
  case $? in
    0) ;;
    3) echo "$name: skipped, ill-conditioned: the reference's float32 run itself strays from float64 -- $args"; continue ;;
    *) echo "$name: generator failed ($(tail -1 "$OUT/$name.gen.log")) -- $args"; fail=1; continue ;;
  esac
  if res=$("$TRM" parity "$OUT/$name" --quiet 2>&1); then
    echo "$name: ok   $(echo "$res" | tail -1) -- $args"
  else
    echo "$name: FAIL $(echo "$res" | tail -3 | tr '\n' ' ') -- $args"
    fail=1
  fi
done < "$OUT/configs.txt"
exit $fail
