"""Document structure of a token stream: where documents start, and how they are cut.

Every document in a shard is written as ``[BOS] + ids`` (BOS = 1, no EOS), so the
BOS positions are the document boundaries. Pure functions, shared by the loaders
(which hand boundaries to the model), the model (document-bounded attention and
per-document RoPE positions) and the document evaluators (TTT per document).

Two equivalent forms of the same cut:

* ``cu_seqlens`` (varlen kernels, FRONTIER F1.6): segment starts plus the total length,
  padded with the total length to a multiple of a bucket so compiled shapes repeat;
* ``segment_ids`` (masks for SDPA / flex attention): a segment number per position.

A segment is a document, or a ``max_doc_len`` piece of a longer one counted from the
document's start; the tokens before a row's first BOS are a segment of their own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pgolf.data.tokenizer import BOS_ID


def bos_positions(ids: np.ndarray | Tensor, bos_id: int = BOS_ID) -> np.ndarray:
    """Indices (int64) of the BOS tokens of a 1-D id array."""
    arr = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"bos_positions expects a 1-D array, got shape {arr.shape}")
    return np.flatnonzero(arr == bos_id).astype(np.int64)


def segment_starts(bos_pos, total_len: int, max_doc_len: int = 0) -> list[int]:
    """Segment starts in [0, total_len): every BOS (and 0), each document cut every max_doc_len."""
    starts = [int(p) for p in bos_pos if 0 <= int(p) < total_len]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    out: list[int] = []
    for s, e in zip(starts, [*starts[1:], total_len]):
        if max_doc_len > 0:
            out.extend(range(s, e, max_doc_len))
        else:
            out.append(s)
    return out


def build_cu_seqlens(bos_pos, total_len: int, max_doc_len: int = 0, bucket: int = 64) -> tuple[np.ndarray, int]:
    """(cu_seqlens int32, longest segment) as FRONTIER F1.6 builds them.

    ``cu`` is the segment starts followed by ``total_len``, padded with ``total_len``
    (zero-length segments) up to the next multiple of ``bucket``.
    """
    if total_len < 1:
        raise ValueError(f"total_len must be >= 1, got {total_len}")
    starts = segment_starts(bos_pos, total_len, max_doc_len)
    bounds = [*starts, total_len]
    padded = -(-len(bounds) // bucket) * bucket if bucket > 0 else len(bounds)
    cu = np.full(padded, total_len, dtype=np.int32)
    cu[: len(bounds)] = bounds
    max_seqlen = max(e - s for s, e in zip(starts, bounds[1:]))
    return cu, int(max_seqlen)


def segment_flags(ids: Tensor, bos_id: int = BOS_ID, max_doc_len: int = 0) -> Tensor:
    """Bool [.., T]: True where a segment starts (row start, each BOS, every max_doc_len into a document)."""
    T = ids.size(-1)
    is_bos = ids == bos_id
    flag = is_bos.clone()
    flag[..., 0] = True
    if max_doc_len > 0:
        t = torch.arange(T, device=ids.device).expand_as(ids)
        doc_start = torch.cummax(torch.where(flag, t, torch.zeros_like(t)), dim=-1).values
        flag = flag | ((t - doc_start) % max_doc_len == 0)
    return flag


def segment_ids(ids: Tensor, bos_id: int = BOS_ID, max_doc_len: int = 0) -> Tensor:
    """Segment number (int64, from 0 in every row) of each position of ids [.., T]."""
    return torch.cumsum(segment_flags(ids, bos_id, max_doc_len).to(torch.int64), dim=-1) - 1


def segment_positions(ids: Tensor, bos_id: int = BOS_ID, max_doc_len: int = 0) -> Tensor:
    """Offset (int64) of each position from the start of its segment: RoPE positions restarting per document."""
    flag = segment_flags(ids, bos_id, max_doc_len)
    t = torch.arange(ids.size(-1), device=ids.device).expand_as(ids)
    return t - torch.cummax(torch.where(flag, t, torch.zeros_like(t)), dim=-1).values


def document_spans(tokens: np.ndarray | Tensor, bos_id: int = BOS_ID) -> list[tuple[int, int]]:
    """[start, end) of every document of a stream, each starting at its BOS.

    Tokens before the first BOS (a stream that does not start with one) are not a
    document and are not returned; callers that need every token check `spans[0][0]`.
    """
    pos = bos_positions(tokens, bos_id)
    n = len(tokens)
    ends = [*pos[1:].tolist(), n]
    return [(int(s), int(e)) for s, e in zip(pos.tolist(), ends)]
