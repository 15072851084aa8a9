"""The seed's artifact format (`final_model.int6.ptz`), read safely and written compatibly.

A .ptz file is `lzma.compress(torch.save({"w": tensors, "m": meta}), preset=6)` (xz
container). "w" holds `<name>.q` / `<name>.scale` for quantised entries and `<name>`
for passthrough ones; "m" maps every original name to "passthrough",
"passthrough_ctrl", {"type": "int6"} or {"type": "int8"}.

Reading uses `torch.load(weights_only=True)`: the restricted unpickler accepts tensors,
dicts, lists and strings and refuses everything else, so a planted pickle cannot run
code (the seed's own loader did not pass weights_only, SPEC 11.16).
"""

from __future__ import annotations

import io
import lzma
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from pgolf.errors import ArtifactError
from pgolf.quant.codecs import MAX_ARTIFACT_RAW
from pgolf.quant.container import atomic_write, one_line

SEED_LZMA_PRESET = 6
XZ_MAGIC = b"\xfd7zXZ\x00"
MAX_DECOMPRESSED = MAX_ARTIFACT_RAW  # a seed artifact decompresses to ~27 MB; refuse bombs early


def seed_meta(meta: Mapping[str, object]) -> dict[str, object]:
    """The meta exactly as the seed writes it (our extra keys stripped)."""
    return {k: ({"type": v["type"]} if isinstance(v, Mapping) else v) for k, v in meta.items()}


def seed_bytes(
    packed: Mapping[str, torch.Tensor],
    meta: Mapping[str, object],
    preset: int = SEED_LZMA_PRESET,
) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": dict(packed), "m": seed_meta(meta)}, buf)
    return lzma.compress(buf.getvalue(), preset=preset)


def write_seed_artifact(
    path: str | Path,
    packed: Mapping[str, torch.Tensor],
    meta: Mapping[str, object],
) -> int:
    """Write a .ptz the seed's loader reads; returns its size in bytes."""
    data = seed_bytes(packed, meta)
    atomic_write(Path(path), data)
    return len(data)


def looks_like_seed(head: bytes) -> bool:
    return head.startswith(XZ_MAGIC)


def _why(e: Exception) -> str:
    """The useful part of torch's long weights-only refusal (which also advises weights_only=False)."""
    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    if m:
        return f"it references {m.group(1)}, which a tensor-only file never does"
    return one_line(msg)[:160]


def read_seed_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(tensors, meta) of a .ptz; every failure is one ArtifactError line naming the file."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_AUTO)
    try:
        raw = dec.decompress(blob, max_length=MAX_DECOMPRESSED)
    except lzma.LZMAError as e:
        raise ArtifactError(f"{path}: corrupted seed artifact (lzma: {one_line(e)})") from None
    if not dec.eof:
        if dec.needs_input:
            raise ArtifactError(f"{path}: truncated seed artifact (the lzma stream ends early)")
        raise ArtifactError(f"{path}: seed artifact decompresses to over {MAX_DECOMPRESSED} bytes; refused")
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a refusal, never a traceback
        msg = f"{path}: refused: the seed artifact's pickle is not weights-only ({_why(e)})"
        raise ArtifactError(msg) from None
    if not (isinstance(obj, dict) and isinstance(obj.get("w"), dict) and isinstance(obj.get("m"), dict)):
        raise ArtifactError(f"{path}: not a seed artifact (expected a {{'w': tensors, 'm': meta}} dict)")
    tensors, meta = obj["w"], obj["m"]
    for k, v in tensors.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ArtifactError(f"{path}: seed artifact entry {k!r} is not a named tensor")
    for k, v in meta.items():
        ok = v in ("passthrough", "passthrough_ctrl", "passthrough_fp16") or (
            isinstance(v, dict) and v.get("type") in ("int6", "int8")
        )
        if not isinstance(k, str) or not ok:
            raise ArtifactError(f"{path}: seed artifact has unknown meta {v!r} for {k!r}")
    return tensors, meta
