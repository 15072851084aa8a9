"""LQER: a quantised low-rank correction of the quantisation error (FRONTIER F5.7).

For the top-k GPTQ tensors by ‖E‖_F (E = W - Ŵ, absolute norm, so large tensors win),
E ≈ A·B from the thin SVD (A = U_r·diag(S_r) [R, r], B = V_rᵀ [r, C]), then packed:

    asymmetric (the record's, when B.numel() % group == 0):
        A: int2 with one fp16 scale per matrix, s_A = fp16(max|A| / 1.5), codes in [-2, 1];
        B: int4 in groups of `group` consecutive values of B flattened row-major,
           s_g = fp16(max|B_g| / 7.5), codes in [-8, 7];
    symmetric fallback: per-row int`bits` for both factors.

At load Ŵ += (q_A·s_A) @ (q_B ⊙ s_g), in fp32. Both grids are sign-asymmetric, so the
result depends on the SVD's sign convention (F8.20): `sign="best"` flips each (u_i, v_i)
pair whenever that lowers ‖E - Â·B̂‖_F (greedy, starting from the SVD's signs, so never
worse); `sign="svd"` keeps the SVD's signs, as the record does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pgolf.errors import ArtifactError

ASYM_SUFFIXES = (".lqA_a", ".lqAs_a", ".lqB_a", ".lqBs_a")
SYM_SUFFIXES = (".lqA", ".lqAs", ".lqB", ".lqBs")


def factors(e: Tensor, rank: int) -> tuple[Tensor, Tensor] | None:
    """(A [R, r], B [r, C]) of the rank-r truncated SVD of e (fp32 LAPACK), or None for r = 0.

    On one CPU thread: LAPACK's result (and so the quantised factors, whose grids are
    asymmetric) changes with the thread count; one thread makes it reproducible."""
    from pgolf.quant.sdclip import one_thread

    with one_thread(e.device):
        u, s, vh = torch.linalg.svd(e.float(), full_matrices=False)
    r = min(rank, s.numel())
    if r <= 0:
        return None
    return (u[:, :r] * s[:r]).contiguous(), vh[:r, :].contiguous()


def pack_asym(a: Tensor, b: Tensor, group: int = 64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(qA int8, sA fp16 0-d, qB int8, sB fp16 [numel(B)/group])."""
    sa = (a.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16)
    qa = torch.clamp(torch.round(a / sa.float()), -2, 1).to(torch.int8)
    bf = b.reshape(-1, group)
    sb = (bf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / 7.5).to(torch.float16).reshape(-1)
    qb = torch.clamp(torch.round(bf / sb.float().reshape(-1, 1)), -8, 7).to(torch.int8).reshape(b.shape)
    return qa, sa, qb, sb


def pack_sym(a: Tensor, b: Tensor, bits: int = 4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row symmetric int`bits` for both factors: (qA, sA [R], qB, sB [r])."""
    rng = 2 ** (bits - 1) - 1
    sa = (a.abs().amax(dim=1).clamp_min(1e-10) / rng).to(torch.float16)
    sb = (b.abs().amax(dim=1).clamp_min(1e-10) / rng).to(torch.float16)
    qa = torch.clamp(torch.round(a / sa.float().view(-1, 1)), -rng, rng).to(torch.int8)
    qb = torch.clamp(torch.round(b / sb.float().view(-1, 1)), -rng, rng).to(torch.int8)
    return qa, sa, qb, sb


def delta_asym(qa: Tensor, sa: Tensor, qb: Tensor, sb: Tensor) -> Tensor:
    """Â @ B̂ of an asymmetric packing, in fp32, as the record's loader computes it."""
    g = qb.numel() // sb.numel()
    bh = (qb.reshape(-1, g).float() * sb.float().view(-1, 1)).reshape(qb.shape)
    return (qa.float() * float(sa)) @ bh


def delta_sym(qa: Tensor, sa: Tensor, qb: Tensor, sb: Tensor) -> Tensor:
    return (qa.float() * sa.float().view(-1, 1)) @ (qb.float() * sb.float().view(-1, 1))


def fit(
    e: Tensor, rank: int = 4, asym: bool = True, group: int = 64, factor_bits: int = 4, sign: str = "svd"
) -> dict | None:
    """The packed correction of residual e: {"kind": "asym"|"sym", "tensors": {suffix: t}, "delta": Â·B̂}."""
    ab = factors(e, rank)
    if ab is None:
        return None
    a, b = ab
    use_asym = asym and b.numel() % group == 0

    def pack(a_, b_):
        if use_asym:
            packed = pack_asym(a_, b_, group)
            return packed, delta_asym(*packed)
        packed = pack_sym(a_, b_, factor_bits)
        return packed, delta_sym(*packed)

    packed, delta = pack(a, b)
    if sign == "best":
        best = float((e - delta).norm())
        for i in range(a.size(1)):
            a2, b2 = a.clone(), b.clone()
            a2[:, i].neg_()
            b2[i].neg_()
            p2, d2 = pack(a2, b2)
            err = float((e - d2).norm())
            if err < best:
                a, b, packed, delta, best = a2, b2, p2, d2, err
    elif sign != "svd":
        raise ValueError(f"LQER sign must be svd or best, got {sign!r}")
    names = ASYM_SUFFIXES if use_asym else SYM_SUFFIXES
    return {"kind": "asym" if use_asym else "sym", "tensors": dict(zip(names, packed)), "delta": delta}


def top_k(norms: Mapping[str, float], k: int) -> list[str]:
    """Names of the k largest residual norms; a stable sort, so ties keep state-dict order (as the record)."""
    return [n for n, _ in sorted(norms.items(), key=lambda kv: -kv[1])[:k]]


def correction(result: Mapping[str, Tensor], name: str, kind: str, shape: tuple[int, int], where: str) -> Tensor:
    """Â·B̂ for tensor `name` of `shape` from an artifact's entries, every factor's shape checked first."""
    sfx = ASYM_SUFFIXES if kind == "asym" else SYM_SUFFIXES
    missing = [name + s for s in sfx if name + s not in result]
    if missing:
        raise ArtifactError(f"{where}: LQER factor {missing[0]} is missing")
    qa, sa, qb, sb = (result[name + s] for s in sfx)
    rows, cols = shape
    ok = qa.ndim == 2 and qb.ndim == 2 and qa.shape[0] == rows and qb.shape[1] == cols and qa.shape[1] == qb.shape[0]
    ok = ok and qa.shape[1] >= 1 and not qa.is_floating_point() and not qb.is_floating_point()
    if kind == "asym":
        ok = ok and sa.numel() == 1 and sb.ndim == 1 and sb.numel() >= 1 and qb.numel() % sb.numel() == 0
    else:
        ok = ok and sa.shape == (rows,) and sb.shape == (qb.shape[0],)
    if not ok:
        raise ArtifactError(
            f"{where}: LQER factors of {name} have shapes A {list(qa.shape)}, B {list(qb.shape)}, "
            f"scales {list(sa.shape)}/{list(sb.shape)}; the tensor is {list(shape)}"
        )
    return delta_asym(qa, sa, qb, sb) if kind == "asym" else delta_sym(qa, sa, qb, sb)
