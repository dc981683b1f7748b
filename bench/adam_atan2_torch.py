"""AdamATan2 on plain PyTorch ops (no CUDA extension needed).

Shared by bench/reference_cpu_shim.py (which registers it as the `adam_atan2`
module for the reference trainer) and bench/reference_step.py (step timing).

Mirrors the update of the `adam-atan2` 0.0.3 CUDA kernel (also what
src/step/optim.rs implements), per parameter tensor and step t:
    p <- p * (1 - lr * wd)                        (decoupled weight decay)
    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
REF_ATAN2=hat switches the last line to the fully bias-corrected form
    p <- p - lr * atan2(m / (1 - b1^t), sqrt(v / (1 - b2^t)))
which only differs while 1 - b1^t is far from 1 (the first few dozen steps).
"""
import math
import os

import torch
from torch.optim.optimizer import Optimizer


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
