"""Validation documents that also appear in the training split (FRONTIER F1.5, issue #2127).

A document is keyed by a hash of its token ids after BOS. SentencePiece encodes the
normalised text, so two documents have the same ids exactly when their normalised texts
are equal: the key is a hash of the normalised text, computed without decoding. Splits
are read as streams of shards, so a document cut by a shard boundary is one document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pgolf.data.shards import read_shard
from pgolf.data.tokenizer import BOS_ID


def document_key(ids: np.ndarray | Sequence[int]) -> bytes:
    """16-byte BLAKE2b of a document's ids (without its BOS) as little-endian uint16."""
    return hashlib.blake2b(np.asarray(ids, dtype="<u2").tobytes(), digest_size=16).digest()


def iter_documents(files: Sequence[Path]) -> Iterator[tuple[np.ndarray, Path, int]]:
    """(ids without BOS, shard where the document starts, its offset there) for every document
    of a split read as one stream; tokens before the first BOS are not a document."""
    carry: list[np.ndarray] = []
    start: tuple[Path, int] | None = None
    for f in files:
        arr = np.asarray(read_shard(f))
        bos = np.flatnonzero(arr == BOS_ID)
        if bos.size == 0:
            if start is not None:
                carry.append(arr)
            continue
        if start is not None:
            carry.append(arr[: bos[0]])
            yield np.concatenate(carry), start[0], start[1]
        ends = [*bos[1:].tolist(), arr.size]
        for s, e in zip(bos[:-1].tolist(), ends[:-1]):
            yield arr[s + 1 : e], f, s
        start = (f, int(bos[-1]))
        carry = [arr[bos[-1] + 1 :]]
    if start is not None:
        yield np.concatenate(carry), start[0], start[1]


def val_keys(files: Sequence[Path]) -> tuple[dict[bytes, int], int]:
    """(key -> index of the first validation document with it, number of documents);
    empty documents have no key."""
    keys: dict[bytes, int] = {}
    n = 0
    for n, (ids, _f, _o) in enumerate(iter_documents(files), 1):
        if ids.size:
            keys.setdefault(document_key(ids), n - 1)
    return keys, n


def find_leaks(
    val_files: Sequence[Path],
    train_files: Sequence[Path],
    max_examples: int = 5,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Scan the training split for validation documents.

    Returns counts (validation documents, how many of them occur in training, training
    documents scanned and how many are copies) and the first `max_examples` occurrences.
    """
    keys, n_val = val_keys(val_files)
    hit: set[int] = set()
    copies = scanned = 0
    examples = []
    for ids, f, off in iter_documents(train_files):
        scanned += 1
        if progress is not None and scanned % 100_000 == 0:
            progress(scanned)
        if not ids.size:
            continue
        v = keys.get(document_key(ids))
        if v is None:
            continue
        copies += 1
        hit.add(v)
        if len(examples) < max_examples:
            examples.append({"val_document": v, "train_shard": f.name, "offset": int(off), "tokens": int(ids.size)})
    return {
        "val_documents": n_val,
        "leaked_val_documents": len(hit),
        "train_documents": scanned,
        "train_copies": copies,
        "examples": examples,
    }
