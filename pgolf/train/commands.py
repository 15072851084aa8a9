"""`pgolf train`: train a model from a preset (one process, or many under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.cliutil import add_config_args, config_from_args, print_json
from pgolf.config import Config
from pgolf.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (use torchrun --nproc_per_node=N -m pgolf train for several)", description=__doc__
    )
    add_config_args(p)
    p.add_argument("--data", help="dataset directory (default: the config's data.data_path)")
    p.add_argument("--out", help="run directory to create (config.json, metrics.jsonl, train.log, checkpoints)")
    p.add_argument("--resume", metavar="RUN", help="continue a killed run from its last checkpoint")
    p.add_argument("--minutes", type=float, help="wall-clock training budget (sets train.max_wallclock_seconds)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--dry-run", action="store_true", help="validate the config, build the model, print its size, exit")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _resolve(args: argparse.Namespace) -> tuple[Config, Path, Path | None]:
    if args.resume:
        run = Path(args.resume)
        meta = run / "config.json"
        if not meta.is_file():
            raise ConfigError(f"{run}: not a run directory (no config.json)")
        if args.sets or args.minutes is not None:
            raise ConfigError("--resume continues a run with its own config; --set/--minutes are not allowed")
        raw = json.loads(meta.read_text())
        cfg = Config.from_dict(raw)
        data = Path(args.data or raw.get("data_dir") or cfg.data.data_path)
        return cfg, run, data
    sets = list(args.sets)
    if args.minutes is not None:
        sets.append(f"train.max_wallclock_seconds={args.minutes * 60.0}")
    args.sets = sets
    cfg = config_from_args(args)
    data = Path(args.data or cfg.data.data_path) if not args.dry_run or args.data else None
    if data is not None:
        cfg.data.data_path = str(data)
    return cfg, Path(args.out) if args.out else None, data


def cmd_train(args: argparse.Namespace) -> int:
    cfg, out, data = _resolve(args)
    if args.dry_run:
        return _dry_run(cfg, args.json)
    if out is None:
        raise ConfigError("--out RUN is required (where the run is written)")
    if not args.resume and out.exists() and any(out.iterdir()) and not args.force:
        raise ConfigError(
            f"{out}: run directory exists and is not empty (use --resume to continue, --force to replace)"
        )
    from pgolf import dist
    from pgolf.train.trainer import Trainer

    if not args.resume and args.force and out.exists():
        import shutil

        info = dist.init(cfg.runtime)
        if info.is_main:
            shutil.rmtree(out)
        dist.barrier()
    trainer = Trainer(cfg, data, out, resume=bool(args.resume), show_progress=not args.quiet)
    try:
        result = trainer.run()
    finally:
        dist.shutdown()
    if trainer.d.is_main:
        result["run"] = str(out)
        if args.json:
            print_json(result)
    return 0


def _dry_run(cfg: Config, as_json: bool) -> int:
    import torch

    from pgolf.model import count_params
    from pgolf.model.gpt import GPT
    from pgolf.model.record_names import record_table, tensor_table
    from pgolf.train.optim import group_sizes

    with torch.device("meta"):  # shapes and groups without spending time on the initialisation
        model = GPT(cfg.model)
    params = count_params(model)
    tensors = tensor_table(model)
    result = {
        "preset": cfg.preset,
        "params": params,
        "params_without_mtp": count_params(model, exclude_mtp=True),
        "params_by_group": group_sizes(model),
        "layers": cfg.model.num_layers,
        "model_dim": cfg.model.model_dim,
        "train_batch_tokens": cfg.train.train_batch_tokens,
        "train_seq_len": cfg.train.train_seq_len,
        "overrides": cfg.overrides,
        "tensors": tensors,  # pgolf's per-layer tensors, each with its optimiser group and #1855 bank slot
        "banked": record_table(tensors),  # the same tensors as PR #1855 holds them (FRONTIER F2.11)
    }
    if as_json:
        print_json(result)
    else:
        print(f"config ok ({cfg.preset}): {params:,} parameters in {len(tensors)} tensors")
        for k, v in result["params_by_group"].items():
            print(f"  {k:7s} {v:,}")
        print("as #1855 holds them (banks):")
        for r in result["banked"]:
            print(f"  {r['name']:32s} {'x'.join(map(str, r['shape'])):>14s} {r['params']:>12,}  {r['group']}")
    return 0
