"""A planted pickle must never run: loading refuses with one line and the marker file never appears."""

from __future__ import annotations

import io
import lzma
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from pgolf.errors import ArtifactError
from pgolf.quant import container
from pgolf.quant.artifact import load_artifact


class Planted:
    """Unpickling this object opens (creates) `path` for writing."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class PlantedSystem:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _variants(marker: str) -> dict[str, bytes]:
    """Each way a hostile file could reach the loader."""
    buf = io.BytesIO()
    torch.save({"w": {"tok_emb.weight": torch.zeros(2)}, "m": Planted(marker)}, buf)  # torch zip + pickle
    zip_pickle = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"w": {}, "m": PlantedSystem(marker)}, buf)
    zip_system = buf.getvalue()
    raw_pickle = pickle.dumps({"w": {}, "m": Planted(marker)}, protocol=2)
    payload = struct_payload(raw_pickle)
    return {
        "seed .ptz: lzma(torch.save zip with open())": lzma.compress(zip_pickle, preset=6),
        "seed .ptz: lzma(torch.save zip with os.system)": lzma.compress(zip_system, preset=6),
        "seed .ptz: lzma(raw pickle)": lzma.compress(raw_pickle, preset=6),
        "raw pickle instead of an artifact": raw_pickle,
        "torch zip instead of an artifact": zip_pickle,
        "our magic + pickle body": container.MAGIC + raw_pickle,
        "our container around a pickle payload": payload,
    }


def struct_payload(raw: bytes) -> bytes:
    """A well-formed outer header (valid hash) whose decompressed payload is a pickle."""
    import hashlib

    body = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE)
    digest = hashlib.sha256(body).digest()
    return container.OUTER.pack(container.MAGIC, 1, 1, 0, len(body), len(raw), digest) + body


def test_the_plant_is_real(tmp_path):
    """Control: the seed's unrestricted load of the same bytes DOES create the file (throwaway process)."""
    marker = tmp_path / "pwned_control"
    ptz = tmp_path / "evil.ptz"
    ptz.write_bytes(_variants(str(marker))["seed .ptz: lzma(torch.save zip with open())"])
    code = textwrap.dedent(f"""
        import io, lzma, torch
        torch.load(io.BytesIO(lzma.decompress(open({str(ptz)!r}, "rb").read())), weights_only=False)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("label", list(_variants("x")))
def test_planted_pickle_is_refused_and_never_runs(tmp_path, label):
    marker = tmp_path / "pwned"
    path = tmp_path / "artifact.bin"
    path.write_bytes(_variants(str(marker))[label])
    with pytest.raises(ArtifactError) as e:
        load_artifact(path, preset="record")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert not marker.exists(), label
