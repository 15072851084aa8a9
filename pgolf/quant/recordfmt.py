"""The frontier record's artifact (`final_model.int6.ptz` with COMPRESSOR=pergroup, F5.9/F5.11), read safely.

Layout: b"PGRP" + u32 n (9) + n x u32 stream lengths + the streams: 7 lrzip group
streams (tok_emb, c_k, c_q, c_v, attn.proj, mlp.fc, mlp.proj codes; empty when absent),
the brotli remainder (a torch.save pickle of {"r": tensors, "m": meta, "s": shapes}) and
the brotli row orders (uint16).

Nothing in the file executes: the pickle goes through `torch.load(weights_only=True)`,
whose unpickler builds only tensors, dicts, lists, tuples, strings and numbers, and the
result is then checked to be exactly {"r": {str: Tensor}, "m": {str: str}, "s": {str:
[[int, ...], ...]}}. Every length is checked before use, each group's lrzip output is
bounded by the size its shapes imply, and every row order must be a permutation.

`record_bytes` builds the same layout from a (result, meta) pair, as the record's
`_serialize_pergroup` does, to compare sizes (bench_packing.py); pgolf itself writes .pgrp.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.quant import codecs, simsort
from pgolf.quant.container import one_line
from pgolf.quant.pergroup import GROUP_ORDER, SORTED_GROUPS, group_of, layer_of

MAGIC = b"PGRP"
N_STREAMS = len(GROUP_ORDER) + 2
MAX_REMAINDER = 32 << 20  # the record's remainder is ~200 KB raw
MAX_PERMS = 16 << 20


def is_record_pergroup(head: bytes) -> bool:
    return head.startswith(MAGIC)


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ArtifactError(f"{where}: {msg}")


def split_streams(blob: bytes, where: str) -> list[bytes]:
    _need(blob.startswith(MAGIC) and len(blob) >= 8, where, "not a record per-group artifact (bad magic)")
    (n,) = struct.unpack_from("<I", blob, 4)
    _need(n == N_STREAMS, where, f"has {n} streams; the record's layout has {N_STREAMS}")
    _need(len(blob) >= 8 + 4 * n, where, "truncated stream table")
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    off = 8 + 4 * n
    _need(
        off + sum(lengths) == len(blob),
        where,
        f"stream lengths sum to {sum(lengths)}, the file holds {len(blob) - off}",
    )
    out = []
    for length in lengths:
        out.append(blob[off : off + length])
        off += length
    return out


def _load_remainder(raw: bytes, where: str) -> tuple[dict, dict, dict]:
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a refusal
        from pgolf.quant.seedfmt import _why

        raise ArtifactError(f"{where}: refused: the remainder's pickle is not weights-only ({_why(e)})") from None
    ok = isinstance(obj, dict) and set(obj) == {"r", "m", "s"}
    ok = ok and all(isinstance(obj[k], dict) for k in ("r", "m", "s"))
    _need(ok, where, "remainder is not the record's {'r': tensors, 'm': meta, 's': shapes} dict")
    r, m, s = obj["r"], obj["m"], obj["s"]
    for k, v in r.items():
        _need(isinstance(k, str) and isinstance(v, torch.Tensor), where, f"remainder entry {k!r} is not a named tensor")
    for k, v in m.items():
        _need(isinstance(k, str) and isinstance(v, str), where, f"meta entry {k!r} is not a string")
    for k, v in s.items():
        ok = k in GROUP_ORDER and isinstance(v, (list, tuple))
        ok = ok and all(isinstance(sh, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in sh) for sh in v)
        _need(ok, where, f"shape manifest entry {k!r} is malformed")
    return r, m, s


def parse(blob: bytes, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(result, meta) exactly as the record's `_deserialize_pergroup` returns them."""
    streams = split_streams(blob, where)
    ng = len(GROUP_ORDER)
    rem = codecs.decompress_unknown_size(streams[ng], "brotli", MAX_REMAINDER, f"{where} (remainder)")
    result, meta, shapes = _load_remainder(rem, where)
    result = dict(result)
    perms = (
        codecs.decompress_unknown_size(streams[ng + 1], "brotli", MAX_PERMS, f"{where} (row orders)")
        if streams[ng + 1]
        else b""
    )
    total = 0
    limit = codecs.MAX_ARTIFACT_RAW
    for sh_list in shapes.values():  # element counts against the budget before any group is decompressed
        total += sum(math.prod(sh) for sh in sh_list)
        _need(total <= limit, where, f"shapes claim {total} codes (at most {limit}); refused")
    jobs = {}
    try:
        for i, g in enumerate(GROUP_ORDER):
            if not streams[i]:
                continue
            _need(g in shapes, where, f"group {g} has data but no shapes")
            size = sum(math.prod(sh) for sh in shapes[g])
            jobs[g] = codecs.lrzip_start_decompress(streams[i], size, f"{where} (group {g})")
    except BaseException:
        for job in jobs.values():
            job.proc.kill()
            job.proc.communicate()
            job.tmp.cleanup()
        raise
    raws = {g: codecs.lrzip_wait(job) for g, job in jobs.items()}

    perm_off = 0
    for g in GROUP_ORDER:
        raw = raws.get(g, b"")
        if not raw:
            continue
        sh_list = shapes[g]
        _need(len(raw) == sum(math.prod(sh) for sh in sh_list), where, f"group {g}: size does not match its shapes")
        data = np.frombuffer(raw, dtype=np.int8)
        names = [g[1:]] if g.startswith("_") else [f"blocks.{i}.{g}" for i in range(len(sh_list))]
        _need(len(names) == len(sh_list), where, f"group {g}: a top-level group holds one tensor")
        off = 0
        for name, sh in zip(names, sh_list):
            n = math.prod(sh)
            chunk = data[off : off + n]
            off += n
            if len(sh) == 2:
                rows, cols = sh
                chunk = chunk.reshape(cols, rows).T
                if g in SORTED_GROUPS:
                    end = perm_off + rows * 2
                    _need(end <= len(perms), where, f"row orders end before {name}'s")
                    order = np.frombuffer(perms[perm_off:end], dtype=np.uint16)
                    perm_off = end
                    chunk = chunk[simsort.inverse(order, f"{where} ({name})")]
            result[name] = torch.from_numpy(np.ascontiguousarray(chunk).reshape(sh))
    _need(perm_off == len(perms), where, f"{len(perms) - perm_off} row-order bytes belong to no tensor")
    return result, meta


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    return parse(blob, str(path))


# --------------------------------------------------------------------------- the record's layout, for comparisons
def record_bytes(
    result: Mapping[str, torch.Tensor], meta: Mapping[str, str], lrzip_threads: int = 1, sort_rows: bool = True
) -> bytes:
    """The record's per-group blob of (result, meta) (its remainder is a torch.save pickle; for sizes only)."""
    import brotli

    groups: dict[str, list] = {}
    remainder = {}
    for name, t in sorted(result.items()):
        g = group_of(name, t)
        if g is None:
            remainder[name] = t
        else:
            groups.setdefault(g, []).append((layer_of(name), t))
    streams, perms, manifest = [], b"", {}
    for g in GROUP_ORDER:
        if g not in groups:
            streams.append(b"")
            continue
        blob, shapes = b"", []
        for _, t in sorted(groups[g], key=lambda x: x[0]):
            arr = t.numpy()
            shapes.append(arr.shape)
            if arr.ndim == 2:
                if g in SORTED_GROUPS and sort_rows:
                    order = simsort.l1_chain(arr)
                    perms += order.tobytes()
                    arr = arr[order.astype(np.int64)]
                arr = np.ascontiguousarray(arr.T)
            blob += arr.tobytes()
        manifest[g] = shapes
        streams.append(codecs.compress(blob, "lrzip", lrzip_threads=lrzip_threads))
    buf = io.BytesIO()
    torch.save({"r": remainder, "m": dict(meta), "s": manifest}, buf)
    streams.append(brotli.compress(buf.getvalue(), quality=11, lgwin=24))
    streams.append(brotli.compress(perms, quality=11) if perms else b"")
    head = MAGIC + struct.pack("<I", len(streams)) + b"".join(struct.pack("<I", len(s)) for s in streams)
    return head + b"".join(streams)
