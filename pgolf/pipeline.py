"""`pgolf run`: the main job. Data -> train -> export -> evaluate every method -> report.

    pgolf run                                  # tiny preset on the builtin corpus (built if missing)
    pgolf run --preset record --data DIR       # the seed's model on FineWeb shards
    torchrun --nproc_per_node=8 -m pgolf run --preset record --data DIR --seeds 1337,42,2024

Each seed gets its own run directory (RUN/seed_<n> when there are several) holding the
training files, the artifact, eval/<method>.json, report.md with its figures and
submission.json. The headline figure is always the best score-first method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pgolf import dist
from pgolf.cliutil import add_config_args, config_from_args, log, print_json
from pgolf.config import Config
from pgolf.data.verify import check_before_run
from pgolf.errors import ConfigError

BUILTIN_DEFAULT = "./data/builtin"
ALL_METHODS = ("plain", "sliding", "slot", "slot-causal", "ttt")


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: data, train, export, evaluate every method, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p, default_preset="tiny")
    p.add_argument("--data", help=f"dataset directory (default: the preset's; {BUILTIN_DEFAULT} is built if missing)")
    p.add_argument("--minutes", type=float, help="training wall-clock budget per seed")
    p.add_argument("--seeds", help="comma-separated seeds, one run each (default: the config's train.seed)")
    p.add_argument("--out", help="output directory (default: runs/<preset>-<date>-<time>)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help="evaluation methods, comma-separated")
    p.add_argument("--quant", default="rtn", choices=("rtn", "gptq"), help="export quantiser")
    p.add_argument("--eval-tokens", type=int, help="score only the first N validation targets (quick checks)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)


def _seeds(args: argparse.Namespace, cfg: Config) -> list[int]:
    if not args.seeds:
        return [cfg.train.seed]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must list distinct seeds, got {args.seeds!r}")
    return seeds


def _methods(text: str, cfg: Config) -> list[str]:
    from pgolf.eval import canonical_method

    methods = [canonical_method(m) for m in text.split(",") if m.strip()]
    if not cfg.eval.slot_enabled:
        methods = [m for m in methods if m != "slot"]
    return methods


def ensure_data(path: Path, explicit: bool, is_main: bool) -> Path:
    """Build the builtin corpus at the default location when nothing else was asked for."""
    if (path / "manifest.json").is_file() or any(path.glob("fineweb_val_*.bin")):
        return path
    if explicit or Path(path).resolve() != Path(BUILTIN_DEFAULT).resolve():
        return path  # the loaders will say precisely what is missing
    if is_main:
        from pgolf.data.builtin import build_builtin

        log(f"building the builtin corpus into {path} (offline, from this Python's documentation)")
        build_builtin(path)
    dist.barrier()
    return path


def _write_json(path: Path, obj) -> None:
    from pgolf.report.document import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_one(
    cfg: Config, data: Path, run_dir: Path, methods: list[str], quant: str, eval_tokens: int | None, show_progress: bool
) -> dict:
    """Train, export, evaluate and report one seed; returns its summary (rank 0) or {}."""
    import torch

    from pgolf.eval import evaluate
    from pgolf.quant.artifact import export_run, load_artifact
    from pgolf.train.trainer import Trainer

    trainer = Trainer(cfg, data, run_dir, show_progress=show_progress)
    trainer.run()
    info = trainer.d
    artifact = run_dir / "artifact.pgolf"
    if info.is_main:
        t0 = time.perf_counter()
        export = export_run(run_dir, artifact, quant=quant, data=data)
        log(
            f"export: {export['total_bytes']:,} bytes ({'fits' if export['fits'] else 'OVER'} the "
            f"{export['limit_bytes']:,}-byte limit) in {time.perf_counter() - t0:.1f}s"
        )
    dist.barrier()
    model = load_artifact(artifact, device=info.device)
    (run_dir / "eval").mkdir(exist_ok=True)
    for method in methods:
        result, _ = evaluate(
            model,
            method,
            trainer.val_full,
            trainer.tables,
            cfg,
            info.device,
            max_tokens=eval_tokens,
            progress=show_progress,
        )
        if info.is_main:
            _write_json(run_dir / "eval" / f"{method}.json", result.to_dict())
            tag = "score-first" if result.score_first else "NOT score-first (two-pass)"
            log(f"eval {method:11s} bpb {result.val_bpb:.4f}  {tag}  {result.seconds:.1f}s")
    del model
    if info.device.type == "cuda":
        torch.cuda.empty_cache()
    if not info.is_main:
        return {}
    return _report(run_dir)


def _report(run_dir: Path) -> dict:
    from pgolf.report.document import build_summary, write_report
    from pgolf.report.submission import submission_json

    summary = build_summary(run_dir)
    _write_json(run_dir / "summary.json", summary)
    write_report(run_dir)
    try:
        sub = submission_json(
            [run_dir], name=f"pgolf_{summary.get('preset') or 'run'}", author="unknown", github_id="unknown"
        )
        _write_json(run_dir / "submission.json", sub)
    except Exception as e:  # noqa: BLE001 - a partial run still gets its report
        log(f"submission.json not written: {e}")
    return build_summary(run_dir)


def _table(summary: dict) -> str:
    rows = ["method        bpb      score-first  seconds"]
    methods = summary.get("methods", {})
    for name in sorted(methods, key=lambda n: ALL_METHODS.index(n) if n in ALL_METHODS else len(ALL_METHODS)):
        m = methods[name]
        sf = "yes" if m.get("score_first") else "NO (two-pass)"
        rows.append(f"{name:12s}  {m['val_bpb']:.4f}   {sf:11s}  {m.get('seconds', 0):.1f}")
    art = summary.get("artifact") or {}
    if art:
        rows.append(
            f"artifact: {art.get('total_bytes', 0):,} bytes of {art.get('limit_bytes', 16_000_000):,} "
            f"({'fits' if art.get('fits') else 'does NOT fit'})"
        )
    return "\n".join(rows)


def cmd_run(args: argparse.Namespace) -> int:
    sets = list(args.sets)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ConfigError(f"--minutes must be > 0, got {args.minutes}")
        sets.append(f"train.max_wallclock_seconds={args.minutes * 60.0}")
    args.sets = sets
    cfg = config_from_args(args)
    seeds = _seeds(args, cfg)
    methods = _methods(args.methods, cfg)
    if args.eval_tokens is not None and args.eval_tokens < 1:
        raise ConfigError(f"--eval-tokens must be >= 1, got {args.eval_tokens}")
    info = dist.init(cfg.runtime)
    data = Path(args.data or cfg.data.data_path)
    cfg.data.data_path = str(data)
    data = ensure_data(data, explicit=bool(args.data), is_main=info.is_main)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{Path(cfg.preset).stem}-{stamp}")
    out = Path(dist.broadcast_object(str(out)))
    if info.is_main and out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: output directory exists and is not empty; choose another --out")
    check_before_run(data, cfg, info.is_main, log)  # pgolf data verify: bytes, leak, shards
    summaries = []
    from pgolf.runlock import RunLock

    lock = RunLock(out).acquire() if info.is_main else None  # one `pgolf run` per --out (issue 11)
    try:
        for seed in seeds:
            cfg_seed = Config.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": seed}})
            cfg_seed.overrides = dict(cfg.overrides)
            run_dir = out if len(seeds) == 1 else out / f"seed_{seed}"
            if info.is_main:
                log(f"== seed {seed}: {run_dir}")
            summaries.append(
                run_one(cfg_seed, data, run_dir, methods, args.quant, args.eval_tokens, show_progress=not args.quiet)
            )
    finally:
        if lock is not None:
            lock.release()
        dist.shutdown()
    if not info.is_main:
        return 0
    result = {"out": str(out), "runs": [str(s.get("run_dir", "")) for s in summaries]}
    if len(summaries) == 1:
        result.update(_compact(summaries[0]))
        report = out / "report.md"
    else:
        from pgolf.report.document import aggregate

        result["aggregate"] = aggregate(summaries)
        result["seeds"] = {str(sd): _compact(s) for sd, s in zip(seeds, summaries)}
        _write_json(out / "aggregate.json", result)
        report = out / f"seed_{seeds[0]}" / "report.md"
    if args.json:
        print_json(result)
    else:
        for sd, s in zip(seeds, summaries):
            print(f"seed {sd}:\n{_table(s)}")
        print(f"report: {report}")
    return 0


def _compact(summary: dict) -> dict:
    """The --json shape: per method val_bpb/score_first/seconds, artifact bytes and fit."""
    art = summary.get("artifact") or {}
    return {
        "methods": {
            k: {
                "val_bpb": m.get("val_bpb"),
                "val_loss": m.get("val_loss"),
                "score_first": m.get("score_first"),
                "seconds": m.get("seconds"),
            }
            for k, m in summary.get("methods", {}).items()
        },
        "best_score_first": summary.get("best_score_first"),
        "artifact_bytes": art.get("total_bytes"),
        "fits": art.get("fits"),
        "unigram_bpb": summary.get("unigram_bpb"),
        "train": summary.get("train"),
    }
