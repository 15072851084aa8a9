"""`pgolf sweep`: evaluate every combination of a grid of evaluation settings.

    pgolf sweep ARTIFACT --data DIR --grid slot_steps=16,24,32 --grid slot_lr=0.008,0.012 \\
        --method slot --method slot-causal --method sliding

Writes OUT/sweep.json, OUT/sweep.md (a table, best score-first setting marked) and
OUT/sweep.png. The seed chose its SLOT settings by such a sweep on the same validation
set it reported — a selection effect the table makes visible: the best two-pass row
is not a valid score, and the best score-first row was still tuned on the split it scores.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
from pathlib import Path

from pgolf.cliutil import add_config_args, log, print_json
from pgolf.config import _assign, resolve_key
from pgolf.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="evaluate every combination of a grid of evaluation settings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="a config field (e.g. slot_steps, eval.stride, SLOT_LR) and its values; repeatable",
    )
    p.add_argument(
        "--method",
        action="append",
        dest="methods",
        metavar="M",
        help="method to evaluate (repeatable; default: every method the grid's keys affect)",
    )
    add_config_args(p, default_preset=None)
    p.add_argument("--tokenizer", metavar="MODEL")
    p.add_argument("--device")
    p.add_argument("--max-tokens", type=int, metavar="N", help="score only the first N targets")
    p.add_argument("--out", default="sweep", metavar="DIR", help="output directory (default: ./sweep)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {key}: no values")
        full = resolve_key(key.strip())
        if not full.startswith(("eval.", "runtime.")):
            raise ConfigError(f"--grid {full}: only evaluation settings (eval.*) can be swept on an artifact")
        grid.append((full, vals))
    if len({k for k, _ in grid}) != len(grid):
        raise ConfigError("--grid lists a key twice")
    return grid


def affected_methods(keys: list[str], cfg) -> list[str]:
    """Methods whose recorded settings include one of the swept fields (the window length affects all)."""
    from pgolf.eval.api import METHODS, method_params

    names = {k.split(".", 1)[1] for k in keys}
    seq = "seq_len" in names
    return [m for m in METHODS if seq or names & set(method_params(m, cfg))]


def _label(key: str) -> str:
    return key.split(".", 1)[1]


def run_sweep(model, tokens, tables, cfg, device, grid, methods, max_tokens=None, log_fn=log) -> list[dict]:
    """Evaluate each method over the grid keys it depends on; keys a method ignores are
    left out of its rows (None) rather than repeated."""
    from pgolf.eval import evaluate
    from pgolf.eval.api import method_params

    rows = []
    for m in methods:
        names = set(method_params(m, cfg)) | {"seq_len"}
        own = [(k, v) for k, v in grid if _label(k) in names]
        for combo in itertools.product(*[v for _, v in own]):
            c = copy.deepcopy(cfg)
            for (k, _), v in zip(own, combo):
                _assign(c, k, v, source="sweep")
            point = {_label(k): None for k, _ in grid}
            point.update({_label(k): getattr(getattr(c, k.split(".")[0]), _label(k)) for k, _ in own})
            res, _ = evaluate(model, m, tokens, tables, c, device, max_tokens=max_tokens)
            log_fn(f"sweep {m:11s} {point} bpb {res.val_bpb:.4f} ({res.seconds:.1f}s)")
            rows.append(
                {
                    **point,
                    "method": m,
                    "val_bpb": res.val_bpb,
                    "val_loss": res.val_loss,
                    "score_first": res.score_first,
                    "seconds": res.seconds,
                    "tokens": res.tokens,
                }
            )
    return rows


def best_score_first(rows: list[dict]) -> dict | None:
    cands = [r for r in rows if r["score_first"]]
    return min(cands, key=lambda r: r["val_bpb"]) if cands else None


def render_table(rows: list[dict], keys: list[str], best: dict | None) -> str:
    head = [*keys, "method", "bpb", "score-first", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mark = " ★" if r is best else ""
        sf = "✓" if r["score_first"] else "✗ two-pass"
        cells = ["—" if r[k] is None else str(r[k]) for k in keys]
        cells += [r["method"], f"{r['val_bpb']:.4f}{mark}", sf, f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.eval.api import canonical_method
    from pgolf.eval.commands import _setup
    from pgolf.report.document import atomic_write_text
    from pgolf.report.figures import plot_sweep

    grid = parse_grid(args.grid)
    cfg, model, tokens, tables, info = _setup(args)
    methods = (
        [canonical_method(m) for m in args.methods] if args.methods else affected_methods([k for k, _ in grid], cfg)
    )
    if not methods:
        raise ConfigError("no evaluation method depends on the swept keys; name one with --method")
    try:
        rows = run_sweep(
            model,
            tokens,
            tables,
            cfg,
            info.device,
            grid,
            methods,
            args.max_tokens,
            log_fn=log if info.is_main else (lambda _m: None),
        )
    finally:
        dist.shutdown()
    if not info.is_main:
        return 0
    keys = [_label(k) for k, _ in grid]
    best = best_score_first(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "artifact": str(args.artifact),
        "data": str(args.data),
        "grid": {k: v for k, v in grid},
        "methods": methods,
        "max_tokens": args.max_tokens,
        "rows": rows,
        "best_score_first": best,
    }
    atomic_write_text(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    series_rows = [
        {**r, "series": r["method"] + "".join(f", {k}={r[k]}" for k in keys[1:] if r[k] is not None)}
        for r in rows
        if r[keys[0]] is not None
    ]
    png = plot_sweep(series_rows, keys[0], "series", out / "sweep.png", title="bpb by evaluation setting")
    if best:
        setting = ", ".join(f"{k}={best[k]}" for k in keys if best[k] is not None)
        note = f"Best score-first setting: **{best['method']}** {setting} → {best['val_bpb']:.4f} bpb"
    else:
        note = "Best score-first setting: none (every row is two-pass)"
    md = [
        "# Sweep",
        "",
        f"Artifact `{args.artifact}`, data `{args.data}`"
        + (f", first {args.max_tokens} targets" if args.max_tokens else "")
        + ".",
        "",
        note,
        "",
        "Two-pass rows (✗) are not valid compression scores. All rows were tuned on the split they score.",
        "",
        render_table(rows, keys, best),
        "",
    ]
    if png:
        md += [f"![sweep]({Path(png).name})", ""]
    atomic_write_text(out / "sweep.md", "\n".join(md))
    if args.json:
        print_json(result)
    else:
        print(render_table(rows, keys, best))
        print(f"{note}\nwrote {out / 'sweep.md'}")
    return 0
