"""A dataset directory: its manifest, file hashes, and all-or-nothing replacement.

Layout (what every `pgolf data` command writes)::

    DIR/fineweb_train_000000.bin ...   token shards (the challenge's format and names)
    DIR/fineweb_val_000000.bin ...
    DIR/tokenizer.model                the SentencePiece model the shards were encoded with
    DIR/manifest.json                  counts, hashes, where the data came from

A directory is built in a temporary sibling and renamed into place, so DIR is
always either absent, the old complete dataset, or the new complete dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgolf.data.tokenizer import file_sha256
from pgolf.errors import DataError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
KINDS = ("builtin", "text", "fineweb")


class DocumentHasher:
    """SHA-256 over documents in order; each is length-prefixed so boundaries count."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def update(self, text: str) -> None:
        data = text.encode("utf-8")
        self._h.update(struct.pack("<Q", len(data)))
        self._h.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def documents_sha256(docs) -> str:
    h = DocumentHasher()
    for d in docs:
        h.update(d)
    return h.hexdigest()


def file_hashes(data_dir: str | Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, str]:
    """sha256 of every regular file in the directory (sorted by name), manifest excluded."""
    data_dir = Path(data_dir)
    return {p.name: file_sha256(p) for p in sorted(data_dir.iterdir()) if p.is_file() and p.name not in exclude}


def write_manifest(data_dir: str | Path, manifest: dict) -> Path:
    path = Path(data_dir) / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(data_dir: str | Path) -> dict | None:
    """The directory's manifest, None when there is none (e.g. shards copied by hand)."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: unsupported manifest format_version {version!r} (expected {FORMAT_VERSION})")
    return manifest


def verify_files(data_dir: str | Path, manifest: dict) -> None:
    """Check every file the manifest lists against its sha256."""
    data_dir = Path(data_dir)
    for name, digest in (manifest.get("files") or {}).items():
        p = data_dir / name
        if not p.is_file():
            raise DataError(f"{p}: listed in {MANIFEST_NAME} but missing")
        actual = file_sha256(p)
        if actual != digest:
            raise DataError(f"{p}: sha256 {actual[:12]}… differs from {MANIFEST_NAME} ({digest[:12]}…)")


def check_target(out: str | Path, force: bool) -> Path:
    """Refuse early (before any work) to replace an existing path without --force."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a directory")
        if not force:
            raise DataError(f"{out}: already exists; pass --force to replace it")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():  # --force replaces datasets only
            raise DataError(f"{out}: not a pgolf dataset (no {MANIFEST_NAME}); --force refuses to replace it")
    return out


@contextmanager
def staged_directory(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to `out`; on success it becomes `out`.

    On any error the temporary directory is removed and `out` is untouched. With
    `force`, an existing `out` is first renamed aside, then the new one renamed in,
    then the old one deleted: a crash in between leaves the old copy as
    `.NAME.old-*` next to it, never a half-written DIR.
    """
    out = check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        check_target(out, force)  # someone may have created it meanwhile
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_manifest(kind: str, vocab_size: int, counts: dict, tokenizer_sha256: str, source_fingerprint: dict) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    from pgolf import __version__

    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "vocab_size": int(vocab_size),
        "counts": counts,
        "tokenizer": {"file": "tokenizer.model", "sha256": tokenizer_sha256},
        "source_fingerprint": source_fingerprint,
        "files": {},
        "created_by": f"pgolf {__version__}",
    }
