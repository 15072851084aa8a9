"""The MLP and the transformer block (resid_mix, attn/mlp scales, layer scale, optional DTG gate).

A block is three parts (`mix`, `attn_branch`, `mlp_branch`): the sequential block chains them,
the parallel residual lanes (`pgolf.model.lanes`) feed them from two streams."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.attention import CausalSelfAttention
from pgolf.model.layers import CastedLinear, layer_scale, leaky_relu_square, rms_norm

NO_RESCALING = 1 << 62  # a reference length no sequence exceeds: rope_yarn=false


class MLP(nn.Module):
    """proj(leaky_relu(fc(x), 0.5)^2)."""

    def __init__(self, dim: int, hidden: int, draw_init: bool = True):
        super().__init__()
        self.fc = CastedLinear(dim, hidden, draw_init=draw_init)
        self.proj = CastedLinear(hidden, dim, zero_init=True, draw_init=draw_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(leaky_relu_square(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg, layer: int):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(
            d,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.rope_dims,
            cfg.rope_base,
            cfg.rope_ref_len if cfg.rope_yarn else NO_RESCALING,
            cfg.qk_gain_init,
            use_xsa=layer in cfg.xsa_layers,
            vrl_gate=cfg.vrl_enabled and layer > 0,
            rope_table=cfg.rope_table,
            gate=attention_gate(cfg),
            gate_window=cfg.gate_window,
            gate_scale=cfg.sparse_attn_gate_scale,
            gate_init_std=cfg.gated_attn_init_std if cfg.gated_attn_enabled else cfg.sparse_attn_gate_init_std,
            gate_src=cfg.attn_out_gate_src,
            draw_init=cfg.init_order == "seed",
        )
        self.mlp = MLP(d, cfg.mlp_hidden, draw_init=cfg.init_order == "seed")
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())
        self.ln_factor = layer_scale(layer, cfg.ln_scale)
        self.dtg_gate = None
        if cfg.dtg_enabled:
            self.dtg_gate = nn.Linear(d, 1, bias=True)
            nn.init.zeros_(self.dtg_gate.weight)
            nn.init.constant_(self.dtg_gate.bias, 2.0)

    # The three parts of a block, shared by the sequential block (forward) and the parallel lanes.
    def mix(self, x: Tensor, x0: Tensor) -> Tensor:
        m = self.resid_mix.to(x.dtype)
        return m[0][None, None, :] * x + m[1][None, None, :] * x0

    # `adapter` (optional, one executed layer slot's `pgolf.eval.lora` deltas): q/k/v inside the
    # attention, "o" (fed the normed block input) after the out-projection, "mlp" (fed the normed
    # MLP input) after the MLP, each before its branch scale. None leaves the block unchanged.
    def attn_branch(
        self, u: Tensor, ve: Tensor | None, v_first: Tensor | None, doc=None, adapter=None
    ) -> tuple[Tensor, Tensor]:
        n = rms_norm(u) * self.ln_factor
        a, v_raw = self.attn(n, ve, v_first, doc, adapter)
        if adapter is not None and adapter.o is not None:
            a = a + adapter.o(n)
        return self.attn_scale.to(u.dtype)[None, None, :] * a, v_raw

    def mlp_branch(self, z: Tensor, adapter=None) -> Tensor:
        n = rms_norm(z) * self.ln_factor
        m = self.mlp(n)
        if adapter is not None and adapter.mlp is not None:
            m = m + adapter.mlp(n)
        return self.mlp_scale.to(z.dtype)[None, None, :] * m

    def forward(
        self, x: Tensor, x0: Tensor, ve: Tensor | None, v_first: Tensor | None, doc=None, adapter=None
    ) -> tuple[Tensor, Tensor]:
        u = self.mix(x, x0)
        a, v_raw = self.attn_branch(u, ve, v_first, doc, adapter)
        z = u + a
        out = z + self.mlp_branch(z, adapter)
        if self.dtg_gate is not None:
            gamma = torch.sigmoid(self.dtg_gate(u.detach()))
            out = u + gamma * (out - u)
        return out, v_raw


def attention_gate(cfg) -> str:
    """The attention output gate a config asks for: sparse, dense, out or "" (none)."""
    if cfg.sparse_attn_gate_enabled:
        return "sparse"
    if cfg.gated_attn_enabled:
        return "dense"
    return "out" if cfg.attn_out_gate_enabled else ""
