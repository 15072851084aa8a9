"""The frontier record's mixed-precision export (FRONTIER F5.3-F5.8) and its dequantisation.

Works on the record's export names (`tok_emb.weight`, `blocks.i.attn.c_q.weight`, ...,
the banks un-banked, F2.3). Each entry is, in this order of rules (F5.3):

    gate         `*.attn_gate_w`, float, 2-D, 32 <= numel <= 8192, and the gate switch on:
                 int8 per row -> `<name>.gq`, `<name>.gs`
    passthrough  not float, or numel <= passthrough_max_numel: fp16 (ints as they are) -> `<name>`
    gptq         everything else: GPTQ + SDClip -> `<name>.q` (int8 codes), `<name>.scale` (fp16 [R]);
                 int`embed_bits` for tok_emb, int`matrix_bits` otherwise; k by name
                 (tok_emb -> embed, .mlp. -> mlp, .attn. -> attn, else matrix)

then AWQ-lite (option) and LQER on the top-k residuals. `meta[name]` is the record's
string ("gptq (int6)", "gate_int8_row", "passthrough (float16)", with "+awqgrpint8" and
"+lqer_asym" appended), so the same (result, meta) pair serves both containers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pgolf.config import QuantConfig
from pgolf.errors import ArtifactError
from pgolf.quant import awq, lqer
from pgolf.quant.sdclip import (
    Protect,
    apply_awq_columns,
    clip_range,
    dequant_rows,
    gptq_sdclip,
    output_error,
    quantize_gate_int8,
)

PASSTHROUGH = "passthrough (float16)"
GATE = "gate_int8_row"
GPTQ_META = re.compile(r"gptq \(int([2-8])\)((?:\+awqgrpint[2-8])?)((?:\+lqer_asym|\+lqer)?)")


@dataclass
class FrontierQuantized:
    result: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    report: dict[str, dict] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.meta.values():
            key = m.split("+")[0]
            out[key] = out.get(key, 0) + 1
        out["lqer"] = sum("+lqer" in m for m in self.meta.values())
        out["awq"] = sum("+awqgrp" in m for m in self.meta.values())
        return out


def classify(name: str, t: Tensor, q: QuantConfig) -> str:
    """gate, passthrough or gptq (the rules above, first match wins)."""
    if (
        q.gated_attn_quant_gate
        and t.is_floating_point()
        and t.ndim == 2
        and name.endswith(".attn_gate_w")
        and 32 <= t.numel() <= 8192
    ):
        return "gate"
    if not t.is_floating_point() or t.numel() <= q.passthrough_max_numel:
        return "passthrough"
    return "gptq"


def clip_sigmas(name: str, q: QuantConfig) -> float:
    if "tok_emb" in name:
        return q.embed_clip_sigmas
    if ".mlp." in name:
        return q.mlp_clip_sigmas
    if ".attn." in name:
        return q.attn_clip_sigmas
    return q.matrix_clip_sigmas  # no tensor of the record reaches this (F8.1)


def bits_for(name: str, q: QuantConfig) -> int:
    return q.embed_bits if "tok_emb" in name else q.matrix_bits


def quantize_frontier(
    state: Mapping[str, Tensor],
    hessians: Mapping[str, Tensor],
    q: QuantConfig,
    act_rms: Mapping[str, Tensor] | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = lambda _m: None,
) -> FrontierQuantized:
    """Quantise a state dict in the record's export names. A GPTQ tensor without a Hessian
    gets H = I, i.e. plain rounding on the SDClip grid (reported as method "sdclip-rtn")."""
    out = FrontierQuantized()
    dev = torch.device(device)
    t0 = time.perf_counter()
    flat = {n: v.detach().cpu().contiguous() for n, v in state.items()}
    kinds = {n: classify(n, t, q) for n, t in flat.items()}

    protect: dict[str, list[tuple[int, int]]] = {}
    if q.awq_lite_enabled:
        if not act_rms:
            raise ArtifactError("AWQ-lite needs activation statistics from the calibration (quant.awq_lite_enabled)")
        eligible = [(n, t) for n, t in flat.items() if kinds[n] == "gptq" and bits_for(n, q) < q.awq_lite_bits]
        protect = awq.select_groups(eligible, act_rms, q.awq_lite_group_size, q.awq_lite_group_top_k)

    from pgolf.cliutil import progress_iter

    residuals: dict[str, tuple[Tensor, float]] = {}
    for name, t in progress_iter(flat.items(), len(flat), "export: quantise", unit="tensor"):
        kind = kinds[name]
        if kind == "gate":
            gq, gs = quantize_gate_int8(t)
            out.result[name + ".gq"], out.result[name + ".gs"] = gq, gs
            out.meta[name] = GATE
            w_hat = gq.float() * gs.float().view(-1, 1)
            out.report[name] = {"kind": "gate", **_rel(t, w_hat)}
            continue
        if kind == "passthrough":
            out.result[name] = t.to(torch.float16) if t.is_floating_point() else t
            out.meta[name] = PASSTHROUGH
            out.report[name] = {"kind": "passthrough"}
            continue
        bits, k = bits_for(name, q), clip_sigmas(name, q)
        cr = clip_range(bits)
        h = hessians.get(name)
        method = "gptq"
        if h is None:
            h, method = torch.eye(t.shape[1]), "sdclip-rtn"
        elif tuple(h.shape) != (t.shape[1], t.shape[1]):
            raise ArtifactError(f"Hessian of {name} has shape {list(h.shape)}; the weight has {t.shape[1]} columns")
        prot = None
        if name in protect:
            prot = Protect([s for s, _ in protect[name]], q.awq_lite_group_size, clip_range(q.awq_lite_bits))
        codes, s, awq_meta = gptq_sdclip(
            t.to(dev), h.to(dev), k, cr, q.gptq_block_size, prot, stable_sort=q.gptq_stable_sort
        )
        out.result[name + ".q"], out.result[name + ".scale"] = codes, s
        out.meta[name] = f"gptq (int{bits})"
        w_hat = dequant_rows(codes, s)
        if awq_meta is not None:
            out.result[name + ".awqg_start"] = awq_meta["starts"]
            out.result[name + ".awqg_s_hi"] = awq_meta["s_hi"]
            out.result[name + ".awqg_size"] = torch.tensor(awq_meta["size"], dtype=torch.int16)
            out.meta[name] += f"+awqgrpint{q.awq_lite_bits}"
            apply_awq_columns(w_hat, codes, awq_meta["starts"].tolist(), awq_meta["size"], awq_meta["s_hi"])
        e = t.float() - w_hat
        residuals[name] = (e, float(e.norm()))
        out.report[name] = {
            "kind": f"int{bits}",
            "method": method,
            "clip_sigmas": k,
            "saturated": int((codes.abs() == cr).sum()),
            "out_err": output_error(t, w_hat, hessians[name]) if name in hessians else None,
            **_rel(t, w_hat),
        }
    out.timing["gptq_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    if q.lqer_enabled and residuals and q.lqer_top_k > 0:
        for name in lqer.top_k({n: v[1] for n, v in residuals.items()}, q.lqer_top_k):
            e = residuals[name][0]
            fit = lqer.fit(e, q.lqer_rank, q.lqer_asym_enabled, q.lqer_asym_group, q.lqer_factor_bits, q.lqer_sign)
            if fit is None:
                continue
            out.result.update({name + sfx: v for sfx, v in fit["tensors"].items()})
            out.meta[name] += "+lqer_asym" if fit["kind"] == "asym" else "+lqer"
            w_hat = flat[name].float() - e + fit["delta"]
            rep = out.report[name]
            rep["lqer"] = {
                "kind": fit["kind"],
                "residual_norm": residuals[name][1],
                "after_norm": float((e - fit["delta"]).norm()),
            }
            if name in hessians:
                rep["out_err_lqer"] = output_error(flat[name], w_hat, hessians[name])
            rep.update({f"lqer_{k2}": v for k2, v in _rel(flat[name], w_hat).items()})
    out.timing["lqer_s"] = time.perf_counter() - t1
    log(f"export: frontier quantisation {out.counts()} in {time.perf_counter() - t0:.1f}s")
    return out


def _rel(w: Tensor, w_hat: Tensor) -> dict[str, float]:
    d = (w.float() - w_hat.float()).norm()
    return {"rel": float(d / w.float().norm().clamp_min(1e-30))}


# --------------------------------------------------------------------------- dequantisation
def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ArtifactError(f"{where}: {msg}")


def dequantize_frontier(
    result: Mapping[str, Tensor], meta: Mapping[str, object], template: Mapping[str, Tensor], where: str = "artifact"
) -> dict[str, Tensor]:
    """The state dict in the template's names, shapes and dtypes (the record's `dequantize_mixed`),
    with every entry's shapes and dtypes checked first: a bad artifact is one ArtifactError line."""
    missing = [n for n in template if n not in meta]
    extra = [n for n in meta if n not in template]
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise ArtifactError(
            f"{where}: does not match the model ({what}; {len(missing)} missing, {len(extra)} unexpected)"
        )
    out: dict[str, Tensor] = {}
    for name, ref in template.items():
        info, shape, dtype = meta[name], tuple(ref.shape), ref.dtype
        _need(isinstance(info, str), where, f"meta of {name} is not a string")
        if info == PASSTHROUGH or info.startswith("passthrough"):
            t = result.get(name)
            _need(isinstance(t, Tensor) and tuple(t.shape) == shape, where, f"{name} is missing or not {list(shape)}")
            out[name] = t.to(dtype) if t.dtype == torch.float16 and dtype in (torch.float32, torch.bfloat16) else t
            continue
        if info == GATE:
            gq, gs = result.get(name + ".gq"), result.get(name + ".gs")
            ok = isinstance(gq, Tensor) and isinstance(gs, Tensor) and tuple(gq.shape) == shape and len(shape) == 2
            _need(ok and gq.dtype == torch.int8 and tuple(gs.shape) == shape[:1], where, f"gate {name} is malformed")
            out[name] = (gq.float() * gs.float().view(-1, 1)).to(dtype)
            continue
        m = GPTQ_META.fullmatch(info)
        _need(m is not None, where, f"unknown quantisation {info!r} for {name}")
        _need(len(shape) == 2, where, f"{name}: a quantised matrix must be 2-D, the model has {list(shape)}")
        qt, s = result.get(name + ".q"), result.get(name + ".scale")
        _need(
            isinstance(qt, Tensor) and qt.dtype == torch.int8 and tuple(qt.shape) == shape,
            where,
            f"{name}.q is missing or not int8 {list(shape)}",
        )
        _need(
            isinstance(s, Tensor) and s.is_floating_point() and (s.ndim == 0 or tuple(s.shape) == shape[:1]),
            where,
            f"{name}.scale is missing or has the wrong shape",
        )
        w = dequant_rows(qt, s)
        if m.group(2):
            starts, s_hi, size = (result.get(name + sfx) for sfx in (".awqg_start", ".awqg_s_hi", ".awqg_size"))
            ok = all(isinstance(x, Tensor) for x in (starts, s_hi, size)) and size.numel() == 1
            ok = ok and starts.ndim == 1 and tuple(s_hi.shape) == shape[:1]
            _need(ok, where, f"AWQ entries of {name} are missing or malformed")
            gsz, st = int(size.item()), [int(x) for x in starts.tolist()]
            in_range = gsz >= 1 and all(a >= 0 and a + gsz <= shape[1] for a in st)
            _need(in_range, where, f"AWQ groups of {name} are out of range")
            apply_awq_columns(w, qt, st, gsz, s_hi)
        if m.group(3):
            w = w + lqer.correction(result, name, "asym" if m.group(3) == "+lqer_asym" else "sym", shape, where)
        out[name] = w.to(dtype)
    return out


def packed_bytes(result: Mapping[str, Tensor]) -> int:
    """Raw bytes of everything stored (before compression)."""
    return sum(int(t.numel()) * t.element_size() for t in result.values())
