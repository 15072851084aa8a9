"""Checkpoints that let a killed run resume to bit-identical weights (on CPU, fixed seed).

A checkpoint is a directory `RUN/checkpoints/step_NNNNNNN/` written to a temporary
name and renamed into place; only complete checkpoints ever carry the final name.
Muon keeps momentum only on the rank that owns a matrix, so with several ranks each
rank writes its own optimiser file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from pgolf.errors import PgolfError

_STEP_DIR = re.compile(r"step_(\d{7})$")


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def list_checkpoints(run: Path) -> list[Path]:
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name) and (p / "state.pt").is_file()]
    return sorted(found, key=step_of)


def step_of(path: Path) -> int:
    return int(_STEP_DIR.fullmatch(path.name).group(1))


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def save(run: Path, step: int, state: dict, optim_state: list, rank: int, world: int, keep: int) -> Path:
    """Write one checkpoint: rank 0 writes `state.pt`, every rank its optimiser file.

    The caller must call this on every rank, with a barrier afterwards.
    """
    root = checkpoint_dir(run)
    final = root / f"step_{step:07d}"
    staging = root / f".staging_step_{step:07d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    from pgolf import dist

    dist.barrier()
    _atomic_torch_save(optim_state, staging / f"optim_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        _atomic_torch_save({**state, "world_size": world}, staging / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in list_checkpoints(run)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def _torch_load(path: Path, device: torch.device):
    """weights_only (no code runs); a truncated or corrupt file is one line naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise PgolfError(f"{path}: checkpoint file missing") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        why = " ".join(str(e).split())[:160]
        raise PgolfError(
            f"{path}: corrupt checkpoint ({type(e).__name__}: {why}); delete it to resume from an earlier one"
        ) from None


def load(path: Path, rank: int, world: int, device: torch.device) -> tuple[dict, list]:
    state = _torch_load(path / "state.pt", device)
    if not isinstance(state, dict):
        raise PgolfError(f"{path / 'state.pt'}: corrupt checkpoint (not a state dictionary)")
    if int(state.get("world_size", 1)) != world:
        raise PgolfError(
            f"{path}: checkpoint was written by {state.get('world_size')} processes; resume with the same number "
            f"(got {world})"
        )
    optim = _torch_load(path / f"optim_rank{rank}.pt", device)
    return state, optim


def _atomic_torch_save(obj, path: Path) -> None:
    from pgolf.safeio import disk_errors

    with disk_errors(path):  # disk full: one line; the earlier checkpoints stay
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        except RuntimeError as e:  # torch's zip writer reports a failed write as a RuntimeError
            Path(tmp).unlink(missing_ok=True)
            if "writ" in str(e):
                why = " ".join(str(e).split())[:120]
                raise PgolfError(f"{path}: cannot write ({why}); nothing was replaced") from None
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
