"""pgolf's artifact container: plain bytes and JSON, nothing that can execute when loaded.

Layout (all integers little-endian; docs/artifact.md has the byte-for-byte table):

    0   8  magic b"PGOLFART"
    8   2  format version (1)
    10  1  codec of the payload: 1 = xz (Python's lzma), 2 = brotli
    11  1  flags (0)
    12  8  length of the compressed payload
    20  8  length of the decompressed payload
    28 32  sha256 of the compressed payload
    60  .  compressed payload

The decompressed payload is a u32 JSON length, the JSON header (format version,
preset, model config, quantisation meta, tensor index), then the tensor data: each
tensor's raw little-endian bytes at its `offset` in the data section, 2-byte types
split into byte planes (all low bytes, then all high bytes), which compresses better.
Reading checks every length, the hash and the index before a byte is interpreted;
any problem is one `ArtifactError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import struct
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError, PgolfError
from pgolf.quant import codecs
from pgolf.safeio import disk_errors, loads_json

MAGIC = b"PGOLFART"
FORMAT_VERSION = 1
OUTER = struct.Struct("<8sHBBQQ32s")  # magic, version, codec, flags, payload len, raw len, sha256
CODECS = {"xz": 1, "brotli": 2}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
MAX_RAW = codecs.MAX_ARTIFACT_RAW  # a 16 MB artifact decompresses to ~30 MB; anything near this is not ours
MAX_HEADER = 16 << 20
# lc=lp=pb=0: the int6 values carry no useful byte-position context (measured: -0.2% vs the defaults)
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
BROTLI_ARGS = {"quality": 11, "lgwin": 24}

DTYPES = {
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32,
    "int64": torch.int64, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "bool": torch.bool,
}  # fmt: skip
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: a good file is never half-overwritten."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path):  # disk full: one line, the old file kept
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --------------------------------------------------------------------------- codecs
def default_codec() -> str:
    """brotli when installed (measured ~5% smaller, benchmarks/bench_packing.py), else xz."""
    try:
        import brotli  # noqa: F401
    except ImportError:
        return "xz"
    return "brotli"


def _brotli():
    try:
        import brotli
    except ImportError:
        raise ArtifactError(
            "the brotli codec needs the 'brotli' package (pip install brotli), or use --codec xz"
        ) from None
    return brotli


def compress(data: bytes, codec: str) -> bytes:
    if codec == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=XZ_FILTERS)
    if codec == "brotli":
        return _brotli().compress(data, **BROTLI_ARGS)
    raise ArtifactError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


def decompress(data: bytes, codec: str, size: int, where: str) -> bytes:
    """Decompress exactly `size` bytes; never produces more (codecs' bounded decompression)."""
    try:
        return codecs.decompress(data, "lzma" if codec == "xz" else codec, size, where)
    except ArtifactError as e:
        detail = str(e).removeprefix(f"{where}: ")
        if "the header says" in detail:
            detail = f"decompresses to another size than the header says: {detail}"
        raise ArtifactError(f"{where}: corrupted payload ({detail})") from None


# --------------------------------------------------------------------------- tensors <-> bytes
def _to_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    b = raw.numpy().tobytes()
    if t.element_size() == 2 and t.numel():
        b = np.frombuffer(b, np.uint8).reshape(-1, 2).T.tobytes()  # byte planes: lows, then highs
    return b


def _from_bytes(b: bytes, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.frombuffer(bytearray(b), dtype=torch.uint8).to(torch.bool).view(shape)
    if torch.empty((), dtype=dtype).element_size() == 2 and b:
        b = np.frombuffer(b, np.uint8).reshape(2, -1).T.tobytes()
    return torch.frombuffer(bytearray(b), dtype=dtype).view(shape) if b else torch.empty(shape, dtype=dtype)


def data_order(names: list[str], meta: Mapping[str, object]) -> list[str]:
    """Similar bytes next to each other: int6 values, int8 values, scales, then passthrough tensors."""

    def rank(name: str) -> int:
        base, _, suffix = name.rpartition(".")
        info = meta.get(base) if suffix in ("q", "scale") else None
        if isinstance(info, Mapping) and suffix == "q":
            return 0 if info.get("type") == "int6" else 1
        if isinstance(info, Mapping):
            return 2
        return 3

    pos = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (rank(n), pos[n]))


def pack_payload(header: dict, tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The decompressed payload: JSON length, JSON header with the tensor index, data."""
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise ArtifactError("writing artifacts needs a little-endian machine")
    index, chunks, offset = [], [], 0
    for name in data_order(list(tensors), header.get("meta", {})):
        t = tensors[name]
        if t.dtype not in DTYPE_NAMES:
            raise ArtifactError(f"tensor {name}: dtype {t.dtype} cannot be stored")
        b = _to_bytes(t)
        index.append(
            {
                "name": name,
                "dtype": DTYPE_NAMES[t.dtype],
                "shape": list(t.shape),
                "offset": offset,
                "nbytes": len(b),
            }
        )
        chunks.append(b)
        offset += len(b)
    head = json.dumps({**header, "format": FORMAT_VERSION, "tensors": index}, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def container_bytes(header: dict, tensors: Mapping[str, torch.Tensor], codec: str | None = None) -> bytes:
    codec = codec or default_codec()
    raw = pack_payload(header, tensors)
    body = compress(raw, codec)
    digest = hashlib.sha256(body).digest()
    outer = OUTER.pack(MAGIC, FORMAT_VERSION, CODECS[codec], 0, len(body), len(raw), digest)
    return outer + body


def write_container(
    path: str | Path, header: dict, tensors: Mapping[str, torch.Tensor], codec: str | None = None
) -> int:
    """Write atomically; returns the file size in bytes."""
    data = container_bytes(header, tensors, codec)
    atomic_write(Path(path), data)
    return len(data)


def is_container(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read_container(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a pgolf artifact; refuses anything malformed with one line."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    if not is_container(blob):
        raise ArtifactError(f"{path}: not a pgolf artifact (bad magic)")
    if len(blob) < OUTER.size:
        raise ArtifactError(f"{path}: truncated ({len(blob)} bytes, the fixed header alone is {OUTER.size})")
    _, version, codec_id, flags, body_len, raw_len, digest = OUTER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: unsupported artifact format version {version} (this pgolf reads {FORMAT_VERSION})"
        )
    if codec_id not in CODEC_NAMES or flags != 0:
        raise ArtifactError(f"{path}: unknown codec {codec_id} or flags {flags} in the header")
    have = len(blob) - OUTER.size
    if have < body_len:
        raise ArtifactError(f"{path}: truncated (header promises {body_len} payload bytes, file has {have})")
    if have > body_len:
        raise ArtifactError(f"{path}: {have - body_len} unexpected trailing bytes after the payload")
    if raw_len > MAX_RAW:
        raise ArtifactError(f"{path}: absurd decompressed size {raw_len} in the header; refused")
    body = blob[OUTER.size :]
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{path}: corrupted payload (sha256 mismatch)")
    raw = decompress(body, CODEC_NAMES[codec_id], raw_len, str(path))
    return _parse_payload(raw, path)


def _parse_payload(raw: bytes, path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if len(raw) < 4:
        raise ArtifactError(f"{path}: payload too short for its header length")
    (hlen,) = struct.unpack_from("<I", raw)
    if hlen > MAX_HEADER or 4 + hlen > len(raw):
        raise ArtifactError(f"{path}: absurd header length {hlen} (payload is {len(raw)} bytes); refused")
    header = loads_json(raw[4 : 4 + hlen], path, error=ArtifactError, what="JSON header")
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ArtifactError(f"{path}: unsupported header format {got!r} (this pgolf reads {FORMAT_VERSION})")
    index = header.get("tensors")
    if not isinstance(index, list):
        raise ArtifactError(f"{path}: header has no tensor index")
    check_header_limits(header, index, path)
    data = memoryview(raw)[4 + hlen :]
    tensors: dict[str, torch.Tensor] = {}
    for entry in index:
        name, t = _read_entry(entry, data, path)
        if name in tensors:
            raise ArtifactError(f"{path}: tensor {name} is listed twice")
        tensors[name] = t
    return header, tensors


def _read_entry(entry: object, data: memoryview, path: Path) -> tuple[str, torch.Tensor]:
    ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("dtype") in DTYPES
    shape = entry.get("shape") if ok else None
    ok = ok and isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
    ok = ok and all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("offset", "nbytes"))
    if not ok:
        raise ArtifactError(f"{path}: malformed tensor index entry {one_line(entry)[:120]}")
    name, dtype = entry["name"], DTYPES[entry["dtype"]]
    numel = math.prod(shape)
    want = numel * torch.empty((), dtype=dtype).element_size()
    off, n = entry["offset"], entry["nbytes"]
    if n != want or off + n > len(data):
        raise ArtifactError(
            f"{path}: tensor {name}: {n} bytes at offset {off} do not fit shape {shape} "
            f"{entry['dtype']} in a {len(data)}-byte data section"
        )
    return name, _from_bytes(bytes(data[off : off + n]), dtype, shape)


def check_header_limits(header: Mapping, index: list, where: object) -> None:
    """Before any tensor is built: the entry count, and the model config against its ranges
    (a header claiming 100,000 layers or a 2^70 dimension is refused here, in milliseconds)."""
    if len(index) > codecs.MAX_ARTIFACT_TENSORS:
        raise ArtifactError(f"{where}: {len(index)} tensors listed (at most {codecs.MAX_ARTIFACT_TENSORS}); refused")
    model = header.get("model")
    if isinstance(model, dict):
        from pgolf.config import Config

        try:
            Config.from_dict({"model": model})
        except PgolfError as e:
            raise ArtifactError(f"{where}: header's model config is invalid ({e})") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"{where}: header's model config is malformed ({one_line(e)[:120]})") from None
