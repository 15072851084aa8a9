"""torch.distributed plumbing, kept out of the model and the math.

Processes are started by ``torchrun``; we only read the variables it sets
(RANK, WORLD_SIZE, LOCAL_RANK) and pick the backend: NCCL on CUDA, Gloo on CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pgolf.config import RuntimeConfig


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(runtime: RuntimeConfig, local_rank: int = 0) -> torch.device:
    if runtime.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if runtime.device == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(runtime.device)


def init(runtime: RuntimeConfig) -> DistInfo:
    """Join the process group if torchrun started us; otherwise a one-process world."""
    if runtime.num_threads > 0:
        torch.set_num_threads(runtime.num_threads)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0)) if launched else 0
    world = int(os.environ.get("WORLD_SIZE", 1)) if launched else 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if launched else 0
    device = pick_device(runtime, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if runtime.cpu_malloc == "keep" or (runtime.cpu_malloc == "auto" and device.type == "cpu"):
        from pgolf.cpumalloc import keep_freed_memory

        keep_freed_memory()
    if launched and world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


# Why shutdown() pauses: a Gloo worker thread drops its reference to a finished
# collective's tensors a moment after the caller has been woken, and that needs the GIL.
# Once anything has imported torch._dynamo (the first optimizer step does), torch keeps
# the default group alive past destroy_process_group, so its threads outlive it; if the
# interpreter is already finalising when a thread gets the GIL, the thread is killed
# mid-destructor and the process aborts ("terminate called without an active exception",
# 10 of 108 two-rank runs of tests/test_eval_dist.py's script). Sleeping releases the GIL so the
# threads finish first.
DRAIN_SECONDS = 0.2


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        time.sleep(DRAIN_SECONDS)
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place SUM across ranks (a no-op in one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from `src` to every rank (used for small metadata only)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
