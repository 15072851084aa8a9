"""Helpers shared by every sub-command: config arguments, JSON output, progress."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pgolf.config import Config, load_config


def add_config_args(p: argparse.ArgumentParser, default_preset: str | None = "record") -> None:
    p.add_argument("--preset", default=default_preset, help="built-in preset name or path to a TOML file")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (section.field, a unique field name, or a challenge env name)",
    )
    p.add_argument(
        "--no-env", action="store_true", help="ignore the challenge's environment variables (NUM_LAYERS=..., SEED=...)"
    )


def config_from_args(args: argparse.Namespace, preset: str | None = None) -> Config:
    environ = {} if getattr(args, "no_env", False) else None
    return load_config(preset or args.preset, args.sets, environ=environ)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, nothing else (progress goes to stderr)."""
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def progress(total: int | None, desc: str, enabled: bool = True, unit: str = "it"):
    """A tqdm bar on an interactive stderr; a silent counter otherwise."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not (enabled and sys.stderr.isatty()),
        leave=False,
        dynamic_ncols=True,
    )


def progress_iter(iterable, total: int | None, desc: str, enabled: bool = True, unit: str = "it"):
    """`iterable` with a tqdm bar on an interactive stderr (export, audit, data building)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not (enabled and sys.stderr.isatty()),
                leave=False, dynamic_ncols=True)  # fmt: skip


def log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)
