"""Reading what a user hands pgolf without trusting it (issue 11; docs/reliability.md).

- `loads_json`: JSON with a size and nesting-depth bound checked before the parser runs
  (Python's parser recurses: 200,000 nested brackets are a RecursionError, not a message).
- `check_data_inputs`: the dataset a command is about to read, against its manifest: the
  tokenizer's sha256, every listed shard's size, header and sha256 (hashes remembered per
  file by size, mtime and inode, so an unchanged 8 GB dataset is hashed once). Returns the
  record of what was really read, which a run keeps as RUN/inputs.json.
- `inside`: whether one path is (or lies under) another, for --force's refusals.
- `disk_errors`: an OSError while writing (disk full, read-only) becomes one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pgolf.errors import DataError, PgolfError

MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64  # pgolf's own files nest at most 5 deep
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text (strings skipped), in one linear pass."""
    import numpy as np

    stripped = _STRING.sub(b'""', data)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    step = np.zeros(arr.shape, dtype=np.int64)
    step[(arr == ord("[")) | (arr == ord("{"))] = 1
    step[(arr == ord("]")) | (arr == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def loads_json(
    data: bytes | str,
    where: object,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[PgolfError] = PgolfError,
    what: str = "JSON",
):
    """`json.loads` that refuses, in one line naming `where`, what would exhaust memory or the stack."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{where}: {len(raw):,} bytes of {what}, more than the {max_bytes:,} allowed")
    depth = json_depth(raw)
    if depth > max_depth:
        raise error(f"{where}: {what} nested {depth} deep (at most {max_depth}); refused")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise error(f"{where}: unreadable {what} ({' '.join(str(e).split())[:160]})") from None


def read_json_file(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PgolfError(f"{path}: {size:,} bytes of JSON, more than the {max_bytes:,} allowed")
        data = path.read_bytes()
    except OSError as e:
        raise PgolfError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads_json(data, path, max_bytes)


def inside(child: str | Path, parent: str | Path) -> bool:
    """Whether `child` is `parent` or lies under it (symlinks resolved)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents


class WriteError(PgolfError, OSError):
    """A write that failed (disk full, read-only, quota): one line for the CLI, still an OSError."""


@contextmanager
def disk_errors(what: object) -> Iterator[None]:
    """An OSError while writing `what` (ENOSPC, EROFS, EDQUOT...) becomes one PgolfError line."""
    try:
        yield
    except OSError as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            raise
        why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise WriteError(f"{what}: cannot write ({why}); nothing was replaced") from None


# --------------------------------------------------------------------------- dataset inputs
def _hash_cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgolf" / "sha256.json"


def _load_hash_cache() -> dict:
    try:
        body = json.loads(_hash_cache_path().read_text(encoding="utf-8"))
        return body if isinstance(body, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _save_hash_cache(cache: dict) -> None:
    path = _hash_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache: losing it costs only time


def sha256_cached(path: Path, cache: dict) -> str:
    """sha256 of a file, remembered by (resolved path, size, mtime_ns, inode): an edit changes the key."""
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = cache.get(key)
    if isinstance(hit, list) and len(hit) == 2 and hit[0] == stamp:
        return hit[1]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    cache[key] = [stamp, h.hexdigest()]
    return h.hexdigest()


def check_data_inputs(data_dir: str | Path, tokenizer: str | Path, vocab_size: int | None = None) -> dict:
    """Refuse a dataset that does not match its manifest; return what was read, with hashes.

    Checked when DIR/manifest.json exists (a hand-copied directory without one is read as
    is, and the record says so): the manifest parses; the tokenizer in use has the sha256
    the manifest names (a swapped tokenizer of the same vocabulary gives a wrong bpb
    without any other sign); every shard on disk is listed, and every listed file has its
    recorded sha256 (which also pins its size and header).
    """
    from pgolf.data.manifest import MANIFEST_NAME, read_manifest
    from pgolf.data.shards import TRAIN_GLOB, VAL_GLOB, read_header

    data_dir, tokenizer = Path(data_dir), Path(tokenizer)
    mpath = data_dir / MANIFEST_NAME
    if mpath.is_file():
        loads_json(mpath.read_bytes(), mpath)  # depth and size first: read_manifest's parser recurses
    manifest = read_manifest(data_dir)
    cache = _load_hash_cache()
    shards = sorted({*data_dir.glob(TRAIN_GLOB), *data_dir.glob(VAL_GLOB)})
    record: dict[str, Any] = {
        "data_dir": str(data_dir),
        "manifest": "absent" if manifest is None else "checked",
        "tokenizer": {"file": tokenizer.name, "sha256": sha256_cached(tokenizer, cache)},
        "files": {},
    }
    try:
        if manifest is None:
            for p in shards:
                read_header(p)
                record["files"][p.name] = sha256_cached(p, cache)
            return record
        want_tok = (manifest.get("tokenizer") or {}).get("sha256")
        if want_tok and want_tok != record["tokenizer"]["sha256"]:
            raise DataError(
                f"{tokenizer}: sha256 {record['tokenizer']['sha256'][:12]}… is not the tokenizer {mpath} was built "
                f"with ({str(want_tok)[:12]}…); the bpb would be wrong"
            )
        mv = manifest.get("vocab_size")
        if vocab_size is not None and isinstance(mv, int) and mv != vocab_size:
            raise DataError(f"{mpath}: vocab_size {mv} but the model has {vocab_size}")
        listed = manifest.get("files") or {}
        if not isinstance(listed, dict):
            raise DataError(f"{mpath}: 'files' is not an object")
        for p in shards:
            if p.name not in listed:
                raise DataError(f"{p}: a shard {MANIFEST_NAME} does not list; refused (rebuild the dataset)")
        for name, digest in sorted(listed.items()):
            p = data_dir / name
            if not p.is_file():
                raise DataError(f"{p}: listed in {MANIFEST_NAME} but missing")
            if p.name.endswith(".bin") and "_bytes_" not in p.name:
                read_header(p)  # size against its header before hashing
            actual = sha256_cached(p, cache)
            if actual != digest:
                raise DataError(f"{p}: sha256 {actual[:12]}… differs from {MANIFEST_NAME} ({str(digest)[:12]}…)")
            record["files"][name] = actual
        return record
    finally:
        _save_hash_cache(cache)


def write_inputs_record(run: Path, record: dict) -> None:
    """RUN/inputs.json: what the run really read, the data path relative to the run directory."""
    rec = dict(record)
    rec["data_dir"] = os.path.relpath(Path(record["data_dir"]).resolve(), Path(run).resolve())
    tmp = Path(run) / ".inputs.json.tmp"
    tmp.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, Path(run) / "inputs.json")


def check_data_inputs_on_main(data_dir: str | Path, tokenizer: str | Path, vocab_size: int | None, is_main: bool):
    """`check_data_inputs` on rank 0 only (hashing once per host); every rank stops on its refusal."""
    from pgolf import dist

    record, err = None, None
    if is_main:
        try:
            record = check_data_inputs(data_dir, tokenizer, vocab_size)
        except PgolfError as e:
            err = str(e)
    err = dist.broadcast_object(err)
    if err:
        raise DataError(err)
    return record
