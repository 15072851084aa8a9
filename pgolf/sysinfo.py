"""What a result was measured on: software versions and hardware, for run metadata and reports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from pgolf import __version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    """`git ARGS` in pgolf's checkout: its stdout, or None outside a checkout or without git."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


def _git_dirty() -> bool | None:
    """Whether tracked files differ from the commit: a figure measured on uncommitted code says so."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return bool(out.strip()) if out is not None else None


def system_info(device: torch.device | str | None = None) -> dict:
    gpu = None
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else ("cuda" if gpu else "cpu"),
        "gpu": gpu,
        "pgolf": __version__,
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
    }
