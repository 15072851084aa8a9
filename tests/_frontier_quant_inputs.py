"""Inputs of the frontier export fixtures, rebuilt identically by the generator and the tests.

`check_inputs()` is FRONTIER F5.4's check case (formulas); `small_state()` is a small
state dict in the record's export names with Hessians. Its Hessians come from
integer-valued activations, so XᵀX is exact in float64 whatever the summation order,
and its weights are sparse, so the record's artifact of it stays small.
"""

from __future__ import annotations

import torch

# A small frontier-shaped configuration: every matrix above the 65,536-value passthrough bound.
SMALL = {"num_layers": 2, "model_dim": 288, "num_heads": 4, "num_kv_heads": 4, "mlp_hidden": 576, "vocab": 256}
# The same configuration in the record's environment names (its GPT has exactly small_state()'s tensors).
SMALL_ENV = {
    "NUM_LAYERS": "2", "MODEL_DIM": "288", "NUM_HEADS": "4", "NUM_KV_HEADS": "4", "MLP_MULT": "2",
    "VOCAB_SIZE": "256", "NUM_LOOPS": "0", "PARALLEL_START_LAYER": "1", "XSA_LAST_N": "2",
    "SMEAR_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_ENABLED": "1", "SKIP_GATES_ENABLED": "1",
}  # fmt: skip
LOGIT_IDS_SHAPE = (2, 48)


def check_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W [48, 192], H [192, 192], X [512, 192]) of F5.4, fp32."""
    i = torch.arange(48, dtype=torch.float64)[:, None]
    j = torch.arange(192, dtype=torch.float64)[None, :]
    w = 0.02 * torch.sin(0.7 * i + 1.3 * j + 0.1 * i * j)
    w[3, 7], w[10, 100] = 0.5, -0.4
    n = torch.arange(512, dtype=torch.float64)[:, None]
    x = torch.cos(0.05 * n * (j + 1) + 0.3 * j)
    x[:, 5] = 0
    return w.float(), (x.T @ x).float(), x.float()


def gate_input() -> torch.Tensor:
    """F5.6's check gate: G[r, c] = 0.3 sin(0.37 (12 r + c)), shape (8, 12)."""
    r = torch.arange(8, dtype=torch.float64)[:, None]
    c = torch.arange(12, dtype=torch.float64)[None, :]
    return (0.3 * torch.sin(0.37 * (12 * r + c))).float()


def simsort_input():
    """F5.9's check matrix: int8 10x6, M[r, c] = round(20 sin(1.7 (6 r + c)))."""
    import numpy as np

    r = np.arange(10)[:, None]
    c = np.arange(6)[None, :]
    return np.round(20 * np.sin(1.7 * (6 * r + c))).astype(np.int8)


def _sparse(g: torch.Generator, rows: int, cols: int, std: float = 0.02, density: float = 0.08) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=g) * std
    keep = torch.rand(rows, cols, generator=g) < density
    return w * keep


def _hessian(g: torch.Generator, cols: int, n: int = 2048) -> torch.Tensor:
    x = torch.randint(-3, 4, (n, cols), generator=g).double()
    x[:, 1] = 0  # a dead column
    return (x.T @ x).float()


def small_state() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict in the record's export names, Hessians) of the SMALL configuration."""
    g = torch.Generator().manual_seed(1855)
    s = SMALL
    d, hid, heads = s["model_dim"], s["mlp_hidden"], s["num_heads"]
    kv = s["num_kv_heads"] * d // heads
    state: dict[str, torch.Tensor] = {"tok_emb.weight": _sparse(g, s["vocab"], d).bfloat16()}
    for i in range(s["num_layers"]):
        p = f"blocks.{i}."
        state[p + "attn.c_q.weight"] = _sparse(g, d, d)
        state[p + "attn.c_k.weight"] = _sparse(g, kv, d)
        state[p + "attn.c_v.weight"] = _sparse(g, kv, d)
        state[p + "attn.proj.weight"] = _sparse(g, d, d)
        state[p + "mlp.fc.weight"] = _sparse(g, hid, d)
        state[p + "mlp.proj.weight"] = _sparse(g, d, hid)
        state[p + "attn.q_gain"] = torch.full((heads,), 5.0) + 0.01 * torch.randn(heads, generator=g)
        state[p + "attn.attn_gate_w"] = 0.1 * torch.randn(heads, 12, generator=g)
        state[p + "attn_scale"] = 1 + 0.05 * torch.randn(d, generator=g)
        state[p + "mlp_scale"] = 1 + 0.05 * torch.randn(d, generator=g)
        state[p + "resid_mix"] = torch.stack((torch.ones(d), torch.zeros(d))) + 0.01 * torch.randn(2, d, generator=g)
    state["skip_weights"] = torch.ones(1, d) + 0.01 * torch.randn(1, d, generator=g)
    state["skip_gates"] = 0.1 * torch.randn(1, d, generator=g)
    state["parallel_post_lambdas"] = torch.ones(s["num_layers"], 2, 2) + 0.05 * torch.randn(
        s["num_layers"], 2, 2, generator=g
    )
    state["parallel_resid_lambdas"] = torch.full((s["num_layers"], 2), 1.1) + 0.05 * torch.randn(
        s["num_layers"], 2, generator=g
    )
    state["smear_gate.weight"] = 0.01 * torch.randn(1, 12, generator=g)
    state["smear_lambda"] = torch.zeros(1)
    hessians = {"tok_emb.weight": _hessian(g, d)}
    for i in range(s["num_layers"]):
        p = f"blocks.{i}."
        h_attn = _hessian(g, d)
        for k in ("c_q", "c_k", "c_v"):
            hessians[p + f"attn.{k}.weight"] = h_attn  # three identical copies, as the record collects them
        hessians[p + "attn.proj.weight"] = _hessian(g, d)
        hessians[p + "mlp.fc.weight"] = _hessian(g, d)
        hessians[p + "mlp.proj.weight"] = _hessian(g, hid)
    return state, hessians


def small_act_rms(hessians: dict[str, torch.Tensor], n: int = 2048) -> dict[str, torch.Tensor]:
    """act_rms_c = sqrt(H_cc / N): the AWQ-lite statistic of the same activations."""
    return {k: (torch.diagonal(h) / n).sqrt() for k, h in hessians.items()}


def logit_ids() -> torch.Tensor:
    """Fixed token ids with documents starting (BOS = 1) at a few positions, for the BOS-masked SmearGate."""
    ids = torch.randint(2, SMALL["vocab"], LOGIT_IDS_SHAPE, generator=torch.Generator().manual_seed(7))
    ids[:, 0] = 1
    ids[0, 20] = ids[1, 33] = 1
    return ids
