"""The challenge's token shard format, read and written exactly.

A shard is 256 little-endian int32 (magic 20240520, version 1, token count,
the rest zero) followed by that many little-endian uint16 tokens. Reads are
memory-mapped so a 100M-token shard is never copied into memory.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from pgolf.errors import DataError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_SHARD_TOKENS = 100_000_000

TRAIN_GLOB = "fineweb_train_*.bin"
VAL_GLOB = "fineweb_val_*.bin"
_NAME = re.compile(r"fineweb_(train|val)_(\d{6})\.bin$")


def shard_name(split: str, index: int) -> str:
    if split not in ("train", "val", "val_bytes"):  # val_bytes: the byte sidecar, pgolf.data.sidecar
        raise ValueError(f"split must be train, val or val_bytes, got {split!r}")
    return f"fineweb_{split}_{index:06d}.bin"


def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: shard not found") from None
    if size < HEADER_BYTES:
        raise DataError(f"{path}: truncated header ({size} bytes, need {HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != MAGIC:
        raise DataError(f"{path}: bad magic {int(header[0])} (expected {MAGIC}); not a token shard")
    if int(header[1]) != VERSION:
        raise DataError(f"{path}: unsupported shard version {int(header[1])} (expected {VERSION})")
    n = int(header[2])
    if n < 0:
        raise DataError(f"{path}: negative token count {n} in header")
    expected = HEADER_BYTES + 2 * n
    if size < expected:
        raise DataError(f"{path}: truncated: header says {n} tokens ({expected} bytes) but the file has {size} bytes")
    if size > expected:
        raise DataError(
            f"{path}: size mismatch: header says {n} tokens ({expected} bytes) but the file has {size} bytes"
        )
    return n


def read_shard(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens (read-only uint16) after validating it.

    With `vocab_size`, a token id >= vocab_size is refused.
    """
    path = Path(path)
    n = read_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))
    if vocab_size is not None:
        top = int(tokens.max())
        if top >= vocab_size:
            pos = int(np.argmax(tokens >= vocab_size))
            raise DataError(f"{path}: token id {top} at position {pos} is >= vocab size {vocab_size}")
    return tokens


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write a shard atomically (temp file, then rename): a good file is never half-overwritten."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError("tokens must be one-dimensional")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise DataError(f"{path}: token ids must fit in uint16")
    if arr.size > MAX_SHARD_TOKENS:
        raise DataError(f"{path}: {arr.size} tokens exceed the shard limit of {MAX_SHARD_TOKENS}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.tobytes())
            f.write(arr.astype(TOKEN_DTYPE, copy=False).tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_shards(data_dir: str | Path, split: str) -> list[Path]:
    """The split's shards in the challenge's (lexicographic) order; refuses an empty split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    pattern = TRAIN_GLOB if split == "train" else VAL_GLOB
    # The val glob also matches the byte sidecar (fineweb_val_bytes_*.bin); the record's
    # loader drops those names the same way (T:504-517).
    files = sorted(p for p in data_dir.glob(pattern) if "_bytes_" not in p.name)
    if not files:
        raise DataError(f"{data_dir}: empty {split} split (no {pattern} files)")
    return files


def write_split(
    out_dir: str | Path, split: str, tokens: np.ndarray, shard_tokens: int = MAX_SHARD_TOKENS
) -> list[Path]:
    """Cut a token stream into shards purely by size, as the challenge's export does."""
    paths = []
    n = len(tokens)
    for i, start in enumerate(range(0, max(n, 1), shard_tokens)):
        p = Path(out_dir) / shard_name(split, i)
        write_shard(p, tokens[start : start + shard_tokens])
        paths.append(p)
    return paths
