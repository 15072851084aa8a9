"""`pgolf run`: the main job. Data -> train -> export -> evaluate every method -> audit -> report.

    pgolf run                                  # the frontier stack and the seed's, side by side, on the
                                               # builtin corpus (built if missing), ~10 min on 2 cores
    pgolf run --preset frontier-tiny           # one stack only
    pgolf run --iterations 300                 # step-capped: the result does not depend on the host's load
    pgolf run --preset record --data DIR       # the seed's model on FineWeb shards
    torchrun --nproc_per_node=8 -m pgolf run --preset record --data DIR --seeds 1337,42,2024

Each stack (preset) gets its own directory (OUT/<preset> when there are several) and each seed
its own run directory inside it (seed_<n> when there are several), holding the training files,
the artifact, eval/<method>.json, audit.json, phases.json, report.md with its figures and
submission.json. With several stacks OUT/report.md and OUT/summary.json compare them and
OUT/submission/ is the record folder of the first stack. The headline figure is always the best
score-first method; a run the host was too busy for says so (not representative).
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

BUILTIN_PREFIX = "./data/builtin"  # data paths under it are built when missing
MAIN_STACKS = ("frontier-tiny", "tiny")  # what `pgolf run` compares when no --preset is given


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: data, train, export, evaluate every method, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p, default_preset=None)
    p.add_argument("--data", help=f"dataset directory (default: the preset's; {BUILTIN_PREFIX}* is built if missing)")
    p.add_argument("--minutes", type=float, help="training wall-clock budget per seed")
    p.add_argument(
        "--iterations", type=int, help="train exactly N steps, no wall-clock cap (results independent of load)"
    )
    p.add_argument("--seeds", help="comma-separated seeds, one run each (default: the config's train.seed)")
    p.add_argument("--out", help="output directory (default: runs/<preset>-<date>-<time>)")
    p.add_argument("--methods", help="evaluation methods, comma-separated (default: eval.run_methods, else all)")
    p.add_argument("--quant", default="rtn", choices=("rtn", "gptq"), help="export quantiser (quant.scheme=seed)")
    p.add_argument("--no-audit", action="store_true", help="skip the legality audit of the headline method")
    p.add_argument("--no-submission", action="store_true", help="do not write OUT/submission")
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


def all_methods() -> tuple[str, ...]:
    from pgolf.eval.api import METHODS

    return tuple(METHODS)


def _methods(text: str | None, cfg: Config) -> list[str]:
    from pgolf.eval import canonical_method

    if text is None:
        chosen = list(cfg.eval.run_methods) or list(all_methods())
    else:
        chosen = [m for m in text.split(",") if m.strip()]
    methods = [canonical_method(m) for m in chosen]
    if not cfg.eval.slot_enabled:
        methods = [m for m in methods if m != "slot"]
    return methods


def is_builtin_path(path: Path) -> bool:
    """A preset's builtin data path (./data/builtin, ./data/builtin-sp8192-caseops, ...)."""
    return Path(path).as_posix().removeprefix("./").startswith(BUILTIN_PREFIX.removeprefix("./"))


def ensure_data(path: Path, explicit: bool, is_main: bool, cfg: Config | None = None) -> Path:
    """Build the builtin corpus at a preset's builtin path when nothing else was asked for: the
    tokenizer of model.vocab_size, with CaseOps and a byte sidecar as data.builtin_* say."""
    if has_dataset(path):
        return path
    if explicit or not is_builtin_path(path):
        return path  # the loaders will say precisely what is missing
    if is_main:
        build_preset_builtin(path, cfg)
    dist.barrier()
    return path


def has_dataset(path: Path) -> bool:
    return (path / "manifest.json").is_file() or any(path.glob("fineweb_val_*.bin"))


def build_preset_builtin(path: Path, cfg: Config | None) -> None:
    """The builtin corpus as `cfg`'s preset trains on it (the seed's SP1024 without a config)."""
    from pgolf.data.builtin import build_builtin

    kw: dict = {}
    what = "builtin corpus"
    if cfg is not None:
        d = cfg.data
        kw = {"vocab_size": cfg.model.vocab_size, "caseops": d.builtin_caseops, "sidecar": d.builtin_sidecar or None}
        what += f" (SP{cfg.model.vocab_size}{', CaseOps' if d.builtin_caseops else ''}"
        what += f"{', ' + d.builtin_sidecar + ' byte sidecar' if d.builtin_sidecar else ''})"
    log(f"building the {what} into {path} (offline, from this Python's documentation)")
    build_builtin(path, **kw)


def _write_json(path: Path, obj) -> None:
    from pgolf.report.document import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_one(
    cfg: Config,
    data: Path,
    run_dir: Path,
    methods: list[str],
    quant: str,
    eval_tokens: int | None,
    show_progress: bool,
    audit_headline: bool = True,
    phases: dict | None = None,
) -> dict:
    """Train, export, evaluate, audit and report one seed; returns its summary (rank 0) or {}.

    `phases` (seconds already spent, e.g. on the data) is extended with every phase's time and
    written to RUN/phases.json, which the report shows.
    """
    import torch

    from pgolf.eval import evaluate
    from pgolf.quant.artifact import export_run, load_artifact
    from pgolf.train.trainer import Trainer

    phases = dict(phases or {})
    t0 = time.perf_counter()
    trainer = Trainer(cfg, data, run_dir, show_progress=show_progress)
    trainer.run()
    phases["train (incl. validation, EMA)"] = time.perf_counter() - t0
    info = trainer.d
    artifact = run_dir / ("artifact.pgrp" if cfg.quant.scheme == "frontier" else "artifact.pgolf")
    if info.is_main:
        t0 = time.perf_counter()
        export = export_run(run_dir, artifact, quant=quant, data=data)
        phases["export"] = time.perf_counter() - t0
        log(
            f"export: {export['total_bytes']:,} bytes ({'fits' if export['fits'] else 'OVER'} the "
            f"{export['limit_bytes']:,}-byte limit) in {phases['export']:.1f}s"
        )
    dist.barrier()
    t0 = time.perf_counter()
    model = load_artifact(artifact, device=info.device)
    phases["load artifact"] = time.perf_counter() - t0
    (run_dir / "eval").mkdir(exist_ok=True)
    results = {}
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
        results[method] = result
        phases[f"eval {method}"] = result.seconds
        if info.is_main:
            _write_json(run_dir / "eval" / f"{method}.json", result.to_dict())
            tag = "score-first" if result.score_first else "NOT score-first (two-pass)"
            part = f"  PARTIAL: first {eval_tokens:,} targets" if eval_tokens else ""
            log(f"eval {method:11s} bpb {result.val_bpb:.4f}  {tag}  {result.seconds:.1f}s{part}")
    if audit_headline and results:
        t0 = time.perf_counter()
        audit = audit_best(model, results, trainer, cfg, info.device)
        phases["audit (headline)"] = time.perf_counter() - t0
        if info.is_main and audit is not None:
            _write_json(run_dir / "audit.json", audit)
            log(f"audit {audit['method']}: {audit_verdict(audit)}")
    del model
    if info.device.type == "cuda":
        torch.cuda.empty_cache()
    if not info.is_main:
        return {}
    _write_json(run_dir / "phases.json", {k: round(v, 3) for k, v in phases.items()})
    return _report(run_dir)


def audit_best(model, results: dict, trainer, cfg: Config, device) -> dict | None:
    """The legality audit of the best score-first method (on a short prefix of the split)."""
    from pgolf.eval.audit import audit

    sf = {k: r for k, r in results.items() if r.score_first}
    if not sf:
        return None
    best = min(sf, key=lambda k: sf[k].val_bpb)
    n = min(len(trainer.val_full) - 1, 2 * cfg.eval_seq_len)
    return audit(model, best, trainer.val_full, trainer.tables, cfg, device, n_targets=n)


def audit_verdict(audit: dict) -> str:
    from pgolf.report.document import condition_passed

    conds = audit.get("conditions")
    if isinstance(conds, dict) and conds:
        return ", ".join(f"{c} {'pass' if condition_passed(v) else 'FAIL'}" for c, v in sorted(conds.items()))
    return f"C1 {'pass' if audit.get('score_first') else 'FAIL'} (max earlier-NLL change {audit.get('max_change')})"


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
    rows = ["method          bpb      score-first    seconds"]
    methods = summary.get("methods", {})
    order = list(all_methods())
    for name in sorted(methods, key=lambda n: order.index(n) if n in order else len(order)):
        m = methods[name]
        sf = "yes" if m.get("score_first") else "NO (two-pass)"
        part = f"  partial: first {m['max_tokens']:,} targets" if m.get("partial") else ""
        rows.append(f"{name:14s}  {m['val_bpb']:.4f}   {sf:13s}  {m.get('seconds') or 0:7.1f}{part}")
    art = summary.get("artifact") or {}
    if art:
        rows.append(
            f"artifact: {art.get('total_bytes', 0):,} bytes of {art.get('limit_bytes', 16_000_000):,} "
            f"({'fits' if art.get('fits') else 'does NOT fit'})"
        )
    rep = summary.get("representative") or {}
    if rep.get("line"):
        rows.append(rep["line"])
    return "\n".join(rows)


def _stack_args(args: argparse.Namespace) -> list[str]:
    sets = list(args.sets)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ConfigError(f"--minutes must be > 0, got {args.minutes}")
        sets.append(f"train.max_wallclock_seconds={args.minutes * 60.0}")
    if args.iterations is not None:
        if args.iterations < 1:
            raise ConfigError(f"--iterations must be >= 1, got {args.iterations}")
        sets += [f"train.iterations={args.iterations}", "train.max_wallclock_seconds=0"]
    return sets


def cmd_run(args: argparse.Namespace) -> int:
    args.sets = _stack_args(args)
    presets = [args.preset] if args.preset else list(MAIN_STACKS)
    cfgs = {p: config_from_args(args, preset=p) for p in presets}  # every config checked before anything runs
    first = cfgs[presets[0]]
    seeds = _seeds(args, first)
    methods = {p: _methods(args.methods, c) for p, c in cfgs.items()}
    if args.eval_tokens is not None and args.eval_tokens < 1:
        raise ConfigError(f"--eval-tokens must be >= 1, got {args.eval_tokens}")
    info = dist.init(first.runtime)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(presets[0]).stem if len(presets) == 1 else "main"
    out = Path(args.out or f"runs/{name}-{stamp}")
    out = Path(dist.broadcast_object(str(out)))
    if info.is_main and out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: output directory exists and is not empty; choose another --out")
    stacks: dict[str, list[dict]] = {}
    t_start = time.perf_counter()
    from pgolf.runlock import RunLock

    lock = RunLock(out).acquire() if info.is_main else None  # one `pgolf run` per --out (issue 11)
    try:
        for preset in presets:
            cfg = cfgs[preset]
            stack_dir = out if len(presets) == 1 else out / Path(preset).stem
            if info.is_main and len(presets) > 1:
                log(f"==== stack {preset}: {stack_dir}")
            t0 = time.perf_counter()
            data = Path(args.data or cfg.data.data_path)
            cfg.data.data_path = str(data)
            data = ensure_data(data, explicit=bool(args.data), is_main=info.is_main, cfg=cfg)
            check_before_run(data, cfg, info.is_main, log)  # pgolf data verify: bytes, leak, shards
            data_s = time.perf_counter() - t0
            runs = []
            for seed in seeds:
                cfg_seed = Config.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": seed}})
                cfg_seed.overrides = dict(cfg.overrides)
                run_dir = stack_dir if len(seeds) == 1 else stack_dir / f"seed_{seed}"
                if info.is_main:
                    log(f"== {Path(preset).stem} seed {seed}: {run_dir}")
                runs.append(
                    run_one(
                        cfg_seed,
                        data,
                        run_dir,
                        methods[preset],
                        args.quant,
                        args.eval_tokens,
                        show_progress=not args.quiet,
                        audit_headline=not args.no_audit,
                        phases={"data (build or verify)": data_s},
                    )  # fmt: skip
                )
                data_s = 0.0
            stacks[Path(preset).stem] = runs
    finally:
        if lock is not None:
            lock.release()
        dist.shutdown()
    if not info.is_main:
        return 0
    total_s = time.perf_counter() - t_start
    return _finish(args, out, presets, seeds, stacks, total_s)


def _finish(
    args, out: Path, presets: list[str], seeds: list[int], stacks: dict[str, list[dict]], total_s: float
) -> int:
    from pgolf.report import compare

    first = next(iter(stacks.values()))
    sub_dir = None
    if not args.no_submission:
        sub_dir = write_run_submission(out, [Path(s["run_dir"]) for s in first if s.get("run_dir")], args)
    if len(stacks) > 1:
        result = compare.write(out, stacks, total_s=total_s, submission=sub_dir)
        report = out / "report.md"
    elif len(seeds) == 1:
        result = {"out": str(out), "runs": [str(first[0].get("run_dir", ""))], **_compact(first[0])}
        result["seconds"] = round(total_s, 1)
        report = out / "report.md"
    else:
        from pgolf.report.document import aggregate

        result = {"out": str(out), "runs": [str(s.get("run_dir", "")) for s in first]}
        result["aggregate"] = aggregate(first)
        result["seeds"] = {str(sd): _compact(s) for sd, s in zip(seeds, first)}
        _write_json(out / "aggregate.json", result)
        report = out / f"seed_{seeds[0]}" / "report.md"
    if sub_dir is not None:
        result["submission"] = str(sub_dir)
        if "check" not in result:  # compare.write already ran pgolf check for several stacks
            result["check"] = compare.check_submission(sub_dir)
    if args.json:
        print_json(result)
    else:
        for st, runs in stacks.items():
            for sd, s in zip(seeds, runs):
                print(f"{st} seed {sd}:\n{_table(s)}")
        if len(stacks) > 1:
            print(compare.console_lines(result))
        if sub_dir is not None:
            print(f"submission: {sub_dir} ({compare.check_line(result.get('check'))})")
        print(f"report: {report}  ({total_s / 60:.1f} min in all)")
    return 0


def write_run_submission(out: Path, runs: list[Path], args) -> Path | None:
    """OUT/submission: the record folder of the (first) stack's runs, as `pgolf submission` writes it."""
    from pgolf.report.submission import write_submission_folder

    try:
        return write_submission_folder(
            runs, out / "submission", name="pgolf-run", author="unknown", github_id="unknown"
        )
    except Exception as e:  # noqa: BLE001 - the runs' own reports are already written
        log(f"submission folder not written: {e}")
        return None


def _compact(summary: dict) -> dict:
    """The --json shape: per method val_bpb/score_first/seconds, artifact bytes and fit."""
    art = summary.get("artifact") or {}
    return {
        "preset": summary.get("preset"),
        "methods": {
            k: {
                "val_bpb": m.get("val_bpb"),
                "val_loss": m.get("val_loss"),
                "score_first": m.get("score_first"),
                "seconds": m.get("seconds"),
                "partial": m.get("partial"),
            }
            for k, m in summary.get("methods", {}).items()
        },
        "best_score_first": summary.get("best_score_first"),
        "artifact_bytes": art.get("total_bytes"),
        "fits": art.get("fits"),
        "unigram_bpb": summary.get("unigram_bpb"),
        "train": summary.get("train"),
        "representative": summary.get("representative"),
        "phases": summary.get("phases"),
        "audit": summary.get("audit"),
    }
