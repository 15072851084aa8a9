"""Small building blocks: the casting linear layer (with QAT), RMS norm, partial RoPE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QAT_LEVELS = 31  # the fake quantiser's scale is row_max / 31, grid [-32, 31]


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMS norm over the last axis with PyTorch's default epsilon."""
    return F.rms_norm(x, (x.size(-1),))


class _LeakyReluSquare(torch.autograd.Function):
    """leaky_relu(x, 0.5)² keeping only x for the backward, whose gradient is g·2·leaky_relu(x, 0.25).

    Bit for bit what autograd gives for the two-op chain (every factor it drops or merges is a
    power of two, exact in binary floating point), in two passes over the activation instead of
    four and one saved tensor instead of two: the MLP's widest activation dominates a CPU step's
    element-wise time.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return F.leaky_relu(x, negative_slope=0.5).square()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return F.leaky_relu(x, negative_slope=0.25).mul_(grad).mul_(2.0)


def leaky_relu_square(x: Tensor) -> Tensor:
    """The seed's MLP activation, leaky_relu(x, 0.5)²."""
    return _LeakyReluSquare.apply(x)


def fake_quant_int6(w: Tensor) -> Tensor:
    """The seed's QAT grid: per-row step max(|w|_max/31, 1/31), values clamped to [-32, 31].

    Computed in fp32 without gradient; callers use it through a straight-through estimator.
    """
    with torch.no_grad():
        w32 = w.float()
        step = (w32.abs().amax(dim=1) / QAT_LEVELS).clamp_min(1.0 / QAT_LEVELS)
        return torch.clamp(torch.round(w32 / step[:, None]), -QAT_LEVELS - 1, QAT_LEVELS) * step[:, None]


class CastedLinear(nn.Linear):
    """A linear layer whose fp32 master weight is cast to the activation dtype at call time.

    `qat` switches on straight-through int6 fake quantisation (training mode only).
    `zero_init` marks layers the global initialiser zero-fills. `draw_init=False` leaves the
    weight uninitialised (no random numbers drawn): the model's initialiser fills it.
    """

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False, draw_init: bool = True):
        self.draw_init = draw_init  # read by reset_parameters, which nn.Linear.__init__ calls
        super().__init__(in_features, out_features, bias=False)
        self.zero_init = zero_init
        self.qat = False

    def reset_parameters(self) -> None:
        if self.draw_init:
            super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype)
        if self.qat and self.training:
            wq = fake_quant_int6(self.weight).to(x.dtype)
            w = w + (wq - w).detach()
        return F.linear(x, w)


def ntk_rope_base(base: float, seq_len: int, rotated: int, ref_len: int) -> float:
    """The seed's NTK-style rescaling: base * (T/ref)^(r/(r-2)) above the reference length."""
    if seq_len <= ref_len:
        return base
    return base * (seq_len / ref_len) ** (rotated / (rotated - 2))


ROPE_TABLES = ("seed", "fp32", "frontier")


def rope_tables(
    seq_len: int, rotated: int, base: float, ref_len: int, device: torch.device, table: str = "seed"
) -> tuple[Tensor, Tensor]:
    """cos/sin tables [T, rotated/2] (fp32 tensors) for positions 0..T-1.

    `table="seed"` builds them as the seed does. Its model is cast to bf16 before training,
    which turns the rotary module's `inv_freq` buffer into bf16; for T <= ref_len the seed
    multiplies that buffer by bf16 positions (integers above 256 round) and takes cos/sin in
    bf16 -- up to 0.24 away from an fp32 table at T = 256. Above ref_len its NTK branch
    recomputes the frequencies in fp32. `table="fp32"` is fp32 at every length. The bf16
    values are returned widened to fp32 (exact), so callers cast them as the seed does.
    `table="frontier"` is PR #1855's: the same bf16-cast buffer, but read back as fp32 and
    multiplied by fp32 positions, at every length it does not rescale.
    """
    if table not in ROPE_TABLES:
        raise ValueError(f"rope table must be one of {ROPE_TABLES}, got {table!r}")
    if table == "seed" and seq_len <= ref_len:
        # The seed's buffer: made in fp32 on the CPU at construction, then cast to bf16 with the model.
        inv_freq = (1.0 / (base ** (torch.arange(0, rotated, 2, dtype=torch.float32) / rotated))).to(device)
        inv_freq = inv_freq.to(torch.bfloat16)
    elif table == "frontier" and ntk_rope_base(base, seq_len, rotated, ref_len) == base:
        inv_freq = 1.0 / (base ** (torch.arange(0, rotated, 2, dtype=torch.float32) / rotated))
        inv_freq = inv_freq.to(torch.bfloat16).float().to(device)
    else:
        b = ntk_rope_base(base, seq_len, rotated, ref_len)
        inv_freq = 1.0 / (b ** (torch.arange(0, rotated, 2, dtype=torch.float32, device=device) / rotated))
    positions = torch.arange(seq_len, dtype=inv_freq.dtype, device=device)
    angles = torch.outer(positions, inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_partial_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*cos.size(-1) channels of each head (halves, not interleaved).

    x: [B, T, H, D]; cos/sin [T, r/2] (row positions) or [B, T, r/2] (per-row positions).
    With x1, x2 the two halves: x1' = x1 cos + x2 sin, x2' = -x1 sin + x2 cos
    (a rotation by -theta, exactly as the seed writes it).
    """
    half = cos.size(-1)
    r = 2 * half
    c = cos.unsqueeze(-2).to(x.dtype)
    s = sin.unsqueeze(-2).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:r]
    rotated = torch.cat((x1 * c + x2 * s, x2 * c - x1 * s), dim=-1)
    if r == x.size(-1):
        return rotated
    return torch.cat((rotated, x[..., r:]), dim=-1)


class Rotary(nn.Module):
    """Caches the partial-RoPE tables per (sequence length, device)."""

    def __init__(self, rotated: int, base: float, ref_len: int, table: str = "seed"):
        super().__init__()
        self.rotated, self.base, self.ref_len, self.table = rotated, base, ref_len, table
        self._cache: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def forward(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (seq_len, str(device))
        if key not in self._cache:
            # Built outside inference mode: tables first made during an evaluation are reused in training.
            with torch.inference_mode(False):
                self._cache[key] = rope_tables(seq_len, self.rotated, self.base, self.ref_len, device, self.table)
        return self._cache[key]


def layer_scale(layer: int, enabled: bool) -> float:
    """1/sqrt(layer+1) on block inputs when LN_SCALE is on."""
    return 1.0 / math.sqrt(layer + 1) if enabled else 1.0
