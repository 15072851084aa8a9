"""Shared benchmark helpers: device description, matmul peak, result files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from pgolf.sysinfo import system_info

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 3) -> float:
    """Best-of-`repeat` wall time of fn() in seconds (CUDA-synchronised)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype | None = None) -> dict:
    """Measured dense matmul throughput: the best over square sizes (FLOP/s)."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    sizes = (1024, 2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048)
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        reps = 20 if device.type == "cuda" else 3
        a @ b
        dt = timed(lambda a=a, b=b, reps=reps: [a @ b for _ in range(reps)], device, repeat=3) / reps
        flops = 2 * n**3 / dt
        if flops > best:
            best, best_n = flops, n
    return {"flops": best, "dtype": str(dtype).replace("torch.", ""), "size": best_n}


def write_result(name: str, payload: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "system": system_info(payload.get("device")),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
