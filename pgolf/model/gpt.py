"""The seed's GPT: BigramHash + SmearGate input, U-Net of blocks, tied soft-capped head.

`forward_hidden(ids)` and `compute_logits(hidden, bias)` are the only forward pass;
the training loss and every evaluator are built on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.model.attention import flash_attn_3
from pgolf.model.block import Block
from pgolf.model.embeddings import BigramHash, SmearGate, ValueEmbedding
from pgolf.model.layers import CastedLinear, rms_norm

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _lookup(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Embedding lookup; outside autocast a bf16 table is read as fp32 so CPU runs stay fp32."""
    h = F.embedding(ids, table.weight)
    if h.dtype != torch.float32 and not torch.is_autocast_enabled(h.device.type):
        h = h.float()
    return h


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d = cfg.model_dim
        # Modules are created in the seed's order so the CPU RNG is consumed identically.
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.bigram = BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, d) if cfg.bigram_vocab_size > 0 else None
        self.smear = SmearGate(d)
        self.num_encoder = cfg.num_layers // 2
        self.num_decoder = cfg.num_layers - self.num_encoder
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder, self.num_decoder), d, dtype=torch.float32))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.ve_layers = list(cfg.ve_layers) if cfg.ve_enabled else []
        self.ve_shared = (
            ValueEmbedding(cfg.vocab_size, cfg.ve_dim, cfg.num_kv_heads * cfg.head_dim) if self.ve_layers else None
        )
        self.ve_layer_scales = nn.ParameterList(
            nn.Parameter(torch.ones(1, dtype=torch.float32)) for _ in self.ve_layers
        )
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(d, cfg.vocab_size, zero_init=True)
        self.mtp_heads = nn.ModuleList(
            CastedLinear(d, cfg.vocab_size, zero_init=True) for _ in range(cfg.mtp_num_heads)
        )
        self._init_weights()
        self._apply_dtype_rules()

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        cfg = self.config
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        proj_factor = 1.0 / math.sqrt(2 * cfg.num_layers)
        for name, m in self.named_modules():
            if not isinstance(m, nn.Linear):
                continue
            if getattr(m, "zero_init", False):
                nn.init.zeros_(m.weight)
            elif m.weight.ndim == 2 and min(m.weight.shape) >= 64:
                nn.init.orthogonal_(m.weight, gain=1.0)
                if ".proj." in name or name.endswith(".proj"):
                    with torch.no_grad():
                        m.weight.mul_(proj_factor)

    @torch.no_grad()
    def _apply_dtype_rules(self) -> None:
        """Every initial value is bf16-rounded (the seed casts the model to bf16 and back);
        the three embedding tables are then stored in `embed_dtype`, everything else in fp32."""
        table_dtype = _DTYPES[self.config.embed_dtype]
        tables = {id(t.weight) for t in self.embedding_tables()}
        for p in self.parameters():
            rounded = p.data.to(torch.bfloat16)
            p.data = rounded.to(table_dtype if id(p) in tables else torch.float32)

    def embedding_tables(self) -> list[nn.Embedding]:
        out = [self.tok_emb]
        if self.bigram is not None:
            out.append(self.bigram.embed)
        if self.ve_shared is not None:
            out.append(self.ve_shared.embed)
        return out

    # ------------------------------------------------------------------ runtime switches
    def set_attention_backend(self, backend: str) -> str:
        """'sdpa' (the seed's call), 'sdpa-gqa', 'fa3' or 'auto' (FlashAttention-3 when installed and on CUDA)."""
        if backend == "auto":
            backend = "fa3" if flash_attn_3() is not None and self.tok_emb.weight.is_cuda else "sdpa"
        for b in self.blocks:
            b.attn.backend = backend
        return backend

    def set_qat(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, CastedLinear):
                m.qat = enabled

    # ------------------------------------------------------------------ forward
    def forward_hidden(self, ids: Tensor) -> Tensor:
        """Final-normed hidden states [B, T, d] for token ids [B, T]."""
        x = _lookup(self.tok_emb, ids)
        if self.bigram is not None:
            x = x + self.bigram(ids, _lookup)
        x = self.smear(rms_norm(x))
        x0 = x
        ve_base = self.ve_shared(ids, _lookup) if self.ve_shared is not None else None
        v_first: Tensor | None = None
        skips: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder:
                j = i - self.num_encoder
                if skips:
                    x = x + self.skip_weights[j].to(x.dtype)[None, None, :] * skips.pop()
            ve = None
            if ve_base is not None and i in self.ve_layers:
                ve = ve_base * self.ve_layer_scales[self.ve_layers.index(i)].to(ve_base.dtype)
            x, v_raw = block(x, x0, ve, v_first)
            if i == 0 and self.config.vrl_enabled and self.num_encoder > 0:
                v_first = v_raw
            if i < self.num_encoder:
                skips.append(x)
        return rms_norm(x)

    def compute_logits(self, hidden: Tensor, bias: Tensor | None = None) -> Tensor:
        """Soft-capped logits; `bias` (broadcast over positions) is added before the cap, as SLOT needs."""
        if self.lm_head is None:
            logits = F.linear(hidden, self.tok_emb.weight.to(hidden.dtype))
        else:
            logits = self.lm_head(hidden)
        if bias is not None:
            logits = logits + bias
        c = self.config.logit_softcap
        return c * torch.tanh(logits / c)

    def forward(self, ids: Tensor, targets: Tensor) -> Tensor:
        """Training loss: mean cross-entropy (fp32 logits), plus the MTP heads' loss when enabled."""
        h = self.forward_hidden(ids)
        logits = self.compute_logits(h)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        cfg = self.config
        if self.training and self.mtp_heads and cfg.mtp_loss_weight > 0:
            total, n = h.new_zeros((), dtype=torch.float32), 0
            T = h.size(1)
            c = cfg.logit_softcap
            for k, head in enumerate(self.mtp_heads):
                keep = T - (k + 1)
                if keep <= 0:
                    continue
                lg = head(h[:, :keep].reshape(-1, h.size(-1)))
                lg = c * torch.tanh(lg / c)
                total = total + F.cross_entropy(lg.float(), targets[:, k + 1 :].reshape(-1))
                n += 1
            if n:
                loss = loss + cfg.mtp_loss_weight * (total / n)
        return loss


def count_params(model: nn.Module, exclude_mtp: bool = False) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude_mtp and n.startswith("mtp_heads")))


def build_model(cfg: ModelConfig, seed: int | None = None, device: torch.device | str = "cpu") -> GPT:
    """Seed the CPU RNG (as the seed does before building), build on the CPU, then move."""
    if seed is not None:
        torch.manual_seed(seed)
    model = GPT(cfg)
    return model.to(device)
