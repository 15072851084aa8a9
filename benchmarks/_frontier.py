"""Frontier-shaped weights and Hessians for the export benchmarks (no trained frontier model exists here).

`frontier_state()` has the record's tensors (F2.11, 35,945,671 values) in its export names (the
banks un-banked). The matrices are random with trained-like statistics: heavy tails (Student t, 5 degrees
of freedom) and a spread of row scales (log-normal, sigma 0.3), which sets how many codes
saturate and how well rows compress; their values are NOT trained weights, so byte counts
from them are estimates (docs/artifact.md says how they compare). `hessians()` gives every
GPTQ tensor a Hessian XᵀX of correlated synthetic activations (a few strong directions plus
noise, as real inputs have), shared between c_q/c_k/c_v as the record's are.
"""

from __future__ import annotations

import torch

FRONTIER = {"layers": 11, "dim": 512, "kv": 256, "hidden": 2048, "vocab": 8192, "heads": 8}


def _matrix(g: torch.Generator, rows: int, cols: int, std: float) -> torch.Tensor:
    # a t variable as normal / sqrt(chi2 / df) (torch.distributions takes no generator)
    df = 5
    z = torch.randn(rows, cols, generator=g)
    chi = torch.randn(rows, cols, df, generator=g).square().sum(-1) / df
    t = z / chi.sqrt()
    row_scale = torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    return t * row_scale * (std / t.std())


def frontier_state(seed: int = 0, scale: float = 1.0, shapes: dict | None = None) -> dict[str, torch.Tensor]:
    s = shapes or FRONTIER
    g = torch.Generator().manual_seed(seed)
    d, kv, hid, heads = s["dim"], s["kv"], s["hidden"], s["heads"]
    out = {"tok_emb.weight": _matrix(g, s["vocab"], d, 0.02 * scale).bfloat16()}
    for i in range(s["layers"]):
        p = f"blocks.{i}."
        for name, (r, c) in {
            "attn.c_q.weight": (d, d),
            "attn.c_k.weight": (kv, d),
            "attn.c_v.weight": (kv, d),
            "attn.proj.weight": (d, d),
            "mlp.fc.weight": (hid, d),
            "mlp.proj.weight": (d, hid),
        }.items():
            out[p + name] = _matrix(g, r, c, scale * (0.5 / c**0.5))
        out[p + "attn.q_gain"] = 5.0 + 0.1 * torch.randn(heads, generator=g)
        out[p + "attn.attn_gate_w"] = 0.05 * torch.randn(heads, 12, generator=g)
        out[p + "attn_scale"] = 1 + 0.1 * torch.randn(d, generator=g)
        out[p + "mlp_scale"] = 1 + 0.1 * torch.randn(d, generator=g)
        out[p + "resid_mix"] = torch.stack((torch.ones(d), torch.zeros(d))) + 0.05 * torch.randn(2, d, generator=g)
    out["skip_weights"] = 1 + 0.05 * torch.randn(8, d, generator=g)
    out["skip_gates"] = 0.05 * torch.randn(8, d, generator=g)
    out["parallel_post_lambdas"] = 1 + 0.05 * torch.randn(s["layers"], 2, 2, generator=g)
    out["parallel_resid_lambdas"] = 1.1 + 0.05 * torch.randn(s["layers"], 2, generator=g)
    out["smear_gate.weight"] = 0.05 * torch.randn(1, 12, generator=g)
    out["smear_lambda"] = torch.zeros(1)
    return out


def _hessian(g: torch.Generator, cols: int, tokens: int) -> torch.Tensor:
    k = max(4, cols // 32)
    basis = torch.randn(k, cols, generator=g)
    strong = torch.randn(tokens, k, generator=g) * torch.linspace(3.0, 0.5, k)
    x = strong @ basis + torch.randn(tokens, cols, generator=g)
    return x.T @ x


def hessians(state: dict[str, torch.Tensor], tokens: int = 4096, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if t.ndim != 2 or t.numel() <= 65536:
            continue
        key = name.replace("c_k", "c_q").replace("c_v", "c_q")  # q, k and v read the same input
        if key not in shared:
            shared[key] = _hessian(g, t.shape[1], tokens)
        out[name] = shared[key]
    return out
