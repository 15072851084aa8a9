"""Parse the seed's (PR #1313 train_gpt.py) console log format.

The final block of a seed log prints THREE `final_int6_roundtrip_exact` lines
(SPEC §8.1, §11.1 items 2-3): the first is the true int6 round-trip, the next two
repeat the sliding stride-96 and stride-64 numbers under the wrong label. A
parser that keeps the last one reports the s64 sliding score as "round-trip".
We therefore attribute every `*_exact` line to the evaluation block it follows
(its context) and record each mislabelled copy instead of trusting its label.

pgolf's own train.log uses the same line style, so the parser is lenient: any
field may be missing; a file with none of the recognised lines is an error.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgolf.report import LIMIT_BYTES, ReportError
from pgolf.report.stats import describe


class LogParseError(ReportError):
    """A log file has none of the seed's recognisable lines (or cannot be read)."""


_KV = re.compile(r"([A-Za-z_][\w]*):(\S+)")
_PEAK = re.compile(r"peak memory allocated:\s*(\d+)\s*MiB\s+reserved:\s*(\d+)\s*MiB")
_BYTES = re.compile(r"(-?\d+)\s*bytes")

# Evaluation blocks whose numbers are a valid (score-first) compression score.
SCORE_FIRST = {"roundtrip": True, "slot": False}

# Human-readable names for the seed's evaluation blocks.
METHOD_TITLES = {
    "roundtrip": "int6 round-trip (plain)",
    "slot": "SLOT (two-pass)",
}


def method_title(name: str) -> str:
    if name in METHOD_TITLES:
        return METHOD_TITLES[name]
    m = re.fullmatch(r"sliding_s(\d+)", name)
    if m:
        return f"sliding, stride {m.group(1)}"
    return name


def _kv(line: str) -> dict[str, str]:
    return dict(_KV.findall(line))


def _num(s: str | None) -> float | None:
    """'600096ms' -> 600096.0; '0.012' -> 0.012; None/garbage -> None."""
    if s is None:
        return None
    s = s.rstrip(",").removesuffix("ms").removesuffix("s")
    try:
        return float(s)
    except ValueError:
        return None


def _int(s: str | None) -> int | None:
    v = _num(s)
    return None if v is None else int(v)


def _step(s: str | None) -> int | None:
    """'6034/20000' -> 6034."""
    return None if s is None else _int(s.split("/", 1)[0])


@dataclass
class EvalBlock:
    """One final evaluation: the 4-decimal line, then (normally) its 8-decimal `_exact` line."""

    name: str  # roundtrip | sliding_s96 | sliding_s64 | slot | other final_* label stem
    label: str  # the log label that opened the block, e.g. final_int6_sliding_window
    line: int
    val_loss: float | None = None
    val_bpb: float | None = None
    exact: bool = False
    eval_time_ms: float | None = None
    stride: int | None = None
    steps: int | None = None  # SLOT optimisation steps
    lr: float | None = None
    score_first: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["title"] = method_title(self.name)
        d["seconds"] = None if self.eval_time_ms is None else self.eval_time_ms / 1000.0
        return d


@dataclass
class SeedLog:
    path: str
    seed: int | None = None
    run_id: str | None = None
    model_params: int | None = None
    world_size: int | None = None
    grad_accum_steps: int | None = None
    iterations: int | None = None
    train_shards: int | None = None
    val_tokens: int | None = None
    steps: int | None = None  # at stop
    train_time_ms: float | None = None
    step_avg_ms: float | None = None
    stopped_early: bool = False
    val: list[dict] = field(default_factory=list)
    train: list[dict] = field(default_factory=list)
    swa_start_step: int | None = None
    late_qat_step: int | None = None
    late_qat_scale: float | None = None
    peak_mem_allocated_mib: int | None = None
    peak_mem_reserved_mib: int | None = None
    post_ema: dict | None = None
    serialized_model_bytes: int | None = None  # raw torch.save, before quantisation
    model_bytes: int | None = None  # int6 + lzma
    code_bytes: int | None = None
    total_bytes: int | None = None
    evals: dict[str, EvalBlock] = field(default_factory=dict)
    mislabelled: list[dict] = field(default_factory=list)

    # ------------------------------------------------------------------ views
    @property
    def fits(self) -> bool | None:
        return None if self.total_bytes is None else self.total_bytes <= LIMIT_BYTES

    def to_dict(self, with_curves: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["evals"] = {k: v.to_dict() for k, v in self.evals.items()}
        d["fits"] = self.fits
        if not with_curves:
            d.pop("train")
        return d

    def methods(self) -> dict[str, dict]:
        """The evaluations in the run-summary shape used by `document.aggregate`."""
        return {
            k: {
                "val_bpb": v.val_bpb,
                "val_loss": v.val_loss,
                "score_first": v.score_first,
                "seconds": None if v.eval_time_ms is None else v.eval_time_ms / 1000.0,
                "tokens": None,
                "title": method_title(k),
            }
            for k, v in self.evals.items()
        }


def _method_name(stem: str, kv: dict[str, str]) -> str:
    """Map a final_* label (without _exact) to the evaluation it reports."""
    if stem == "final_int6_roundtrip":
        return "roundtrip"
    if stem.startswith("final_int6_sliding_window"):
        stride = _int(kv.get("stride"))
        if stride is None:
            m = re.search(r"_s(\d+)$", stem)
            stride = int(m.group(1)) if m else None
        return f"sliding_s{stride}" if stride is not None else "sliding"
    if stem == "final_slot":
        return "slot"
    return stem.removeprefix("final_").removeprefix("int6_")


def _score_first(name: str) -> bool | None:
    if name in SCORE_FIRST:
        return SCORE_FIRST[name]
    if name.startswith("sliding"):
        return True
    return None  # an unknown evaluation: never counted as an honest score


def parse_seed_log(path: str | Path) -> SeedLog:
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise LogParseError(f"{p}: cannot read log ({e.strerror or e})") from None
    return parse_seed_log_text(text, str(p))


def parse_seed_log_text(text: str, path: str = "<log>") -> SeedLog:
    log = SeedLog(path=path)
    current: EvalBlock | None = None  # the evaluation block the next _exact line belongs to
    recognised = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        kv = _kv(line)
        hit = True
        if line.startswith("seed:"):
            log.seed = _int(kv.get("seed"))
        elif line.startswith("logs/") and line.endswith(".txt"):
            log.run_id = Path(line).stem
        elif line.startswith("model_params:"):
            log.model_params = _int(kv.get("model_params"))
        elif line.startswith("world_size:"):
            log.world_size = _int(kv.get("world_size"))
            log.grad_accum_steps = _int(kv.get("grad_accum_steps"))
        elif line.startswith("train_loader:"):
            log.train_shards = _int(kv.get("train_shards"))
        elif line.startswith("val_loader:"):
            log.val_tokens = _int(kv.get("tokens"))
        elif line.startswith("train_batch_tokens:"):
            log.iterations = _int(kv.get("iterations"))
        elif line.startswith("step:") and "val_loss" in kv:
            rec = {
                "step": _step(kv.get("step")),
                "val_loss": _num(kv.get("val_loss")),
                "val_bpb": _num(kv.get("val_bpb")),
                "train_time_ms": _num(kv.get("train_time")),
                "step_avg_ms": _num(kv.get("step_avg")),
            }
            log.val.append(rec)
        elif line.startswith("step:") and "train_loss" in kv:
            log.train.append(
                {
                    "step": _step(kv.get("step")),
                    "train_loss": _num(kv.get("train_loss")),
                    "train_time_ms": _num(kv.get("train_time")),
                    "step_avg_ms": _num(kv.get("step_avg")),
                }
            )
        elif line.startswith("swa:start"):
            log.swa_start_step = _int(kv.get("step"))
        elif line.startswith("late_qat:enabled"):
            log.late_qat_step = _int(kv.get("step"))
            log.late_qat_scale = _num(kv.get("scale"))
        elif line.startswith("stopping_early:"):
            log.stopped_early = True
            log.steps = _step(kv.get("step"))
            log.train_time_ms = _num(kv.get("train_time"))
        elif line.startswith("peak memory allocated:"):
            m = _PEAK.search(line)
            if m:
                log.peak_mem_allocated_mib, log.peak_mem_reserved_mib = int(m.group(1)), int(m.group(2))
        elif line.startswith("DIAGNOSTIC post_ema"):
            log.post_ema = {
                "val_loss": _num(kv.get("val_loss")),
                "val_bpb": _num(kv.get("val_bpb")),
                "eval_time_ms": _num(kv.get("eval_time")),
            }
        elif line.startswith("Serialized model int6+lzma:"):
            log.model_bytes = _bytes(line)
        elif line.startswith("Serialized model:"):
            log.serialized_model_bytes = _bytes(line)
        elif line.startswith("Total submission size"):
            # Two lines ("... int6+lzma:" and plain) carry the same number; keep the last.
            log.total_bytes = _bytes(line)
        elif line.startswith("Code size:"):
            log.code_bytes = _bytes(line)
        elif line.startswith("final_") and "val_bpb" in kv:
            current = _final_line(log, line, lineno, kv, current)
        else:
            hit = False
        recognised += hit

    if recognised == 0 or (log.seed is None and not log.evals and not log.val):
        raise LogParseError(f"{path}: not a seed training log (no seed:, step: or final_* lines found)")
    _finish(log)
    return log


def _bytes(line: str) -> int | None:
    m = _BYTES.search(line)
    return int(m.group(1)) if m else None


def _final_line(
    log: SeedLog, line: str, lineno: int, kv: dict[str, str], current: EvalBlock | None
) -> EvalBlock | None:
    label = line.split()[0].rstrip(":")
    loss, bpb = _num(kv.get("val_loss")), _num(kv.get("val_bpb"))
    if not label.endswith("_exact"):
        name = _method_name(label, kv)
        block = EvalBlock(
            name=name,
            label=label,
            line=lineno,
            val_loss=loss,
            val_bpb=bpb,
            eval_time_ms=_num(kv.get("eval_time")),
            stride=_int(kv.get("stride")),
            steps=_int(kv.get("steps")),
            lr=_num(kv.get("lr")),
            score_first=_score_first(name),
        )
        log.evals[name] = block
        return block

    stem = label.removesuffix("_exact")
    if current is not None and stem == current.label and not current.exact:
        # The block's own exact line: full precision replaces the 4-decimal figures.
        current.val_loss, current.val_bpb, current.exact = loss, bpb, True
        return current
    if current is not None and current.exact and stem != current.label:
        # A second exact line under another block's label, right after this block:
        # the seed's mislabelled copy (SPEC §11.1 items 2-3). Attribute it by context.
        same = (loss, bpb) == (current.val_loss, current.val_bpb)
        log.mislabelled.append(
            {
                "line": lineno,
                "label": label,
                "copy_of": current.name,
                "values_match": same,
                "val_loss": loss,
                "val_bpb": bpb,
            }
        )
        return current
    # An exact line with no opening line: keep it as its own block.
    name = _method_name(stem, kv)
    if name in log.evals:
        log.mislabelled.append(
            {"line": lineno, "label": label, "copy_of": None, "values_match": False, "val_loss": loss, "val_bpb": bpb}
        )
        return current
    block = EvalBlock(
        name=name, label=stem, line=lineno, val_loss=loss, val_bpb=bpb, exact=True, score_first=_score_first(name)
    )
    log.evals[name] = block
    return block


def _finish(log: SeedLog) -> None:
    """Derive what the stop line leaves implicit from the last validation line."""
    last_val = log.val[-1] if log.val else None
    if log.steps is None:
        if last_val is not None:
            log.steps = last_val["step"]
        elif log.train:
            log.steps = log.train[-1]["step"]
    if log.train_time_ms is None and last_val is not None:
        log.train_time_ms = last_val["train_time_ms"]
    stop_val = next((v for v in reversed(log.val) if v["step"] == log.steps), None)
    if stop_val is not None:
        log.step_avg_ms = stop_val["step_avg_ms"]
    elif log.train_time_ms is not None and log.steps:
        log.step_avg_ms = log.train_time_ms / log.steps
    if log.total_bytes is None and log.model_bytes is not None and log.code_bytes is not None:
        log.total_bytes = log.model_bytes + log.code_bytes


# --------------------------------------------------------------------------- several seeds
def aggregate_logs(logs: list[SeedLog]) -> dict[str, Any]:
    """Per-seed table plus mean / sample std / population std of each evaluation.

    `honest` names the score-first evaluation with the lowest mean bpb among those
    present in every log; the two-pass SLOT figure is kept apart under `two_pass`.
    """
    if not logs:
        raise ReportError("no logs given")
    names: list[str] = []
    for lg in logs:
        names += [n for n in lg.evals if n not in names]
    per_method: dict[str, dict] = {}
    for n in names:
        have = [lg for lg in logs if n in lg.evals and lg.evals[n].val_bpb is not None]
        per_method[n] = {
            "title": method_title(n),
            "score_first": _score_first(n),
            "complete": len(have) == len(logs),
            "val_bpb": describe([lg.evals[n].val_bpb for lg in have]),
            "val_loss": describe([lg.evals[n].val_loss for lg in have if lg.evals[n].val_loss is not None]),
            "seconds": describe(
                [lg.evals[n].eval_time_ms / 1000.0 for lg in have if lg.evals[n].eval_time_ms is not None]
            ),
        }
    honest = [n for n, m in per_method.items() if m["score_first"] and m["complete"]]
    best = min(honest, key=lambda n: per_method[n]["val_bpb"]["mean"]) if honest else None
    two_pass = {n: m for n, m in per_method.items() if m["score_first"] is False}

    def col(attr: str) -> dict:
        return describe([getattr(lg, attr) for lg in logs if getattr(lg, attr) is not None])

    warnings = []
    for lg in logs:
        if lg.mislabelled:
            copies = ", ".join(m["copy_of"] or "unknown" for m in lg.mislabelled)
            warnings.append(
                f"{lg.path}: {len(lg.mislabelled)} mislabelled "
                f"'{lg.mislabelled[0]['label']}' line(s) are copies of: {copies}; "
                "the round-trip figure is taken from its own block"
            )
    seeds = [lg.seed for lg in logs]
    if len(set(seeds)) != len(seeds):
        warnings.append(f"duplicate seeds among the logs: {seeds}")
    return {
        "per_seed": [lg.to_dict() for lg in logs],
        "aggregate": {
            "methods": per_method,
            "steps": col("steps"),
            "train_time_ms": col("train_time_ms"),
            "step_avg_ms": col("step_avg_ms"),
            "total_bytes": col("total_bytes"),
            "model_bytes": col("model_bytes"),
        },
        "honest": None
        if best is None
        else {
            "method": best,
            "title": method_title(best),
            "val_bpb": per_method[best]["val_bpb"],
            "val_loss": per_method[best]["val_loss"],
        },
        "two_pass": two_pass,
        "all_fit": all(lg.fits for lg in logs if lg.fits is not None),
        "mislabelled_lines": sum(len(lg.mislabelled) for lg in logs),
        "warnings": warnings,
    }
