"""The main job's side-by-side report: several stacks (presets) trained on the same data budget.

`write(out, stacks)` reads each stack's run summaries (as `pgolf.report.document.build_summary`
makes them) and writes OUT/summary.json, OUT/report.md and OUT/figures/compare_bpb.png: the bpb
of every method per stack, the artifact's bytes by part (model, code as the challenge counts it,
the tokenizer beside), the time of every phase, the headline method's legality audit and whether
each run is representative of its preset. The headline is the best score-first figure.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgolf.report.document import CONDITIONS, _bpb, atomic_write_text, condition_passed, md_table, read_json


def _export(run_dir: str | Path) -> dict:
    e = read_json(Path(run_dir) / "export.json")
    return e if isinstance(e, dict) else {}


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "—"


def _sec(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "—"


def stack_row(name: str, s: Mapping[str, Any]) -> dict[str, Any]:
    """One stack's figures for the comparison (its first seed's run)."""
    e = _export(s.get("run_dir", ""))
    t = s.get("train") or {}
    best = s.get("best_score_first") or {}
    ds = s.get("dataset") or {}
    counts = ds.get("counts") if isinstance(ds.get("counts"), dict) else ds
    ev_bytes = {m.get("bytes") for m in (s.get("methods") or {}).values() if not m.get("partial")}
    return {
        "stack": name,
        "preset": s.get("preset"),
        "run_dir": s.get("run_dir"),
        "params": s.get("params"),
        "vocab_size": ((s.get("config") or {}).get("model") or {}).get("vocab_size"),
        "steps": t.get("steps"),
        "train_seconds": t.get("train_seconds"),
        "tokens_per_s": t.get("tokens_per_s"),
        "headline": best or None,
        "unigram_bpb": s.get("unigram_bpb"),
        "val_bytes": next(iter(ev_bytes)) if len(ev_bytes) == 1 else (counts or {}).get("val_bytes"),
        "byte_source": (counts or {}).get("val_byte_source"),
        "model_bytes": e.get("model_bytes"),
        "code_bytes": e.get("code_bytes"),
        "tokenizer_bytes": e.get("tokenizer_bytes"),
        "total_bytes": e.get("total_bytes"),
        "fits": e.get("fits"),
        "scheme": e.get("scheme") or e.get("format"),
        "methods": {
            k: {kk: m.get(kk) for kk in ("val_bpb", "val_loss", "score_first", "seconds", "partial", "max_tokens")}
            for k, m in (s.get("methods") or {}).items()
        },
        "phases": s.get("phases") or {},
        "audit": s.get("audit"),
        "representative": s.get("representative") or {},
    }


def headline(rows: Sequence[Mapping[str, Any]]) -> dict | None:
    """The best score-first figure over every stack (full-split evaluations win over partial ones)."""
    cands = [(r, r["headline"]) for r in rows if r.get("headline")]
    full = [c for c in cands if not c[1].get("partial")]
    pool = full or cands
    if not pool:
        return None
    r, h = min(pool, key=lambda c: c[1]["val_bpb"])
    return {"stack": r["stack"], **h}


def check_submission(folder: str | Path | None) -> dict:
    """`pgolf check` on the submission folder: its verdict, counts and the broken rules' lines."""
    if folder is None:
        return {"available": False}
    from pgolf.report.check import run_checks

    try:
        res = run_checks(Path(folder))
    except Exception as e:  # noqa: BLE001 - the report is written either way
        return {"available": True, "passed": False, "line": f"check failed to run: {e}"}
    fails = [f"{d.get('check', '')}: {d.get('message', '')}" for d in res["findings"]
             if d.get("status") == "FAIL"]  # fmt: skip
    return {"available": True, "passed": res["ok"], "failures": res["failures"], "warnings": res["warnings"],
            "line": "; ".join(fails) or None}  # fmt: skip


def check_line(res: Mapping[str, Any] | None) -> str:
    if not res or not res.get("available", True):
        return "pgolf check: not available"
    ok = res.get("passed", res.get("ok"))
    return "pgolf check: passed" if ok else f"pgolf check: FAILED ({res.get('line') or 'see its findings'})"


def write(
    out: str | Path,
    stacks: Mapping[str, Sequence[Mapping[str, Any]]],
    total_s: float | None = None,
    submission: str | Path | None = None,
) -> dict:
    """Write OUT/summary.json, OUT/report.md and the comparison figure; returns the summary."""
    from pgolf.report.figures import plot_compare_bpb

    out = Path(out)
    rows = [stack_row(name, runs[0]) for name, runs in stacks.items() if runs]
    head = headline(rows)
    summary: dict[str, Any] = {
        "out": str(out),
        "stacks": {r["stack"]: r for r in rows},
        "headline": head,
        "seconds": round(total_s, 1) if total_s is not None else None,
        "representative": all(r["representative"].get("representative", True) for r in rows),
        "not_representative": [
            f"{r['stack']}: {r['representative']['line']}" for r in rows if r["representative"].get("line")
        ],
        "submission": str(submission) if submission else None,
        "check": check_submission(submission) if submission else None,
        "runs": [str(s.get("run_dir")) for runs in stacks.values() for s in runs],
    }
    figs = out / "figures"
    drawn = plot_compare_bpb({r["stack"]: r["methods"] for r in rows}, figs / "compare_bpb.png")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", render(summary, drawn is not None))
    return summary


def render(s: Mapping[str, Any], figure: bool) -> str:
    rows = list(s["stacks"].values())
    names = [r["stack"] for r in rows]
    L = ["# pgolf main job: the frontier stack beside the seed's", ""]
    L += [f"generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}" + (
        f" · {s['seconds'] / 60:.1f} min in all" if s.get("seconds") else ""), ""]  # fmt: skip
    for line in s.get("not_representative") or []:
        L += [f"> **{line}**", ""]
    h = s.get("headline")
    if h:
        part = " (partial validation set)" if h.get("partial") else ""
        L += [f"**Headline (best score-first): {h['val_bpb']:.4f} bpb**, `{h['method']}` on the `{h['stack']}` "
              f"stack{part}.", ""]  # fmt: skip
    heads = {r["stack"]: (r.get("headline") or {}).get("val_bpb") for r in rows}
    if len(rows) >= 2 and all(isinstance(v, (int, float)) for v in heads.values()):
        a, b = names[0], names[1]
        d = heads[a] - heads[b]
        word = "below" if d < 0 else "above"
        L += [f"`{a}`'s headline is {abs(d):.4f} bpb {word} `{b}`'s ({heads[a]:.4f} vs {heads[b]:.4f}).", ""]

    L += ["## The stacks", ""]
    table = [
        ["preset"] + [f"`{r['preset']}`" for r in rows],
        ["parameters"] + [_int(r["params"]) for r in rows],
        ["vocabulary"] + [_int(r["vocab_size"]) for r in rows],
        ["training steps"] + [_int(r["steps"]) for r in rows],
        ["training seconds"] + [_sec(r["train_seconds"]) for r in rows],
        ["tokens/s (last log)"] + [f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "—" for r in rows],
        ["headline method"] + [f"`{(r['headline'] or {}).get('method', '—')}`" for r in rows],
        ["headline bpb"] + [_bpb((r["headline"] or {}).get("val_bpb")) for r in rows],
        ["unigram baseline bpb"] + [_bpb(r["unigram_bpb"]) for r in rows],
        ["validation bytes counted"] + [_int(r["val_bytes"]) for r in rows],
        ["byte source"] + [str(r.get("byte_source") or "—") for r in rows],
        ["representative"] + ["yes" if r["representative"].get("representative", True) else "**no**" for r in rows],
    ]
    L += [md_table(["", *names], table, "l" + "r" * len(rows)), ""]
    vb = {r["val_bytes"] for r in rows}
    if len(vb) > 1:
        L += ["The stacks count different validation bytes: their bpb are not on one denominator.", ""]
    else:
        L += ["Both stacks score the same validation text and count the same bytes (the original UTF-8 bytes), "
              "so their bpb compare directly, across tokenizers.", ""]  # fmt: skip

    L += ["## bpb of every method", ""]
    methods = method_order(rows)
    mt = []
    for k in methods:
        cells = []
        for r in rows:
            m = r["methods"].get(k)
            if not m:
                cells.append("—")
                continue
            mark = "" if m.get("score_first") else " (two-pass ✗)"
            part = " (partial)" if m.get("partial") else ""
            best = (r.get("headline") or {}).get("method") == k
            v = _bpb(m.get("val_bpb"))
            cells.append(f"**{v}**{mark}{part}" if best else f"{v}{mark}{part}")
        sf = {r["methods"].get(k, {}).get("score_first") for r in rows} - {None}
        mt.append([f"`{k}`", *cells, "yes" if sf == {True} else ("**no**" if sf == {False} else "—")])
    L += [md_table(["method", *names, "score-first"], mt, "l" + "r" * len(rows) + "c"), ""]
    L += ["Bold: each stack's headline. Two-pass methods are shown for comparison only; they are not "
          "compression scores.", ""]  # fmt: skip
    if figure:
        L += ["![score-first bpb per method and stack](figures/compare_bpb.png)", ""]

    L += ["## Artifact bytes by part", ""]
    bt = [
        ["compressed model"] + [_int(r["model_bytes"]) for r in rows],
        ["code (counted as the challenge counts it)"] + [_int(r["code_bytes"]) for r in rows],
        ["**total counted**"] + [f"**{_int(r['total_bytes'])}**" for r in rows],
        ["fits 16,000,000"] + ["yes" if r["fits"] else ("**no**" if r["fits"] is False else "—") for r in rows],
        ["tokenizer (beside, not counted)"] + [_int(r["tokenizer_bytes"]) for r in rows],
        ["export scheme"] + [str(r.get("scheme") or "—") for r in rows],
    ]
    L += [md_table(["bytes", *names], bt, "l" + "r" * len(rows)), ""]

    L += ["## Time of every phase (seconds)", ""]
    phases: list[str] = []
    for r in rows:
        phases += [k for k in r["phases"] if k not in phases]
    pt = [[p] + [_sec(r["phases"].get(p)) for r in rows] for p in phases]
    pt.append(["**total**"] + [f"**{_sec(sum(float(v) for v in r['phases'].values()))}**" for r in rows])
    L += [md_table(["phase", *names], pt, "l" + "r" * len(rows)), ""]

    L += ["## Legality audit of each headline method", ""]
    for r in rows:
        au = r.get("audit")
        if not isinstance(au, dict):
            L += [f"- `{r['stack']}`: not audited", ""]
            continue
        conds = au.get("conditions") if isinstance(au.get("conditions"), dict) else {}
        cells = []
        for c in ("C1", "C2", "C3", "C4"):
            v = conds.get(c) if conds else ({"passed": au.get("score_first")} if c == "C1" else None)
            ok = condition_passed(v)
            cells.append([c, CONDITIONS[c], "pass ✓" if ok else ("**FAIL ✗**" if ok is False else "not measured")])
        L += [f"`{r['stack']}`, method `{au.get('method')}`:", "", md_table(["", "condition", "verdict"], cells), ""]

    if s.get("submission"):
        L += ["## Submission", "", f"Record folder: `{s['submission']}` — {check_line(s.get('check'))}.", ""]
    L += ["## Per-stack reports", ""]
    for r in rows:
        rel = Path(str(r["run_dir"]))
        L += [f"- `{r['stack']}`: [{rel.name}/report.md]({rel.name}/report.md)"]
    L += ["", "What each method and number means: pgolf's docs/evaluation.md and docs/report.md.", ""]
    return "\n".join(L)


def method_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every method of any stack, in pgolf's own order of methods (then any others)."""
    from pgolf.config import RUN_METHOD_NAMES

    seen = {k for r in rows for k in r["methods"]}
    return [k for k in RUN_METHOD_NAMES if k in seen] + sorted(seen - set(RUN_METHOD_NAMES))


def console_lines(summary: Mapping[str, Any]) -> str:
    rows = list(summary["stacks"].values())
    names = [r["stack"] for r in rows]
    w = max(14, *(len(n) for n in names))
    out = ["side by side (bpb, score-first methods; two-pass marked):", f"{'method':14s}" + "".join(
        f"  {n:>{w}s}" for n in names)]  # fmt: skip
    for k in method_order(rows):
        cells = []
        for r in rows:
            m = r["methods"].get(k)
            v = "—" if not m else f"{m['val_bpb']:.4f}" + ("*" if not m.get("score_first") else "")
            cells.append(f"  {v:>{w}s}")
        out.append(f"{k:14s}" + "".join(cells))
    out.append("(* two-pass: not a valid compression score)")
    h = summary.get("headline")
    if h:
        out.append(f"headline: {h['val_bpb']:.4f} bpb ({h['method']}, {h['stack']})")
    out += list(summary.get("not_representative") or [])
    return "\n".join(out)
