"""The frontier record's tensor names (PR #1855) and pgolf's, both ways (FRONTIER F2.3, F2.11).

The record keeps its block matrices in four banks; pgolf keeps one `CastedLinear` per
projection under the names the record itself exports (`blocks.i.attn.c_q.weight`, ...), because
Newton-Schulz is per matrix either way. Layer i of n:

    qo_bank[i] = c_q,  qo_bank[n+i] = attn.proj,  kv_bank[i] = c_k,  kv_bank[n+i] = c_v,
    mlp_up_bank[i] = mlp.fc,  mlp_down_bank[i] = mlp.proj

Every other tensor has the same name in both. `from_record_state_dict` reads a record state
dict (banked, as `train_gpt.py` holds it, or unbanked, as it exports it) into pgolf names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pgolf.errors import ArtifactError

# bank -> [(per-layer name template, offset in units of num_layers)]
BANKS: dict[str, list[tuple[str, int]]] = {
    "qo_bank": [("blocks.{i}.attn.c_q.weight", 0), ("blocks.{i}.attn.proj.weight", 1)],
    "kv_bank": [("blocks.{i}.attn.c_k.weight", 0), ("blocks.{i}.attn.c_v.weight", 1)],
    "mlp_up_bank": [("blocks.{i}.mlp.fc.weight", 0)],
    "mlp_down_bank": [("blocks.{i}.mlp.proj.weight", 0)],
}


def bank_members(bank: str, num_layers: int) -> list[str]:
    """pgolf names of a bank's slices, in bank order."""
    out = [""] * (num_layers * len(BANKS[bank]))
    for template, part in BANKS[bank]:
        for i in range(num_layers):
            out[part * num_layers + i] = template.format(i=i)
    return out


def bank_of(name: str, num_layers: int) -> tuple[str, int] | None:
    """(bank, index) of a pgolf per-layer matrix, or None for a tensor the record keeps as it is."""
    for bank in BANKS:
        members = bank_members(bank, num_layers)
        if name in members:
            return bank, members.index(name)
    return None


def has_banks(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict holds the record's banks (its training form) rather than per-layer names."""
    return any(b in state for b in BANKS)


def from_record_state_dict(
    state: Mapping[str, Tensor], num_layers: int | None = None, lanes: bool = True
) -> dict[str, Tensor]:
    """The record's state dict in pgolf names (banks split into per-layer matrices).

    `num_layers` defaults to the depth the MLP bank holds. `lanes=False` drops
    `parallel_*_lambdas`, which the record creates even with PARALLEL_START_LAYER=0 and
    pgolf only when the lanes exist.
    """
    if num_layers is None:
        if "mlp_up_bank" not in state:
            return dict(state)
        num_layers = int(state["mlp_up_bank"].shape[0])
    out: dict[str, Tensor] = {}
    for name, t in state.items():
        if name in BANKS:
            members = bank_members(name, num_layers)
            if t.ndim != 3 or t.size(0) != len(members):
                raise ArtifactError(f"{name}: shape {list(t.shape)}, expected [{len(members)}, rows, cols]")
            for j, member in enumerate(members):
                out[member] = t[j]
        elif not lanes and name.startswith("parallel_") and name.endswith("_lambdas"):
            continue
        else:
            out[name] = t
    return out


def to_record_state_dict(state: Mapping[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """pgolf names back to the record's banks (the inverse of `from_record_state_dict`)."""
    out = dict(state)
    for bank in BANKS:
        members = bank_members(bank, num_layers)
        if all(m in out for m in members):
            out[bank] = torch.stack([out.pop(m) for m in members])
    return out


def tensor_table(model) -> list[dict]:
    """Every parameter: name, shape, count, optimiser group, and the record's bank (if any)."""
    from pgolf.train.optim import route_parameters

    groups = route_parameters(model)
    group_of = {id(p): g for g in ("embed", "head", "matrix", "scalar") for p in getattr(groups, g)}
    n = model.config.num_layers
    rows = []
    for name, p in model.named_parameters():
        where = bank_of(name, n)
        rows.append(
            {
                "name": name,
                "shape": list(p.shape),
                "params": p.numel(),
                "group": group_of[id(p)],
                "bank": None if where is None else f"{where[0]}[{where[1]}]",
            }
        )
    return rows


def record_table(rows: list[dict]) -> list[dict]:
    """The same tensors grouped as the record holds them (F2.11): banks as one row each."""
    out: list[dict] = []
    banks: dict[str, dict] = {}
    for r in rows:
        if r["bank"] is None:
            out.append({k: r[k] for k in ("name", "shape", "params", "group")})
            continue
        bank = r["bank"].split("[")[0]
        if bank not in banks:
            banks[bank] = {"name": bank, "shape": [0, *r["shape"]], "params": 0, "group": r["group"]}
            out.append(banks[bank])
        banks[bank]["shape"][0] += 1
        banks[bank]["params"] += r["params"]
    order = {"embed": 0, "head": 0, "matrix": 1, "scalar": 2}  # as F2.11 lists them
    return sorted(out, key=lambda r: order[r["group"]])
