"""`pgolf report` and `pgolf submission`.

    pgolf report RUN                      (re)write RUN/report.md and its figures
    pgolf report RUN RUN ... [--against X] aggregate seeds; with --against, the challenge's significance test
    pgolf report --from-logs FILE|DIR ... the table of records' own logs (every format on the challenge's
                                          main branch); a file that cannot be read is one line, the rest go on
    pgolf check FOLDER [--against X]      a record folder against the challenge's rules
    pgolf submission RUN ... --out DIR    write a record folder (README, submission.json, logs, code)

--against takes one of:
  a number          a published val_loss in nats (one-sample t-test of the new seeds against it - 0.005)
  RUN,RUN,...       comma-separated run directories (Welch's t-test)
  DIR               a directory whose sub-directories are runs, or which holds seed logs (*.log)
  FILE.log,...      seed logs in the PR #1313 format
The reference's own best score-first method is used on its side, the new runs' on theirs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pgolf.cliutil import print_json
from pgolf.report import TWO_PASS_NOTE, ReportError
from pgolf.report.stats import challenge_significance


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a run's report.md, aggregate seeds, test significance, read seed logs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths", nargs="+", metavar="RUN", help="run directories (or a directory of runs); log files with --from-logs"
    )
    p.add_argument(
        "--from-logs", action="store_true", help="the paths are training logs in the seed's (PR #1313) format"
    )
    p.add_argument(
        "--against",
        metavar="RUNS_OR_SCORE",
        help="reference: a val_loss in nats, comma-separated run dirs, a directory of runs, or *.log files",
    )
    p.add_argument("--no-figures", action="store_true", help="single run: write report.md without drawing PNGs")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_report)

    s = subparsers.add_parser(
        "submission",
        help="write a record folder for the challenge from one run per seed",
        description="Write README.md, submission.json, train_seed<N>.log, the pgolf source, requirements.txt "
        "and train_gpt.py into --out. The reported val_bpb is the mean of the best score-first "
        "evaluation; a two-pass SLOT figure is kept in a separate, labelled field.",
    )
    s.add_argument("runs", nargs="+", metavar="RUN", help="run directories, one per seed (or a directory of runs)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    s.add_argument("--name", default=None, help="submission name (default: pgolf_<preset>)")
    s.add_argument("--author", default="unknown")
    s.add_argument("--github-id", default="unknown")
    s.add_argument("--blurb", default="", help="one-paragraph description")
    s.add_argument("--date", default=None, help="YYYY-MM-DD (default: today)")
    s.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    s.add_argument("--json", action="store_true", help="print submission.json's content and the folder")
    s.set_defaults(func=cmd_submission)

    from pgolf.report import sweep

    sweep.register(subparsers)

    c = subparsers.add_parser(
        "check",
        help="check a record folder against the challenge's rules (files, bytes, times, seeds, val tokens, SLOT)",
        description="Check a record folder (pgolf's or anyone's): the files the challenge asks for, submission.json "
        "and its agreement with the logs, artifact bytes, training and evaluation time per seed, the number of "
        "seeds, the validation token count, methods known not to be score-first and, with --against, the "
        "significance rules. One line per finding; exit status 1 when a rule is broken.",
    )
    c.add_argument("folder", metavar="FOLDER", help="a record folder (README.md, submission.json, logs, train_gpt.py)")
    c.add_argument(
        "--against", metavar="SCORE_OR_FOLDER", help="a published val_loss in nats, or the record folder to beat"
    )
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.set_defaults(func=cmd_check)


# --------------------------------------------------------------------------- helpers
def is_run_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in ("config.json", "metrics.jsonl", "export.json", "eval"))


def expand_runs(paths: list[str]) -> list[Path]:
    """Run directories as given; a directory that is not a run itself stands for its run sub-directories."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ReportError(f"{p}: run directory not found")
        if is_run_dir(p):
            out.append(p)
            continue
        subs = sorted(c for c in p.iterdir() if is_run_dir(c)) if p.is_dir() else []
        if not subs:
            raise ReportError(f"{p}: not a pgolf run directory and holds no run directories")
        out += subs
    return out


def reference_values(spec: str) -> tuple[list[float] | float, str]:
    """Parse --against into val_loss values (nats) and a description of where they came from."""
    from pgolf.report.document import aggregate, build_summary
    from pgolf.report.seedlog import aggregate_logs, parse_seed_log

    try:
        v = float(spec)
    except ValueError:
        pass
    else:
        if not math.isfinite(v) or v <= 0:
            raise ReportError(f"--against {spec}: a published val_loss must be a positive number of nats")
        return v, f"published val_loss {v:.5f} nats"
    runs: list[Path] = []
    logs: list[Path] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        p = Path(item)
        if p.is_file():
            logs.append(p)
        elif is_run_dir(p):
            runs.append(p)
        elif p.is_dir():
            sub_runs = sorted(c for c in p.iterdir() if is_run_dir(c))
            sub_logs = sorted(p.glob("*.log"))
            if not sub_runs and not sub_logs:
                raise ReportError(f"{p}: --against directory holds no run directories and no *.log files")
            runs += sub_runs
            logs += sub_logs
        else:
            raise ReportError(
                f"{p}: --against expects a number, run directories, a directory of runs, "
                "or seed log files; this path does not exist"
            )
    if runs and logs:
        raise ReportError("--against: give either run directories or seed logs, not both")
    if runs:
        agg = aggregate([build_summary(r) for r in runs])
    elif logs:
        agg = aggregate_logs([parse_seed_log(p) for p in logs])
    else:
        raise ReportError("--against: nothing given")
    honest = agg["honest"]
    if honest is None:
        raise ReportError(f"--against {spec}: the reference has no score-first evaluation in every seed")
    values = honest["val_loss"]["values"]
    kind = "runs" if runs else "seed logs"
    return values, f"{len(values)} reference {kind}, {honest['title']}"


def _fmt(v: Any, digits: int = 8) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _significance_text(sig: dict, ref_desc: str) -> str:
    head = f"against {ref_desc}: mean {sig['mean_ref']:.6f} nats; new mean {sig['mean_new']:.6f} nats"
    body = f"  improvement {sig['delta']:+.6f} nats (rule: >= {sig['margin']} nats at p < {sig['alpha']})"
    if sig["p"] is None:
        tail = f"  no test: {sig['note']} -> rule NOT met"
    else:
        t = "inf" if sig["t"] is None else f"{sig['t']:.3f}"
        df = "inf" if sig["df"] is None else f"{sig['df']:.2f}"
        verdict = "rule MET" if sig["passes"] else "rule NOT met"
        tail = f"  {sig['test']} t-test: t = {t}, df = {df}, one-sided p = {sig['p']:.3g} -> {verdict}"
    return "\n".join([head, body, tail])


def _significance(new_losses: list[float], against: str | None) -> tuple[dict | None, str | None]:
    if not against:
        return None, None
    ref, desc = reference_values(against)
    sig = challenge_significance(new_losses, ref).to_dict()
    sig["reference"] = desc
    return sig, desc


# --------------------------------------------------------------------------- pgolf report
def cmd_report(args: argparse.Namespace) -> int:
    if args.from_logs:
        return _report_logs(args)
    from pgolf.report.document import aggregate, build_summary, write_report

    runs = expand_runs(args.paths)
    if len(runs) == 1:
        ref = reference_values(args.against) if args.against else None  # a bad --against fails before any write
        path = write_report(runs[0], figures=not args.no_figures)
        summary = build_summary(runs[0])
        sig, desc = None, None
        if ref is not None and summary["best_score_first"]:
            sig = challenge_significance([summary["best_score_first"]["val_loss"]], ref[0]).to_dict()
            sig["reference"] = desc = ref[1]
        if args.json:
            summary.pop("config", None)
            print_json({"report": str(path), "summary": summary, "significance": sig})
        else:
            print(f"wrote {path}")
            b = summary["best_score_first"]
            if b:
                print(f"score-first: {b['title']}: {b['val_bpb']:.4f} bpb ({b['val_loss']:.4f} nats)")
            if summary["slot_two_pass"]:
                print(f"two-pass SLOT: {summary['slot_two_pass']['val_bpb']:.4f} bpb ({TWO_PASS_NOTE})")
            if sig:
                print(_significance_text(sig, desc))
        return 0

    summaries = [build_summary(r) for r in runs]
    agg = aggregate(summaries)
    for w in agg["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    honest = agg["honest"]
    if honest is None:
        raise ReportError("no score-first evaluation is present in every run: " + ", ".join(str(r) for r in runs))
    sig, desc = _significance(honest["val_loss"]["values"], args.against)
    if args.json:
        print_json({**agg, "significance": sig})
        return 0
    print(
        f"{agg['n_runs']} runs, seeds {', '.join(str(s) for s in agg['seeds'])}; "
        f"reported method (best score-first mean): {honest['title']}"
    )
    rows = [
        [
            str(r["seed"]),
            _fmt(r["val_bpb"]),
            _fmt(r["val_loss"]),
            _fmt(r["artifact_bytes"]),
            "yes" if r["fits"] else "NO",
            _fmt(r["steps"]),
        ]
        for r in agg["per_seed"]
    ]
    rows.append(["mean", _fmt(honest["val_bpb"]["mean"]), _fmt(honest["val_loss"]["mean"]), "", "", ""])
    rows.append(
        ["sample std", _fmt(honest["val_bpb"]["sample_std"]), _fmt(honest["val_loss"]["sample_std"]), "", "", ""]
    )
    print(_table(["seed", "val_bpb", "val_loss", "artifact bytes", "fits", "steps"], rows))
    print()
    rows = [
        [
            m["title"],
            _fmt(m["val_bpb"]["mean"], 4),
            _fmt(m["val_bpb"]["sample_std"], 4),
            _fmt(m["val_loss"]["mean"], 4),
            "yes" if m["score_first"] else "NO (two-pass)",
        ]
        for m in sorted(agg["methods"].values(), key=lambda m: (m["score_first"] is not True, m["val_bpb"]["mean"]))
    ]
    print(_table(["method", "bpb mean", "bpb std", "val_loss mean", "score-first"], rows))
    for n, m in agg["two_pass"].items():
        print(f"note: {m['title']} ({n}) = {m['val_bpb']['mean']:.4f} bpb is {TWO_PASS_NOTE}")
    if sig:
        print()
        print(_significance_text(sig, desc))
    return 0


def _report_logs(args: argparse.Namespace) -> int:
    from pgolf.report.seedlog import aggregate_logs, dedupe_logs, method_title, parse_logs

    logs, errors = parse_logs(args.paths)
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    logs, notes = dedupe_logs(logs)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if not logs:
        raise ReportError("no readable training log among: " + ", ".join(args.paths))
    agg = aggregate_logs(logs)
    agg["skipped"] = errors
    agg["deduplicated"] = notes
    for w in agg["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    honest = agg["honest"]
    sig, desc = (None, None)
    if args.against:
        if honest is None:
            raise ReportError("the logs have no score-first evaluation in every seed to test")
        sig, desc = _significance(honest["val_loss"]["values"], args.against)
    if args.json:
        print_json({**agg, "significance": sig})
        return 0
    methods = agg["aggregate"]["methods"]
    names = list(methods)

    def head(n: str) -> str:
        return method_title(n) + ("" if methods[n]["score_first"] is not False else " *")

    for metric, digits in (("val_bpb", 8), ("val_loss", 8)):
        rows = []
        for lg in logs:
            row = [str(lg.seed), _fmt(lg.steps)]
            row += [_fmt(getattr(lg.evals.get(n), metric, None), digits) for n in names]
            row += [_fmt(lg.total_bytes)]
            rows.append(row)
        for stat, label in (("mean", "mean"), ("sample_std", "sample std"), ("pop_std", "population std")):
            steps_mean = agg["aggregate"]["steps"]["mean"]
            bytes_mean = agg["aggregate"]["total_bytes"]["mean"]
            row = [label, f"{steps_mean:,.1f}" if stat == "mean" and steps_mean is not None else ""]
            row += [_fmt(methods[n][metric][stat], digits if stat == "mean" else 5) for n in names]
            row += [f"{bytes_mean:,.0f}" if stat == "mean" and bytes_mean is not None else ""]
            rows.append(row)
        print(f"{metric}:")
        print(_table(["seed", "steps", *[head(n) for n in names], "artifact bytes"], rows))
        print()
    if any(m["score_first"] is False for m in methods.values()):
        print(f"* two-pass: {TWO_PASS_NOTE}")
    if honest:
        print(
            f"headline (the logs' last score-first figure): {honest['title']}: {honest['val_bpb']['mean']:.8f} bpb "
            f"(sample std {_fmt(honest['val_bpb']['sample_std'], 5)}), {honest['val_loss']['mean']:.8f} nats"
        )
    print(f"artifacts: {'all' if agg['all_fit'] else 'NOT all'} under 16,000,000 bytes")
    if sig:
        print()
        print(_significance_text(sig, desc))
    return 0


# --------------------------------------------------------------------------- pgolf submission
def cmd_submission(args: argparse.Namespace) -> int:
    import json

    from pgolf.report.document import read_json
    from pgolf.report.submission import write_submission_folder

    runs = expand_runs(args.runs)
    name = args.name
    if not name:
        cfg = read_json(runs[0] / "config.json") or {}
        name = f"pgolf_{Path(str(cfg.get('preset') or 'run')).stem}"
    out = write_submission_folder(
        runs,
        args.out,
        name=name,
        author=args.author,
        github_id=args.github_id,
        blurb=args.blurb,
        date=args.date,
        force=args.force,
    )
    sub = json.loads((out / "submission.json").read_text())
    if args.json:
        print_json({"folder": str(out), "submission": sub})
    else:
        std = sub["val_bpb_std"]
        print(
            f"wrote {out}: val_bpb {sub['val_bpb']:.4f}"
            + (f" ± {std:.4f}" if std is not None else "")
            + f" ({sub['eval_method']['title']}, score-first), {len(sub['seeds'])} seed(s)"
        )
        if sub.get("two_pass_slot"):
            print(f"two-pass SLOT {sub['two_pass_slot']['val_bpb']:.4f} bpb kept apart: {TWO_PASS_NOTE}")
    return 0


# --------------------------------------------------------------------------- pgolf check
def cmd_check(args: argparse.Namespace) -> int:
    from pgolf.report.check import format_findings, run_checks

    result = run_checks(args.folder, against=args.against)
    if args.json:
        print_json(result)
    else:
        print(format_findings(result))
    return 0 if result["ok"] else 1
