"""An exclusive lock on a run directory, held for the whole run (issue 11, item 4).

RUN/.pgolf.lock holds the owner's pid and host. The lock itself is an `fcntl.flock` on that
file, so the kernel drops it when the owner dies (kill -9 included); a lock file left by a
dead process is stale and taken over. Where flock is unavailable the pid decides: a lock
whose pid is alive on this host is in use.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from pgolf.errors import PgolfError

LOCK_NAME = ".pgolf.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> dict:
    try:
        body = json.loads(path.read_text(encoding="utf-8") or "{}")
        return body if isinstance(body, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """`with RunLock(run):` — or acquire()/release(). Refuses a directory another live process holds."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = self.run / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.run.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        owner = _owner(self.path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise PgolfError(
                    f"{self.run}: in use by another pgolf process (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}); wait for it or choose another --out"
                ) from None
        else:  # pragma: no cover
            pid = owner.get("pid")
            mine = owner.get("host") == socket.gethostname()
            if isinstance(pid, int) and pid != os.getpid() and mine and _pid_alive(pid):
                os.close(fd)
                raise PgolfError(f"{self.run}: in use by another pgolf process (pid {pid})")
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (and unlinked) by its owner between our open and our flock: retry
            os.close(fd)
            return self.acquire()
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        self._fd = fd
        return self

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run: str | Path) -> bool:
    """Whether a live process holds the run's lock (for --force: never move a running run aside)."""
    path = Path(run) / LOCK_NAME
    if not path.is_file():
        return False
    if fcntl is None:  # pragma: no cover
        pid = _owner(path).get("pid")
        return isinstance(pid, int) and _pid_alive(pid)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def lock_owner(run: str | Path) -> str:
    """'pid N on HOST' of the run's lock file, for messages."""
    owner = _owner(Path(run) / LOCK_NAME)
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
