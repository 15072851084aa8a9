"""Muon: momentum, Nesterov, Newton-Schulz orthogonalisation, decoupled weight decay.

The orthogonalisation of each matrix is done by one rank (parameter i on rank
i mod W) and the results are summed into a bf16 buffer, as the seed does; the
update therefore does not depend on the world size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgolf import dist

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def newton_schulz5(g: Tensor, steps: int = 5, eps: float = NS_EPS, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Approximately orthogonalise a matrix with the seed's quintic iteration (bf16 in the seed).

    `dtype=float32` exists for CPUs without native bf16 matrix products, where they
    are emulated and many times slower; the iteration is the same.
    """
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:  # iterate on the wide orientation
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        # (c * A) @ A, as the seed's `b * A + c * A @ A` parses: in bf16 it is not c * (A @ A).
        B = b * A + (c * A) @ A
        x = a * x + B @ x
    return x.T if transposed else x


def aspect_scale(rows: int, cols: int) -> float:
    return max(1.0, rows / cols) ** 0.5


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float,
        momentum: float,
        backend_steps: int,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        orthogonalize=None,
        dtype: torch.dtype = torch.bfloat16,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay, nesterov=nesterov
        )
        super().__init__(params, defaults)
        # Swappable so CUDA runs can use a torch.compile'd copy of newton_schulz5.
        self.orthogonalize = orthogonalize or newton_schulz5
        self.dtype = dtype  # of the orthogonalisation and the summed update buffer

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        active = dist.active()
        world = torch.distributed.get_world_size() if active else 1
        rank = torch.distributed.get_rank() if active else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            total = sum(p.numel() for p in params)
            flat = torch.zeros(total, dtype=self.dtype, device=params[0].device)
            offset = 0
            for i, p in enumerate(params):
                n = p.numel()
                if i % world == rank and p.grad is not None:
                    g = p.grad.float() if p.grad.dtype != torch.float32 else p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=mu)
                    u = self.orthogonalize(g, steps=group["backend_steps"], dtype=self.dtype)
                    u = u * aspect_scale(p.size(0), p.size(1))
                    flat[offset : offset + n] = u.reshape(-1)
                offset += n
            if active:
                dist.all_reduce_sum(flat)
            offset = 0
            for p in params:
                n = p.numel()
                if wd > 0:
                    p.mul_(1.0 - lr * wd)
                p.add_(flat[offset : offset + n].view_as(p).to(p.dtype), alpha=-lr)
                offset += n
        return loss
