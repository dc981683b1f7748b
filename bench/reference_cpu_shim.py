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

torch.set_num_threads(int(os.environ.get("REF_THREADS", 2)))


# --------------------------------------------------------------------------
# AdamATan2 on plain PyTorch ops (bench/adam_atan2_torch.py, shared with
# bench/reference_step.py), registered as the `adam_atan2` module.
# --------------------------------------------------------------------------
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adam_atan2_torch import AdamATan2  # noqa: E402

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
