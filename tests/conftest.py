"""Session-wide fixtures: the builtin corpus is built once, and one `tiny` model trained once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory) -> Path:
    from pgolf.data.builtin import build_builtin

    out = tmp_path_factory.mktemp("builtin") / "data"
    build_builtin(out, log=lambda *a, **k: None)
    return out


TINY_STEPS = 60  # about 50 s on 2 cores: the whole-split post-EMA bpb is then ~0.7 below the unigram


@pytest.fixture(scope="session")
def tiny_run(builtin_dir, tmp_path_factory) -> Path:
    """The `tiny` preset trained for a fixed number of steps (step-based schedule: reproducible)."""
    from pgolf.config import load_config
    from pgolf.train.trainer import Trainer

    sets = [
        f"train.iterations={TINY_STEPS}",
        "train.max_wallclock_seconds=0",
        "train.warmdown_iters=20",
        "train.val_loss_every=20",
        "train.checkpoint_every=0",
        "train.val_max_tokens=16384",
    ]
    cfg = load_config("tiny", sets, environ={})
    out = tmp_path_factory.mktemp("runs") / "tiny"
    Trainer(cfg, builtin_dir, out, show_progress=False).run()
    return out


def pgolf_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgolf", *args]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "pgolf",
        *args,
    ]


def clean_env(**extra: str) -> dict:
    """The environment for a pgolf subprocess, without the challenge's override variables."""
    from pgolf.config import env_names

    env = {k: v for k, v in os.environ.items() if k not in env_names()}
    env.update(extra)
    return env
