"""PNG figures for reports and sweeps (matplotlib, no screen needed).

Figures are built on `matplotlib.figure.Figure` directly rather than pyplot, so
no global backend or figure registry is touched: safe in tests, threads and on
machines without a display. Every writer saves to a temp file and renames it.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pgolf.report import LIMIT_BYTES

# Colour-blind-safe pair (Okabe-Ito): blue for valid scores, vermillion for warnings.
C_VALID = "#0072B2"
C_BEST = "#004B76"
C_TWO_PASS = "#D55E00"
C_TRAIN = "#7F7F7F"
C_VAL = "#0072B2"
C_MODEL = "#0072B2"
C_CODE = "#E69F00"
C_LIMIT = "#C00000"
DPI = 120


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    return fig


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a figure is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _style(ax) -> None:
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _thousands(x: float, _pos: Any = None) -> str:
    return f"{x:,.0f}"


# --------------------------------------------------------------------------- training curves
EVENT_LABELS = {
    "late_qat": "late QAT",
    "swa_start": "SWA start",
    "stop_wallclock": "wall-clock stop",
    "ema_applied": "EMA applied",
}


def split_final_validation(val: list[tuple]) -> tuple[list[tuple], tuple | None]:
    """(periodic points, last point or None) for (x, loss, bpb, targets) tuples.

    A capped run validates on a prefix of the split, then on the whole split at its last
    step: that last point is not on the same curve, so it is drawn apart.
    """
    if len(val) > 1 and val[-1][3] is not None and val[-1][3] != val[-2][3]:
        return val[:-1], val[-1]
    return val, None


def plot_loss_curves(
    metrics: Sequence[Mapping[str, Any]], out_png: str | Path, x: str = "step", title: str | None = None
) -> Path | None:
    """Training loss (line) and validation loss (markers), in nats, against step or wall time.

    `x` is "step" or "time" (the records' elapsed_s). Returns None when there is
    nothing to draw. Early steps far above the late-training range are clipped
    (and the clip is said on the figure), otherwise they flatten the part of the
    curve that matters.
    """
    key = "step" if x == "step" else "elapsed_s"
    train = [
        (r[key], r["train_loss"])
        for r in metrics
        if r.get("kind") == "train" and _ok(r.get(key)) and _ok(r.get("train_loss"))
    ]
    val = [
        (r[key], r["val_loss"], r.get("val_bpb"), r.get("targets"))
        for r in metrics
        if r.get("kind") == "val" and _ok(r.get(key)) and _ok(r.get("val_loss"))
    ]
    if not train and not val:
        return None
    val, final = split_final_validation(val)
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    _style(ax)
    if train:
        ax.plot(
            [p[0] for p in train],
            [p[1] for p in train],
            color=C_TRAIN,
            linewidth=1.3,
            label="train loss (per logged step)",
        )
    if val:
        last = val[-1]
        lab = "validation loss"
        if final is not None:
            lab += f" (first {last[3]:,} targets)"
        elif _ok(last[2]):
            lab += f" (last: {last[1]:.4f} nats, {last[2]:.4f} bpb)"
        ax.plot(
            [p[0] for p in val], [p[1] for p in val], color=C_VAL, linewidth=1.6, marker="o", markersize=6, label=lab
        )
    if final is not None:
        lab = f"last validation, whole split ({final[3]:,} targets): {final[1]:.4f} nats"
        if _ok(final[2]):
            lab += f", {final[2]:.4f} bpb"
        ax.plot([final[0]], [final[1]], color=C_VAL, linestyle="none", marker="D", markersize=8, label=lab)
        val = val + [final]

    ys = [p[1] for p in train] + [p[1] for p in val]
    xs = [p[0] for p in train] + [p[0] for p in val]
    x_max = max(xs)
    late = [y for xv, y in zip(xs, ys) if xv >= 0.05 * x_max] or ys
    lo, hi = min(ys), max(late)
    pad = max(0.05 * (hi - lo), 0.02)
    clipped = max(ys) > hi + pad
    ax.set_ylim(lo - pad, hi + pad)

    # Training events (late QAT, SWA, stop) as labelled vertical lines.
    for r in metrics:
        if r.get("kind") != "event" or not _ok(r.get(key)):
            continue
        name = str(r.get("event", ""))
        if name in ("checkpoint", "ema_applied"):  # bookkeeping, not a change in the training itself
            continue
        ax.axvline(r[key], color="#999999", linestyle=":", linewidth=1.0)
        ax.text(
            r[key],
            0.98,
            EVENT_LABELS.get(name, name) + " ",
            rotation=90,
            transform=ax.get_xaxis_transform(),
            ha="right",
            va="top",
            fontsize=8,
            color="#555555",
        )

    xlabel = "training step" if key == "step" else "wall time (seconds)"
    if clipped:  # said in the axis label, where no curve or legend can cover it
        xlabel += f"    (y axis clipped: early losses up to {max(ys):.2f} not shown)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title or ("Loss vs step" if key == "step" else "Loss vs wall time"))
    if key == "step":
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    return _save(fig, out_png)


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- bpb per method
def zoom_range(values: Sequence[float], min_pad: float = 0.002) -> tuple[float, float]:
    """An axis range around `values` that makes their differences visible (not from 0)."""
    lo, hi = min(values), max(values)
    pad = max(0.12 * (hi - lo), min_pad)
    return lo - pad, hi + 1.9 * pad + 0.25 * (hi - lo)  # room on the right for the value labels


def _edge_note(v: float, lo: float, hi: float) -> str:
    return "  (◀ off-scale)" if v < lo else ("  (off-scale ▶)" if v > hi else "")


def plot_eval_bpb(
    methods: Mapping[str, Mapping[str, Any]],
    out_png: str | Path,
    unigram_bpb: float | None = None,
    title: str | None = None,
) -> Path | None:
    """bpb per evaluation method as a dot plot on an axis zoomed to the score-first methods.

    Bars from zero hide what matters (methods differ by 0.001-0.06 bpb on a value near 2), so
    the x axis spans the score-first values; a value outside it (a two-pass method, the unigram
    baseline) is drawn at the edge and labelled with its number. Score-first methods are solid
    blue (the best one darker); two-pass methods are hollow vermillion and say so on the plot,
    so the figure cannot be quoted without the caveat.
    """
    from matplotlib.lines import Line2D

    rows = [(name, m) for name, m in methods.items() if _ok(m.get("val_bpb"))]
    if not rows:
        return None
    rows.sort(key=lambda r: (r[1].get("score_first") is not True, r[1]["val_bpb"]))
    best = rows[0][0] if rows[0][1].get("score_first") is True else None
    valid = [m["val_bpb"] for _, m in rows if m.get("score_first") is True] or [m["val_bpb"] for _, m in rows]
    lo, hi = zoom_range(valid)

    fig = _figure(8.5, 1.7 + 0.5 * len(rows))
    ax = fig.add_subplot()
    _style(ax)
    ys = list(range(len(rows)))[::-1]
    for y, (name, m) in zip(ys, rows):
        v = m["val_bpb"]
        sf = m.get("score_first")
        x = min(max(v, lo), hi)
        if sf is True:
            colour = C_BEST if name == best else C_VALID
            ax.plot([lo, x], [y, y], color=colour, linewidth=2.5, alpha=0.35, solid_capstyle="butt")
            ax.plot(x, y, "o", color=colour, markersize=9)
            note = "best score-first" if name == best else "score-first"
        else:
            ax.plot(x, y, "o", markerfacecolor="white", markeredgecolor=C_TWO_PASS, markeredgewidth=2, markersize=9)
            note = "NOT score-first (two-pass)" if sf is False else "score-first unknown"
        if m.get("max_tokens"):
            note += f", partial: {m['max_tokens']:,} targets"
        ax.annotate(
            f"{v:.4f}  {note}{_edge_note(v, lo, hi)}",
            (x, y),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            color=C_TWO_PASS if sf is not True else "#222222",
            fontweight="bold" if name == best else "normal",
        )
    ax.set_yticks(ys, [m.get("title") or name for name, m in rows], fontsize=10)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=C_VALID, label="score-first (valid compression score)"),
        Line2D(
            [], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor=C_TWO_PASS,
            label="two-pass: not score-first",
        ),
    ]  # fmt: skip
    if _ok(unigram_bpb):
        if lo <= unigram_bpb <= hi:
            handles.append(ax.axvline(unigram_bpb, color="#444444", linestyle="--", linewidth=1.2,
                                      label=f"unigram baseline: {unigram_bpb:.4f} bpb"))  # fmt: skip
        else:
            handles.append(Line2D([], [], linestyle="", label=f"unigram baseline: {unigram_bpb:.4f} bpb (off-scale)"))
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("validation bits per byte (lower is better; the axis is zoomed to the score-first methods)")
    ax.set_title(title or "Evaluation methods: bpb on the validation set")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return _save(fig, out_png)


STACK_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")


def plot_compare_bpb(
    stacks: Mapping[str, Mapping[str, Mapping[str, Any]]],
    out_png: str | Path,
    title: str | None = None,
) -> Path | None:
    """Score-first bpb of every method for each stack (a preset), side by side on one zoomed axis.

    `stacks` maps a stack's name to its methods (as in summary["methods"]). Two-pass methods are
    left out: they are not comparable scores. Each method is a row, each stack a colour.
    """
    from matplotlib.lines import Line2D

    names = list(stacks)
    methods: list[str] = []
    for st in names:
        for k, m in stacks[st].items():
            if m.get("score_first") is True and _ok(m.get("val_bpb")) and k not in methods:
                methods.append(k)
    if not methods:
        return None
    vals = [stacks[st][k]["val_bpb"] for st in names for k in methods if _ok(stacks[st].get(k, {}).get("val_bpb"))]
    lo, hi = zoom_range(vals, min_pad=0.01)
    hi = max(vals) + 0.08 * (hi - lo) + 0.02  # labels sit beside the markers, not on the right
    methods.sort(key=lambda k: min(stacks[st].get(k, {}).get("val_bpb", math.inf) for st in names))
    fig = _figure(8.5, 1.8 + 0.42 * len(methods) * max(1, len(names)) ** 0.5)
    ax = fig.add_subplot()
    _style(ax)
    ys = list(range(len(methods)))[::-1]
    off = 0.18
    for i, st in enumerate(names):
        colour = STACK_COLOURS[i % len(STACK_COLOURS)]
        for y, k in zip(ys, methods):
            m = stacks[st].get(k)
            if not m or not _ok(m.get("val_bpb")):
                continue
            yy = y + off * (len(names) - 1) / 2 - off * i
            ax.plot(m["val_bpb"], yy, "o", color=colour, markersize=8)
            ax.annotate(f"{m['val_bpb']:.4f}", (m["val_bpb"], yy), xytext=(7, 0), textcoords="offset points",
                        va="center", fontsize=8, color=colour)  # fmt: skip
    ax.set_yticks(ys, methods, fontsize=10)
    ax.set_xlim(lo, hi + 0.12 * (hi - lo))
    ax.set_ylim(-0.7, len(methods) - 0.3)
    ax.set_xlabel("validation bits per byte, score-first methods only (lower is better; zoomed axis)")
    ax.set_title(title or "The frontier stack and the seed's stack on the same CPU budget")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=STACK_COLOURS[i % len(STACK_COLOURS)], label=st)
        for i, st in enumerate(names)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- artifact bytes
def plot_artifact(
    model_bytes: int, code_bytes: int, out_png: str | Path, limit_bytes: int = LIMIT_BYTES, title: str | None = None
) -> Path:
    """One stacked bar (compressed model + code) against the decimal byte limit."""
    from matplotlib.ticker import FuncFormatter

    total = model_bytes + code_bytes
    fits = total <= limit_bytes
    fig = _figure(8.5, 2.6)
    ax = fig.add_subplot()
    _style(ax)
    ax.grid(axis="y", visible=False)
    ax.barh(0, model_bytes, color=C_MODEL, height=0.5, label=f"compressed model: {model_bytes:,} bytes")
    ax.barh(0, code_bytes, left=model_bytes, color=C_CODE, height=0.5, label=f"code: {code_bytes:,} bytes")
    ax.axvline(limit_bytes, color=C_LIMIT, linestyle="--", linewidth=1.6, label=f"limit: {limit_bytes:,} bytes")
    spare = limit_bytes - total
    verdict = f"total {total:,} bytes = {100 * total / limit_bytes:.1f}% of the limit, " + (
        f"{spare:,} to spare" if fits else f"OVER by {-spare:,}"
    )
    ax.text(
        0.01,
        0.52,
        verdict,
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=9.5,
        color="#222222" if fits else C_LIMIT,
        fontweight="bold",
    )
    ax.set_ylim(-0.5, 1.3)
    ax.set_yticks([])
    ax.set_xlim(0, max(limit_bytes, total) * 1.08)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / 1e6:.0f}"))
    ax.set_xlabel("bytes (millions, decimal: 16 = 16,000,000)")
    ax.set_title(title or ("Artifact size vs the limit: fits" if fits else "Artifact size vs the limit: DOES NOT FIT"))
    ax.legend(loc="upper left", fontsize=8.5, ncols=3, framealpha=0.95, bbox_to_anchor=(0.0, 1.0))
    return _save(fig, out_png)


# --------------------------------------------------------------------------- sweeps
def plot_sweep(
    rows: Iterable[Mapping[str, Any]],
    x_key: str,
    series_key: str | None,
    out_png: str | Path,
    y_key: str = "val_bpb",
    title: str | None = None,
) -> Path | None:
    """bpb against one swept parameter, one line per value of another.

    Each row is a dict holding `x_key`, `series_key` (optional), `y_key` and
    `score_first`. Score-first points are filled circles on solid lines; two-pass
    points are hollow squares on dashed lines, and the legend says so.
    """
    rows = [r for r in rows if _ok(r.get(y_key)) and r.get(x_key) is not None]
    if not rows:
        return None
    numeric = all(_ok(r[x_key]) for r in rows)
    if numeric:

        def xpos(v):
            return v
    else:
        cats = list(dict.fromkeys(str(r[x_key]) for r in rows))

        def xpos(v):
            return cats.index(str(v))

    groups: dict[Any, list] = {}
    for r in rows:
        groups.setdefault(r.get(series_key) if series_key else None, []).append(r)

    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot()
    _style(ax)
    colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
    any_two_pass = False

    def order(kv):  # numbers in numeric order first, then anything else by name
        return (0, kv[0], "") if _ok(kv[0]) else (1, 0, str(kv[0]))

    for i, (key, grp) in enumerate(sorted(groups.items(), key=order)):
        grp = sorted(grp, key=lambda r: xpos(r[x_key]))
        color = colors[i % len(colors)]
        two_pass = all(r.get("score_first") is False for r in grp)
        any_two_pass |= any(r.get("score_first") is False for r in grp)
        label = f"{series_key} = {key}" if series_key else y_key
        if two_pass:
            label += " (not score-first)"
        ax.plot(
            [xpos(r[x_key]) for r in grp],
            [r[y_key] for r in grp],
            color=color,
            linestyle="--" if two_pass else "-",
            linewidth=1.5,
            label=label,
        )
        for r in grp:
            sf = r.get("score_first") is not False
            ax.plot(
                xpos(r[x_key]),
                r[y_key],
                marker="o" if sf else "s",
                markersize=7,
                color=color,
                markerfacecolor=color if sf else "white",
                markeredgewidth=1.5,
                linestyle="none",
            )
    if not numeric:
        ax.set_xticks(range(len(cats)), cats)
    ax.set_xlabel(
        x_key
        + ("\nhollow squares / dashed lines: two-pass, not score-first (not a valid score)" if any_two_pass else "")
    )
    ax.set_ylabel("validation bits per byte (lower is better)" if y_key == "val_bpb" else y_key)
    ax.set_title(title or f"{y_key} vs {x_key}")
    ax.legend(fontsize=9, framealpha=0.9)
    return _save(fig, out_png)
