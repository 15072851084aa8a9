"""GPTQ with SDClip (FRONTIER F5.4), and the int8 per-row gate quantiser (F5.6).

SDClip replaces the seed's percentile search by one clip per row: the grid step is
s_r = fp16(k * std(W[r]) / cr), cr = 2^(bits-1) - 1 (31 for int6, 63 for int7), and
the only clipping is the clamp of the integer code, so values beyond +-k*std saturate
and GPTQ's error feedback spreads the saturation error over the later columns.

Numerics are the record's: fp32 throughout (H, both Cholesky factorisations, the
column loop), damping 0.01 * mean(diag H) after dead columns get H_jj = 1, act-order
by descending diag H, blocks of 128 columns. Same operations in the same order, so
the codes are bit-identical to the record's function (tests/test_quant_frontier.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK = 128
DAMP = 0.01
GATE_CLIP = 127


def clip_range(bits: int) -> int:
    """The symmetric integer range of a signed `bits`-bit code: 31 (int6), 63 (int7), 127 (int8)."""
    return 2 ** (bits - 1) - 1


def sdclip_scales(w: Tensor, clip_sigmas: float, cr: int) -> Tensor:
    """fp16 per-row steps fp16(max(k * std_r / cr, 1e-10)); std is the unbiased one, as torch's default."""
    return (clip_sigmas * w.float().std(dim=1) / cr).clamp_min(1e-10).to(torch.float16)


@dataclass
class Protect:
    """AWQ-lite's protected column groups of one tensor (F5.8): quantised on a finer grid."""

    starts: list[int]
    size: int
    clip_range: int  # 127 for the record's AWQ_LITE_BITS=8


@contextlib.contextmanager
def one_thread(device: torch.device):
    """The column loop is thousands of tiny ops: OpenMP fan-out costs more than it gains on a CPU."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def gptq_sdclip(
    w: Tensor,
    h: Tensor,
    clip_sigmas: float,
    cr: int,
    block_size: int = BLOCK,
    protect: Protect | None = None,
    stable_sort: bool = True,
) -> tuple[Tensor, Tensor, dict | None]:
    """GPTQ of one 2-D weight [R, C] with Hessian h [C, C] on the SDClip grid.

    Returns (codes int8 [R, C], steps fp16 [R], awq) where `awq` is None or
    {"starts": int16, "size": int, "s_hi": fp16 [R]} for AWQ-protected groups.
    `stable_sort=False` is the record's argsort (not stable, F8.19): equal diagonal entries
    then come in whatever order torch's sort leaves them, which changes the codes (it does
    for integer-valued activations); the stable sort breaks ties by column index.
    """
    w_orig = w.detach().float().clone()
    rows, cols = w_orig.shape
    H = h.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H.diagonal().add_(DAMP * H.diag().mean())
    perm = torch.argsort(H.diag(), descending=True, stable=stable_sort)
    invperm = torch.argsort(perm)
    work = w_orig[:, perm].clone()
    work[:, dead[perm]] = 0
    H = H[perm][:, perm]
    # Upper Cholesky factor of H^-1: row j holds what column j's error does to the later columns.
    with one_thread(H.device):  # LAPACK's rounding can depend on the thread count: one thread is reproducible
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    row_std = w_orig.std(dim=1)
    s = (clip_sigmas * row_std / cr).clamp_min(1e-10).to(torch.float16)
    sf = s.float()

    awq, mask_perm, sf_hi, cr_hi = None, None, None, cr
    if protect is not None and protect.clip_range > cr:
        mask = torch.zeros(cols, dtype=torch.bool)
        starts = []
        for start in protect.starts:
            end = start + protect.size
            if 0 <= start < end <= cols:
                mask[start:end] = True
                starts.append(start)
        if starts:
            mask_perm = mask[perm].tolist()
            cr_hi = protect.clip_range
            s_hi = (clip_sigmas * row_std / cr_hi).clamp_min(1e-10).to(torch.float16)
            sf_hi = s_hi.float()
            awq = {"starts": torch.tensor(starts, dtype=torch.int16), "size": int(protect.size), "s_hi": s_hi}

    q = torch.zeros(rows, cols, dtype=torch.int8, device=w_orig.device)
    with one_thread(w_orig.device):
        for i1 in range(0, cols, block_size):
            i2 = min(i1 + block_size, cols)
            blk = work[:, i1:i2].clone()
            u_blk = u[i1:i2, i1:i2]
            err_blk = torch.zeros(rows, i2 - i1, device=w_orig.device)
            for j in range(i2 - i1):
                col = blk[:, j]
                if mask_perm is not None and mask_perm[i1 + j]:
                    qc = torch.clamp(torch.round(col / sf_hi), -cr_hi, cr_hi)
                    recon = qc.float() * sf_hi
                else:
                    qc = torch.clamp(torch.round(col / sf), -cr, cr)
                    recon = qc.float() * sf
                q[:, i1 + j] = qc.to(torch.int8)
                err = (col - recon) / u_blk[j, j]
                err_blk[:, j] = err
                blk[:, j:] -= err.unsqueeze(1) * u_blk[j, j:].unsqueeze(0)
            if i2 < cols:
                work[:, i2:] -= err_blk @ u[i1:i2, i2:]  # the block's error, carried to every later column
    return q[:, invperm].cpu(), s.cpu(), awq


def dequant_rows(q: Tensor, s: Tensor) -> Tensor:
    """q * s with one step per row (or a scalar step), in fp32."""
    if s.ndim > 0:
        return q.float() * s.float().view(q.shape[0], *[1] * (q.ndim - 1))
    return q.float() * float(s.item())


def apply_awq_columns(w: Tensor, q: Tensor, starts: Sequence[int], size: int, s_hi: Tensor) -> Tensor:
    """Overwrite the protected column groups of a dequantised weight with q * s_hi (in place)."""
    for start in starts:
        w[:, start : start + size] = q[:, start : start + size].float() * s_hi.float().view(-1, 1)
    return w


# --------------------------------------------------------------------------- gates
def quantize_gate_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row: s_r = fp16(max(max|w_r|, 1e-10) / 127), q = clamp(round(w / s_r), +-127)."""
    wf = w.detach().float().contiguous()
    s = (wf.abs().amax(dim=1).clamp_min(1e-10) / GATE_CLIP).to(torch.float16)
    q = torch.clamp(torch.round(wf / s.float().view(-1, 1)), -GATE_CLIP, GATE_CLIP).to(torch.int8)
    return q, s


def output_error(w: Tensor, recon: Tensor, h: Tensor) -> float:
    """tr((W - Ŵ) H (W - Ŵ)ᵀ): GPTQ's objective on the calibration inputs."""
    d = w.double() - recon.double()
    return float(((d @ h.double()) * d).sum())
