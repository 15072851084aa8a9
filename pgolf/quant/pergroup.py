"""pgolf's per-group container (`.pgrp`): tensors bucketed by role, each group compressed alone.

Nothing in it can execute: a fixed binary header, an lzma-compressed JSON header, then
raw compressed streams. Layout (little-endian; docs/artifact.md has the table):

    0   8  magic b"PGOLFGRP"
    8   2  format version (1)
    10  2  flags (0)
    12  4  compressed JSON header length
    16  4  JSON header length
    20 32  sha256 of every byte after this fixed header
    52  .  JSON header (xz), then the streams back to back

The JSON header holds the producer, preset, model config, quantisation meta (the
record's strings), the streams (name, codec, length, raw length) and the tensor index
(name, dtype, shape, stream, offset, nbytes, whether stored transposed, where its row
order is). Streams, as the record buckets them (F5.9):

    the 7 code groups   int8 codes of tok_emb, c_k, c_q, c_v, attn.proj, mlp.fc, mlp.proj,
                        in ascending layer order, each matrix stored transposed (bytes walk
                        down a column); rows of tok_emb, c_q and mlp.fc first put in the
                        L1 nearest-neighbour order (simsort.py)
    scales              the fp16 row steps (byte planes: all low bytes, then all high)
    small               everything else (fp16 passthrough, gates, LQER, AWQ entries)
    perms               the row orders (uint16, or uint32 above 65,536 rows)

Each stream is compressed with every candidate codec (brotli, lzma, lrzip when the
program is installed) and the smallest output is kept. Compression runs in parallel
(threads; lrzip as concurrent processes); the bytes do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import struct
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.quant import codecs, simsort
from pgolf.quant.container import (
    DTYPE_NAMES,
    DTYPES,
    _from_bytes,
    _to_bytes,
    atomic_write,
    check_header_limits,
    one_line,
)
from pgolf.safeio import loads_json

MAGIC = b"PGOLFGRP"
FORMAT_VERSION = 1
FIXED = struct.Struct("<8sHHII32s")
GROUP_ORDER = (
    "_tok_emb.weight.q",
    "attn.c_k.weight.q",
    "attn.c_q.weight.q",
    "attn.c_v.weight.q",
    "attn.proj.weight.q",
    "mlp.fc.weight.q",
    "mlp.proj.weight.q",
)
SORTED_GROUPS = frozenset({"_tok_emb.weight.q", "attn.c_q.weight.q", "mlp.fc.weight.q"})
MAX_HEADER = 16 << 20
MAX_RAW = codecs.MAX_ARTIFACT_RAW  # a 16 MB artifact holds ~36 MB of codes


def group_of(name: str, t: torch.Tensor) -> str | None:
    """The record's routing: int8 `blocks.<i>.<key>` with <key> a group, or `_<name>` for top-level ones."""
    if t.dtype != torch.int8:
        return None
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        key = ".".join(parts[2:])
        return key if key in GROUP_ORDER else None
    return "_" + name if "_" + name in GROUP_ORDER else None


def layer_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else -1


@dataclass
class Options:
    codecs: Sequence[str] = ("lrzip", "brotli", "lzma")
    row_sort: bool = True
    lrzip_threads: int = 1
    workers: int = 0  # 0 = one per CPU


@dataclass
class _Stream:
    name: str
    raw: bytes
    codec: str = ""
    data: bytes = b""


def _layout(tensors: Mapping[str, torch.Tensor], opts: Options, workers: int) -> tuple[list[_Stream], list[dict], dict]:
    """Bucket, sort and serialise: the raw streams and the tensor index."""
    groups: dict[str, list[tuple[int, str, torch.Tensor]]] = {}
    scales, small = [], []
    for name in sorted(tensors):
        t = tensors[name]
        g = group_of(name, t)
        if g is not None and t.ndim == 2:
            groups.setdefault(g, []).append((layer_of(name), name, t))
        elif name.endswith(".scale") and t.dtype == torch.float16:
            scales.append(name)
        else:
            small.append(name)

    # Row orders first, in parallel (numpy releases the GIL in its loops).
    to_sort = [(g, n, t) for g in GROUP_ORDER if opts.row_sort and g in SORTED_GROUPS for _, n, t in groups.get(g, [])]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        orders = dict(zip([n for _, n, _ in to_sort], pool.map(lambda x: simsort.l1_chain(x[2].numpy()), to_sort)))
    sort_s = time.perf_counter() - t0

    streams: list[_Stream] = []
    index: list[dict] = []
    perms: list[bytes] = []
    perm_off = 0
    for g in GROUP_ORDER:
        if g not in groups:
            continue
        chunks, off = [], 0
        for _, name, t in sorted(groups[g], key=lambda x: x[0]):
            arr = t.numpy()
            entry = {"name": name, "dtype": "int8", "shape": list(arr.shape), "stream": g, "offset": off}
            if name in orders:
                order = orders[name]
                arr = arr[order.astype(np.int64)]
                b = order.tobytes()
                entry["perm"] = {"offset": perm_off, "dtype": str(order.dtype)}
                perms.append(b)
                perm_off += len(b)
            data = np.ascontiguousarray(arr.T).tobytes()
            entry.update(nbytes=len(data), transposed=True)
            chunks.append(data)
            off += len(data)
            index.append(entry)
        streams.append(_Stream(g, b"".join(chunks)))
    for sname, names in (("scales", scales), ("small", small)):
        chunks, off = [], 0
        for name in names:
            t = tensors[name]
            if t.dtype not in DTYPE_NAMES:
                raise ArtifactError(f"tensor {name}: dtype {t.dtype} cannot be stored")
            data = _to_bytes(t)
            index.append(
                {"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "stream": sname, "offset": off}
                | {"nbytes": len(data)}
            )
            chunks.append(data)
            off += len(data)
        if chunks:
            streams.append(_Stream(sname, b"".join(chunks)))
    if perms:
        streams.append(_Stream("perms", b"".join(perms)))
    return streams, index, {"sort_s": sort_s}


def _compress_all(streams: list[_Stream], opts: Options, workers: int) -> dict:
    """Every stream with every available candidate codec; keep the smallest (ties: the earlier codec)."""
    cands = codecs.available(opts.codecs)
    if not cands:
        raise ArtifactError(f"none of the codecs {', '.join(opts.codecs)} is available on this machine")
    jobs = [(i, c) for i, s in enumerate(streams) if s.raw for c in cands]
    t0 = time.perf_counter()
    timing: dict[str, float] = {}

    def run(job):
        i, c = job
        t = time.perf_counter()
        out = codecs.compress(streams[i].raw, c, lrzip_threads=opts.lrzip_threads)
        return i, c, out, time.perf_counter() - t

    # Largest streams first, so that no big compression starts last and runs alone (the wall time
    # of a list schedule); the results are then read back in job order, so the bytes do not change.
    order = sorted(range(len(jobs)), key=lambda j: -len(streams[jobs[j][0]].raw))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = dict(zip(order, pool.map(run, [jobs[j] for j in order])))
    results = [done[j] for j in range(len(jobs))]
    sizes: dict[str, dict[str, int]] = {}
    for i, c, out, dt in results:  # in job order, so the choice (ties: the earlier codec) is deterministic
        s = streams[i]
        sizes.setdefault(s.name, {})[c] = len(out)
        timing[f"{c}_s"] = timing.get(f"{c}_s", 0.0) + dt
        if not s.codec or len(out) < len(s.data):
            s.codec, s.data = c, out
    for s in streams:
        if not s.raw:
            s.codec, s.data = cands[0], b""
    timing["compress_wall_s"] = time.perf_counter() - t0
    return {"candidates": cands, "sizes": sizes, "timing": timing}


def build(header: dict, tensors: Mapping[str, torch.Tensor], opts: Options | None = None) -> tuple[bytes, dict]:
    """The container's bytes and a report (per stream: codec, raw and compressed bytes; timing)."""
    opts = opts or Options()
    workers = opts.workers or os.cpu_count() or 1
    streams, index, timing = _layout(tensors, opts, workers)
    comp = _compress_all(streams, opts, workers)
    head = {
        **header,
        "format": FORMAT_VERSION,
        "streams": [
            {"name": s.name, "codec": s.codec, "length": len(s.data), "raw_length": len(s.raw)} for s in streams
        ],
        "tensors": index,
    }
    hjson = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    hz = lzma.compress(hjson, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=codecs.XZ_FILTERS)
    body = hz + b"".join(s.data for s in streams)
    blob = FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(hz), len(hjson), hashlib.sha256(body).digest()) + body
    report = {
        "bytes": len(blob),
        "header_bytes": FIXED.size + len(hz),
        "streams": {s.name: {"codec": s.codec, "raw": len(s.raw), "bytes": len(s.data)} for s in streams},
        "codec_sizes": comp["sizes"],
        "codecs_available": comp["candidates"],
        "lrzip": codecs.lrzip_version() if "lrzip" in comp["candidates"] else None,
        "lrzip_threads": opts.lrzip_threads,
        "timing": {**timing, **comp["timing"]},
    }
    return blob, report


def write(path: str | Path, header: dict, tensors: Mapping[str, torch.Tensor], opts: Options | None = None) -> dict:
    blob, report = build(header, tensors, opts)
    atomic_write(Path(path), blob)
    return report


def is_pergroup(head: bytes) -> bool:
    return head.startswith(MAGIC)


# --------------------------------------------------------------------------- reading
def read(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a .pgrp file; anything malformed is one ArtifactError line naming the file."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    return parse(blob, str(path))


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ArtifactError(f"{where}: {msg}")


def parse(blob: bytes, where: str) -> tuple[dict, dict[str, torch.Tensor]]:
    _need(blob.startswith(MAGIC), where, "not a pgolf per-group artifact (bad magic)")
    _need(len(blob) >= FIXED.size, where, f"truncated ({len(blob)} bytes, the fixed header alone is {FIXED.size})")
    _, version, flags, hz_len, h_len, digest = FIXED.unpack_from(blob)
    _need(version == FORMAT_VERSION, where, f"unsupported per-group format version {version} (this pgolf reads 1)")
    _need(flags == 0, where, f"unknown flags {flags}")
    body = memoryview(blob)[FIXED.size :]
    _need(hashlib.sha256(body).digest() == digest, where, "corrupted or truncated (sha256 mismatch)")
    _need(h_len <= MAX_HEADER and hz_len <= len(body), where, f"absurd header length {h_len}/{hz_len}; refused")
    hjson = codecs.decompress(bytes(body[:hz_len]), "lzma", h_len, f"{where} (header)")
    header = loads_json(hjson, where, error=ArtifactError, what="JSON header")
    _need(isinstance(header, dict) and header.get("format") == FORMAT_VERSION, where, "unsupported header format")
    streams, index = header.get("streams"), header.get("tensors")
    _need(isinstance(streams, list) and isinstance(index, list), where, "header lacks its stream or tensor index")
    check_header_limits(header, index, where)  # before any stream is decompressed

    # Stream table: lengths must tile the rest of the file exactly.
    table, off, total_raw = {}, hz_len, 0
    for s in streams:
        ok = isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("codec"), str)
        ok = ok and all(isinstance(s.get(k), int) and s[k] >= 0 for k in ("length", "raw_length"))
        _need(ok, where, f"malformed stream entry {one_line(s)[:100]}")
        _need(s["name"] not in table, where, f"stream {s['name']} is listed twice")
        _need(s["codec"] in codecs.CODECS, where, f"stream {s['name']}: unknown codec {s['codec']!r}")
        total_raw += s["raw_length"]
        _need(total_raw <= MAX_RAW, where, f"streams declare {total_raw} bytes in all; refused")
        table[s["name"]] = (s["codec"], off, s["length"], s["raw_length"])
        off += s["length"]
    _need(off == len(body), where, f"stream lengths end at byte {off} of {len(body)} (truncated or padded)")

    raws = _decompress_streams(body, table, where)
    perms = raws.get("perms", b"")
    tensors: dict[str, torch.Tensor] = {}
    for entry in index:
        name, t = _read_entry(entry, raws, perms, where)
        _need(name not in tensors, where, f"tensor {name} is listed twice")
        tensors[name] = t
    return header, tensors


def _decompress_streams(body: memoryview, table: dict, where: str) -> dict[str, bytes]:
    """All streams, lrzip ones as concurrent processes started from this (the main) thread."""
    jobs, out = {}, {}
    for name, (codec, off, n, raw_n) in table.items():
        data = bytes(body[off : off + n])
        if codec == "lrzip" and n:
            jobs[name] = codecs.lrzip_start_decompress(data, raw_n, f"{where} (stream {name})")
    try:
        for name, (codec, off, n, raw_n) in table.items():
            if name in jobs:
                continue
            data = bytes(body[off : off + n])
            out[name] = codecs.decompress(data, codec, raw_n, f"{where} (stream {name})") if n else b""
            _need(len(out[name]) == raw_n, where, f"stream {name} is empty but declares {raw_n} bytes")
    except BaseException:
        for job in jobs.values():
            job.proc.kill()
            job.proc.communicate()
            job.tmp.cleanup()
        raise
    for name, job in jobs.items():
        got = codecs.lrzip_wait(job)
        _need(len(got) == table[name][3], where, f"stream {name} decompresses to another size than declared")
        out[name] = got
    return out


def _read_entry(entry: object, raws: Mapping[str, bytes], perms: bytes, where: str) -> tuple[str, torch.Tensor]:
    ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("dtype") in DTYPES
    shape = entry.get("shape") if ok else None
    ok = ok and isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
    ok = ok and all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("offset", "nbytes"))
    ok = ok and entry.get("stream") in raws
    _need(ok, where, f"malformed tensor index entry {one_line(entry)[:120]}")
    name, dtype = entry["name"], DTYPES[entry["dtype"]]
    raw = raws[entry["stream"]]
    off, n = entry["offset"], entry["nbytes"]
    want = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    _need(n == want and off + n <= len(raw), where, f"tensor {name}: {n} bytes at {off} do not fit {shape} {dtype}")
    chunk = raw[off : off + n]
    if not entry.get("transposed"):
        _need("perm" not in entry, where, f"tensor {name}: a row order needs a transposed matrix")
        return name, _from_bytes(chunk, dtype, shape)
    _need(dtype == torch.int8 and len(shape) == 2, where, f"tensor {name}: only int8 matrices are stored transposed")
    rows, cols = shape
    arr = np.frombuffer(chunk, dtype=np.int8).reshape(cols, rows).T
    p = entry.get("perm")
    if p is not None:
        ok = isinstance(p, dict) and p.get("dtype") in ("uint16", "uint32") and isinstance(p.get("offset"), int)
        _need(ok, where, f"tensor {name}: malformed row-order entry")
        item = np.dtype(p["dtype"])
        end = p["offset"] + rows * item.itemsize
        _need(p["offset"] >= 0 and end <= len(perms), where, f"tensor {name}: row order lies outside the perms stream")
        order = np.frombuffer(perms[p["offset"] : end], dtype=item)
        arr = arr[simsort.inverse(order, f"{where} ({name})")]
    return name, torch.from_numpy(np.ascontiguousarray(arr))


# --------------------------------------------------------------------------- helpers for reports
def tensor_streams(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Which stream each tensor goes to (for reports and tests)."""
    out = {}
    for name, t in tensors.items():
        g = group_of(name, t)
        if g is not None and t.ndim == 2:
            out[name] = g
        elif name.endswith(".scale") and t.dtype == torch.float16:
            out[name] = "scales"
        else:
            out[name] = "small"
    return out
