"""Our container: exact round trips, atomic writes, and one clear line for every malformed file."""

from __future__ import annotations

import hashlib
import json
import lzma
import struct

import pytest
import torch

from pgolf.errors import ArtifactError
from pgolf.quant import container
from pgolf.quant.artifact import load_artifact, read_artifact

CODECS = [
    "xz",
    pytest.param(
        "brotli",
        marks=pytest.mark.skipif(container.default_codec() != "brotli", reason="brotli not installed"),
    ),
]


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.q": torch.randint(-31, 32, (7, 5), generator=g, dtype=torch.int8),
        "a.scale": torch.rand(7, generator=g).half(),
        "b": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "c": torch.tensor(0.25, dtype=torch.float16),  # 0-d
        "d": torch.randn(6, generator=g),
        "e": torch.zeros(0, 3, dtype=torch.float16),  # empty
        "f": torch.tensor([True, False, True]),
        "g": torch.arange(5, dtype=torch.int64),
        "h.q": torch.randint(-127, 128, (4, 4), generator=g, dtype=torch.int8),
        "h.scale": torch.tensor(0.5),
    }


def _meta() -> dict:
    return {
        "a": {"type": "int6"},
        "b": "passthrough",
        "c": "passthrough",
        "d": "passthrough",
        "e": "passthrough",
        "f": "passthrough",
        "g": "passthrough",
        "h": {"type": "int8"},
    }


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_is_exact(tmp_path, codec):
    src = _tensors()
    path = tmp_path / "x.pgolf"
    n = container.write_container(path, {"meta": _meta(), "note": "hi"}, src, codec)
    assert n == path.stat().st_size
    header, back = container.read_container(path)
    assert header["note"] == "hi" and header["format"] == container.FORMAT_VERSION
    assert set(back) == set(src)
    for k, t in src.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape and torch.equal(back[k], t), k


def test_data_section_is_grouped_by_kind():
    order = container.data_order(list(_tensors()), _meta())
    assert order[:2] == ["a.q", "h.q"]  # int6 values, then int8 values
    assert set(order[2:4]) == {"a.scale", "h.scale"}


def test_byte_planes():
    t = torch.tensor([0x0102, 0x0304], dtype=torch.int16)
    assert container._to_bytes(t) == bytes([0x02, 0x04, 0x01, 0x03])
    assert torch.equal(container._from_bytes(bytes([0x02, 0x04, 0x01, 0x03]), torch.int16, [2]), t)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x.pgolf"
    container.write_container(path, {"meta": _meta()}, _tensors(), "xz")
    good = path.read_bytes()

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(container.os, "replace", boom)
    with pytest.raises(OSError):
        container.write_container(path, {"meta": {}}, {"z": torch.ones(2)}, "xz")
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["x.pgolf"]  # no temp file left behind


# --------------------------------------------------------------------------- malformed files
def _outer(body: bytes, raw_len: int, version: int = container.FORMAT_VERSION, codec: int = 1) -> bytes:
    digest = hashlib.sha256(body).digest()
    return container.OUTER.pack(container.MAGIC, version, codec, 0, len(body), raw_len, digest) + body


def _rewrap(raw: bytes) -> bytes:
    """An outer header with a VALID hash around `raw` (so only the inner checks can refuse it)."""
    return _outer(lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE), len(raw))


def _payload(header: dict, data: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + data


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "good.pgolf"
    container.write_container(path, {"meta": _meta()}, _tensors(), "xz")
    return path.read_bytes()


def _cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    body = good[container.OUTER.size :]
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    return {
        "empty": (b"", "not a pgolf artifact"),
        "truncated header": (good[:30], "truncated"),
        "truncated payload": (good[:-100], "truncated"),
        "trailing bytes": (good + b"xx", "trailing"),
        "corrupted payload": (bytes(flipped), "sha256 mismatch"),
        "future version": (good[:8] + struct.pack("<H", 99) + good[10:], "format version 99"),
        "unknown codec": (good[:10] + bytes([7]) + good[11:], "unknown codec 7"),
        "absurd raw size": (good[:20] + struct.pack("<Q", 1 << 50) + good[28:], "absurd decompressed size"),
        "size lie": (good[:20] + struct.pack("<Q", 5) + good[28:], "another size"),
        "bad stream": (_wrap_body(b"\x00" * 50), "corrupted payload"),
        "absurd header length": (_rewrap(struct.pack("<I", 0xFFFFFFF0) + b"{}"), "absurd header length"),
        "header not json": (_rewrap(struct.pack("<I", 4) + b"\xff\xfe{]"), "unreadable JSON header"),
        "header wrong format": (
            _rewrap(_payload({"format": 2, "tensors": []})),
            "unsupported header format 2",
        ),
        "no index": (_rewrap(_payload({"format": 1})), "no tensor index"),
        "bad entry": (
            _rewrap(_payload({"format": 1, "tensors": [{"name": "x", "dtype": "complex"}]})),
            "malformed tensor index entry",
        ),
        "out of range": (_index([_entry("x", "float32", [1000], 0, 4000)], b"\0" * 16), "do not fit"),
        "duplicate": (_index([_entry("x", "int8", [1], 0, 1)] * 2, b"\0"), "listed twice"),
        "text file": (b"hello, I am not an artifact\n", "not a pgolf artifact"),
        "body only": (body, "not a pgolf artifact"),
    }


def _wrap_body(body: bytes) -> bytes:
    return _outer(body, 100)


def _entry(name: str, dtype: str, shape: list[int], offset: int, nbytes: int) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape, "offset": offset, "nbytes": nbytes}


def _index(entries: list[dict], data: bytes) -> bytes:
    return _rewrap(_payload({"format": 1, "tensors": entries}, data))


def test_every_malformed_file_is_one_clear_line(tmp_path, good):
    for label, (data, expect) in _cases(good).items():
        path = tmp_path / f"{label.replace(' ', '_')}.pgolf"
        path.write_bytes(data)
        with pytest.raises(ArtifactError) as e:
            container.read_container(path)
        msg = str(e.value)
        assert "\n" not in msg, label
        assert str(path) in msg, label
        assert expect in msg, (label, msg)


def test_loader_refuses_unknown_files_and_missing_ones(tmp_path, good):
    for label, (data, _expect) in _cases(good).items():
        path = tmp_path / f"{label.replace(' ', '_')}.bin"
        path.write_bytes(data)
        with pytest.raises(ArtifactError) as e:
            load_artifact(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value), label
    with pytest.raises(ArtifactError, match="neither a pgolf artifact nor a seed"):
        p = tmp_path / "random.bin"
        p.write_bytes(bytes(range(256)))
        read_artifact(p)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.pgolf")


def test_cli_export_errors_are_one_line(tmp_path, good):
    """Through the real CLI entry: exit 2 and `pgolf: error: ...`, never a traceback, nothing overwritten."""
    from test_quant_support import run_cli

    bad = tmp_path / "bad.pgolf"
    bad.write_bytes(good[:-3])
    r = run_cli("export", str(tmp_path / "no_such_run"), "--out", str(bad))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("pgolf: error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert bad.read_bytes() == good[:-3]  # nothing was overwritten
