"""The MLP and the transformer block (resid_mix, attn/mlp scales, layer scale, optional DTG gate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.attention import CausalSelfAttention
from pgolf.model.layers import CastedLinear, layer_scale, rms_norm


class MLP(nn.Module):
    """proj(leaky_relu(fc(x), 0.5)^2)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), negative_slope=0.5).square())


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
            cfg.rope_ref_len,
            cfg.qk_gain_init,
            use_xsa=layer in cfg.xsa_layers,
            vrl_gate=cfg.vrl_enabled and layer > 0,
            rope_table=cfg.rope_table,
        )
        self.mlp = MLP(d, cfg.mlp_hidden)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())
        self.ln_factor = layer_scale(layer, cfg.ln_scale)
        self.dtg_gate = None
        if cfg.dtg_enabled:
            self.dtg_gate = nn.Linear(d, 1, bias=True)
            nn.init.zeros_(self.dtg_gate.weight)
            nn.init.constant_(self.dtg_gate.bias, 2.0)

    def forward(self, x: Tensor, x0: Tensor, ve: Tensor | None, v_first: Tensor | None) -> tuple[Tensor, Tensor]:
        mix = self.resid_mix.to(x.dtype)
        u = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        a, v_raw = self.attn(rms_norm(u) * self.ln_factor, ve, v_first)
        z = u + self.attn_scale.to(u.dtype)[None, None, :] * a
        out = z + self.mlp_scale.to(z.dtype)[None, None, :] * self.mlp(rms_norm(z) * self.ln_factor)
        if self.dtg_gate is not None:
            gamma = torch.sigmoid(self.dtg_gate(u.detach()))
            out = u + gamma * (out - u)
        return out, v_raw
