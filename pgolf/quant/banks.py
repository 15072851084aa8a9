"""The record's weight banks <-> per-layer export names (FRONTIER F2.3, F5.3, T:2573-2626).

    qo_bank[i] -> blocks.i.attn.c_q.weight     qo_bank[n+i] -> blocks.i.attn.proj.weight
    kv_bank[i] -> blocks.i.attn.c_k.weight     kv_bank[n+i] -> blocks.i.attn.c_v.weight
    mlp_up_bank[i] -> blocks.i.mlp.fc.weight   mlp_down_bank[i] -> blocks.i.mlp.proj.weight

A state dict without banks (pgolf's seed-architecture GPT already uses these names)
passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")


def has_banks(state: Mapping[str, Tensor]) -> bool:
    return any(b in state for b in BANKS)


def unbank(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if not has_banks(state):
        return dict(state)
    n = state["mlp_up_bank"].shape[0]
    out: dict[str, Tensor] = {}
    for k, t in state.items():
        if k == "qo_bank":
            for i in range(n):
                out[f"blocks.{i}.attn.c_q.weight"], out[f"blocks.{i}.attn.proj.weight"] = t[i], t[n + i]
        elif k == "kv_bank":
            for i in range(n):
                out[f"blocks.{i}.attn.c_k.weight"], out[f"blocks.{i}.attn.c_v.weight"] = t[i], t[n + i]
        elif k == "mlp_up_bank":
            for i in range(n):
                out[f"blocks.{i}.mlp.fc.weight"] = t[i]
        elif k == "mlp_down_bank":
            for i in range(n):
                out[f"blocks.{i}.mlp.proj.weight"] = t[i]
        else:
            out[k] = t
    return out


def rebank(flat: Mapping[str, Tensor], template: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `unbank` for a template that has banks (in the template's dtypes)."""
    if not has_banks(template):
        return dict(flat)
    n = template["mlp_up_bank"].shape[0]
    parts = {
        "qo_bank": [f"blocks.{i}.attn.c_q.weight" for i in range(n)]
        + [f"blocks.{i}.attn.proj.weight" for i in range(n)],
        "kv_bank": [f"blocks.{i}.attn.c_k.weight" for i in range(n)]
        + [f"blocks.{i}.attn.c_v.weight" for i in range(n)],
        "mlp_up_bank": [f"blocks.{i}.mlp.fc.weight" for i in range(n)],
        "mlp_down_bank": [f"blocks.{i}.mlp.proj.weight" for i in range(n)],
    }
    used = {name for names in parts.values() for name in names}
    out = {k: v for k, v in flat.items() if k not in used}
    for bank, names in parts.items():
        if bank in template:
            out[bank] = torch.stack([flat[nm] for nm in names]).to(template[bank].dtype)
    return out
