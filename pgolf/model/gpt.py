"""The GPT: the seed's (BigramHash + SmearGate input, U-Net of blocks, tied soft-capped head)
and, by config, the frontier record's options (depth recurrence, gated skips, parallel lanes,
attention output gates, the input-dependent SmearGate, document-bounded attention).

`forward_hidden(ids)` and `compute_logits(hidden, bias)` are the only forward pass;
the training loss and every evaluator are built on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.model import doc_attention
from pgolf.model.attention import flash_attn_3
from pgolf.model.block import Block
from pgolf.model.embeddings import BigramHash, SmearGate, ValueEmbedding
from pgolf.model.gates import input_smear, skip_merge
from pgolf.model.lanes import PARALLEL_RESID_INIT, merge_lanes, parallel_block
from pgolf.model.layers import CastedLinear, rms_norm
from pgolf.model.recurrence import layer_schedule, num_skip_rows, skip_sources
from pgolf.model.softcap_ce import softcap_cross_entropy

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
        self.smear = SmearGate(d) if cfg.seed_smear else None
        self.num_encoder = cfg.num_layers // 2
        self.num_decoder = cfg.num_layers - self.num_encoder
        # Layer order with the loops off and on (pgolf.model.recurrence); skip rows cover the longer one.
        loops = (cfg.num_layers, cfg.num_loops, cfg.loop_start, cfg.loop_end)
        self.schedules = {on: layer_schedule(*loops, looping=on) for on in (False, True)}
        rows = num_skip_rows(*loops)
        self.skip_weights = nn.Parameter(torch.ones(rows, d, dtype=torch.float32))
        self.skip_gates = nn.Parameter(torch.zeros(rows, d, dtype=torch.float32)) if cfg.skip_gates_enabled else None
        # Built with the loops on: that is how the model is evaluated (the trainer switches them off first).
        self.looping = cfg.num_loops > 0
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        if cfg.parallel_start_layer > 0:  # one row per layer, as the record (only the lane layers' are used)
            n = cfg.num_layers
            self.parallel_post_lambdas = nn.Parameter(torch.ones(n, 2, 2, dtype=torch.float32))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((n, 2), PARALLEL_RESID_INIT, dtype=torch.float32))
        else:
            self.parallel_post_lambdas = self.parallel_resid_lambdas = None
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
        if cfg.smear_gate_enabled:  # created last, as the record does (its construction draws 12 numbers)
            self.smear_gate = CastedLinear(cfg.gate_window, 1, zero_init=True)
            self.smear_lambda = nn.Parameter(torch.zeros(1, dtype=torch.float32))
        else:
            self.smear_gate, self.smear_lambda = None, None
        self.doc_kernel = "sdpa"
        self._init_weights()
        self._apply_dtype_rules()

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        cfg = self.config
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        proj_factor = 1.0 / math.sqrt(2 * cfg.num_layers)
        done: set[int] = set()
        if cfg.init_order == "frontier":
            done = self._init_like_banks()
        for name, m in self.named_modules():
            if not isinstance(m, nn.Linear) or id(m) in done:
                continue
            if getattr(m, "zero_init", False):
                nn.init.zeros_(m.weight)
            elif m.weight.ndim == 2 and min(m.weight.shape) >= 64:
                nn.init.orthogonal_(m.weight, gain=1.0)
                if ".proj." in name or name.endswith(".proj"):
                    with torch.no_grad():
                        m.weight.mul_(proj_factor)

    def _init_like_banks(self) -> set[int]:
        """The block matrices in the record's draw order (FRONTIER F2.3): for every layer
        orthogonal q, (zero) out, orthogonal k and v; then for every layer orthogonal up, (zero) down."""
        done = set()
        for b in self.blocks:
            a = b.attn
            nn.init.orthogonal_(a.c_q.weight, gain=1.0)
            nn.init.zeros_(a.proj.weight)
            nn.init.orthogonal_(a.c_k.weight, gain=1.0)
            nn.init.orthogonal_(a.c_v.weight, gain=1.0)
            done |= {id(a.c_q), id(a.proj), id(a.c_k), id(a.c_v)}
        for b in self.blocks:
            nn.init.orthogonal_(b.mlp.fc.weight, gain=1.0)
            nn.init.zeros_(b.mlp.proj.weight)
            done |= {id(b.mlp.fc), id(b.mlp.proj)}
        return done

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
        """'sdpa' (the seed's call), 'sdpa-gqa', 'fa3', 'flex' or 'auto' (FlashAttention-3 when installed and on CUDA).

        With document attention the kernel is FA3's varlen one, flex attention or SDPA with a
        mask (`pgolf.model.doc_attention.resolve_kernel`); the name returned says which.
        """
        requested = backend
        if backend in ("auto", "flex"):
            backend = "fa3" if flash_attn_3() is not None and self.tok_emb.weight.is_cuda else "sdpa"
        for b in self.blocks:
            b.attn.backend = backend
        if self.config.doc_attention:
            self.doc_kernel = doc_attention.resolve_kernel(requested, self.tok_emb.weight.device)
            return f"doc-{self.doc_kernel}"
        return backend

    def set_looping(self, on: bool) -> None:
        """Depth recurrence on or off (a no-op without loops). The trainer switches it on at
        `model.enable_looping_at`; a freshly built model has it on, as it is evaluated."""
        self.looping = bool(on) and self.config.num_loops > 0

    @property
    def wants_cu_seqlens(self) -> bool:
        """True when document attention runs FA3's varlen kernel, whose cu_seqlens a compiled caller passes."""
        return self.config.doc_attention and self.doc_kernel == "fa3"

    def document_segments(self, ids: Tensor, cu_seqlens=None) -> doc_attention.Segments | None:
        cfg = self.config
        if not cfg.doc_attention:
            return None
        return doc_attention.segments_for(ids, self.doc_kernel, cfg.doc_max_len, cfg.document_positions, cu_seqlens)

    def set_qat(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, CastedLinear):
                m.qat = enabled

    # ------------------------------------------------------------------ forward
    def embed(self, ids: Tensor) -> Tensor:
        """The block stack's input: token (+ bigram) embedding, input smear, RMS norm, seed smear."""
        x = _lookup(self.tok_emb, ids)
        if self.bigram is not None:
            x = x + self.bigram(ids, _lookup)
        if self.smear_gate is not None:
            x = input_smear(x, ids, self.smear_gate.weight, self.smear_lambda, self.config.smear_gate_bos_fix)
        x = rms_norm(x)
        return self.smear(x) if self.smear is not None else x

    def forward_hidden(self, ids: Tensor, cu_seqlens=None, adapters=None) -> Tensor:
        """Final-normed hidden states [B, T, d] for token ids [B, T].

        `cu_seqlens` ((cu int32, max_seqlen), optional) only serves FA3's varlen kernel under
        document attention; every other path derives the documents from the BOS in `ids`.
        `adapters` (optional, `pgolf.eval.lora.DocumentAdapters`): per-row low-rank deltas;
        executed layer pass k (a repeated layer counts once per repeat) consults
        `adapters.slot(k)`. Without them the computation is exactly the plain one.
        """
        cfg = self.config
        x = self.embed(ids)
        x0 = x
        doc = self.document_segments(ids, cu_seqlens)
        ve_base = self.ve_shared(ids, _lookup) if self.ve_shared is not None else None
        v_first: Tensor | None = None
        encoder, decoder = self.schedules[self.looping]
        sources = skip_sources(len(encoder), len(decoder), self.skip_weights.size(0))
        psl = cfg.parallel_start_layer
        outs: list[Tensor] = []
        lanes: tuple[Tensor, Tensor] | None = None
        for k, i in enumerate([*encoder, *decoder]):
            block = self.blocks[i]
            ve = None
            if ve_base is not None and i in self.ve_layers:
                ve = ve_base * self.ve_layer_scales[self.ve_layers.index(i)].to(ve_base.dtype)
            dec = k - len(encoder)  # decoder pass number (< 0 in the encoder)
            if dec >= 0 and psl > 0 and i >= psl and lanes is None:
                lanes = (x, x)
            if dec >= 0 and sources[dec] is not None:  # the skip goes to lane 0 when the lanes run
                gate = self.skip_gates[dec] if self.skip_gates is not None else None
                if lanes is None:
                    x = skip_merge(x, outs[sources[dec]], self.skip_weights[dec], gate)
                else:
                    lanes = (skip_merge(lanes[0], outs[sources[dec]], self.skip_weights[dec], gate), lanes[1])
            ad = adapters.slot(k) if adapters is not None else None
            if lanes is None:
                x, v_raw = block(x, x0, ve, v_first, doc, ad)
            else:
                resid, post = self.parallel_resid_lambdas[i], self.parallel_post_lambdas[i]
                *lanes, v_raw = parallel_block(block, *lanes, x0, resid, post, ve, v_first, doc, ad)
            if k == 0 and i == 0 and cfg.vrl_enabled and self.num_encoder > 0:
                v_first = v_raw
            if dec < 0:
                outs.append(x)
        if lanes is not None:
            x = merge_lanes(*lanes, cfg.parallel_final_lane)
        return rms_norm(x)

    def raw_logits(self, hidden: Tensor, bias: Tensor | None = None, adapters=None) -> Tensor:
        """The head's logits before the soft-cap (`bias` and the adapters' head delta added)."""
        if self.lm_head is None:
            logits = F.linear(hidden, self.tok_emb.weight.to(hidden.dtype))
        else:
            logits = self.lm_head(hidden)
        if adapters is not None and adapters.head is not None:
            logits = logits + adapters.head(hidden)
        return logits if bias is None else logits + bias

    def compute_logits(self, hidden: Tensor, bias: Tensor | None = None, adapters=None) -> Tensor:
        """Soft-capped logits; `bias` (broadcast over positions) is added before the cap, as SLOT needs."""
        c = self.config.logit_softcap
        return c * torch.tanh(self.raw_logits(hidden, bias, adapters) / c)

    def forward(self, ids: Tensor, targets: Tensor, cu_seqlens=None) -> Tensor:
        """Training loss: mean cross-entropy (fp32 logits), plus the MTP heads' loss when enabled.

        With `fused_ce` the soft-cap itself is taken in fp32 on the raw logits, in one function
        with the loss, as the record's fused kernel computes it (F2.9, `softcap_ce`); otherwise in
        the activation dtype, as the seed does.
        """
        h = self.forward_hidden(ids, cu_seqlens)
        if self.config.fused_ce:
            raw = self.raw_logits(h)
            loss = softcap_cross_entropy(raw.reshape(-1, raw.size(-1)), targets.reshape(-1), self.config.logit_softcap)
        else:
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
