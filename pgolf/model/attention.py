"""Grouped-query causal attention with q/k RMS norm, partial RoPE, per-head q gain,
value-residual learning (VRL) and XSA (self-value exclusion); optionally bounded by documents
(`pgolf.model.doc_attention`) and with a per-head output gate (`pgolf.model.gates`)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.doc_attention import Segments, document_attention
from pgolf.model.gates import head_gate
from pgolf.model.layers import CastedLinear, Rotary, apply_partial_rope, rms_norm


@functools.lru_cache(maxsize=1)
def flash_attn_3():
    """FlashAttention-3's function if installed (same import order as the seed), else None."""
    for mod in ("flash_attn_interface", "flash_attn.flash_attn_interface", "flash_attn"):
        try:
            module = __import__(mod, fromlist=["flash_attn_func"])
            return module.flash_attn_func
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            continue
    return None


ATTENTION_BACKENDS = ("sdpa", "sdpa-gqa", "fa3")


def causal_attention(q: Tensor, k: Tensor, v: Tensor, backend: str) -> Tensor:
    """q [B,T,H,D], k/v [B,T,Hkv,D] -> [B,T,H,D]; softmax scale 1/sqrt(D).

    "sdpa" is the seed's call without FlashAttention-3: K/V heads repeated to H, then
    SDPA. "sdpa-gqa" leaves the repetition to SDPA (`enable_gqa`): the same forward, but
    its gradients can differ from the seed's by a rounding unit. "fa3" uses FlashAttention-3
    on CUDA when installed (as the seed does) and otherwise falls back to "sdpa".
    """
    if backend == "fa3" and q.is_cuda:
        fn = flash_attn_3()
        if fn is not None:
            out = fn(q, k, v, causal=True)
            return out[0] if isinstance(out, tuple) else out
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    grouped = q.size(1) != k.size(1)
    if grouped and backend != "sdpa-gqa":
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        v = v.repeat_interleave(q.size(1) // v.size(1), dim=1)
    gqa = grouped and backend == "sdpa-gqa"
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return y.transpose(1, 2)


def xsa(y: Tensor, v: Tensor) -> Tensor:
    """Remove from each head's output its component along the token's own (unit) value vector.

    y [B,T,H,D], v [B,T,Hkv,D]; query head h uses value head h // (H/Hkv).
    """
    B, T, H, D = y.shape
    hkv = v.size(2)
    yg = y.reshape(B, T, hkv, H // hkv, D)
    vn = F.normalize(v, dim=-1, eps=1e-12).unsqueeze(3)
    return (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(B, T, H, D)


def _plus(y: Tensor, adapter, name: str, x: Tensor) -> Tensor:
    """y + adapter.<name>(x) when the adapter has that delta, else y itself."""
    fn = getattr(adapter, name, None) if adapter is not None else None
    return y if fn is None else y + fn(x)


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        rope_dims: int,
        rope_base: float,
        rope_ref_len: int,
        qk_gain_init: float,
        use_xsa: bool,
        vrl_gate: bool,
        rope_table: str = "seed",
        gate: str = "",
        gate_window: int = 12,
        gate_scale: float = 1.0,
        gate_init_std: float = 0.0,
        gate_src: str = "proj",
        draw_init: bool = True,
    ):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        # draw_init=False: the record's banks are torch.empty, so building them draws no random numbers.
        self.c_q = CastedLinear(dim, dim, draw_init=draw_init)
        self.c_k = CastedLinear(dim, kv_dim, draw_init=draw_init)
        self.c_v = CastedLinear(dim, kv_dim, draw_init=draw_init)
        self.proj = CastedLinear(dim, dim, zero_init=True, draw_init=draw_init)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(rope_dims or self.head_dim, rope_base, rope_ref_len, rope_table)
        self.use_xsa = use_xsa
        # Layer 0 produces v_first and has no gate; the gate is a 0-d parameter (sigmoid(-1.5) ~ 0.18).
        self.vrl_gate = nn.Parameter(torch.tensor(-1.5, dtype=torch.float32)) if vrl_gate else None
        # Output gate, one of: sparse (#1787), dense (GATED_ATTN), out (#1667, a zero-init linear).
        self.gate, self.gate_window, self.gate_scale, self.gate_src = gate, gate_window, gate_scale, gate_src
        if gate == "sparse":  # the record draws only for a non-zero std
            w = torch.zeros(num_heads, gate_window, dtype=torch.float32)
            if gate_init_std > 0:
                nn.init.normal_(w, mean=0.0, std=gate_init_std)
            self.attn_gate_w = nn.Parameter(w)
        elif gate == "dense":
            self.attn_gate_w = nn.Parameter(nn.init.normal_(torch.empty(num_heads, dim), mean=0.0, std=gate_init_std))
        elif gate == "out":
            self.attn_gate_proj = CastedLinear(gate_window, num_heads, zero_init=True)
        self.backend = "sdpa"

    def forward(
        self, x: Tensor, ve: Tensor | None, v_first: Tensor | None, doc: Segments | None = None, adapter=None
    ) -> tuple[Tensor, Tensor]:
        """`adapter` (optional, `pgolf.eval.lora`): low-rank deltas added to q, k and v (attributes
        q, k, v: callables of x, or None); without one the computation is unchanged."""
        B, T, _ = x.shape
        q_raw = _plus(self.c_q(x), adapter, "q", x)
        q = q_raw.view(B, T, self.num_heads, self.head_dim)
        k = _plus(self.c_k(x), adapter, "k", x).view(B, T, self.num_kv_heads, self.head_dim)
        v_raw = _plus(self.c_v(x), adapter, "v", x)
        v = v_raw if ve is None else v_raw + ve
        if self.vrl_gate is not None and v_first is not None:
            g = torch.sigmoid(self.vrl_gate.to(v.dtype))
            v = (1 - g) * v + g * v_first
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(T, x.device)
        if doc is not None and doc.positions is not None:  # positions restart at every document
            cos, sin = cos[doc.positions], sin[doc.positions]
        q = apply_partial_rope(q, cos, sin)
        k = apply_partial_rope(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v, self.backend) if doc is None else document_attention(q, k, v, doc)
        if self.use_xsa:
            y = xsa(y, v)
        if self.gate:
            src = q_raw if self.gate == "out" and self.gate_src == "q" else x
            w = self.attn_gate_proj.weight if self.gate == "out" else self.attn_gate_w
            y = y * head_gate(self.gate, src, w, self.gate_scale, self.gate_window)[..., None]
        return self.proj(y.reshape(B, T, -1)), v_raw
