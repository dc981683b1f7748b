#!/usr/bin/env python3
"""Records the reference sampler's exact batch order for a training run, so trm can replay it.

The reference's `PuzzleDataset` (bench/reference/puzzle_dataset.py, from the copy that
bench/prepare_reference.sh prepares) is iterated in training mode exactly as `pretrain.py` does:
one dataset object for the whole run, one pass per iteration of `eval_interval` epochs, its
`_iters` counter seeding each pass. Every full global batch's (example, puzzle) rows are kept;
the partial last batch of a pass, which the reference drops, is dropped here too.

Output: an int32 .npy of shape [iterations, batches, global_batch, 2], which
`trm train ... batch_order=FILE` replays instead of sampling (docs/benchmarks.md).

With --init-out, also the reference's initial weights for that seed (TRM; the model is built as
pretrain.py builds it, right after torch.manual_seed(seed)), as a safetensors state dict that
`trm train --init-from FILE` starts from.

  python3 bench/record_reference_order.py --data bench/out/pace-data --global-batch 64 \
      --epochs 16 --eval-interval 2 --seed 0 --out bench/out/ref-order-s0.npy
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REF = Path(os.environ.get("REF_DIR", BENCH / "reference"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--global-batch", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--eval-interval", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--init-out", type=Path, help="also write the reference's initial TRM weights for this seed")
    p.add_argument("--arch", nargs="*", default=[], help="TRM arch overrides for --init-out, e.g. hidden_size=64 mlp_t=True")
    a = p.parse_args()
    if not (REF / "puzzle_dataset.py").exists():
        sys.exit(f"no reference copy at {REF}: run bench/prepare_reference.sh first")
    sys.path.insert(0, str(REF))
    import puzzle_dataset

    recorded = []
    original = puzzle_dataset._sample_batch

    def sample_batch(*args, **kw):
        out = original(*args, **kw)
        recorded.append((out[1].copy(), out[2].copy()))
        return out

    puzzle_dataset._sample_batch = sample_batch
    ds = puzzle_dataset.PuzzleDataset(
        puzzle_dataset.PuzzleDatasetConfig(seed=a.seed, dataset_paths=[a.data], global_batch_size=a.global_batch, test_set_mode=False,
                                           epochs_per_iter=a.eval_interval, rank=0, num_replicas=1),
        split="train",
    )
    iterations = []
    for _ in range(a.epochs // a.eval_interval):
        recorded.clear()
        for _batch in ds:
            pass
        full = [np.stack([ex, pz], axis=-1) for ex, pz in recorded if ex.size == a.global_batch]
        iterations.append(np.stack(full))
    n = min(len(b) for b in iterations)
    arr = np.stack([b[:n] for b in iterations]).astype(np.int32)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(a.out, arr)
    print(f"wrote {a.out}: {arr.shape[0]} iterations x {arr.shape[1]} batches x {arr.shape[2]} rows")
    if a.init_out:
        write_init(a, ds.metadata)


def write_init(a, meta):
    import torch
    import yaml
    from safetensors.torch import save_file

    arch = yaml.safe_load((REF / "config" / "arch" / "trm.yaml").read_text())
    for kv in a.arch:
        k, v = kv.split("=", 1)
        arch[k] = yaml.safe_load(v)
    arch.pop("name"), arch.pop("loss")
    if arch.get("puzzle_emb_ndim") == "${.hidden_size}":
        arch["puzzle_emb_ndim"] = arch["hidden_size"]
    cfg = dict(arch, batch_size=a.global_batch, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
               num_puzzle_identifiers=meta.num_puzzle_identifiers, causal=False)
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1

    torch.random.manual_seed(a.seed)  # pretrain.py: seed + rank, then the model is built
    model = TinyRecursiveReasoningModel_ACTV1(cfg)
    sd = {f"model.{k}": v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, a.init_out)
    print(f"wrote {a.init_out}: {len(sd)} tensors, the reference's initial weights for seed {a.seed}")


if __name__ == "__main__":
    main()
