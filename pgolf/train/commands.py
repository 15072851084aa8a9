"""`pgolf train`: train a model from a preset (one process, or many under torchrun)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from pgolf.cliutil import add_config_args, config_from_args, print_json
from pgolf.config import Config
from pgolf.errors import ConfigError, PgolfError
from pgolf.safeio import read_json_file


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
        raw = read_json_file(meta)  # depth and size bounded: a crafted config.json is one line
        if not isinstance(raw, dict):
            raise ConfigError(f"{meta}: expected a JSON object")
        try:
            cfg = Config.from_dict(raw)
        except PgolfError as e:
            raise ConfigError(f"{meta}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{meta}: malformed config ({e})") from None
        recorded = raw.get("data_dir")
        if isinstance(recorded, str) and recorded and not Path(recorded).is_absolute():
            recorded = str(run / recorded)  # recorded relative to the run directory
        data = Path(args.data or recorded or cfg.data.data_path)
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
    from pgolf import dist
    from pgolf.train.trainer import Trainer

    info = dist.init(cfg.runtime)
    start, err = None, None
    if info.is_main:
        try:
            start = RunStart(out, cfg, data, resume=bool(args.resume), force=args.force, preset=args.preset)
        except PgolfError as e:
            err = str(e)
    err = dist.broadcast_object(err)
    if err:
        dist.shutdown()
        raise ConfigError(err)
    try:
        try:
            trainer = Trainer(cfg, data, out, resume=bool(args.resume), show_progress=not args.quiet)
        except BaseException:
            if start is not None:
                start.abort()  # the half-made --out goes; a replaced run comes back
            raise
        if start is not None:
            start.started()  # the new run passed every check: only now is the replaced one deleted
        dist.barrier()
        result = trainer.run()
    finally:
        if start is not None:
            start.release()
        dist.shutdown()
    if trainer.d.is_main:
        result["run"] = str(out)
        if args.json:
            print_json(result)
    return 0


RUN_MARKERS = ("config.json", "train.log", "metrics.jsonl")


def is_run_dir(path: Path) -> bool:
    """A directory `pgolf train` made: its files, and no dataset's (a manifest or shards)."""
    if not path.is_dir():
        return False
    if (path / "manifest.json").exists() or any(path.glob("fineweb_*.bin")):
        return False
    return any((path / m).is_file() for m in RUN_MARKERS)


class RunStart:
    """Rank 0's preparation of --out, before the Trainer touches it (issue 11, items 1, 4, 8).

    Every check runs first: --out is none of the command's inputs, the data matches its
    manifest, a --force target is a pgolf run no live process holds. Then the old run is
    moved aside (not deleted) and the new directory locked. `abort` undoes all of it when
    the Trainer fails to start; `started` deletes the old run once the new one has.
    """

    def __init__(self, out: Path, cfg: Config, data: Path, *, resume: bool, force: bool, preset: str | None):
        from pgolf.data.tokenizer import find_tokenizer
        from pgolf.runlock import LOCK_NAME, RunLock, is_locked, lock_owner
        from pgolf.safeio import check_data_inputs, inside

        self.out, self.old, self.created, self.resume = out, None, False, resume
        inputs = [("--data", data)]
        if cfg.data.tokenizer_path:
            inputs.append(("data.tokenizer_path", Path(cfg.data.tokenizer_path)))
        if preset and Path(preset).suffix == ".toml":
            inputs.append(("--preset", Path(preset)))
        for flag, p in inputs:
            if p.exists() and inside(p, out) and not resume:
                raise ConfigError(f"--out {out} contains {flag} {p}: refusing to write a run over its own input")
            if p.is_dir() and inside(out, p):
                raise ConfigError(f"--out {out} lies inside {flag} {p}: a run is not written into its input")
        tok = find_tokenizer(data, cfg.data.tokenizer_path or None)
        check_data_inputs(data, tok, cfg.model.vocab_size)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a directory")
        if out.is_dir() and is_locked(out):
            raise ConfigError(f"{out}: in use by another pgolf process ({lock_owner(out)}); not touched")
        # A lock file alone (left by a killed start) does not make a directory a run.
        non_empty = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())
        if non_empty and not resume:
            if not force:
                raise ConfigError(
                    f"{out}: run directory exists and is not empty (use --resume to continue, --force to replace)"
                )
            if not is_run_dir(out):
                raise ConfigError(f"{out}: not a pgolf run directory (no config.json/train.log); --force refuses it")
            self.old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, self.old)  # aside, not deleted: `abort` brings it back
        self.created = not out.exists()
        try:
            self.lock = RunLock(out).acquire()
        except BaseException:
            self._restore()
            raise

    def _restore(self) -> None:
        if not self.resume and self.out.exists():
            if self.created or self.old is not None:
                shutil.rmtree(self.out, ignore_errors=True)
            else:  # an empty directory the user made: emptied again
                for p in self.out.iterdir():
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self.old is not None:
            os.rename(self.old, self.out)
            self.old = None

    def abort(self) -> None:
        self.lock.release()
        self._restore()

    def started(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
            self.old = None

    def release(self) -> None:
        self.lock.release()


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
