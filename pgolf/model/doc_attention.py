"""Document-bounded causal attention: no position attends across a BOS (FRONTIER F1.6, F2.4 item 5).

The segments come from the input ids alone (`pgolf.data.documents`): a row start, every BOS,
and every `max_doc_len` tokens from a document's start begin a new segment, as the record's
`cu_seqlens` do. Three kernels compute the same thing:

* ``fa3``: FlashAttention-3's varlen kernel (CUDA, when importable) over the flattened batch;
  the record's kernel. Its `cu_seqlens` are data-dependent, so a compiled caller passes them in
  (`Segments.cu_seqlens`); an eager call computes them here.
* ``flex``: PyTorch's flex attention with a block mask (CUDA, `runtime.attention=flex`; it skips
  whole masked blocks). PyTorch 2.13 has no flex backward on the CPU, so it is not used there.
* ``sdpa``: PyTorch SDPA with a boolean [B, 1, T, T] mask — every device; the CUDA path without
  FlashAttention-3 (and the CPU one with runtime.attention=sdpa-mask).
* ``padded``: the varlen kernel emulated: every segment is gathered into a row of a padded batch
  [segments, longest, H, D], SDPA runs causal on it (padding sits after a row's real keys, so the
  causal mask already hides it), and the rows are scattered back. Eager, data-dependent shapes:
  the CPU default. Its cost grows with segments x longest^2 instead of T^2, which is what makes the
  packing loader's [1, 4096] rows affordable on a CPU (measured: docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.data.documents import segment_flags, segment_positions

CU_BUCKET = 64  # cu_seqlens padded to a multiple of this, as the record does, so shapes repeat


@functools.lru_cache(maxsize=1)
def flash_attn_varlen():
    """FlashAttention-3's `flash_attn_varlen_func` if installed, else None."""
    for mod in ("flash_attn_interface", "flash_attn.flash_attn_interface"):
        try:
            return __import__(mod, fromlist=["flash_attn_varlen_func"]).flash_attn_varlen_func
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            continue
    return None


@functools.lru_cache(maxsize=1)
def flex_attention_fn():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception:  # noqa: BLE001 - older torch
        return None
    return flex_attention, create_block_mask


@dataclass
class Segments:
    """What one forward pass needs to keep attention (and RoPE positions) inside documents."""

    ids: Tensor  # [B, T] segment number of each position (from 0 in every row)
    kernel: str  # sdpa | flex | fa3
    positions: Tensor | None = None  # [B, T] RoPE positions restarting per segment; None = row positions
    mask: Tensor | None = None  # sdpa: bool [B, 1, T, T], True = may attend
    block_mask: object | None = None  # flex
    cu_seqlens: Tensor | None = None  # fa3: int32 over the flattened [B*T] batch, padded
    max_seqlen: int = 0
    gather: Tensor | None = None  # padded: [S, L] flat index of each padded slot (a valid index in padding)
    scatter: Tensor | None = None  # padded: [B*T] flat index into the padded [S*L] batch of each position


@torch.compiler.disable  # data-dependent length: never traced (a compiled caller passes cu_seqlens in)
def packed_cu_seqlens(flags: Tensor, bucket: int = CU_BUCKET) -> tuple[Tensor, int]:
    """(cu_seqlens int32, longest segment) of a flattened batch from its segment-start flags [B, T].

    Eager only (its length depends on the data); padded with the total length to a multiple
    of `bucket`, i.e. zero-length segments, exactly as `pgolf.data.documents.build_cu_seqlens`.
    """
    total = flags.numel()
    starts = torch.nonzero(flags.reshape(-1)).reshape(-1).to(torch.int32)
    bounds = torch.cat((starts, starts.new_tensor([total])))
    padded = -(-bounds.numel() // bucket) * bucket
    cu = torch.full((padded,), total, dtype=torch.int32, device=flags.device)
    cu[: bounds.numel()] = bounds
    return cu, int((bounds[1:] - bounds[:-1]).max())


def segments_for(
    ids: Tensor, kernel: str, max_doc_len: int = 0, document_positions: bool = False, cu_seqlens=None
) -> Segments:
    """The segments of a batch of ids [B, T] laid out for `kernel`."""
    flags = segment_flags(ids, max_doc_len=max_doc_len)
    seg = torch.cumsum(flags.to(torch.int64), dim=-1) - 1
    positions = segment_positions(ids, max_doc_len=max_doc_len) if document_positions else None
    out = Segments(ids=seg, kernel=kernel, positions=positions)
    T = ids.size(-1)
    if kernel == "fa3":
        if cu_seqlens is None:
            cu_seqlens, max_len = packed_cu_seqlens(flags)
        else:
            cu_seqlens, max_len = cu_seqlens
        out.cu_seqlens, out.max_seqlen = cu_seqlens, int(max_len)
    elif kernel == "padded":
        out.gather, out.scatter = _padded_layout(flags)
    elif kernel == "flex":
        _, create_block_mask = flex_attention_fn()

        def same_doc_causal(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (seg[b, q_idx] == seg[b, kv_idx])

        out.block_mask = create_block_mask(same_doc_causal, ids.size(0), None, T, T, device=ids.device)
    else:
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        out.mask = (seg[:, None, :, None] == seg[:, None, None, :]) & causal
    return out


def _padded_layout(flags: Tensor) -> tuple[Tensor, Tensor]:
    """(gather [S, L], scatter [B*T]) of the flattened batch's segments, L the longest segment."""
    flat = flags.reshape(-1)
    total = flat.numel()
    starts = torch.nonzero(flat).reshape(-1)
    lengths = torch.diff(torch.cat((starts, starts.new_tensor([total]))))
    L = int(lengths.max())
    offs = torch.arange(L, device=flags.device)
    gather = starts[:, None] + offs[None, :]
    gather = torch.where(offs[None, :] < lengths[:, None], gather, starts[:, None])  # padding: any real slot
    seg = torch.cumsum(flat.to(torch.int64), 0) - 1
    pos = torch.arange(total, device=flags.device) - starts[seg]
    return gather, seg * L + pos


def document_attention(q: Tensor, k: Tensor, v: Tensor, seg: Segments) -> Tensor:
    """q [B,T,H,D], k/v [B,T,Hkv,D] -> [B,T,H,D]; causal inside each segment, softmax scale 1/sqrt(D)."""
    B, T, H, D = q.shape
    if seg.kernel == "fa3":
        fn = flash_attn_varlen()
        out = fn(
            q.reshape(B * T, H, D),
            k.reshape(B * T, k.size(2), D),
            v.reshape(B * T, v.size(2), D),
            cu_seqlens_q=seg.cu_seqlens,
            cu_seqlens_k=seg.cu_seqlens,
            max_seqlen_q=seg.max_seqlen,
            max_seqlen_k=seg.max_seqlen,
            causal=True,
        )
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(B, T, H, D)
    gqa = k.size(2) != H
    if seg.kernel == "padded":
        S, L = seg.gather.shape

        # index_select, not x[idx]: its backward is index_add_, several times faster on a CPU than
        # advanced indexing's accumulating index_put_ (the padding slots only ever add exact zeros).
        def rows(x: Tensor) -> Tensor:  # [B,T,h,D] -> [S, h, L, D]
            flat = x.reshape(B * T, x.size(2), D).index_select(0, seg.gather.reshape(-1))
            return flat.reshape(S, L, x.size(2), D).transpose(1, 2)

        y = F.scaled_dot_product_attention(rows(q), rows(k), rows(v), is_causal=True, enable_gqa=gqa)
        return y.transpose(1, 2).reshape(S * L, H, D).index_select(0, seg.scatter).reshape(B, T, H, D)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if seg.kernel == "flex":
        flex, _ = flex_attention_fn()
        y = flex(qt, kt, vt, block_mask=seg.block_mask, enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=seg.mask, enable_gqa=gqa)
    return y.transpose(1, 2)


def resolve_kernel(requested: str, device: torch.device) -> str:
    """The kernel a runtime.attention setting gives document attention on a device."""
    if device.type != "cuda":
        # FA3 is CUDA-only and flex has no CPU backward in torch 2.13: the emulated varlen kernel,
        # or SDPA with the full mask when asked for by name.
        return "sdpa" if requested == "sdpa-mask" else "padded"
    if requested in ("auto", "fa3") and flash_attn_varlen() is not None:
        return "fa3"
    # flex only when asked for: its block mask is built inside the (fullgraph) compiled step,
    # which no GPU run has exercised yet; SDPA with the mask is the portable default.
    if requested == "flex" and flex_attention_fn() is not None:
        return "flex"
    return "sdpa"


def batch_cu_seqlens(ids: Tensor, max_doc_len: int, device: torch.device | str) -> tuple[Tensor, int]:
    """(cu_seqlens on `device`, max_seqlen) of a batch, for a caller that runs the model compiled.

    max_seqlen is a constant bound (the cut length, or the row length), not the batch's own
    longest segment: a compiled graph keeps one shape, as the record passes TRAIN_SEQ_LEN.
    """
    cu, _ = packed_cu_seqlens(segment_flags(ids, max_doc_len=max_doc_len))
    T = ids.size(-1)
    return cu.to(device, non_blocking=True), min(max_doc_len, T) if max_doc_len > 0 else T
