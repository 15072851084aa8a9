"""Byte codecs for the per-group container: brotli and lzma (always), lrzip/ZPAQ (when installed).

Every decompression takes a bound (`max_size`) and never produces more: brotli and
lzma stream with an output limit; lrzip runs as a subprocess (no shell, temporary
files, a timeout) under RLIMIT_FSIZE = the bound, after its header's size field was
checked against the bound. lrzip's output depends on its thread count (F8.5), so the
count is always passed explicitly (`-p`).

The reliability work adds a bounded-decompression helper to container.py for the single
stream format; the coordinator unifies the two.
"""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence

from pgolf.errors import ArtifactError

CODECS = ("brotli", "lzma", "lrzip")
BROTLI_ARGS = {"quality": 11, "lgwin": 24}
# lc=lp=pb=0: int codes carry no useful byte-position context (the single-stream container's setting)
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
LRZIP_MAGIC = b"LRZI"
LRZIP_TIMEOUT_S = 900.0
# What a 16,000,000-byte artifact can plausibly hold once decompressed (issue 11, item 5): its
# codes take at least ~2 bits each compressed, so ~64 M one-byte codes plus fp16 scales; 4x
# slack on that. Every artifact reader bounds its decompressed bytes and element counts by it.
MAX_ARTIFACT_RAW = 256 << 20
MAX_ARTIFACT_TENSORS = 10_000  # the frontier model has ~120 tensors


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def lrzip_program() -> str | None:
    """Path of the `lrzip` program, or None when it is not installed."""
    return shutil.which("lrzip")


def lrzip_version() -> str | None:
    exe = lrzip_program()
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "-V"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _one_line((r.stdout or r.stderr).decode("utf-8", "replace")) or None


def available(codecs: Sequence[str] = CODECS) -> list[str]:
    """The codecs of `codecs` this machine can run (lrzip only when its program is installed)."""
    out = []
    for c in codecs:
        if c == "lrzip" and lrzip_program() is None:
            continue
        if c == "brotli":
            try:
                import brotli  # noqa: F401
            except ImportError:
                continue
        out.append(c)
    return out


def _brotli(where: str):
    try:
        import brotli
    except ImportError:
        raise ArtifactError(f"{where}: needs the 'brotli' package (pip install brotli)") from None
    return brotli


def _lrzip(where: str) -> str:
    exe = lrzip_program()
    if exe is None:
        raise ArtifactError(f"{where}: needs the 'lrzip' program, which is not installed (apt-get install lrzip)")
    return exe


# --------------------------------------------------------------------------- compression
def compress(data: bytes, codec: str, lrzip_threads: int = 1, brotli_lgwin: int = 24) -> bytes:
    if codec == "brotli":
        return _brotli("brotli").compress(data, quality=11, lgwin=brotli_lgwin)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=XZ_FILTERS)
    if codec == "lrzip":
        return lrzip_wait(lrzip_start(data, lrzip_threads))
    raise ArtifactError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


class LrzipJob:
    """One running `lrzip` process and its temporary directory."""

    def __init__(self, proc: subprocess.Popen, tmp: tempfile.TemporaryDirectory, out: str, where: str, limit: int):
        self.proc, self.tmp, self.out, self.where, self.limit = proc, tmp, out, where, limit


def lrzip_start(data: bytes, threads: int = 1, where: str = "lrzip") -> LrzipJob:
    """Start `lrzip -z -L 9 -p THREADS` (ZPAQ, level 9) on `data`; `lrzip_wait` collects the result.
    Several jobs can run at once without Python threads (the caller starts them, then waits)."""
    exe = _lrzip(where)
    tmp = tempfile.TemporaryDirectory(prefix="pgolf_lrz_")
    src, out = os.path.join(tmp.name, "in.bin"), os.path.join(tmp.name, "out.lrz")
    with open(src, "wb") as f:
        f.write(data)
    cmd = [exe, "-z", "-L", "9", "-p", str(int(threads)), "-Q", "-o", out, src]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return LrzipJob(proc, tmp, out, where, 0)


def lrzip_wait(job: LrzipJob, timeout: float = LRZIP_TIMEOUT_S) -> bytes:
    try:
        try:
            _, err = job.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.communicate()
            raise ArtifactError(f"{job.where}: lrzip took over {timeout:.0f} s; stopped") from None
        if job.proc.returncode != 0:
            msg = _one_line(err.decode("utf-8", "replace"))[:200] or f"exit status {job.proc.returncode}"
            raise ArtifactError(f"{job.where}: lrzip failed ({msg})")
        size = os.path.getsize(job.out)
        if job.limit and size > job.limit:
            raise ArtifactError(f"{job.where}: lrzip output exceeds its {job.limit}-byte bound")
        with open(job.out, "rb") as f:
            return f.read()
    finally:
        job.tmp.cleanup()


# --------------------------------------------------------------------------- decompression
def lrzip_declared_size(data: bytes) -> int | None:
    """The uncompressed size an lrzip (0.6 format) stream declares in its header, or None."""
    if len(data) < 14 or not data.startswith(LRZIP_MAGIC):
        return None
    return struct.unpack_from("<Q", data, 6)[0]


def _limit_output(limit: int):
    def set_limit():  # runs in the child, before exec: the kernel stops any write past the bound
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def lrzip_start_decompress(data: bytes, max_size: int, where: str) -> LrzipJob:
    exe = _lrzip(where)
    declared = lrzip_declared_size(data)
    if declared is None:
        raise ArtifactError(f"{where}: not an lrzip stream (bad magic or truncated header)")
    if declared > max_size:
        raise ArtifactError(f"{where}: lrzip stream declares {declared} bytes, more than its bound {max_size}; refused")
    tmp = tempfile.TemporaryDirectory(prefix="pgolf_lrz_")
    src, out = os.path.join(tmp.name, "in.lrz"), os.path.join(tmp.name, "out.bin")
    with open(src, "wb") as f:
        f.write(data)
    cmd = [exe, "-d", "-f", "-Q", "-o", out, src]
    limit = max(1, max_size) + 4096  # lrzip may write a little slack before truncating; we check exactly below
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit_output(limit),  # started from the main thread only (see pergroup)
    )
    return LrzipJob(proc, tmp, out, where, max_size)


def decompress(data: bytes, codec: str, size: int, where: str) -> bytes:
    """Exactly `size` bytes, or one ArtifactError line; never more than size + 1 are produced."""
    if codec == "lrzip":
        out = lrzip_wait(lrzip_start_decompress(data, size, where))
    else:
        out = _bounded(data, codec, size, where)
    if len(out) != size:
        raise ArtifactError(f"{where}: decompresses to {len(out)} bytes, the header says {size}")
    return bytes(out)


def _bounded(data: bytes, codec: str, size: int, where: str) -> bytes:
    try:
        if codec == "lzma":
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = dec.decompress(data, max_length=size + 1)
            done = dec.eof
        elif codec == "brotli":
            out, done = _brotli_bounded(_brotli(where).Decompressor(), data, size + 1)
        else:
            raise ArtifactError(f"{where}: unknown codec {codec!r} (known: {', '.join(CODECS)})")
    except ArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 - lzma.LZMAError / brotli.error: a corrupted stream
        raise ArtifactError(f"{where}: corrupted stream ({codec}: {_one_line(e)})") from None
    if not done and len(out) <= size:
        raise ArtifactError(f"{where}: truncated stream ({codec} ends early)")
    return out


def _brotli_bounded(dec, data: bytes, limit: int, step: int = 1 << 20) -> tuple[bytearray, bool]:
    """At most about `limit` bytes: brotli's output_buffer_limit is a hint per call, so the
    output is pulled in `step`-sized pieces and the loop stops once `limit` is reached."""
    buf = bytearray(dec.process(data, output_buffer_limit=min(step, limit)))
    while len(buf) < limit and not dec.is_finished():
        more = dec.process(b"", output_buffer_limit=min(step, limit - len(buf)))
        if not more:
            break  # the input ran out before the stream did: truncated
        buf += more
    return buf, dec.is_finished()  # a bytearray: copied to bytes only once its size is accepted


def decompress_unknown_size(data: bytes, codec: str, max_size: int, where: str) -> bytes:
    """For streams whose size no header records (the record's artifact): at most max_size bytes."""
    if codec == "lrzip":
        return lrzip_wait(lrzip_start_decompress(data, max_size, where))
    out = _bounded(data, codec, max_size, where)
    if len(out) > max_size:
        raise ArtifactError(f"{where}: decompresses to more than {max_size} bytes; refused")
    return bytes(out)
