"""`pgolf data stats`: validate a dataset directory and count what evaluation will see.

Everything is computed from the shards themselves (the manifest's counts are
checked against them, not trusted): tokens, documents (BOS ids), and the exact
byte count of the validation stream with the challenge's tables (every target
tokens[1:] given its predecessor, across shard boundaries). Shards are read in
chunks, so a 100M-token shard never needs more than a few MB of extra memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pgolf.data.bpb import ByteTables, build_byte_tables, target_bytes
from pgolf.data.manifest import read_manifest, verify_files
from pgolf.data.shards import list_shards, read_shard
from pgolf.data.tokenizer import BOS_ID, file_sha256, find_tokenizer, load_tokenizer
from pgolf.errors import DataError

CHUNK = 1 << 22


def _chunks(files: list[Path], vocab_size: int | None, chunk: int = CHUNK) -> Iterator[tuple[Path, np.ndarray]]:
    for f in files:
        tokens = read_shard(f, vocab_size)
        for start in range(0, len(tokens), chunk):
            yield f, np.asarray(tokens[start : start + chunk])


def stream_counts(files: list[Path], tables: ByteTables | None, vocab_size: int | None) -> dict:
    """Tokens, BOS count, id histogram and (with tables) bytes and `<unk>` targets of one split.

    The stream is the split's shards concatenated; each target is counted with the
    token before it, so a document cut by a shard boundary counts exactly once.
    `histogram` (with `vocab_size`) counts every token; `first` is the stream's
    first token, the only one that is never a target.
    """
    tokens = docs = n_bytes = unk = space_lost = 0
    prev: int | None = None
    first: int | None = None
    hist = np.zeros(vocab_size, dtype=np.int64) if vocab_size else None
    unk_mask = None
    if tables is not None:
        unk_mask = torch.zeros(tables.size, dtype=torch.bool)
        unk_mask[list(tables.unk_ids)] = True
    for _, arr in _chunks(files, vocab_size):
        if arr.size == 0:
            continue
        if first is None:
            first = int(arr[0])
        tokens += int(arr.size)
        docs += int(np.count_nonzero(arr == BOS_ID))
        if hist is not None:
            hist += np.bincount(arr, minlength=vocab_size)
        if tables is None:
            continue
        x = torch.from_numpy(arr.astype(np.int64))
        if prev is not None:
            x = torch.cat([torch.tensor([prev]), x])
        if x.numel() >= 2:
            y, p = x[1:], x[:-1]
            n_bytes += int(target_bytes(y, p, tables).sum())
            unk += int(unk_mask[y].sum())
            space_lost += int((tables.has_leading_space[y] & unk_mask[p]).sum())
        prev = int(x[-1])
    out = {"tokens": tokens, "docs": docs, "first": first, "histogram": hist}
    if tables is not None:
        out.update(bytes=n_bytes, unk_tokens=unk, uncounted_space_bytes=space_lost)
    return out


def unigram_bpb(train_hist: np.ndarray, val_target_hist: np.ndarray, val_bytes: int) -> float | None:
    """Bits per byte of a context-free model: train token frequencies (add-one smoothed) scored on
    the val targets. A reference line any trained model should beat by a wide margin."""
    if val_bytes <= 0:
        return None
    p = (train_hist.astype(np.float64) + 1.0) / (float(train_hist.sum()) + train_hist.size)
    bits = -math.fsum((val_target_hist.astype(np.float64) * np.log2(p)).tolist())
    return round(bits / val_bytes, 6)  # rounded: manifests must not differ in the last ulp between machines


def val_target_histogram(val: dict) -> np.ndarray:
    """The val histogram without the first token (never a target)."""
    hist = val["histogram"].copy()
    if val["first"] is not None:
        hist[val["first"]] -= 1
    return hist


def dataset_stats(
    data_dir: str | Path,
    tokenizer: str | Path | None = None,
    vocab_size: int | None = None,
    seq_len: int | None = 2048,
    verify: bool = False,
) -> dict:
    """Validate every shard of DIR and return its statistics (one JSON-able dict).

    `vocab_size` defaults to the tokenizer's; with both, they must agree. `verify`
    also checks each file's sha256 against the manifest.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    manifest = read_manifest(data_dir)
    tok_path = find_tokenizer(data_dir, tokenizer)
    sp = load_tokenizer(tok_path, vocab_size)
    vocab = int(sp.vocab_size())
    if vocab > 65536:
        raise DataError(f"{tok_path}: vocabulary of {vocab} ids does not fit the uint16 shard format")
    tables = build_byte_tables(sp, vocab)
    train_files = list_shards(data_dir, "train")
    val_files = list_shards(data_dir, "val")
    if verify and manifest is not None:
        verify_files(data_dir, manifest)
    train = stream_counts(train_files, None, vocab)
    val = stream_counts(val_files, tables, vocab)
    # What the scorer counts: the val byte sidecar when there is one (CaseOps), else the tables.
    from pgolf.data.bpb import load_byte_source

    source = load_byte_source(data_dir, tok_path, vocab)
    byte_source = f"sidecar:{source.rule}" if hasattr(source, "rule") else "tables"
    if hasattr(source, "rule"):
        val["table_bytes"], val["bytes"] = val["bytes"], source.total()
    if train["tokens"] == 0:
        raise DataError(f"{data_dir}: empty train split (the train shards hold no tokens)")
    if val["tokens"] < 2:
        raise DataError(f"{data_dir}: empty val split (the val shards hold {val['tokens']} tokens)")
    counts = (manifest or {}).get("counts") or {}
    for key, actual in (("train_tokens", train["tokens"]), ("val_tokens", val["tokens"]), ("val_bytes", val["bytes"])):
        if key in counts and int(counts[key]) != actual:
            raise DataError(f"{data_dir / 'manifest.json'}: {key} is {counts[key]} but the shards give {actual}")
    targets = val["tokens"] - 1
    out = {
        "data_dir": str(data_dir),
        "kind": (manifest or {}).get("kind"),
        "vocab_size": vocab,
        "train_tokens": train["tokens"],
        "val_tokens": val["tokens"],
        "train_docs": train["docs"],
        "val_docs": val["docs"],
        "val_targets": targets,
        "val_bytes": val["bytes"],
        "val_byte_source": byte_source,
        "tokens_per_byte": targets / val["bytes"] if val["bytes"] else None,
        "bytes_per_token": val["bytes"] / targets if targets else None,
        "val_unk_tokens": val["unk_tokens"],
        # Needs the source text; only a build that had it (our builders) can say.
        "val_unk_bytes_uncounted": counts.get("val_unk_bytes_uncounted"),
        "val_unk_space_bytes_uncounted": val["uncounted_space_bytes"],
        "unigram_bpb": unigram_bpb(train["histogram"], val_target_histogram(val), val["bytes"]),
        "train_shards": len(train_files),
        "val_shards": len(val_files),
        "tokenizer": str(tok_path),
        "tokenizer_sha256": file_sha256(tok_path),
        "source_fingerprint": (manifest or {}).get("source_fingerprint"),
        "manifest": "absent" if manifest is None else ("verified" if verify else "present"),
    }
    if seq_len:
        usable = (targets // seq_len) * seq_len
        out["seq_len"] = seq_len
        out["val_usable_targets"] = usable
    return out


def format_stats(stats: dict) -> str:
    """A readable two-column table."""
    rows = []
    for k, v in stats.items():
        if isinstance(v, float):
            v = f"{v:.6f}"
        elif isinstance(v, int) and not isinstance(v, bool):
            v = f"{v:,}"
        elif isinstance(v, dict):
            v = v.get("sha256") or ", ".join(f"{a}={b}" for a, b in v.items())
        elif v is None:
            v = "-"
        rows.append((k, str(v)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
