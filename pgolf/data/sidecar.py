"""The validation byte sidecar: one byte count per validation token (FRONTIER F1.4).

Files `fineweb_val_bytes_NNNNNN.bin` use the token shard format (256 int32 header, then
uint16) and are cut at the same offsets as `fineweb_val_NNNNNN.bin`, so entry i of the
concatenated sidecar is the byte count of val token i. A scored target i is token i+1,
so it counts `sidecar[i + 1]`; BOS counts 0.

Two rules for what a token counts (the manifest records which one a dataset uses):

``raw``         the record's rule (`surface_piece_original_byte_counts`): every piece counts
                the original UTF-8 bytes of the raw text it covers (SentencePiece's piece
                surfaces); CaseOps operators count 0, an escaped literal operator 3; a
                character NFKC expands over several pieces counts in full on the last one;
                the leading/trailing whitespace the normaliser deletes counts nowhere. A
                document's entries sum to its original bytes less those edges, whatever the
                tokenizer, so raw sidecars make different tokenizers' bpb comparable.
``normalized``  the challenge's byte tables (SPEC §3) written out per token: the bytes of
                the normalised piece plus its leading space unless the token before it is a
                boundary. Scoring with it equals scoring with the tables, exactly. Only for
                tokenizers without CaseOps (the tables would charge 3 bytes per operator).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import read_shard
from pgolf.errors import DataError

RULES = ("raw", "normalized")
SIDECAR_GLOB = "fineweb_val_bytes_*.bin"
MAX_COUNT = 0xFFFF  # the shard format's uint16


def sidecar_name(index: int) -> str:
    return f"fineweb_val_bytes_{index:06d}.bin"


def list_sidecar_shards(data_dir: str | Path) -> list[Path]:
    """The sidecar's shards in sorted order (empty when the dataset has none)."""
    return sorted(Path(data_dir).glob(SIDECAR_GLOB))


def piece_surfaces(sp, texts: Sequence[str], num_threads: int = 2) -> list[tuple[list[int], list[str]]]:
    """(ids, surfaces) of each text: SentencePiece's pieces and the raw substrings they cover.

    The surfaces come from `encode(..., out_type='offset_mapping')`; they are the proto
    surfaces the record reads (tests/test_data_caseops.py checks them against the
    record's own output), without needing the protobuf package.
    """
    if not texts:
        return []
    out = []
    for text, enc in zip(texts, sp.encode(list(texts), out_type="offset_mapping", num_threads=num_threads)):
        out.append((list(enc["ids"]), [text[a:b] for a, b in enc["offsets"]]))
    return out


def raw_counts(surfaces: Sequence[str], caseops: bool) -> list[int]:
    """The `raw` rule for one document's pieces (without its BOS)."""
    if caseops:
        from pgolf.data.caseops import fast_surface_byte_counts

        return fast_surface_byte_counts(surfaces)
    return [len(s.encode("utf-8")) for s in surfaces]


def normalized_counts(ids: Sequence[int], tables) -> list[int]:
    """The `normalized` rule for one document's pieces (without its BOS): the byte tables,
    each piece given the token before it (BOS for the first)."""
    from pgolf.data.bpb import target_bytes
    from pgolf.data.tokenizer import BOS_ID

    if not ids:
        return []
    t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    prev = torch.cat([torch.tensor([BOS_ID]), t[:-1]])
    return target_bytes(t, prev, tables).tolist()


def check_counts(counts: Sequence[int], where: str) -> None:
    if counts and max(counts) > MAX_COUNT:
        k = int(np.argmax(np.asarray(counts)))
        raise DataError(
            f"{where}: piece {k} stands for {counts[k]:,} bytes (e.g. a very long whitespace run); "
            f"the sidecar's uint16 holds at most {MAX_COUNT:,}"
        )


def load_sidecar(data_dir: str | Path, val_files: Sequence[Path]) -> np.ndarray:
    """The sidecar of `data_dir`, checked shard by shard against the val shards (int32).

    Each sidecar shard must hold exactly as many entries as its val shard: the record's
    exporters write them from the same buffer, and a length difference means the two are
    not aligned (the record only checks the total, T:520-535).
    """
    data_dir = Path(data_dir)
    files = list_sidecar_shards(data_dir)
    if not files:
        raise DataError(f"{data_dir}: no byte sidecar ({SIDECAR_GLOB} files)")
    names = {sidecar_name(i) for i in range(len(val_files))}
    extra = [f.name for f in files if f.name not in names]
    if len(files) != len(val_files) or extra:
        raise DataError(
            f"{data_dir}: {len(files)} sidecar shards ({', '.join(f.name for f in files[:3])}...) for "
            f"{len(val_files)} val shards; expected {', '.join(sorted(names)[:3])}..."
        )
    parts = []
    for vf, sf in zip(val_files, files):
        counts = read_shard(sf)
        n = read_shard(vf).size
        if counts.size != n:
            raise DataError(f"{sf}: {counts.size:,} byte counts for the {n:,} tokens of {vf.name}")
        parts.append(np.asarray(counts, dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


class SidecarBytes:
    """A byte source reading per-token counts: target i (token i+1 of the stream) counts
    `counts[i + 1]`. Same interface as `ByteTables` (`count`, `to`, `size`, `unk_ids`)."""

    def __init__(
        self,
        counts: np.ndarray | torch.Tensor,
        vocab_size: int,
        unk_ids: tuple[int, ...] = (),
        rule: str = "raw",
        caseops: bool = False,
    ) -> None:
        self.counts = counts if isinstance(counts, torch.Tensor) else torch.from_numpy(np.asarray(counts, np.int32))
        self.vocab_size = int(vocab_size)
        self.unk_ids = tuple(unk_ids)
        self.rule = rule
        self.caseops = caseops

    @property
    def size(self) -> int:
        """Ids covered (the tokenizer's vocabulary), as `ByteTables.size`."""
        return self.vocab_size

    def __len__(self) -> int:
        return int(self.counts.numel())

    def to(self, device: torch.device | str) -> SidecarBytes:
        return SidecarBytes(self.counts.to(device), self.vocab_size, self.unk_ids, self.rule, self.caseops)

    def count(self, targets: torch.Tensor, prev: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if index is None:
            raise ValueError("sidecar byte counts need each target's stream index (pass first_target or index)")
        idx = index.reshape(targets.shape).long() + 1
        lo, hi = torch.stack(torch.aminmax(idx)).tolist() if idx.numel() else (1, 0)  # one device sync
        if lo < 1 or hi >= self.counts.numel():
            raise DataError(
                f"a scored target lies outside the byte sidecar ({self.counts.numel() - 1:,} targets): "
                "the sidecar belongs to another validation stream"
            )
        return self.counts.to(idx.device)[idx].to(torch.int64)

    def total(self, n_targets: int | None = None) -> int:
        """Bytes of targets 0..n-1 (all targets by default)."""
        end = self.counts.numel() if n_targets is None else n_targets + 1
        return int(self.counts[1:end].to(torch.int64).sum())


def _char_kind(sp, ch: str) -> str:
    """How SentencePiece's normaliser treats a character: 'kept', 'space' or 'deleted'."""
    n = sp.normalize("a" + ch + "b")
    return "deleted" if n == "ab" else ("space" if n == "a\u2581b" else "kept")


def covered_text(sp, text: str) -> str:
    """The part of a document its pieces' surfaces cover: everything but the leading
    whitespace and deleted characters, and the trailing whitespace (characters the
    normaliser deletes right after the last kept one stay with the last piece).

    Its UTF-8 length is what a `raw` sidecar must sum to for the document; the builders
    check that against the per-piece counts, an independent computation.
    """
    a, b = 0, len(text)
    while a < b and _char_kind(sp, text[a]) != "kept":
        a += 1
    while b > a and _char_kind(sp, text[b - 1]) != "kept":
        b -= 1
    while a < b < len(text) and _char_kind(sp, text[b]) == "deleted":
        b += 1
    return text[a:b]
