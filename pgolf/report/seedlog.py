"""Parse the console logs of the challenge's records (and pgolf's own train.log).

Three families of `train_gpt.py` print these logs (docs/report.md lists every record
folder on the challenge's main branch and which family it prints):

* the baseline's and its descendants' (March): `step:N/M val_loss:x val_bpb:y
  train_time:Tms`, `seed:N`, `final_int8_zlib_roundtrip[_exact]`, later
  `final_int6_roundtrip`, `final_sliding_window[_eval]`, `final_int6_sliding_window[_sNN]`,
  `legal_ttt[_exact]`; the script's own source is often printed at the top;
* the seed's (PR #1313), which prints THREE `final_int6_roundtrip_exact` lines
  (SPEC §8.1, §11.1 items 2-3): the first is the true int6 round-trip, the next two
  repeat the sliding stride-96 and stride-64 numbers under the wrong label. A
  parser that keeps the last one reports the s64 sliding score as "round-trip";
* the April frontier's: a `Hyperparameters:` block (`  seed: 42`), step lines
  without `step:` (`4945/20000 val_loss: 2.3539 val_bpb: 1.0756`), `val_tokens: N`,
  `train_shards: N`, `quantized`, `quantized_sliding_window`, `legal_ttt_exact`,
  `quantized_ttt`, `quantized_ttt_lora`, `quantized_ttt_phased`, `diagnostic ...`
  lines, `Code size (compressed)`, `total_eval_time:Ns`.

Every `*_exact` line is attributed to the evaluation block it follows (its
context): one whose values repeat the open block under another label is recorded
as a mislabelled copy instead of trusted by its label.

The record's headline is the LAST score-first evaluation the log prints: records
print the figure they submit last (checked against every README on the main
branch, docs/report.md). Evaluations of the unquantised weights (`pre-quantization
post-ema`, `DIAGNOSTIC post_ema`) are diagnostics, never a score; SLOT is two-pass,
never the headline.

The parser is lenient: any field may be missing; a file with none of the
recognised lines is an error (one line naming the file).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pgolf.report import LIMIT_BYTES, ReportError
from pgolf.report.stats import describe


class LogParseError(ReportError):
    """A log file has none of the recognisable lines (or cannot be read)."""


# A log larger than this is not a training log (the largest on the main branch is ~0.2 MB);
# reading it whole could exhaust memory.
MAX_LOG_BYTES = 64 * 1024 * 1024

# key:value, key: value and key=value pairs; the value is one token.
_KV = re.compile(r"([A-Za-z_][\w]*)\s*[:=]\s*([^\s,()\[\]]+)")
_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# An evaluation line: a label (words), optional key:value settings (`stride:64`), then val_loss and val_bpb.
_EVAL = re.compile(
    r"^(?P<label>[A-Za-z][\w\-]*(?: [A-Za-z][\w\-]*)*?):?"
    r"(?P<settings>(?:\s+[A-Za-z_]\w*[:=]\S+)*?)\s+val_loss\s*[:=]\s*"
    rf"{_NUMBER}.*?\bval_bpb\s*[:=]\s*{_NUMBER}"
)
_EQ = re.compile(r"(?:^|\s)([A-Za-z_]\w*)=(\S+)")
_STEP = re.compile(r"^(?:step:\s*)?(\d+)/(\d+)\s")
_PEAK = re.compile(r"peak memory allocated:\s*(\d+)\s*MiB\s+reserved:\s*(\d+)\s*MiB")
_BYTES = re.compile(r":\s*(-?\d+)\s*bytes")
_STAMP = re.compile(r"^\d{9,11}\.\d+ ")  # some April logs prefix a unix time (indentation after it kept)
_STRIDE = re.compile(r"stride\s*[=:]\s*(\d+)")
_SEED_FILE = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)

# Evaluation kinds whose numbers are a valid (score-first) compression score.
SCORE_FIRST = {
    "roundtrip": True,
    "ttt": True,
    "ttt_lora": True,
    "ttt_phased": True,
    "slot": False,
    "pre_quant": None,  # a diagnostic of the unquantised weights: not the artifact's score
}

# Human-readable names for the evaluation kinds.
METHOD_TITLES = {
    "roundtrip": "round-trip (plain)",
    "slot": "SLOT (two-pass)",
    "ttt": "score-first TTT",
    "ttt_lora": "score-first LoRA TTT",
    "ttt_phased": "phased score-first TTT",
    "pre_quant": "pre-quantisation (diagnostic)",
}

# Hyper-parameter block keys kept (as strings) in SeedLog.hparams.
_HPARAMS_KEPT = {
    "seed",
    "iterations",
    "train_seq_len",
    "eval_seq_len",
    "eval_stride",
    "max_wallclock_seconds",
    "world_size",
    "grad_accum_steps",
    "vocab_size",
    "tokenizer_path",
    "data_dir",
    "datasets_dir",
    "val_files",
    "train_files",
    "caseops_enabled",
    "ttt_enabled",
    "val_doc_fraction",
    "run_id",
    "compressor",
    "gptq_reserve_seconds",
}


def method_title(name: str) -> str:
    base = re.sub(r"_\d+$", "", name)
    if name in METHOD_TITLES:
        return METHOD_TITLES[name]
    if base in METHOD_TITLES:
        return METHOD_TITLES[base] + f" ({name})"
    m = re.fullmatch(r"sliding_s(\d+)", name)
    if m:
        return f"sliding, stride {m.group(1)}"
    if name == "sliding":
        return "sliding"
    return name


def _kv(line: str) -> dict[str, str]:
    return dict(_KV.findall(line))


def _num(s: str | None) -> float | None:
    """'600096ms' -> 600096.0; '0.012' -> 0.012; None/garbage -> None."""
    if s is None:
        return None
    s = s.rstrip(",;").removesuffix("ms").removesuffix("s")
    try:
        return float(s)
    except ValueError:
        return None


def _ms(s: str | None) -> float | None:
    """A duration with its unit ('600096ms', '407.5s', '9.9m') in milliseconds."""
    if s is None:
        return None
    s = s.rstrip(",;")
    for unit, scale in (("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if s.endswith(unit):
            try:
                return float(s[: -len(unit)]) * scale
            except ValueError:
                return None
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
    """One final evaluation: its line, then (in the older families) its 8-decimal `_exact` line."""

    name: str  # roundtrip | sliding_s64 | slot | ttt | ttt_phased | pre_quant | ...
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
    source: str | None = None  # the file it was read from, when not the log it belongs to (a re-evaluation)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["title"] = method_title(self.name)
        d["seconds"] = None if self.eval_time_ms is None else self.eval_time_ms / 1000.0
        return d


@dataclass
class SeedLog:
    path: str
    seed: int | None = None
    seed_source: str | None = None  # "log" | "hparams" | "filename"
    run_id: str | None = None
    family: str | None = None  # "baseline" | "seed" | "april" | "pgolf"
    model_params: int | None = None
    world_size: int | None = None
    grad_accum_steps: int | None = None
    iterations: int | None = None
    train_shards: int | None = None
    val_tokens: int | None = None
    vocab_size: int | None = None
    tokenizer_path: str | None = None
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
    model_bytes: int | None = None  # quantised + compressed
    code_bytes: int | None = None  # counted code (compressed when the log gives both)
    code_bytes_uncompressed: int | None = None
    total_bytes: int | None = None
    total_eval_time_ms: float | None = None  # `total_eval_time:` when the log prints it
    hparams: dict[str, str] = field(default_factory=dict)
    evals: dict[str, EvalBlock] = field(default_factory=dict)
    mislabelled: list[dict] = field(default_factory=list)

    # ------------------------------------------------------------------ views
    @property
    def fits(self) -> bool | None:
        return None if self.total_bytes is None else self.total_bytes <= LIMIT_BYTES

    @property
    def headline(self) -> EvalBlock | None:
        """The record's own score-first figure: the last score-first evaluation the log prints."""
        best = None
        for b in self.evals.values():
            if b.score_first is True and b.val_bpb is not None and (best is None or b.line > best.line):
                best = b
        return best

    @property
    def caseops(self) -> bool:
        text = " ".join(str(self.hparams.get(k, "")) for k in ("tokenizer_path", "datasets_dir", "data_dir"))
        text += " " + (self.tokenizer_path or "")
        return "caseops" in text.lower() or str(self.hparams.get("caseops_enabled", "")).lower() == "true"

    def to_dict(self, with_curves: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["evals"] = {k: v.to_dict() for k, v in self.evals.items()}
        d["fits"] = self.fits
        h = self.headline
        d["headline"] = None if h is None else h.to_dict()
        d["caseops"] = self.caseops
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


def _method_name(label: str, kv: dict[str, str], line: str) -> str:
    """Map an evaluation label (without _exact) to the evaluation kind it reports."""
    low = label.lower().replace(" ", "_")
    if "post_ema" in low or "post-ema" in low or "pre-quant" in low or "pre_quant" in low:
        return "pre_quant"
    if "slot" in low:
        return "slot"
    if "ttt" in low:
        if "phased" in low:
            return "ttt_phased"
        if "lora" in low:
            return "ttt_lora"
        return "ttt"
    if "sliding" in low:
        m = _STRIDE.search(line)
        stride = int(m.group(1)) if m else None
        if stride is None:
            m = re.search(r"_s(\d+)$", low)
            stride = int(m.group(1)) if m else None
        return f"sliding_s{stride}" if stride is not None else "sliding"
    if "roundtrip" in low or low in ("quantized", "diagnostic_quantized"):
        return "roundtrip"
    return low.removeprefix("final_")


def _score_first(name: str) -> bool | None:
    base = re.sub(r"_\d+$", "", name)
    if base in SCORE_FIRST:
        return SCORE_FIRST[base]
    if base.startswith("sliding"):
        return True
    return None  # an unknown evaluation: never counted as an honest score


def read_log_text(path: str | Path) -> str:
    """The text of a log file, refusing files that cannot be logs (too big, unreadable)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_LOG_BYTES:
            raise LogParseError(f"{p}: {size:,} bytes is too large for a training log")
        return p.read_text(errors="replace")
    except OSError as e:
        raise LogParseError(f"{p}: cannot read log ({e.strerror or e})") from None


def parse_seed_log(path: str | Path) -> SeedLog:
    p = Path(path)
    log = parse_seed_log_text(read_log_text(p), str(p))
    if log.seed is None:
        m = _SEED_FILE.search(p.name)
        if m:
            log.seed, log.seed_source = int(m.group(1)), "filename"
    return log


def parse_seed_log_text(text: str, path: str = "<log>") -> SeedLog:
    log = SeedLog(path=path)
    current: EvalBlock | None = None  # the evaluation block the next _exact line belongs to
    recognised = 0
    in_hparams = False
    total_qualified = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        raw = _STAMP.sub("", raw, count=1)
        if in_hparams:
            m = re.match(r"^\s+([A-Za-z_]\w*):\s?(.*)$", raw)
            if m:
                key, value = m.group(1), m.group(2).strip()
                if key in _HPARAMS_KEPT:
                    log.hparams[key] = value
                continue
            in_hparams = False
        if raw[:1].isspace():  # the script's own source (printed by many records) and indented detail
            continue
        line = raw.strip()
        if not line:
            continue
        kv = _kv(line)
        hit = True
        if line.startswith("Hyperparameters:"):
            in_hparams = True
            log.family = "april"
        elif line.startswith("seed:"):
            log.seed, log.seed_source = _int(kv.get("seed")), "log"
        elif line.startswith("logs/") and line.endswith(".txt"):
            log.run_id = Path(line).stem
        elif line.startswith("model_params:"):
            log.model_params = _int(kv.get("model_params"))
        elif line.startswith("world_size:"):
            log.world_size = _int(kv.get("world_size"))
            log.grad_accum_steps = _int(kv.get("grad_accum_steps"))
        elif line.startswith(("train_loader:", "train_shards:")):
            log.train_shards = _int(kv.get("train_shards"))
        elif line.startswith("val_loader:"):
            log.val_tokens = _int(kv.get("tokens"))
        elif line.startswith("val_tokens:"):
            log.val_tokens = _int(kv.get("val_tokens"))
        elif line.startswith("val_bpb:enabled"):
            log.tokenizer_path = kv.get("tokenizer_path")
            if log.family is None:
                log.family = "baseline"
        elif line.startswith("train_batch_tokens:"):
            log.iterations = _int(kv.get("iterations"))
            for k in ("train_seq_len", "max_wallclock_seconds"):
                if k in kv:
                    log.hparams.setdefault(k, kv[k])
        elif _STEP.match(line) and "val_loss" in kv:
            m = _STEP.match(line)
            log.val.append(
                {
                    "step": int(m.group(1)),
                    "val_loss": _num(kv.get("val_loss")),
                    "val_bpb": _num(kv.get("val_bpb")),
                    "train_time_ms": _ms(kv.get("train_time")),
                    "step_avg_ms": _ms(kv.get("step_avg")),
                }
            )
            log.iterations = log.iterations or int(m.group(2))
        elif _STEP.match(line) and "train_loss" in kv:
            m = _STEP.match(line)
            log.train.append(
                {
                    "step": int(m.group(1)),
                    "train_loss": _num(kv.get("train_loss")),
                    "train_time_ms": _ms(kv.get("train_time")),
                    "step_avg_ms": _ms(kv.get("step_avg")),
                }
            )
            log.iterations = log.iterations or int(m.group(2))
        elif line.startswith("swa:start"):
            log.swa_start_step = _int(kv.get("step"))
        elif line.startswith("late_qat:enabled"):
            log.late_qat_step = _int(kv.get("step"))
            log.late_qat_scale = _num(kv.get("scale"))
        elif line.startswith("stopping_early:"):
            log.stopped_early = True
            log.steps = _step(kv.get("step"))
            log.train_time_ms = _ms(kv.get("train_time"))
        elif line.startswith("peak memory allocated:"):
            m = _PEAK.search(line)
            if m:
                log.peak_mem_allocated_mib, log.peak_mem_reserved_mib = int(m.group(1)), int(m.group(2))
        elif line.startswith("total_eval_time:"):
            log.total_eval_time_ms = _ms(kv.get("total_eval_time"))
        elif line.startswith("Serialized model"):
            qualifier = line[len("Serialized model") : line.find(":")].strip()
            if qualifier:
                log.model_bytes = _bytes(line)
            else:
                log.serialized_model_bytes = _bytes(line)
        elif line.startswith("Total submission size"):
            # "Total submission size: N" is the raw torch.save + code in the baseline's family; the
            # qualified line ("... int8+zlib:", "... quantized+brotli:") is the artifact. Keep the last
            # qualified one; the plain one only if no qualified line exists.
            qualified = bool(line[len("Total submission size") : line.find(":")].strip())
            if qualified or not total_qualified:
                log.total_bytes = _bytes(line)
                total_qualified = total_qualified or qualified
        elif line.startswith("Code size"):
            if "(uncompressed)" in line:
                log.code_bytes_uncompressed = _bytes(line)
                log.code_bytes = log.code_bytes or log.code_bytes_uncompressed
            else:
                log.code_bytes = _bytes(line)
        elif line.startswith("device:") and "bf16_autocast:" in kv:  # pgolf's own header line
            log.family = "pgolf"
        elif line.startswith("budget:") and "/" in line:  # the ternary record's size line
            log.total_bytes = _int(kv.get("budget", "").split("/")[0])
        elif line.count("=") >= 8 and len(_EQ.findall(line)) >= 8:  # a one-line key=value hyper-parameter dump
            for k, v in _EQ.findall(line):
                if k in _HPARAMS_KEPT:
                    log.hparams[k] = v
        elif m := _EVAL.match(line):
            current = _eval_line(log, m, line, lineno, kv, current)
        else:
            hit = False
        recognised += hit

    if recognised == 0 or (log.seed is None and not log.evals and not log.val and not log.hparams):
        raise LogParseError(f"{path}: not a training log (no seed, step or final evaluation lines found)")
    _finish(log)
    return log


def _bytes(line: str) -> int | None:
    m = _BYTES.search(line)
    return int(m.group(1)) if m else None


def _eval_line(
    log: SeedLog, m: re.Match, line: str, lineno: int, kv: dict[str, str], current: EvalBlock | None
) -> EvalBlock | None:
    label = m.group("label").strip().rstrip(":").strip()
    loss, bpb = float(m.group(3)), float(m.group(4))
    words = label.split()
    exact = any(w.endswith("_exact") for w in words)
    stem = " ".join(w.removesuffix("_exact") for w in words)
    ms = _ms(kv.get("eval_time")) or _ms(kv.get("time"))
    name = _method_name(stem, kv, line)
    if name == "pre_quant":  # a diagnostic of the unquantised weights: kept apart, never a score
        log.post_ema = {"val_loss": loss, "val_bpb": bpb, "eval_time_ms": ms}
        return current

    if exact and current is not None:
        if stem == current.label and not current.exact:
            # The block's own exact line: full precision replaces the 4-decimal figures.
            current.val_loss, current.val_bpb, current.exact = loss, bpb, True
            current.eval_time_ms = current.eval_time_ms if ms is None else ms
            return current
        if stem != current.label and (loss, bpb) == (current.val_loss, current.val_bpb):
            # The same numbers again under another block's label, right after that block: the
            # mislabelled copy (the seed's SPEC §11.1 items 2-3; the March `final_int8_zlib_roundtrip_exact`
            # legacy line). Attribute it by context.
            log.mislabelled.append(
                {
                    "line": lineno,
                    "label": label,
                    "copy_of": current.name,
                    "values_match": True,
                    "val_loss": loss,
                    "val_bpb": bpb,
                }
            )
            return current
    key = name
    k = 2
    while key in log.evals:  # a second, different evaluation of the same kind
        key = f"{name}_{k}"
        k += 1
    block = EvalBlock(
        name=key,
        label=stem,
        line=lineno,
        val_loss=loss,
        val_bpb=bpb,
        exact=exact or len(m.group(4).split(".")[-1]) >= 6,
        eval_time_ms=ms,
        stride=_int(kv.get("stride")),
        steps=_int(kv.get("steps")),
        lr=_num(kv.get("lr")),
        score_first=_score_first(name),
    )
    log.evals[key] = block
    return block


def _finish(log: SeedLog) -> None:
    """Fill what the hyper-parameter block or the stop line leaves implicit."""
    hp = log.hparams
    if log.seed is None and "seed" in hp:
        log.seed, log.seed_source = _int(hp["seed"]), "hparams"
    for attr in ("world_size", "grad_accum_steps", "iterations", "vocab_size"):
        if getattr(log, attr) is None and attr in hp:
            setattr(log, attr, _int(hp[attr]))
    if log.tokenizer_path is None and hp.get("tokenizer_path"):
        log.tokenizer_path = hp["tokenizer_path"]
    if log.run_id is None and hp.get("run_id"):
        log.run_id = hp["run_id"]
    if log.family is None:
        log.family = "seed" if log.evals or log.val else None
    if log.family == "baseline" and any(m["label"] == "final_int6_roundtrip_exact" for m in log.mislabelled):
        log.family = "seed"
    last_val = log.val[-1] if log.val else None
    if log.steps is None:
        if last_val is not None:
            log.steps = last_val["step"]
        elif log.train:
            log.steps = log.train[-1]["step"]
    if log.train_time_ms is None:
        if last_val is not None and last_val["train_time_ms"] is not None:
            log.train_time_ms = last_val["train_time_ms"]
        elif log.train and log.train[-1]["train_time_ms"] is not None:
            log.train_time_ms = log.train[-1]["train_time_ms"]
    stop_val = next((v for v in reversed(log.val) if v["step"] == log.steps), None)
    if stop_val is not None and stop_val["step_avg_ms"] is not None:
        log.step_avg_ms = stop_val["step_avg_ms"]
    elif log.train_time_ms is not None and log.steps:
        log.step_avg_ms = log.train_time_ms / log.steps
    if log.total_bytes is None and log.model_bytes is not None and log.code_bytes is not None:
        log.total_bytes = log.model_bytes + log.code_bytes


# --------------------------------------------------------------------------- several logs
LOG_SUFFIXES = (".log", ".txt")
_NOT_LOGS = re.compile(r"^(requirements.*|readme.*|results.*|summary)\.(txt|log)$", re.IGNORECASE)


def expand_log_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a directory stands for the *.log / *.txt files under it (requirements.txt aside)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix in LOG_SUFFIXES and not _NOT_LOGS.match(f.name)
            )
            out += found
        else:
            out.append(p)
    return out


def parse_logs(paths: list[str | Path]) -> tuple[list[SeedLog], list[str]]:
    """Parse each file; a file that cannot be read or parsed becomes one error line, the others go on."""
    logs, errors = [], []
    for p in expand_log_paths(paths):
        try:
            logs.append(parse_seed_log(p))
        except LogParseError as e:
            errors.append(str(e))
    return logs, errors


def dedupe_logs(logs: list[SeedLog]) -> tuple[list[SeedLog], list[str]]:
    """Drop a log that repeats another's seed and every evaluation (a folder's train.log beside
    train_seedN.log is usually a copy of one of them); fold re-evaluation logs into their seed's
    training log (`merge_reevaluations`)."""
    logs, notes = merge_reevaluations(logs)
    kept: list[SeedLog] = []
    for lg in logs:
        sig = (lg.seed, tuple((k, b.val_bpb) for k, b in lg.evals.items()), lg.steps)
        twin = next(
            (k for k in kept if (k.seed, tuple((n, b.val_bpb) for n, b in k.evals.items()), k.steps) == sig), None
        )
        if twin is not None:
            notes.append(f"{lg.path}: same seed and numbers as {twin.path}; counted once")
            continue
        kept.append(lg)
    return kept, notes


def merge_reevaluations(logs: list[SeedLog]) -> tuple[list[SeedLog], list[str]]:
    """An evaluation-only log (no training lines) of a seed that also has a training log is a
    re-evaluation of that seed's artifact (2026-04-23_…: ttt_pr1767/seed_N.log): its evaluations
    replace the training log's; the training facts stay."""

    def trains(lg: SeedLog) -> bool:
        return bool(lg.train or lg.val or lg.stopped_early)

    out, notes = [], []
    for lg in logs:
        if trains(lg) or not lg.evals or lg.seed is None:
            out.append(lg)
            continue
        target = next((t for t in logs if t is not lg and t.seed == lg.seed and trains(t)), None)
        if target is None:
            out.append(lg)
            continue
        target.evals = {k: replace(b, source=lg.path) for k, b in lg.evals.items()}
        target.total_eval_time_ms = lg.total_eval_time_ms
        notes.append(f"{lg.path}: re-evaluation of seed {lg.seed}; its figures replace those of {target.path}")
    return out, notes


def headline_method(logs: list[SeedLog]) -> str | None:
    """The score-first kind the logs report as their figure: each log's last score-first
    evaluation, by majority (ties to the first log's)."""
    votes: dict[str, int] = {}
    for lg in logs:
        h = lg.headline
        if h is not None:
            votes[h.name] = votes.get(h.name, 0) + 1
    if not votes:
        return None
    return max(votes, key=lambda n: votes[n])


def aggregate_logs(logs: list[SeedLog]) -> dict[str, Any]:
    """Per-seed table plus mean / sample std / population std of each evaluation.

    `honest` names the record's own headline: the score-first evaluation each log
    prints last (see `headline_method`); `best` the score-first one with the lowest
    mean present in every log; two-pass SLOT figures are kept apart under `two_pass`.
    """
    if not logs:
        raise ReportError("no logs given")
    names: list[str] = []
    for lg in logs:
        names += [n for n in lg.evals if n not in names]
    # A log with no score-first figure at all (a training-only or diagnostic run beside the seeds)
    # does not make every method incomplete.
    scored = [lg for lg in logs if lg.headline is not None] or logs
    per_method: dict[str, dict] = {}
    for n in names:
        have = [lg for lg in logs if n in lg.evals and lg.evals[n].val_bpb is not None]
        per_method[n] = {
            "title": method_title(n),
            "score_first": _score_first(n),
            "complete": all(n in lg.evals for lg in scored),
            "val_bpb": describe([lg.evals[n].val_bpb for lg in have]),
            "val_loss": describe([lg.evals[n].val_loss for lg in have if lg.evals[n].val_loss is not None]),
            "seconds": describe(
                [lg.evals[n].eval_time_ms / 1000.0 for lg in have if lg.evals[n].eval_time_ms is not None]
            ),
        }
    complete = [n for n, m in per_method.items() if m["score_first"] and m["complete"]]
    best = min(complete, key=lambda n: per_method[n]["val_bpb"]["mean"]) if complete else None
    head = headline_method(logs)
    if head is not None and head not in complete:
        head = best
    two_pass = {n: m for n, m in per_method.items() if m["score_first"] is False}

    def col(attr: str) -> dict:
        return describe([getattr(lg, attr) for lg in logs if getattr(lg, attr) is not None])

    def summary(n: str | None) -> dict | None:
        if n is None:
            return None
        return {
            "method": n,
            "title": method_title(n),
            "val_bpb": per_method[n]["val_bpb"],
            "val_loss": per_method[n]["val_loss"],
            "seconds": per_method[n]["seconds"],
        }

    warnings = []
    for lg in logs:
        if lg.mislabelled:
            copies = ", ".join(m["copy_of"] or "unknown" for m in lg.mislabelled)
            warnings.append(
                f"{lg.path}: {len(lg.mislabelled)} mislabelled "
                f"'{lg.mislabelled[0]['label']}' line(s) are copies of: {copies}; "
                "each figure is taken from its own block"
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
        "honest": summary(head),
        "best": summary(best),
        "two_pass": two_pass,
        "all_fit": all(lg.fits for lg in logs if lg.fits is not None),
        "mislabelled_lines": sum(len(lg.mislabelled) for lg in logs),
        "warnings": warnings,
    }
