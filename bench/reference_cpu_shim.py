"""CPU launcher for the reference TRM `pretrain.py` (used by bench/reference_pace.sh).

Usage (from inside the copied reference tree, so hydra finds config/):
    python /path/to/bench/reference_cpu_shim.py [hydra overrides...]

What it does before handing control to `pretrain.py`:
  * caps torch at REF_THREADS CPU threads (default 2);
  * registers a pure-PyTorch `adam_atan2` module (the real package is a CUDA
    extension that cannot be built here);
  * wraps `wandb.log` so every call is also appended as one JSON line
    `{"step": N, ...}` to REF_METRICS (nested dicts flattened with "/", the way
    wandb names them, e.g. eval's {"all": {"accuracy": x}} -> "all/accuracy").

The CUDA-specific strings inside the reference source are patched by the shell
script when it copies the tree; nothing here edits files.
"""
import json
import math
import os
import runpy
import sys
import time
import types

import torch
from torch.optim.optimizer import Optimizer

torch.set_num_threads(int(os.environ.get("REF_THREADS", 2)))


# --------------------------------------------------------------------------
# AdamATan2 on plain PyTorch ops.
#
# Mirrors the update of the `adam-atan2` 0.0.3 CUDA kernel (also what
# src/train/optim.rs implements), per parameter tensor and step t:
#     p <- p * (1 - lr * wd)                        (decoupled weight decay)
#     m <- b1 * m + (1 - b1) * g
#     v <- b2 * v + (1 - b2) * g^2
#     p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
# REF_ATAN2=hat switches the last line to the fully bias-corrected form
#     p <- p - lr * atan2(m / (1 - b1^t), sqrt(v / (1 - b2^t)))
# which only differs while 1 - b1^t is far from 1 (the first few dozen steps).
# --------------------------------------------------------------------------
class AdamATan2(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2):
        if float(lr) < 0.0:
            raise ValueError(f"bad learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"bad betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"bad weight_decay: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self._hat_form = os.environ.get("REF_ATAN2", "kernel") == "hat"

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "closures are not supported"
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr = float(group["lr"])  # the reference assigns a float each step; a tensor also works
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                m, v = st["exp_avg"], st["exp_avg_sq"]

                p.mul_(1.0 - lr * wd)
                m.lerp_(g, 1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)

                bc1 = 1.0 - b1 ** t
                bc2 = 1.0 - b2 ** t
                if self._hat_form:
                    p.add_(torch.atan2(m / bc1, (v / bc2).sqrt()), alpha=-lr)
                else:
                    p.add_(torch.atan2(m, v.sqrt() / math.sqrt(bc2)), alpha=-lr / bc1)


_atan2_mod = types.ModuleType("adam_atan2")
_atan2_mod.AdamATan2 = AdamATan2
sys.modules["adam_atan2"] = _atan2_mod


# --------------------------------------------------------------------------
# Metric capture: every wandb.log(...) call becomes one JSONL record.
# --------------------------------------------------------------------------
METRICS_PATH = os.path.abspath(os.environ.get("REF_METRICS", "bench/out/reference_metrics.jsonl"))
os.makedirs(os.path.dirname(METRICS_PATH), exist_ok=True)
open(METRICS_PATH, "w").close()  # fresh file per run
_T0 = time.time()


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _to_json(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and getattr(v, "size", 1) == 1:  # numpy scalars / 0-d arrays
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


def _record(metrics, step=None):
    rec = {"step": step, "wall_s": round(time.time() - _T0, 3)}
    rec.update({k: _to_json(v) for k, v in _flatten(dict(metrics)).items()})
    with open(METRICS_PATH, "a") as f:
        f.write(json.dumps(rec) + "\n")


try:
    import wandb  # noqa: E402

    def _wrap_log(log_fn):
        if getattr(log_fn, "_ref_capture", False):
            return log_fn

        def _logging_wrapper(data, step=None, **kwargs):
            _record(data, step)
            return log_fn(data, step=step, **kwargs)

        _logging_wrapper._ref_capture = True
        return _logging_wrapper

    # wandb.init() rebinds the module-level wandb.log to the new run's method,
    # so the wrapper is (re)installed both now and after every init.
    _orig_init = wandb.init

    def _init_wrapper(*args, **kwargs):
        run = _orig_init(*args, **kwargs)
        wandb.log = _wrap_log(wandb.log)
        return run

    wandb.init = _init_wrapper
    wandb.log = _wrap_log(wandb.log)
except ImportError:
    sys.exit("wandb is not installed: pip install wandb (it runs with WANDB_MODE=disabled)")


# --------------------------------------------------------------------------
# Hand over to the reference entry point, with hydra seeing our argv.
# --------------------------------------------------------------------------
if __name__ == "__main__":
    os.environ.setdefault("DISABLE_COMPILE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):  # force the single-process path
        os.environ.pop(var, None)
    script = os.path.abspath(os.environ.get("REF_ENTRY", "pretrain.py"))
    sys.path.insert(0, os.path.dirname(script))
    sys.argv = [script] + sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
