"""Summarise a run directory and write its Markdown report.

    build_summary(run_dir)  -> dict   everything a report, an aggregate or a submission needs
    aggregate(summaries)    -> dict   several seeds: mean / std per method, the honest choice
    write_report(run_dir)   -> Path   RUN/report.md with RUN/figures/*.png beside it

The "honest" figure is always the best *score-first* evaluation. A two-pass
figure (standard SLOT, SPEC §8.5) is carried separately and labelled as not a
valid compression score wherever it is shown.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgolf.report import LIMIT_BYTES, TWO_PASS_NOTE, ReportError
from pgolf.report.stats import describe

RUN_FILES = ("config.json", "metrics.jsonl", "train.log", "export.json", "dataset.json", "system.json")
FIGURE_NAMES = ("loss_vs_step.png", "loss_vs_time.png", "eval_bpb.png", "artifact_bytes.png")

METHOD_TITLES = {
    "plain": "plain (non-overlapping windows)",
    "sliding": "sliding window",
    "slot": "SLOT (two-pass)",
    "slot-causal": "causal SLOT (context-only)",
    "ttt": "score-first TTT",
}


# --------------------------------------------------------------------------- file helpers
def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write via a temp file in the same directory and rename: readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be read by others
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def read_json(path: Path, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise ReportError(f"{path}: file not found")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: invalid JSON (line {e.lineno}: {e.msg})") from None


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """Records of metrics.jsonl and the number of unreadable lines (a run killed mid-write
    leaves a torn last line; that must not make the whole report fail)."""
    if not path.is_file():
        return [], 0
    out, bad = [], 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e})") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    return out, bad


def check_run_dir(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run}: run directory not found")
    if not any((run / f).exists() for f in RUN_FILES) and not (run / "eval").is_dir():
        raise ReportError(f"{run}: not a pgolf run directory (none of {', '.join(RUN_FILES)} or eval/)")
    return run


def method_title(name: str, params: Mapping[str, Any] | None = None) -> str:
    title = METHOD_TITLES.get(name, name)
    stride = (params or {}).get("stride")
    if name == "sliding" and stride:
        title += f" (stride {stride})"
    return title


# --------------------------------------------------------------------------- summary
def build_summary(run_dir: str | Path) -> dict[str, Any]:
    """Collect one run's results from its files (any of them may be missing)."""
    run = check_run_dir(run_dir)
    missing = [f for f in RUN_FILES if not (run / f).is_file()]
    warnings: list[str] = []
    cfg = read_json(run / "config.json") or {}
    export = read_json(run / "export.json")
    dataset = read_json(run / "dataset.json")
    system = read_json(run / "system.json")
    old_summary = read_json(run / "summary.json") if (run / "summary.json").is_file() else None
    metrics, bad = read_metrics(run / "metrics.jsonl")
    if bad:
        warnings.append(f"{run / 'metrics.jsonl'}: skipped {bad} unreadable line(s)")

    methods: dict[str, dict] = {}
    eval_dir = run / "eval"
    for p in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        e = read_json(p)
        if not isinstance(e, dict) or "val_bpb" not in e:
            warnings.append(f"{p}: no val_bpb, ignored")
            continue
        name = str(e.get("method") or p.stem)
        params = e.get("params") or {}
        methods[name] = {
            "val_bpb": e.get("val_bpb"),
            "val_loss": e.get("val_loss"),
            "score_first": e.get("score_first"),
            "seconds": e.get("seconds"),
            "tokens": e.get("tokens"),
            "bytes": e.get("bytes"),
            "max_tokens": e.get("max_tokens"),
            "partial": bool(e.get("max_tokens")),
            "world_size": e.get("world_size"),
            "device": e.get("device"),
            "params": params,
            "title": method_title(name, params),
        }
    if not methods:
        missing.append("eval/*.json")

    best = best_score_first(methods)
    two_pass = {k: v for k, v in methods.items() if v.get("score_first") is False}
    slot = methods.get("slot") if methods.get("slot", {}).get("score_first") is False else None
    if slot is None and two_pass:
        slot = two_pass[min(two_pass, key=lambda k: two_pass[k]["val_bpb"])]

    artifact = None
    if isinstance(export, dict):
        limit = int(export.get("limit_bytes") or LIMIT_BYTES)
        total = export.get("total_bytes")
        if total is None and export.get("model_bytes") is not None and export.get("code_bytes") is not None:
            total = export["model_bytes"] + export["code_bytes"]
        artifact = {
            "model_bytes": export.get("model_bytes"),
            "code_bytes": export.get("code_bytes"),
            "total_bytes": total,
            "limit_bytes": limit,
            "fits": bool(export["fits"]) if "fits" in export else (total is not None and total <= limit),
            "quant": export.get("quant"),
            "code_files": export.get("code_files") or [],
            "path": export.get("path"),
        }

    train_recs = [r for r in metrics if r.get("kind") == "train"]
    val_recs = [r for r in metrics if r.get("kind") == "val"]
    final = next((r for r in reversed(metrics) if r.get("kind") == "final"), None)
    events = [r for r in metrics if r.get("kind") == "event"]
    train = {
        "steps": (final or {}).get("step", train_recs[-1]["step"] if train_recs else None),
        "train_seconds": (final or {}).get("train_seconds", train_recs[-1].get("elapsed_s") if train_recs else None),
        "final_train_loss": train_recs[-1].get("train_loss") if train_recs else None,
        "last_val": (
            {k: val_recs[-1].get(k) for k in ("step", "val_loss", "val_bpb", "targets")} if val_recs else None
        ),
        "post_ema_val_loss": (final or {}).get("post_ema_val_loss"),
        "post_ema_val_bpb": (final or {}).get("post_ema_val_bpb"),
        "tokens_per_s": train_recs[-1].get("tokens_per_s") if train_recs else None,
        "events": [{k: v for k, v in r.items() if k != "kind"} for r in events],
        "finished": final is not None,
    }

    unigram = None
    counts = dataset.get("counts") if isinstance(dataset, dict) else None
    for src in (old_summary, dataset, counts):
        if isinstance(src, dict) and src.get("unigram_bpb") is not None:
            unigram = src["unigram_bpb"]
            break

    train_cfg = cfg.get("train") or {}
    phases = read_json(run / "phases.json") if (run / "phases.json").is_file() else None
    audit = read_json(run / "audit.json") if (run / "audit.json").is_file() else None
    represent = representativeness(train, train_cfg, best, unigram)
    return {
        "run_dir": str(run),
        "name": run.resolve().name,
        "preset": cfg.get("preset"),
        "seed": train_cfg.get("seed"),
        "params": cfg.get("params"),
        "world_size": cfg.get("world_size"),
        "overrides": cfg.get("overrides") or {},
        "methods": methods,
        "best_score_first": best,
        "slot_two_pass": None
        if slot is None
        else {
            "method": next(k for k, v in methods.items() if v is slot),
            "val_bpb": slot["val_bpb"],
            "val_loss": slot["val_loss"],
            "score_first": False,
            "note": TWO_PASS_NOTE,
        },
        "two_pass_methods": sorted(two_pass),
        "artifact": artifact,
        "artifact_bytes": None if artifact is None else artifact["total_bytes"],
        "fits": None if artifact is None else artifact["fits"],
        "limit_bytes": LIMIT_BYTES if artifact is None else artifact["limit_bytes"],
        "train": train,
        "unigram_bpb": unigram,
        "representative": represent,
        "phases": phases if isinstance(phases, dict) else None,
        "audit": audit if isinstance(audit, dict) else None,
        "dataset": dataset,
        "system": system,
        "config": cfg,
        "missing": missing,
        "warnings": warnings,
    }


REPRESENTATIVE_FRACTION = 0.5  # fewer than half the expected steps: the host was busy


def representativeness(
    train: Mapping[str, Any], train_cfg: Mapping[str, Any], best: Mapping[str, Any] | None, unigram: float | None
) -> dict[str, Any]:
    """Whether a run's numbers say something about the preset, or only about a busy host.

    A wall-clock-capped run that completed far fewer steps than an idle machine of the preset's
    kind does (train.expected_steps), or that ends worse than the unigram baseline, is flagged;
    the line gives the numbers and suggests a step-capped rerun (independent of load).
    """
    reasons: list[str] = []
    steps = train.get("steps")
    expected = int(train_cfg.get("expected_steps") or 0)
    cap = float(train_cfg.get("max_wallclock_seconds") or 0)
    capped = any(e.get("event") == "stop_wallclock" for e in train.get("events") or [])
    if capped and expected > 0 and isinstance(steps, int) and steps < REPRESENTATIVE_FRACTION * expected:
        host = train_cfg.get("expected_host") or "an idle machine of its kind"
        reasons.append(f"{steps} training steps in its {cap:g} s cap, where {host} completes about {expected}")
    bpb = (best or {}).get("val_bpb")
    if isinstance(bpb, (int, float)) and isinstance(unigram, (int, float)) and bpb >= unigram:
        reasons.append(f"its best score-first bpb {bpb:.4f} is worse than the unigram baseline {unigram:.4f}")
    suggest = expected if expected > 0 else (steps or 0) * 4 or 200
    out: dict[str, Any] = {"representative": not reasons, "reasons": reasons, "expected_steps": expected or None}
    if reasons:
        out["suggestion"] = f"--iterations {suggest}"
        out["line"] = (
            "NOT REPRESENTATIVE: " + "; ".join(reasons) + f". Rerun with `--iterations {suggest}` "
            "(a step-capped run: its result does not depend on the machine's load)."
        )
    return out


CONDITIONS = {
    "C1": "causal: a changed target changes no earlier score",
    "C2": "normalised: the full distribution sums to 1",
    "C3": "score before update: no update reads an unscored token",
    "C4": "single pass: every target scored exactly once",
}


def condition_passed(v: Any) -> bool | None:
    if not isinstance(v, Mapping):
        return None
    for key in ("pass", "passed", "ok"):
        if key in v:
            return bool(v[key])
    return None


def condition_evidence(c: str, v: Mapping[str, Any]) -> str:
    """One short line of what the audit measured for a condition."""
    if v.get("evidence"):
        return str(v["evidence"])
    if c == "C1" and "max_change" in v:
        return f"largest change of an earlier score {v['max_change']:.3g} nats (tolerance {v.get('tolerance', 0):g})"
    if c == "C3" and "update_steps" in v:
        n_bad = v.get("violations", 0)
        return f"{v['update_steps']} update steps read {v.get('tokens_read', 0):,} tokens, {n_bad} of them unscored"
    if c == "C4" and "once" in v:
        return (f"{v['once']:,} of {v.get('targets', 0):,} targets scored once, {v.get('more', 0)} more than once, "
                f"{v.get('never', 0)} never; bytes {v.get('bytes')} = stream {v.get('stream_bytes')}")  # fmt: skip
    keep = {k: x for k, x in v.items() if k not in ("pass", "first") and isinstance(x, (int, float, str))}
    return ", ".join(f"{k} {x:.3g}" if isinstance(x, float) else f"{k} {x}" for k, x in list(keep.items())[:4])


def audit_lines(au: Mapping[str, Any]) -> list[str]:
    """The audit's verdicts as a table: the four conditions where measured, C1 alone otherwise."""
    conds = au.get("conditions")
    rows = []
    if isinstance(conds, dict) and conds:
        for c in ("C1", "C2", "C3", "C4"):
            v = conds.get(c)
            if not isinstance(v, dict):
                rows.append([c, CONDITIONS[c], "not measured", "—"])
                continue
            ok = condition_passed(v)
            rows.append([c, CONDITIONS[c], "pass ✓" if ok else ("**FAIL ✗**" if ok is False else "—"),
                         condition_evidence(c, v)])  # fmt: skip
    else:
        ok = au.get("score_first")
        evidence = f"largest earlier-NLL change {au.get('max_change')} nats over {au.get('tokens')} targets"
        rows.append(["C1", CONDITIONS["C1"], "pass ✓" if ok else "**FAIL ✗**", evidence])
        for c in ("C2", "C3", "C4"):
            rows.append([c, CONDITIONS[c], "not measured by this audit", "—"])
    head = f"`pgolf audit` on `{au.get('method')}`"
    return [head, "", md_table(["", "condition", "verdict", "evidence"], rows, "llcl")]


def best_score_first(methods: Mapping[str, Mapping[str, Any]]) -> dict | None:
    """The lowest-bpb method flagged score-first; full-set evaluations win over partial ones."""
    cands = [
        (k, v)
        for k, v in methods.items()
        if v.get("score_first") is True and isinstance(v.get("val_bpb"), (int, float))
    ]
    full = [c for c in cands if not c[1].get("partial")]
    pool = full or cands
    if not pool:
        return None
    k, v = min(pool, key=lambda kv: kv[1]["val_bpb"])
    return {
        "method": k,
        "title": v.get("title", k),
        "val_bpb": v["val_bpb"],
        "val_loss": v.get("val_loss"),
        "partial": bool(v.get("partial")),
    }


# --------------------------------------------------------------------------- several seeds
def aggregate(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean / sample std over seeds of every method present in all runs.

    The honest method is the score-first one with the lowest mean bpb, the same
    method for every seed (a per-seed best would be a selection bias).
    """
    if not summaries:
        raise ReportError("no runs to aggregate")
    names = [n for n in summaries[0]["methods"] if all(n in s["methods"] for s in summaries)]
    per_method = {}
    for n in names:
        rows = [s["methods"][n] for s in summaries]
        flags = {r.get("score_first") for r in rows}
        per_method[n] = {
            "title": rows[0].get("title", n),
            "score_first": True if flags == {True} else (False if False in flags else None),
            "partial": any(r.get("partial") for r in rows),
            "val_bpb": describe([r["val_bpb"] for r in rows]),
            "val_loss": describe([r["val_loss"] for r in rows if r.get("val_loss") is not None]),
            "seconds": describe([r["seconds"] for r in rows if r.get("seconds") is not None]),
        }
    honest_pool = [n for n, m in per_method.items() if m["score_first"] is True]
    honest_pool = [n for n in honest_pool if not per_method[n]["partial"]] or honest_pool
    honest = min(honest_pool, key=lambda n: per_method[n]["val_bpb"]["mean"]) if honest_pool else None
    two_pass = {n: m for n, m in per_method.items() if m["score_first"] is False}

    per_seed = []
    for s in summaries:
        m = s["methods"].get(honest, {}) if honest else {}
        per_seed.append(
            {
                "seed": s.get("seed"),
                "run_dir": s["run_dir"],
                "method": honest,
                "val_bpb": m.get("val_bpb"),
                "val_loss": m.get("val_loss"),
                "artifact_bytes": s.get("artifact_bytes"),
                "fits": s.get("fits"),
                "steps": s["train"].get("steps"),
                "train_seconds": s["train"].get("train_seconds"),
            }
        )
    warnings = []
    seeds = [s.get("seed") for s in summaries]
    if len(set(seeds)) != len(seeds):
        warnings.append(f"duplicate seeds: {seeds}")
    dropped = sorted({n for s in summaries for n in s["methods"]} - set(names))
    if dropped:
        warnings.append(f"methods missing from some runs, left out: {', '.join(dropped)}")
    differing = _differing_setups(summaries)
    if differing:
        warnings.append(f"runs differ in more than the seed: {', '.join(differing)}")
    return {
        "n_runs": len(summaries),
        "seeds": seeds,
        "honest": None
        if honest is None
        else {
            "method": honest,
            "title": per_method[honest]["title"],
            "val_bpb": per_method[honest]["val_bpb"],
            "val_loss": per_method[honest]["val_loss"],
        },
        "two_pass": {n: {**m, "note": TWO_PASS_NOTE} for n, m in two_pass.items()},
        "methods": per_method,
        "per_seed": per_seed,
        "all_fit": all(s.get("fits") is True for s in summaries),
        "max_artifact_bytes": max(
            (s["artifact_bytes"] for s in summaries if s.get("artifact_bytes") is not None), default=None
        ),
        "warnings": warnings,
    }


def _setup_key(s: Mapping[str, Any]) -> dict:
    ov = {
        k: (v.get("value") if isinstance(v, dict) else v)
        for k, v in (s.get("overrides") or {}).items()
        if k not in ("train.seed", "train.run_id")
    }
    return {"preset": s.get("preset"), **ov}


def _differing_setups(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = [_setup_key(s) for s in summaries]
    fields = sorted({k for d in keys for k in d})
    return [f for f in fields if len({json.dumps(d.get(f), sort_keys=True) for d in keys}) > 1]


# --------------------------------------------------------------------------- config diff
def _baseline_config() -> tuple[dict | None, str]:
    """The record preset as a dict (or the built-in defaults when no preset file exists)."""
    try:
        from pgolf.config import Config, load_config
    except Exception:  # the config module is broken or absent: no diff, not a failed report
        return None, ""
    try:
        return load_config("record", environ={}).to_dict(), "the `record` preset"
    except Exception:
        try:
            return Config().to_dict(), "the built-in defaults"
        except Exception:
            return None, ""


def config_diff(cfg: Mapping[str, Any], base: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(section.field, run value, baseline value) for fields that differ."""
    if not base:
        return []
    rows = []
    for section, vals in cfg.items():
        if not isinstance(vals, dict) or section == "overrides" or not isinstance(base.get(section), dict):
            continue
        for k, v in vals.items():
            b = base[section].get(k, "—")
            if _norm(v) != _norm(b) and k != "run_id":
                rows.append((f"{section}.{k}", v, b))
    return rows


def _norm(v: Any) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v, sort_keys=True)


# --------------------------------------------------------------------------- markdown helpers
def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple, dict)):
        v = json.dumps(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _fixed(v: Any, digits: int) -> str:
    """A number with a fixed number of decimals (one format per quantity, whatever its size)."""
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(c if isinstance(c, str) else _cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _bpb(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "—"


def _sf_mark(sf: Any) -> str:
    return "✓" if sf is True else ("✗ not score-first" if sf is False else "?")


# --------------------------------------------------------------------------- report
def render_figures(run_dir: str | Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Draw the run's figures into RUN/figures/; returns {name: path} of those drawn.

    Known figure files that cannot be drawn this time are removed, so the report
    never sits beside a stale picture it does not link.
    """
    from pgolf.report import figures as F

    run = Path(run_dir)
    fig_dir = run / "figures"
    metrics, _ = read_metrics(run / "metrics.jsonl")
    drawn: dict[str, Path | None] = {}
    title = f" — {summary['name']}"
    drawn["loss_vs_step.png"] = F.plot_loss_curves(
        metrics, fig_dir / "loss_vs_step.png", x="step", title="Training and validation loss vs step" + title
    )
    drawn["loss_vs_time.png"] = F.plot_loss_curves(
        metrics, fig_dir / "loss_vs_time.png", x="time", title="Training and validation loss vs wall time" + title
    )
    drawn["eval_bpb.png"] = F.plot_eval_bpb(
        summary["methods"],
        fig_dir / "eval_bpb.png",
        unigram_bpb=summary.get("unigram_bpb"),
        title="Validation bpb per evaluation method" + title,
    )
    art = summary.get("artifact")
    if art and art.get("model_bytes") is not None and art.get("code_bytes") is not None:
        drawn["artifact_bytes.png"] = F.plot_artifact(
            int(art["model_bytes"]),
            int(art["code_bytes"]),
            fig_dir / "artifact_bytes.png",
            limit_bytes=int(art["limit_bytes"]),
        )
    for name in FIGURE_NAMES:
        if drawn.get(name) is None:
            (fig_dir / name).unlink(missing_ok=True)
    return {k: v for k, v in drawn.items() if v is not None}


def write_report(run_dir: str | Path, extra: Mapping[str, Any] | None = None, figures: bool = True) -> Path:
    """(Re)write RUN/report.md and RUN/figures/*.png; returns the report's path.

    `extra` is merged into the summary first: "unigram_bpb" (float) overrides the
    baseline, "notes" (str or list of str) adds a Notes section, any other key is
    shown in that section as well. figures=False skips drawing and links the
    figures already in RUN/figures/.
    """
    run = check_run_dir(run_dir)
    summary = build_summary(run)
    extra = dict(extra or {})
    if extra.get("unigram_bpb") is not None:
        summary["unigram_bpb"] = extra.pop("unigram_bpb")
    if figures:
        drawn = render_figures(run, summary)
    else:  # keep (and link) whatever figures a previous call drew
        drawn = {n: run / "figures" / n for n in FIGURE_NAMES if (run / "figures" / n).is_file()}
    text = render_markdown(summary, drawn, extra)
    return atomic_write_text(run / "report.md", text)


def render_markdown(s: Mapping[str, Any], drawn: Mapping[str, Path], extra: Mapping[str, Any] | None = None) -> str:
    def fig(name: str, alt: str) -> list[str]:
        return [f"![{alt}](figures/{name})", ""] if name in drawn else []

    L: list[str] = []
    L += [f"# pgolf run report: {s['name']}", ""]
    meta = [f"preset `{s.get('preset') or '?'}`", f"seed {s.get('seed', '?')}"]
    if s.get("params"):
        meta.append(f"{s['params']:,} parameters")
    if s.get("world_size"):
        meta.append(f"{s['world_size']} process(es)")
    meta.append(f"generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    L += [" · ".join(meta), ""]

    rep = s.get("representative") or {}
    if rep.get("line"):
        L += [f"> **{rep['line']}**", ""]

    # ---- headline
    L += ["## Headline", ""]
    best, slot = s.get("best_score_first"), s.get("slot_two_pass")
    rows = []
    if best:
        part = " (partial validation set)" if best.get("partial") else ""
        rows.append(
            [
                f"**Score-first (honest): {best['title']}**{part}",
                f"**{_bpb(best['val_bpb'])}**",
                _bpb(best.get("val_loss")),
                "✓ valid compression score",
            ]
        )
    else:
        rows.append(["Score-first (honest)", "—", "—", "no score-first evaluation found"])
    if slot:
        rows.append(
            [
                f"{s['methods'][slot['method']]['title']}",
                _bpb(slot["val_bpb"]),
                _bpb(slot.get("val_loss")),
                f"✗ **{TWO_PASS_NOTE}**",
            ]
        )
    if s.get("unigram_bpb") is not None:
        rows.append(["unigram baseline (reference)", _bpb(s["unigram_bpb"]), "—", "a model that ignores context"])
    L += [md_table(["", "bpb", "val_loss (nats)", "validity"], rows, "lrrl"), ""]
    art = s.get("artifact")
    if art and art.get("total_bytes") is not None:
        verdict = "fits ✓" if art["fits"] else "**DOES NOT FIT ✗**"
        L += [f"Artifact: **{art['total_bytes']:,} bytes** of {art['limit_bytes']:,} ({verdict}).", ""]
    if slot:
        L += [
            "> **Two-pass figure.** Standard SLOT fits a per-window offset and logit bias on the very targets "
            "it then scores, so a token's probability depends on the token itself. Its bpb is shown for "
            "comparison with PR #1313 only; it is not a compression score and is never the headline. "
            "See pgolf's docs/evaluation.md (two-pass SLOT, and the audit that measures it).",
            "",
        ]

    # ---- evaluation
    L += ["## Evaluation", ""]
    methods = s.get("methods") or {}
    if methods:
        order = sorted(methods, key=lambda k: (methods[k].get("score_first") is not True, methods[k]["val_bpb"]))
        rows = []
        for k in order:
            m = methods[k]
            notes = []
            if m.get("partial"):
                notes.append(f"partial: first {m['max_tokens']:,} tokens")
            if m.get("params"):
                notes.append(", ".join(f"{pk}={pv}" for pk, pv in m["params"].items()))
            name = f"**{m['title']}**" if best and k == best["method"] else m["title"]
            rows.append(
                [
                    name,
                    _bpb(m["val_bpb"]),
                    _bpb(m.get("val_loss")),
                    _sf_mark(m.get("score_first")),
                    m.get("tokens"),
                    f"{m['seconds']:.1f}" if m.get("seconds") is not None else "—",
                    "; ".join(notes) or "—",
                ]
            )
        L += [
            md_table(
                ["method", "bpb", "val_loss (nats)", "score-first", "tokens", "seconds", "notes"], rows, "lrrcrrl"
            ),
            "",
        ]
        L += fig("eval_bpb.png", "Validation bpb per evaluation method")
    else:
        L += ["No evaluation results (eval/*.json) in this run yet.", ""]

    # ---- legality audit of the headline method
    au = s.get("audit")
    if isinstance(au, dict):
        L += ["## Legality audit of the headline method", ""]
        L += audit_lines(au) + [""]

    # ---- phases
    ph = s.get("phases")
    if isinstance(ph, dict) and ph:
        L += ["## Time of every phase", ""]
        rows = [[k, f"{float(v):.1f}"] for k, v in ph.items() if isinstance(v, (int, float))]
        rows.append(["**total**", f"**{sum(float(v) for v in ph.values() if isinstance(v, (int, float))):.1f}**"])
        L += [md_table(["phase", "seconds"], rows, "lr"), ""]

    # ---- training
    t = s.get("train") or {}
    L += ["## Training", ""]
    rows = [
        ["steps", t.get("steps")],
        ["training time (s)", _fixed(t.get("train_seconds"), 1)],
        ["final train loss (nats)", _fixed(t.get("final_train_loss"), 4)],
        [
            "last validation",
            (
                f"step {t['last_val']['step']:,}: {_bpb(t['last_val']['val_loss'])} nats, "
                f"{_bpb(t['last_val']['val_bpb'])} bpb"
                + (f" ({t['last_val']['targets']:,} targets)" if t["last_val"].get("targets") else "")
            )
            if t.get("last_val")
            else None,
        ],
        [
            "post-EMA val loss / bpb",
            (
                f"{_bpb(t.get('post_ema_val_loss'))} / {_bpb(t.get('post_ema_val_bpb'))}"
                if t.get("post_ema_val_bpb") is not None
                else None
            ),
        ],
        ["throughput (tokens/s, last log)", _fixed(t.get("tokens_per_s"), 0)],
        ["finished", t.get("finished")],
    ]
    L += [md_table(["", "value"], [[a, _cell(b)] for a, b in rows], "lr"), ""]
    if t.get("events"):
        ev = "; ".join(f"{e.get('event')} at step {e.get('step')}" for e in t["events"])
        L += [f"Events: {ev}.", ""]
    L += fig("loss_vs_step.png", "Training and validation loss vs step")
    L += fig("loss_vs_time.png", "Training and validation loss vs wall time")

    # ---- artifact
    L += ["## Artifact", ""]
    if art:
        head = (art["limit_bytes"] - art["total_bytes"]) if art.get("total_bytes") is not None else None
        rows = [
            ["compressed model", art.get("model_bytes")],
            ["code", art.get("code_bytes")],
            ["**total**", art.get("total_bytes")],
            ["limit (decimal)", art["limit_bytes"]],
            ["headroom", head],
            ["fits", "yes ✓" if art["fits"] else "**no ✗**"],
            ["quantisation", art.get("quant")],
        ]
        L += [md_table(["", "bytes"], [[a, b if isinstance(b, str) else _cell(b)] for a, b in rows], "lr"), ""]
        if art.get("code_files"):
            L += ["Counted code files: " + ", ".join(f"`{c}`" for c in art["code_files"]), ""]
        L += fig("artifact_bytes.png", "Artifact bytes vs the 16,000,000-byte limit")
    else:
        L += ["No export.json: the model was not exported.", ""]

    # ---- config
    cfg = s.get("config") or {}
    L += ["## Config", ""]
    if cfg:
        base, base_name = _baseline_config()
        diff = config_diff(cfg, base)
        ov = s.get("overrides") or {}
        if base is None:
            L += ["(No baseline config available to compare against.)", ""]
        elif diff:
            rows = []
            for key, v, b in diff:
                src = ov.get(key, {}).get("source") if isinstance(ov.get(key), dict) else None
                rows.append([f"`{key}`", _cell(v), _cell(b), src or f"preset `{cfg.get('preset') or '?'}`"])
            L += [
                f"Fields that differ from {base_name}:",
                "",
                md_table(["field", "this run", "record", "set by"], rows),
                "",
            ]
        else:
            L += [f"Identical to {base_name}.", ""]
        extra_top = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
        if extra_top:
            L += [", ".join(f"{k}: `{_cell(v)}`" for k, v in extra_top.items()), ""]
        L += [
            "<details><summary>Full config (config.json)</summary>",
            "",
            "```json",
            json.dumps(cfg, indent=2, sort_keys=False),
            "```",
            "",
            "</details>",
            "",
        ]
    else:
        L += ["No config.json.", ""]

    # ---- dataset
    d = s.get("dataset")
    L += ["## Dataset", ""]
    if isinstance(d, dict):
        fp = d.get("source_fingerprint")
        rows = []
        for k, v in d.items():
            if k == "source_fingerprint":
                continue
            if k == "files" and isinstance(v, dict):  # per-file hashes: too long for a table
                rows.append([k, f"{len(v)} files (hashes in dataset.json)"])
            elif isinstance(v, dict):  # the manifest nests counts and tokenizer: one row per leaf
                rows += [[f"{k}.{kk}", _cell(vv)] for kk, vv in v.items()]
            else:
                rows.append([k, _cell(v)])
        L += [md_table(["field", "value"], rows, "ll"), ""]
        if fp is not None:
            L += ["Source fingerprint:", "", "```json", json.dumps(fp, indent=2), "```", ""]
    else:
        L += ["No dataset.json.", ""]

    # ---- software & hardware
    sysinfo = s.get("system")
    L += ["## Software & hardware", ""]
    if isinstance(sysinfo, dict):
        L += [md_table(["", "value"], [[k, _cell(v)] for k, v in sysinfo.items()], "ll"), ""]
    else:
        L += ["No system.json.", ""]

    # ---- notes / problems
    notes: list[str] = []
    if extra:
        n = extra.get("notes")
        if isinstance(n, str):
            notes.append(n)
        elif isinstance(n, (list, tuple)):
            notes += [str(x) for x in n]
        notes += [f"{k}: {_cell(v)}" for k, v in extra.items() if k != "notes"]
    if s.get("missing"):
        notes.append("Missing from the run directory: " + ", ".join(f"`{m}`" for m in s["missing"]))
    notes += s.get("warnings") or []
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(L).rstrip() + "\n"
