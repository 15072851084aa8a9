"""Model FLOPs per token, for throughput and utilisation figures.

Counts matrix multiplies only (2 FLOPs per multiply-add): every linear layer,
the tied output head, and causal attention (QK^T and AV over the average causal
context (T+1)/2). Training = 3x forward (forward, input grads, weight grads).
Element-wise work (norms, RoPE, XSA, softcap) is not counted, as is usual for MFU.
With depth recurrence (`looping=True`) every virtual pass counts: a looped layer's
matrices are multiplied once per pass. Document-bounded attention is counted as causal
attention over the whole row, which is what the SDPA kernel computes under a mask; the
gates' products (12 channels) are negligible and not counted.
"""

from __future__ import annotations

from pgolf.config import ModelConfig
from pgolf.model.recurrence import virtual_layers


def passes(cfg: ModelConfig, looping: bool = False) -> int:
    """Block passes per token: num_layers, or the virtual layer count with the loops on."""
    if looping and cfg.num_loops > 0:
        return len(virtual_layers(cfg.num_layers, cfg.num_loops, cfg.loop_start, cfg.loop_end))
    return cfg.num_layers


def linear_params(cfg: ModelConfig, looping: bool = False) -> int:
    """Weights multiplied per token (block matrices once per pass, projections, head, MTP heads)."""
    d, kv = cfg.model_dim, cfg.num_kv_heads * cfg.head_dim
    per_block = d * d + 2 * d * kv + d * d + 2 * d * cfg.mlp_hidden
    n = passes(cfg, looping) * per_block + d * cfg.vocab_size  # tied or untied head
    if cfg.bigram_vocab_size > 0 and cfg.bigram_dim != d:
        n += cfg.bigram_dim * d
    if cfg.ve_enabled and cfg.ve_layers and cfg.ve_dim != kv:
        n += cfg.ve_dim * kv
    n += cfg.mtp_num_heads * d * cfg.vocab_size
    return n


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool = False) -> float:
    attn = passes(cfg, looping) * 2 * 2 * cfg.model_dim * (seq_len + 1) / 2  # QK^T and AV, H*Dh = d
    return 2.0 * linear_params(cfg, looping) + attn


def training_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool = False) -> float:
    return 3.0 * forward_flops_per_token(cfg, seq_len, looping)
