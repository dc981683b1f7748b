#!/usr/bin/env python3
"""Time the reference PyTorch TRM training and evaluation steps at the `trm bench` shapes.

The point is a ratio: run `trm bench` and this script at the same shape, batch,
device and thread count, and divide. What one step is, on both sides
(src/bench.rs):

  train: one ACT supervision step of the reference model class
         TinyRecursiveReasoningModel_ACTV1 wrapped in the reference ACTLossHead
         (stablemax cross-entropy + halting BCE), `(loss / batch).backward()`,
         then the optimiser steps: the weight optimiser (AdamW from torch by
         default, or AdamATan2) and the reference sign-SGD optimiser of the
         sparse puzzle embedding (CastedSparseEmbeddingSignSGD_Distributed,
         world_size 1), then zero_grad. The carry persists between steps, so
         rows halt and restart as they do in training.
  eval:  one ACT supervision step of the same model in eval mode (no
         exploration, halting only at halt_max_steps), loss head included,
         under torch.inference_mode().

The reference source is imported from the prepared copy (bench/reference/, see
bench/prepare_reference.sh; only its models/ package is used, and models/ has no
CUDA-specific code, so the same copy serves --device cpu and --device cuda).
Nothing from the reference is stored in this file.

Usage (the wrapper bench/reference_step.sh prepares the copy first):
    python3 bench/reference_step.py --shape sudoku-att --batch 32 --threads 2 --json
    python3 bench/reference_step.py --shape maze-att --batch 64 --device cuda --compile --json

Output: for each mode timed, one line of text, or with --json one JSON object
per line (eval first, then train, when --mode both: CPU peak memory is the
process's high-water mark, so the order keeps eval's figure meaningful).
"""
import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------
# Shapes and hyper-parameters: copied from src/bench.rs (`shape`, `bench_train`)
# and src/model/config.rs (`ArchConfig::default`), so both sides time the same thing.
# ----------------------------------------------------------------------------
ARCH_DEFAULT = dict(
    hidden_size=512,
    num_heads=8,
    expansion=4.0,
    H_cycles=3,
    L_cycles=6,
    H_layers=0,  # ignored by the model
    L_layers=2,
    mlp_t=False,
    pos_encodings="rope",
    puzzle_emb_ndim=512,
    puzzle_emb_len=16,
    halt_max_steps=16,
    halt_exploration_prob=0.1,
    no_ACT_continue=True,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)
LOSS_TYPE = "stablemax_cross_entropy"

# name -> (seq_len, vocab_size, num_puzzle_identifiers, arch overrides)
SHAPES = {
    "sudoku-att": (81, 11, 1, {}),
    "sudoku-mlp": (81, 11, 1, dict(mlp_t=True, pos_encodings="none")),
    "maze-att": (900, 6, 1, dict(L_cycles=4)),
    "arc-att": (900, 12, 4096, dict(L_cycles=4)),
}

# Other architectures at a shape: their reference defaults (config/arch/*.yaml), the shape's mlp_t
# and positions kept where they have them (src/bench.rs `shape_for`).
ARCHS = {
    "trm": ("models.recursive_reasoning.trm", "TinyRecursiveReasoningModel_ACTV1", {}),
    "hrm": ("models.recursive_reasoning.hrm", "HierarchicalReasoningModel_ACTV1",
            dict(H_cycles=2, L_cycles=2, H_layers=4, L_layers=4)),
    "transformers_baseline": ("models.recursive_reasoning.transformers_baseline", "Model_ACTV2",
                              dict(H_cycles=1, H_layers=8, num_heads=12, mlp_t=False)),
}

# Optimiser settings of bench_train (src/bench.rs).
ADAM_LR, ADAM_BETAS, ADAM_WD = 1e-4, (0.9, 0.95), 0.1
SIGN_SGD_LR, SIGN_SGD_WD = 1e-2, 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="sudoku-att", choices=sorted(SHAPES))
    p.add_argument("--arch", default="trm", choices=sorted(ARCHS),
                   help="model class run at that shape, with its reference defaults (as trm bench --arch)")
    p.add_argument("--batch", type=int, default=32, help="rows per step (default 32, as trm bench)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--mode", default="both", choices=["train", "eval", "both"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--reps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--compile", action="store_true", help="wrap the loss head + model in torch.compile")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the reference's arch.forward_dtype (trm bench uses float32)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adam-atan2"],
                   help="weight optimiser: torch AdamW (default), or AdamATan2 (the adam_atan2 "
                        "package when importable on CUDA, else bench/adam_atan2_torch.py)")
    p.add_argument("--ignore-frac", type=float, default=0.0,
                   help="fraction of labels set to -100 (default 0: trm bench's random batch has none)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls on CUDA (off by default, as in the reference trainer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-dir", default=os.environ.get("REF_DIR", str(BENCH_DIR / "reference")),
                   help="prepared reference copy (default bench/reference, or $REF_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object per mode")
    p.add_argument("--profile", action="store_true",
                   help="after the timed steps, profile 2 more (torch.profiler) and add where the time "
                        "goes to the result: kernel time by kind, kernels launched per step, top ops")
    a = p.parse_args(argv)
    if a.batch < 1 or a.reps < 1 or a.warmup < 0 or a.threads < 1:
        p.error("--batch, --reps and --threads must be >= 1, --warmup >= 0")
    if not 0.0 <= a.ignore_frac < 1.0:
        p.error("--ignore-frac must be in [0, 1)")
    return a


def rss_now():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss():
    # ru_maxrss is in KiB on Linux (the same figure as VmHWM, which trm bench reads).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


# ----------------------------------------------------------------------------
# FLOP model: the same formulas as src/bench.rs, so achieved TFLOP/s compare.
# ----------------------------------------------------------------------------
def swiglu_inner(width, expansion):
    return -(round(expansion * width * 2 / 3) // -256) * 256


def step_flops(seq_len, vocab, arch, b, name):
    """(forward FLOPs of one supervision step, training FLOPs), as src/bench.rs `step_flops`."""
    d = arch["hidden_size"]
    p = arch["puzzle_emb_len"] if name == "trm" and arch["puzzle_emb_len"] > 0 else -(arch["puzzle_emb_ndim"] // -d)
    t = seq_len + p
    i = swiglu_inner(d, arch["expansion"])
    aw = arch["num_heads"] * (d // arch["num_heads"])
    rows = b * t
    mlp = 2.0 * rows * d * 3.0 * i
    if arch["mlp_t"]:
        mixer = 2.0 * b * d * t * 3.0 * swiglu_inner(t, arch["expansion"])
    else:
        mixer = 2.0 * rows * d * 4.0 * aw + 2.0 * 2.0 * b * t * t * aw
    block = mlp + mixer
    n, big_t = arch.get("L_cycles", 0), arch["H_cycles"]
    if name == "trm":
        depth, grad, bootstrap = big_t * (n + 1) * arch["L_layers"], (n + 1) * arch["L_layers"], False
    elif name == "hrm":
        depth, grad, bootstrap = big_t * (n * arch["L_layers"] + arch["H_layers"]), arch["L_layers"] + arch["H_layers"], True
    else:
        depth, grad, bootstrap = arch["H_layers"], arch["H_layers"], False
    heads = 2.0 * b * t * d * vocab
    fwd = depth * block + heads
    return fwd, fwd + (fwd if bootstrap else 0.0) + 2.0 * (grad * block + heads)


# ----------------------------------------------------------------------------
# Where a step's time goes (--profile): the basis of the plan for fused kernels.
# ----------------------------------------------------------------------------
KERNEL_KINDS = [  # (kind, substrings of a kernel's name), first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa")),  # before matmul: their names hold "cutlass"
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_")),
    ("reduction", ("reduce", "softmax", "norm", "cumsum")),
    ("copy", ("memcpy", "memset", "copy", "catarray", "transpose")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "triton_", "foreach")),
]


def kernel_kind(name):
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def profile_steps(step, carry, sync, is_cuda, n):
    """Profiles n steps; returns per-step wall time, kernel time by kind, kernel count, top ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if is_cuda else [])
    sync()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n):
            carry = step(carry)
        sync()
    wall = (time.perf_counter() - t0) / n
    out = dict(steps=n, wall_s_per_step_profiled=wall)
    if is_cuda:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        by_kind = {}
        for e in kernels:
            k = kernel_kind(e.name)
            t, c = by_kind.get(k, (0.0, 0))
            by_kind[k] = (t + e.time_range.elapsed_us() / 1e6, c + 1)
        busy = sum(t for t, _ in by_kind.values()) / n
        out.update(kernel_s_per_step=busy, kernels_per_step=len(kernels) / n,
                   gpu_busy_share=busy / wall if wall > 0 else None,
                   kernel_kinds={k: dict(s_per_step=t / n, launches_per_step=c / n, share=t / n / busy if busy else None)
                                 for k, (t, c) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])})
        top = {}
        for e in kernels:
            t, c = top.get(e.name, (0.0, 0))
            top[e.name] = (t + e.time_range.elapsed_us() / 1e6, c + 1)
        out["top_kernels"] = [dict(name=k[:120], kind=kernel_kind(k), s_per_step=t / n, launches_per_step=c / n)
                              for k, (t, c) in sorted(top.items(), key=lambda kv: -kv[1][0])[:25]]
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    self_time = (lambda e: getattr(e, "self_device_time_total", 0.0)) if is_cuda else (lambda e: e.self_cpu_time_total)
    out["top_ops"] = [dict(op=e.key, calls_per_step=e.count / n, self_s_per_step=self_time(e) / 1e6 / n)
                      for e in sorted(ops, key=self_time, reverse=True)[:20]]
    return out


def main(argv=None):
    args = parse_args(argv)
    ref_dir = Path(args.ref_dir).resolve()
    if not (ref_dir / "models" / "recursive_reasoning" / "trm.py").is_file():
        sys.exit(f"no prepared reference copy at {ref_dir}: run bench/prepare_reference.sh "
                 f"(or bench/reference_step.sh, which does it)")
    patches = (ref_dir / "CPU_PATCHES.txt")
    patch_lines = patches.read_text().splitlines() if patches.is_file() else []
    ref_commit = patch_lines[0].split()[2].rstrip(";") if patch_lines and patch_lines[0].startswith("reference commit") else None
    if args.device == "cpu" and not patch_lines:
        sys.exit(f"{ref_dir} has no CPU_PATCHES.txt: prepare it with bench/prepare_reference.sh")
    patched_models = [l for l in patch_lines if l.startswith("models/")]

    import torch

    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        sys.exit(f"unsupported --device {args.device} (cpu, cuda, cuda:N)")
    is_cuda = device.type == "cuda"
    if is_cuda:
        if not torch.cuda.is_available():
            sys.exit("--device cuda asked, but torch sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if patched_models:
            print("warning: the CPU patches touched models/ (" + "; ".join(patched_models) +
                  "); CUDA timings use that patched code", file=sys.stderr)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    elif device.type != "cpu":
        sys.exit(f"unsupported --device {args.device} (cpu, cuda, cuda:N)")

    sys.path.insert(0, str(ref_dir))
    import importlib

    module, cls_name, arch_defaults = ARCHS[args.arch]
    model_cls = getattr(importlib.import_module(module), cls_name)
    from models.losses import ACTLossHead
    from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed

    if args.optimizer == "adamw":
        opt_name = "torch.optim.AdamW"

        def make_opt(params):
            return torch.optim.AdamW(params, lr=ADAM_LR, betas=ADAM_BETAS, weight_decay=ADAM_WD)
    else:
        AdamATan2 = None
        opt_name = None
        if is_cuda:
            try:
                from adam_atan2 import AdamATan2  # the reference's CUDA extension
                opt_name = "adam_atan2.AdamATan2 (package)"
            except ImportError:
                pass
        if AdamATan2 is None:
            sys.path.insert(0, str(BENCH_DIR))
            from adam_atan2_torch import AdamATan2
            opt_name = "AdamATan2 (pure PyTorch, bench/adam_atan2_torch.py)"

        def make_opt(params):
            return AdamATan2(params, lr=ADAM_LR, betas=ADAM_BETAS, weight_decay=ADAM_WD)

    seq_len, vocab, n_ids, overrides = SHAPES[args.shape]
    arch = dict(ARCH_DEFAULT, **overrides)
    arch.update(arch_defaults)
    b = args.batch
    model_cfg = dict(arch, batch_size=b, seq_len=seq_len, vocab_size=vocab,
                     num_puzzle_identifiers=n_ids, forward_dtype=args.dtype, causal=False)
    baseline_rss = rss_now()

    def sync():
        if is_cuda:
            torch.cuda.synchronize(device)

    def random_batch():
        # As src/bench.rs: inputs and labels uniform in [1, vocab), identifiers in [0, n_ids); int32.
        g = torch.Generator().manual_seed(args.seed)
        inputs = torch.randint(1, vocab, (b, seq_len), generator=g, dtype=torch.int32)
        labels = torch.randint(1, vocab, (b, seq_len), generator=g, dtype=torch.int32)
        if args.ignore_frac > 0:
            labels[torch.rand((b, seq_len), generator=g) < args.ignore_frac] = -100
        ids = torch.randint(0, n_ids, (b,), generator=g, dtype=torch.int32)
        return {k: v.to(device) for k, v in
                dict(inputs=inputs, labels=labels, puzzle_identifiers=ids).items()}

    def build(training):
        torch.manual_seed(args.seed)
        with torch.device(device):  # as pretrain.py's create_model
            inner = model_cls(model_cfg)
            head = ACTLossHead(inner, loss_type=LOSS_TYPE)
        head.train(training)
        model = torch.compile(head) if args.compile else head
        return head, model

    def run_mode(mode):
        gc.collect()
        if is_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        training = mode == "train"
        head, model = build(training)
        batch = random_batch()
        with torch.device(device):
            carry = head.initial_carry(batch)

        if training:
            optimizers = [
                CastedSparseEmbeddingSignSGD_Distributed(
                    head.model.puzzle_emb.buffers(), world_size=1, lr=SIGN_SGD_LR, weight_decay=SIGN_SGD_WD),
                make_opt(head.parameters()),
            ]

            def step(carry):
                carry, loss, _metrics, _, _ = model(carry=carry, batch=batch, return_keys=[])
                ((1 / b) * loss).backward()
                for opt in optimizers:
                    opt.step()
                    opt.zero_grad()
                return carry
        else:
            def step(carry):
                with torch.inference_mode():
                    carry, _loss, _metrics, _, _ = model(carry=carry, batch=batch, return_keys=[])
                return carry

        times = []
        for i in range(args.warmup + args.reps):
            sync()
            t0 = time.perf_counter()
            carry = step(carry)
            sync()
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)

        profile = None
        if args.profile:
            try:
                profile = profile_steps(step, carry, sync, is_cuda, 2)
            except Exception as e:  # a profile is extra: the timing stands without it
                profile = dict(error=f"{type(e).__name__}: {e}"[:300])

        fwd, trn = step_flops(seq_len, vocab, arch, b, args.arch)
        flops = trn if training else fwd
        med = sorted(times)[len(times) // 2]  # as trm bench (the upper median for even counts)
        rss = peak_rss()
        res = dict(
            tool="bench/reference_step.py",
            # ATen's CPU kernels' instruction set (ATEN_CPU_CAPABILITY caps it, e.g. avx2).
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
            shape=args.shape if args.arch == "trm" else f"{args.shape}/{args.arch}",
            mode=mode,
            batch=b,
            device=str(device),
            device_name=torch.cuda.get_device_name(device) if is_cuda else platform.processor() or platform.machine(),
            threads=args.threads,
            compile=args.compile,
            dtype=args.dtype,
            optimizer=opt_name if training else None,
            tf32=args.tf32 if is_cuda else None,
            ignore_frac=args.ignore_frac,
            warmup=args.warmup,
            repetitions=len(times),
            median_step_s=med,
            min_step_s=min(times),
            examples_per_s=b / med,
            tokens_per_s=b * seq_len / med,
            flops_per_step=flops,
            achieved_tflops=flops / med / 1e12,
            peak_bytes=torch.cuda.max_memory_allocated(device) if is_cuda else rss,
            peak_bytes_kind="cuda_max_memory_allocated" if is_cuda else "ru_maxrss",
            peak_rss_bytes=rss,
            baseline_rss_bytes=baseline_rss,
            torch=torch.__version__,
            python=platform.python_version(),
            reference_commit=ref_commit,
        )
        if profile is not None:
            res["profile"] = profile
        del model, head, carry, batch
        if training:
            del optimizers
        return res

    modes = ["eval", "train"] if args.mode == "both" else [args.mode]
    for mode in modes:
        r = run_mode(mode)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            mem = r["peak_bytes"] / (1 << 20)
            print(f"reference {r['shape']} {r['mode']} batch {r['batch']} on {r['device']} "
                  f"({r['threads']} threads, {r['dtype']}{', compiled' if r['compile'] else ''}): "
                  f"median {r['median_step_s']:.4f} s/step (min {r['min_step_s']:.4f}), "
                  f"{r['examples_per_s']:.1f} examples/s, {r['tokens_per_s']:.0f} tokens/s, "
                  f"{r['achieved_tflops']:.3f} TFLOP/s, peak {'CUDA alloc' if is_cuda else 'RSS'} {mem:.0f} MiB",
                  flush=True)


if __name__ == "__main__":
    main()
