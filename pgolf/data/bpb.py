"""Bits-per-byte accounting: pure functions, identical to the challenge's tables.

bytes(y | p) = base_bytes[y] + [has_leading_space[y] and not is_boundary[p]]
bpb = (sum_nll / N) / ln 2 * (N / bytes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

WORD_MARK = "\u2581"  # SentencePiece's word-boundary marker


@dataclass(frozen=True)
class ByteTables:
    """Per-token-id lookup tables (CPU tensors; move with `.to(device)`)."""

    base_bytes: torch.Tensor  # int16
    has_leading_space: torch.Tensor  # bool
    is_boundary: torch.Tensor  # bool
    unk_ids: tuple[int, ...] = ()

    def to(self, device: torch.device | str) -> ByteTables:
        return ByteTables(
            self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device), self.unk_ids
        )

    @property
    def size(self) -> int:
        return int(self.base_bytes.numel())

    def count(self, targets: torch.Tensor, prev: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Bytes of each target (int64); the tables need only the token before it, not `index`.

        Every byte source (these tables, a per-token sidecar) answers this call: `index`
        holds the stream indices of the targets (target i is tokens[i+1]).
        """
        return target_bytes(targets, prev, self)


def build_byte_tables(sp, vocab_size: int) -> ByteTables:
    """The challenge's three tables, from a loaded SentencePieceProcessor.

    Control, unknown and unused ids keep 0 bytes, no space flag, boundary=True;
    byte-fallback pieces count exactly one byte.
    """
    n_sp = int(sp.vocab_size())
    size = max(n_sp, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    unk = []
    for i in range(n_sp):
        if sp.is_unknown(i):
            unk.append(i)
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(WORD_MARK):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteTables(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary), tuple(unk))


def target_bytes(targets: torch.Tensor, prev: torch.Tensor, tables: ByteTables) -> torch.Tensor:
    """Bytes each target token stands for, given the token before it (same shapes, int64 out)."""
    t = targets.long()
    p = prev.long()
    extra = tables.has_leading_space[t] & ~tables.is_boundary[p]
    return tables.base_bytes[t].to(torch.int64) + extra.to(torch.int64)


def stream_bytes(tokens: np.ndarray | torch.Tensor, tables: ByteTables) -> int:
    """Total bytes of targets tokens[1:], each with its predecessor (what a full eval counts)."""
    x = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if x.numel() < 2:
        return 0
    return int(target_bytes(x[1:], x[:-1], tables).sum())


def bpb(loss_sum: float, tokens: float, n_bytes: float) -> tuple[float, float]:
    """(mean loss in nats, bits per byte) from the three float64 sums."""
    if tokens <= 0:
        raise ValueError("no scored tokens")
    if n_bytes <= 0:
        raise ValueError("scored tokens represent no bytes")
    val_loss = loss_sum / tokens
    return val_loss, (val_loss / math.log(2.0)) * (tokens / n_bytes)
