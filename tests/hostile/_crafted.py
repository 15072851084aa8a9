"""Crafted hostile artifacts (issue 11, item 5), shared by tests/hostile and benchmarks/bench_hostile.py.

Each builder returns the bytes of a file that pgolf must refuse in one line, quickly and
without allocating what the file claims. The two compressed bombs are committed fixtures
(tests/hostile/fixtures/make_fixtures.py makes them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import struct
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BROTLI_3GIB = FIXTURES / "brotli_3gib.br"  # 2,425 bytes -> 3 GiB of zeros
XZ_1GIB = FIXTURES / "xz_1gib.xz"  # 156,316 bytes -> 1 GiB of zeros


def _outer(body: bytes, raw_len: int, codec: int) -> bytes:
    from pgolf.quant import container

    digest = hashlib.sha256(body).digest()
    return container.OUTER.pack(container.MAGIC, container.FORMAT_VERSION, codec, 0, len(body), raw_len, digest) + body


def _container(header: dict, data: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    raw = struct.pack("<I", len(head)) + head + data
    return _outer(lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE), len(raw), codec=1)


def _model(**over) -> dict:
    from pgolf.config import ModelConfig

    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(ModelConfig()).items()}
    d.update(over)
    return d


def many_layers(layers: int = 100_000, entries: int = 25_000) -> bytes:
    """A ~1.7 MB header claiming 100,000 layers, with a tensor entry for 25,000 of their matrices."""
    index = [
        {"name": f"blocks.{i}.attn.c_q.weight", "dtype": "int8", "shape": [512, 512], "offset": 0, "nbytes": 262144}
        for i in range(entries)
    ]
    return _container({"format": 1, "model": _model(num_layers=layers), "meta": {}, "tensors": index})


def many_layers_small_index(layers: int = 100_000) -> bytes:
    """The same claim with a short index: only the model config's range refuses it."""
    index = [{"name": "x", "dtype": "int8", "shape": [1], "offset": 0, "nbytes": 1}]
    return _container({"format": 1, "model": _model(num_layers=layers), "meta": {}, "tensors": index}, b"\0")


def huge_dimension() -> bytes:
    """A tensor entry of shape [2^70] (and a model_dim of 2^70 in the same header)."""
    index = [{"name": "x", "dtype": "int8", "shape": [2**70], "offset": 0, "nbytes": 2**70}]
    return _container({"format": 1, "model": _model(model_dim=2**70), "meta": {}, "tensors": index})


def huge_dimension_no_model() -> bytes:
    index = [{"name": "x", "dtype": "float32", "shape": [2**70, 2**70], "offset": 0, "nbytes": 16}]
    return _container({"format": 1, "meta": {}, "tensors": index}, b"\0" * 16)


def deep_json(depth: int = 200_000) -> bytes:
    """A JSON header nested 200,000 deep (Python's parser would recurse until it crashes)."""
    head = b"[" * depth + b"]" * depth
    raw = struct.pack("<I", len(head)) + head
    return _outer(lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE), len(raw), codec=1)


def brotli_bomb_claimed() -> bytes:
    """The 3 GiB brotli stream with its true size in the header (refused on the size field)."""
    return _outer(BROTLI_3GIB.read_bytes(), 3 << 30, codec=2)


def brotli_bomb_lying(claim: int = 200 << 20) -> bytes:
    """The 3 GiB brotli stream claiming 200 MB: decompression stops at the claim + 1 byte."""
    return _outer(BROTLI_3GIB.read_bytes(), claim, codec=2)


def seed_xz_bomb() -> bytes:
    """A seed-format .ptz (xz) that expands to 1 GiB."""
    return XZ_1GIB.read_bytes()


def pergroup_streams_over_budget() -> bytes:
    """A per-group artifact whose stream table declares 3 GiB of raw bytes."""
    from pgolf.quant import pergroup

    header = {"format": 1, "streams": [{"name": "g", "codec": "brotli", "length": 0, "raw_length": 3 << 30}]}
    header["tensors"] = []
    hjson = json.dumps(header).encode()
    hz = lzma.compress(hjson, format=lzma.FORMAT_XZ)
    body = hz
    digest = hashlib.sha256(body).digest()
    return pergroup.FIXED.pack(pergroup.MAGIC, pergroup.FORMAT_VERSION, 0, len(hz), len(hjson), digest) + body


CASES = {
    "header claiming 100,000 layers (1.7 MB, 25,000 entries)": many_layers,
    "header claiming 100,000 layers (short index)": many_layers_small_index,
    "dimension 2^70 (model_dim and a tensor)": huge_dimension,
    "tensor of shape [2^70, 2^70]": huge_dimension_no_model,
    "JSON header nested 200,000 deep": deep_json,
    "brotli stream -> 3 GiB, size declared": brotli_bomb_claimed,
    "brotli stream -> 3 GiB, declared as 200 MB": brotli_bomb_lying,
    "seed .ptz: xz stream -> 1 GiB": seed_xz_bomb,
    "per-group streams declaring 3 GiB": pergroup_streams_over_budget,
}
