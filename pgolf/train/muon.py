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


# Polar Express per-iteration coefficients (PR #1344, adopted by #1787/#1855; FRONTIER F3.3).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
# optim.muon_ns_coeffs: one tuple is repeated every step; a longer table gives one tuple per step.
NS_TABLES = {"seed": (NS_COEFFS,), "polar_express": POLAR_EXPRESS}


def newton_schulz(g: Tensor, coeffs, eps: float = NS_EPS, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Orthogonalise a matrix with one (a, b, c) per iteration, as #1855 computes it:
    X <- a X + (b A + c (A A)) X with A = X X^T, on the wide orientation, X0 = G / (|G|_F + eps)."""
    x = g.to(dtype)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + eps)
    for a, b, c in coeffs:
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.T if transposed else x


def polar_express(g: Tensor, steps: int = 5, eps: float = NS_EPS, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The record's `zeropower_via_newtonschulz5`: the first `steps` Polar Express tuples."""
    return newton_schulz(g, POLAR_EXPRESS[:steps], eps, dtype)


def orthogonalizer(cfg):
    """The orthogonalisation an OptimConfig asks for (called as fn(g, steps=, dtype=))."""
    return polar_express if cfg.muon_ns_coeffs == "polar_express" else newton_schulz5


def row_normalize(u: Tensor, floor: float = 1e-7) -> Tensor:
    """MuonEq-R (#1217/#1285): every row to unit norm; the norm in fp32, divided in u's dtype."""
    rn = u.float().norm(dim=-1, keepdim=True).clamp_min(floor)
    return u / rn.to(u.dtype)


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
        row_normalize: bool = False,
        momentum_dtype: torch.dtype = torch.float32,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay, nesterov=nesterov
        )
        if row_normalize:
            defaults["row_normalize"] = True
        super().__init__(params, defaults)
        # Swappable so CUDA runs can use a torch.compile'd copy of newton_schulz5.
        self.orthogonalize = orthogonalize or newton_schulz5
        self.dtype = dtype  # of the orthogonalisation and the summed update buffer
        # Of the gradient copy and the momentum buffer: fp32 in the seed, bf16 in #1855.
        self.momentum_dtype = momentum_dtype

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
                    g = p.grad.to(self.momentum_dtype) if p.grad.dtype != self.momentum_dtype else p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    if buf.dtype != g.dtype:  # Optimizer.load_state_dict casts state to the parameter's dtype
                        buf = state["momentum_buffer"] = buf.to(g.dtype)
                    buf.mul_(mu).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=mu)
                    if group.get("row_normalize", False):  # after Nesterov, before NS (F3.3)
                        g = row_normalize(g)
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
