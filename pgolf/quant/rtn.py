"""The seed's export quantisers (SPEC 7.2-7.5, 7.7): classification, int6, int8, fp16, and back.

Everything here is a pure function of its tensor arguments. The packed form is the
seed's: a quantised entry `name` is stored as `name.q` (int8 values) and
`name.scale`; a passthrough entry is stored under `name` itself. `meta[name]` is
"passthrough", "passthrough_ctrl", {"type": "int6"} or {"type": "int8"}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pgolf.config import SEED_CONTROL_PATTERNS

PASSTHROUGH_MAX_NUMEL = 65_536  # "<= 65,536 elements" stays fp16 (bigram.proj has exactly this many)
INT6_CLIP = 31  # grid [-31, 31]
INT6_PERCENTILES = (0.9990, 0.9995, 0.9999, 0.99999, 1.0)
INT8_CLIP = 127
INT8_CLIP_Q = 99.99984 / 100.0  # the seed's INT8_CLIP_PERCENTILE, as a quantile
DROP_PATTERN = "mtp_heads"  # training-only heads never reach the artifact

PASSTHROUGH_KINDS = ("passthrough", "passthrough_ctrl", "passthrough_fp16")
KINDS = ("passthrough", "passthrough_ctrl", "int6", "int8")


# --------------------------------------------------------------------------- classification
def tensor_category(name: str) -> str:
    """The seed's name-based category: embed, mlp, attn or other (checked in this order)."""
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name or (".proj." in name and ".mlp." not in name):
        return "attn"
    return "other"


def classify(
    name: str,
    t: Tensor,
    control_patterns: Iterable[str] = SEED_CONTROL_PATTERNS,
    passthrough_max_numel: int = PASSTHROUGH_MAX_NUMEL,
) -> str:
    """What the export does with one state-dict entry: drop, passthrough, passthrough_ctrl, int6 or int8."""
    if DROP_PATTERN in name:
        return "drop"
    if not t.is_floating_point() or t.numel() <= passthrough_max_numel:
        return "passthrough"
    if any(p and p in name for p in control_patterns):
        return "passthrough_ctrl"
    if tensor_category(name) in ("attn", "mlp"):
        return "int6"
    return "int8"


# --------------------------------------------------------------------------- int6
def int6_clip_values(t32: Tensor, percentile: float) -> Tensor:
    """Per-row clip value: the `percentile` quantile of |t| (linear interpolation), the row max at 1.0."""
    a = t32.abs()
    if percentile >= 1.0:
        return a.amax(dim=1)
    return torch.quantile(a, percentile, dim=1)


def int6_row_scales(t32: Tensor, percentile: float) -> Tensor:
    """fp16 per-row steps fp16(max(c/31, 1/31)); rounded to fp16 before any use."""
    c = int6_clip_values(t32, percentile)
    return (c / INT6_CLIP).clamp_min(1.0 / INT6_CLIP).to(torch.float16)


def round_to_grid(t32: Tensor, step: Tensor, clip: int) -> Tensor:
    """clamp(round(t / step), -clip, clip) as int8; `step` broadcasts (per row or scalar)."""
    return torch.clamp(torch.round(t32 / step), -clip, clip).to(torch.int8)


def _row(scale: Tensor, ndim: int) -> Tensor:
    """A per-row scale shaped to broadcast along the remaining axes."""
    return scale.float().view(-1, *([1] * (ndim - 1)))


def quantize_int6(t: Tensor, percentiles: Iterable[float] = INT6_PERCENTILES) -> tuple[Tensor, Tensor, dict]:
    """int6 with the 5-percentile search: one percentile per tensor, the first strictly-best MSE wins.

    Returns (q int8, scale fp16 [rows] or 0-d, info {"percentile", "mse"}).
    """
    t32 = t.detach().float()
    if t32.ndim != 2:
        amax = float(t32.abs().max()) if t32.numel() else 0.0
        scale = torch.tensor(amax / INT6_CLIP if amax > 0 else 1.0, dtype=torch.float16)
        q = round_to_grid(t32, scale.float(), INT6_CLIP)
        mse = float((t32 - q.float() * scale.float()).square().mean()) if t32.numel() else 0.0
        return q, scale, {"percentile": None, "mse": mse}
    best: tuple[Tensor, Tensor, dict] | None = None
    for p in percentiles:
        scale = int6_row_scales(t32, p)
        q = round_to_grid(t32, _row(scale, 2), INT6_CLIP)
        mse = float((t32 - q.float() * _row(scale, 2)).square().mean())
        if best is None or mse < best[2]["mse"]:
            best = (q, scale, {"percentile": p, "mse": mse})
    assert best is not None, "at least one percentile is needed"
    return best


# --------------------------------------------------------------------------- int8
def quantize_int8(t: Tensor) -> tuple[Tensor, Tensor, dict]:
    """int8 per row: clip at the 0.9999984 quantile, round with the fp32 step, store the step as fp16.

    Non-2-D tensors get one clip value and a 0-d fp32 scale (the seed's rule).
    """
    t32 = t.detach().float()
    if t32.ndim == 2:
        c = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
        clipped = torch.maximum(torch.minimum(t32, c[:, None]), -c[:, None])
        step = (c / INT8_CLIP).clamp_min(1.0 / INT8_CLIP)  # fp32: used for rounding
        q = round_to_grid(clipped, step[:, None], INT8_CLIP)
        scale = step.to(torch.float16)  # what is stored (and used to dequantise)
    else:
        c = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q)) if t32.numel() else 0.0
        clipped = t32.clamp(-c, c)
        scale = torch.tensor(c / INT8_CLIP if c > 0 else 1.0, dtype=torch.float32)
        q = round_to_grid(clipped, scale, INT8_CLIP)
    mse = float((t32 - dequantize(q, scale, torch.float32)).square().mean()) if t32.numel() else 0.0
    return q, scale, {"mse": mse}


# --------------------------------------------------------------------------- dequantisation
def dequantize(q: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """q * scale (per-row scale broadcast along the row, or a scalar), cast to `dtype`."""
    if scale.ndim > 0:
        return (q.float() * _row(scale, q.ndim)).to(dtype)
    return (q.float() * scale.float()).to(dtype)


def restore_passthrough(stored: Tensor, dtype: torch.dtype) -> Tensor:
    """The seed's rule: an fp16 passthrough goes back to fp32/bf16; anything else is taken as stored."""
    if stored.dtype == torch.float16 and dtype in (torch.float32, torch.bfloat16):
        return stored.to(dtype)
    return stored


def error_stats(orig: Tensor, recon: Tensor) -> dict:
    """Reconstruction error of one tensor: mean squared error and relative (Frobenius) error."""
    a = orig.detach().double()
    d = a - recon.detach().double()
    if a.numel() == 0:
        return {"mse": 0.0, "rel": 0.0}
    norm = float(a.norm())
    return {"mse": float(d.square().mean()), "rel": float(d.norm()) / norm if norm > 0 else float(d.norm())}


# --------------------------------------------------------------------------- whole state dicts
Int6Fn = Callable[[str, Tensor], tuple[Tensor, Tensor, dict]]


@dataclass
class Quantized:
    """The packed state (seed layout), its meta, and what was done to each original entry."""

    packed: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    report: dict[str, dict] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for info in self.report.values():
            out[info["kind"]] += 1
        return out


def quantize_state_dict(
    state: Mapping[str, Tensor],
    control_patterns: Iterable[str] = SEED_CONTROL_PATTERNS,
    passthrough_max_numel: int = PASSTHROUGH_MAX_NUMEL,
    int6_fn: Int6Fn | None = None,
) -> Quantized:
    """Quantise a state dict as the seed's export does. `int6_fn(name, t)` replaces the RTN int6
    quantiser (GPTQ plugs in here); it must return (q, fp16 scale, info) on the same grid."""
    patterns = tuple(control_patterns)
    out = Quantized()
    for name, t in state.items():
        kind = classify(name, t, patterns, passthrough_max_numel)
        if kind == "drop":
            out.dropped.append(name)
            continue
        info: dict = {"kind": kind, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if kind in ("passthrough", "passthrough_ctrl"):
            stored = t.detach().to(torch.float16) if t.is_floating_point() else t.detach()
            out.packed[name] = stored.contiguous()
            out.meta[name] = kind
            if t.is_floating_point():
                info.update(error_stats(t, restore_passthrough(stored, t.dtype)))
        else:
            if kind == "int6":
                q, scale, extra = int6_fn(name, t) if int6_fn is not None else quantize_int6(t)
            else:
                q, scale, extra = quantize_int8(t)
            out.packed[f"{name}.q"] = q.contiguous()
            out.packed[f"{name}.scale"] = scale.contiguous()
            out.meta[name] = {"type": kind}
            info.update({k: v for k, v in extra.items() if k != "mse"})
            info.update(error_stats(t, dequantize(q, scale, t.dtype)))
        out.report[name] = info
    return out


def dequantize_state_dict(
    packed: Mapping[str, Tensor], meta: Mapping[str, object], template: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rebuild every entry of `template` (names, dtypes) from the packed state; KeyError names a gap."""
    out: dict[str, Tensor] = {}
    for name, ref in template.items():
        info = meta[name]
        if isinstance(info, str) and info in PASSTHROUGH_KINDS:
            out[name] = restore_passthrough(packed[name], ref.dtype)
        elif isinstance(info, Mapping) and info.get("type") in ("int6", "int8"):
            out[name] = dequantize(packed[f"{name}.q"], packed[f"{name}.scale"], ref.dtype)
        else:
            raise KeyError(f"{name}: unknown quantisation meta {info!r}")
    return out
