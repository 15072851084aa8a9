"""The frontier record's gates (FRONTIER F2.2, F2.4 item 7, F2.7): small pure functions.

* `input_smear`: the input-dependent SmearGate on the raw token embedding, masked at BOS;
* `head_gate`: the per-head attention output gates (sparse, dense, and #1667's 2*sigmoid);
* `skip_merge`: the U-Net skip, plain (the seed) or sigmoid-gated.

Everything runs in the activation dtype, as the record computes them under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.data.tokenizer import BOS_ID


def input_smear(x: Tensor, ids: Tensor, gate_w: Tensor, lam: Tensor, bos_fix: bool = True) -> Tensor:
    """x_t + lam * sigmoid(gate_w . x_t[:window]) * x_{t-1}, for t >= 1 of every row.

    x [B, T, d] is the raw embedding; gate_w [1, window]. With `bos_fix` nothing is added at
    a BOS, so a document's first token never sees the previous document's last one (#1851).
    The added term is the raw previous embedding: the smear does not chain.
    """
    window = gate_w.size(-1)
    g = lam.to(x.dtype) * torch.sigmoid(F.linear(x[:, 1:, :window], gate_w.to(x.dtype)))
    prev = x[:, :-1]
    if bos_fix:
        prev = prev * (ids[:, 1:] != BOS_ID).to(x.dtype).unsqueeze(-1)
    return torch.cat((x[:, :1], x[:, 1:] + g * prev), dim=1)


def head_gate(kind: str, n: Tensor, weight: Tensor, scale: float = 1.0, window: int = 12) -> Tensor:
    """Per-head multiplier [B, T, H] for the attention output y [B, T, H, D].

    kind "sparse": sigmoid(scale * W . n[:window]), W [H, window] (#1787; init 0 -> 0.5);
    "dense": sigmoid(W . n), W [H, d] (arXiv:2505.06708); "out": 2*sigmoid(W . n[:window])
    (#1667; init 0 -> 1). `n` is the gate's source: the attention input (or q for "out").
    """
    w = weight.to(n.dtype)
    if kind == "sparse":
        return torch.sigmoid(scale * F.linear(n[..., :window], w))
    if kind == "dense":
        return torch.sigmoid(F.linear(n, w))
    if kind == "out":
        return 2.0 * torch.sigmoid(F.linear(n[..., :window], w))
    raise ValueError(f"unknown attention gate {kind!r}")


def skip_merge(x: Tensor, skip: Tensor, weight: Tensor, gate: Tensor | None) -> Tensor:
    """x + w*s (the seed), or lerp(w*s, x, sigmoid(g)) = g*x + (1-g)*w*s when gated (#1089)."""
    scaled = weight.to(x.dtype)[None, None, :] * skip
    if gate is None:
        return x + scaled
    return torch.lerp(scaled, x, torch.sigmoid(gate.to(x.dtype))[None, None, :])
