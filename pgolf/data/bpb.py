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


BYTE_SOURCES = ("auto", "sidecar", "tables")


def caseops_setting(value: str | bool | None) -> bool | None:
    """`data.caseops` / CASEOPS_ENABLED: None for auto (detect), else True or False."""
    if value is None or isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    from pgolf.errors import ConfigError

    raise ConfigError(f"data.caseops={value!r}: must be auto, 1 or 0 (CASEOPS_ENABLED)")


def load_byte_source(
    data_dir,
    tokenizer=None,
    vocab_size: int | None = None,
    *,
    source: str = "auto",
    caseops: str | bool | None = "auto",
):
    """The byte source every evaluator counts with: the dataset's sidecar when it has one
    (FRONTIER F1.4), otherwise the challenge's byte tables.

    `tokenizer` is a path (default: the data directory's, see `find_tokenizer`). A
    tokenizer that reserves the CaseOps operators needs a sidecar: the tables would charge
    3 bytes per operator. `source` (data.byte_source) forces "sidecar" or "tables";
    `caseops` (data.caseops, CASEOPS_ENABLED) asserts what the dataset is.
    """
    from pathlib import Path

    from pgolf.data.manifest import read_manifest
    from pgolf.data.shards import list_shards
    from pgolf.data.sidecar import SIDECAR_GLOB, SidecarBytes, list_sidecar_shards, load_sidecar
    from pgolf.data.tokenizer import caseops_operator_ids, find_tokenizer, load_tokenizer
    from pgolf.errors import ConfigError, DataError

    data_dir = Path(data_dir)
    if source not in BYTE_SOURCES:
        raise ConfigError(f"data.byte_source={source!r}: must be one of {', '.join(BYTE_SOURCES)}")
    tok_path = find_tokenizer(data_dir, tokenizer)
    sp = load_tokenizer(tok_path, vocab_size)
    vocab = vocab_size or int(sp.vocab_size())
    ops = caseops_operator_ids(sp, tok_path, vocab)
    want = caseops_setting(caseops)
    if want is True and ops is None:
        raise ConfigError(f"data.caseops=1 (CASEOPS_ENABLED) but {tok_path} does not reserve the CaseOps operators")
    if want is False and ops is not None:
        raise ConfigError(
            f"data.caseops=0 (CASEOPS_ENABLED) but {tok_path} reserves the CaseOps operators: "
            "its byte tables would charge 3 bytes per operator"
        )
    tables = build_byte_tables(sp, vocab)
    has_sidecar = bool(list_sidecar_shards(data_dir))
    if source == "tables" or (source == "auto" and not has_sidecar):
        if ops is not None:
            raise DataError(
                f"{data_dir}: CaseOps dataset ({tok_path.name} reserves the case operators) without a byte "
                f"sidecar ({SIDECAR_GLOB}); the byte tables would count every operator as 3 bytes"
            )
        return tables
    manifest = read_manifest(data_dir) or {}
    rule = (manifest.get("byte_sidecar") or {}).get("rule", "raw")
    counts = load_sidecar(data_dir, list_shards(data_dir, "val"))
    return SidecarBytes(counts, tables.size, tables.unk_ids, rule=rule, caseops=ops is not None)
