"""Full-Hessian GPTQ on the seed's int6 grid (BEYOND 4.1-4.3), as an alternative to RTN.

The output is the same as RTN's (int8 values in [-31, 31] and an fp16 step per row),
so an artifact does not record, and its loader does not need to know, which was used.

Choice of clip: the seed's five percentiles are each tried (one GPTQ pass per
candidate, run together as a batch) and the candidate with the smallest *output*
error tr((W - Ŵ) H (W - Ŵ)ᵀ) / rows is kept, H the undamped calibration Hessian.
GPTQ trades weight error for output error on purpose, so choosing by plain weight MSE
(as PR #1019 does) would judge it by the quantity it does not minimise.

Calibration data can only be training tokens (`train_calibration_tokens`, which
lists the train split and nothing else) or text the model samples itself
(`generate_calibration_tokens`). Validation tokens are never an option (BEYOND 4.3).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pgolf.errors import DataError
from pgolf.quant.rtn import INT6_CLIP, INT6_PERCENTILES, error_stats, int6_row_scales, quantize_int6

BLOCK = 128
DAMP = 0.01
TRAIN_SHARD = re.compile(r"fineweb_train_\d{6}\.bin$")


# --------------------------------------------------------------------------- calibration data
def train_calibration_tokens(data_dir: str | Path, n_seqs: int, seq_len: int) -> Tensor:
    """The first n_seqs x seq_len tokens of the TRAINING split, as [n, seq_len] int64.

    There is deliberately no split argument: only `fineweb_train_*.bin` files are listed
    and each name is checked again before it is opened.
    """
    from pgolf.data import shards

    need = n_seqs * seq_len
    parts: list[np.ndarray] = []
    have = 0
    for path in shards.list_shards(data_dir, "train"):
        if not TRAIN_SHARD.search(Path(path).name):  # defence in depth: never a val shard
            raise DataError(f"{path}: not a training shard; calibration reads the train split only")
        toks = shards.read_shard(path)
        take = min(len(toks), need - have)
        parts.append(np.asarray(toks[:take], dtype=np.int64))
        have += take
        if have >= need:
            break
    n = have // seq_len
    if n == 0:
        raise DataError(
            f"{data_dir}: the train split has {have} tokens, fewer than one calibration sequence ({seq_len})"
        )
    return torch.from_numpy(np.concatenate(parts)[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def generate_calibration_tokens(
    model: nn.Module,
    n_seqs: int,
    seq_len: int,
    temperature: float = 0.8,
    seed: int = 1337,
    batch: int = 8,
    bos_id: int = 1,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Sequences the model samples itself from BOS (fixed seed): reads no data at all."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    model.eval()
    for start in range(0, n_seqs, batch):
        b = min(batch, n_seqs - start)
        x = torch.full((b, 1), bos_id, dtype=torch.long, device=device)
        for _ in range(seq_len - 1):
            logits = model.compute_logits(model.forward_hidden(x)[:, -1:]).float()[:, -1]
            probs = torch.softmax(logits / temperature, dim=-1)
            x = torch.cat((x, torch.multinomial(probs, 1, generator=gen)), dim=1)
        out.append(x.cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- Hessians
@torch.no_grad()
def collect_hessians(
    model: nn.Module, batches: Iterable[Tensor], weight_names: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """H = mean over calibration positions of x xᵀ for the input x of every linear layer.

    Keys are weight names ("blocks.0.attn.c_q.weight"); `weight_names` restricts them.
    """
    wanted = None if weight_names is None else set(weight_names)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook_for(key: str) -> Callable:
        def hook(_mod, inputs, _out):
            x = inputs[0].detach().reshape(-1, inputs[0].size(-1)).double()
            sums[key] = sums[key] + x.T @ x if key in sums else x.T @ x
            counts[key] = counts.get(key, 0) + x.size(0)

        return hook

    for name, mod in model.named_modules():
        key = f"{name}.weight"
        if isinstance(mod, nn.Linear) and (wanted is None or key in wanted):
            hooks.append(mod.register_forward_hook(hook_for(key)))
    try:
        model.eval()
        device = next(model.parameters()).device
        for ids in batches:
            model.forward_hidden(ids.to(device))
    finally:
        for h in hooks:
            h.remove()
    return {k: (s / counts[k]).float().cpu() for k, s in sums.items()}


# --------------------------------------------------------------------------- the quantiser
def output_error(w: Tensor, recon: Tensor, h: Tensor) -> float:
    """tr((W - Ŵ) H (W - Ŵ)ᵀ) / rows: the mean squared output error on the calibration inputs."""
    d = w.double() - recon.double()
    return float(((d @ h.double()) * d).sum() / max(1, w.size(0)))


@contextlib.contextmanager
def _few_threads(device: torch.device):
    """One CPU thread for the column loop: thousands of small ops, where OpenMP fan-out costs more
    than it gains (measured 0.15 s vs 4.3 s for a 384x128 matrix on a busy 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _quantize_columns(work: Tensor, s: Tensor, u: Tensor, block: int) -> Tensor:
    """GPTQ's loop on permuted weights `work` [P, rows, cols] (updated in place) with steps `s`
    [P, rows] and the upper Cholesky factor `u` of H^-1; returns the integer grid values."""
    cols = work.size(-1)
    q = torch.zeros_like(work)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = work[:, :, i1:i2].clone()
        e1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, :, j]
            qj = torch.clamp(torch.round(col / s), -INT6_CLIP, INT6_CLIP)
            q[:, :, i1 + j] = qj
            err = (col - qj * s) / u1[j, j]  # the rounding error, scaled for the feedback
            w1[:, :, j:] -= err.unsqueeze(-1) * u1[j, j:]
            e1[:, :, j] = err
        if i2 < cols:
            work[:, :, i2:] -= e1 @ u[i1:i2, i2:]  # the block's error, propagated to every later column
    return q


def gptq_int6(
    w: Tensor,
    h: Tensor,
    percentiles: Iterable[float] = INT6_PERCENTILES,
    block: int = BLOCK,
    damp: float = DAMP,
    act_order: bool = True,
) -> tuple[Tensor, Tensor, dict]:
    """GPTQ of one 2-D weight [rows, cols] with Hessian h [cols, cols] on the int6 grid.

    Returns (q int8 [rows, cols], scale fp16 [rows], info) like `rtn.quantize_int6`; info has
    the chosen percentile and the output error of GPTQ and of RTN on the same H.
    """
    w0 = w.detach().float()
    rows, cols = w0.shape
    h0 = h.detach().float()
    hd = h0.clone()
    dead = torch.diagonal(hd) == 0
    hd[dead, dead] = 1.0  # no signal: any value works, the column is zeroed below
    wz = w0.clone()
    wz[:, dead] = 0.0
    hd += damp * torch.diagonal(hd).mean() * torch.eye(cols, device=hd.device)
    order = torch.diagonal(hd) if act_order else -torch.arange(cols, device=hd.device, dtype=hd.dtype)
    perm = torch.argsort(order, descending=True)
    inv = torch.argsort(perm)
    hp = hd[perm][:, perm].double()
    # Upper Cholesky factor of H^-1: row j holds the updates column j's error makes to later columns.
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hp)), upper=True).float()

    ps = list(percentiles)
    scales = torch.stack([int6_row_scales(wz, p) for p in ps])  # [P, rows] fp16, from the un-updated rows
    s = scales.float()
    work = wz[:, perm].unsqueeze(0).repeat(len(ps), 1, 1)  # [P, rows, cols]: all candidates at once
    with _few_threads(work.device):
        q = _quantize_columns(work, s, u, block)[:, :, inv]

    best = None
    for k, p in enumerate(ps):
        e = output_error(w0, q[k] * s[k][:, None], h0)
        if best is None or e < best[1]:
            best = (k, e, p)
    k, err, p = best
    rq, rs, rinfo = quantize_int6(w0, ps)
    info = {
        "percentile": p,
        "out_err": err,
        "rtn_out_err": output_error(w0, rq.float() * rs.float()[:, None], h0),
        "rtn_percentile": rinfo["percentile"],
        **{f"rtn_{k2}": v for k2, v in error_stats(w0, rq.float() * rs.float()[:, None]).items()},
        "dead_columns": int(dead.sum()),
    }
    return q[k].to(torch.int8).cpu(), scales[k].cpu(), info


def make_int6_fn(
    hessians: dict[str, Tensor], device: str | torch.device = "cpu", **kw
) -> Callable[[str, Tensor], tuple[Tensor, Tensor, dict]]:
    """An `int6_fn` for `rtn.quantize_state_dict`: GPTQ (on `device`) where there is a Hessian, else RTN."""

    def fn(name: str, t: Tensor) -> tuple[Tensor, Tensor, dict]:
        h = hessians.get(name)
        if h is None or t.ndim != 2 or h.shape != (t.size(1), t.size(1)):
            q, scale, info = quantize_int6(t)
            return q, scale, {**info, "method": "rtn"}
        q, scale, info = gptq_int6(t.to(device), h.to(device), **kw)
        return q, scale, {**info, "method": "gptq"}

    return fn
