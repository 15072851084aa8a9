"""`pgolf check FOLDER`: what a reviewer checks in a record folder, pgolf's or anyone's.

Each check gives findings, one line each, with the evidence (file and line where a
log gives it):

    files        README.md, submission.json, train_gpt.py and at least one training log
    submission   submission.json's fields, and their agreement with the logs
    bytes        artifact bytes <= 16,000,000 per seed (tokenizer files' bytes beside)
    time         training <= 600 s and evaluation <= 600 s per seed, from the logs
    seeds        the number of seeds (3 is what records are asked for)
    significance with --against: one-sided Welch test, the README's rule (>= 0.005 nats
                 at p < 0.01) and the p < 0.25 progression rule used at the end
    val_tokens   the validation target count against the official split's for the tokenizer;
                 1,499 training shards is the CaseOps val-leak fingerprint (FRONTIER F1.5)
    methods      evaluations known not to be score-first (SLOT, two-pass) named in the logs
    compliance   pgolf's folders only: submission.json's own statements (whole validation split,
                 8xH100 timing, score-first)

FAIL is a rule broken (exit status 1); WARN is something a reviewer would ask
about; PASS and INFO are for the record.

pgolf's own folders (written by `pgolf submission`): pgolf's train.log holds the
training lines only (seed, data, steps, stop time); the artifact bytes, evaluation
figures and evaluation times live in the run's export.json and eval/*.json, which
`pgolf submission` copies into submission.json's `seed_results`. For those folders
check takes bytes and evaluation from `seed_results` (and says so on each line) and
training time and validation tokens from the logs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgolf.report import LIMIT_BYTES, ReportError
from pgolf.report.seedlog import SeedLog, dedupe_logs, parse_logs
from pgolf.report.stats import challenge_significance, mean

TRAIN_CAP_S = 600.0
EVAL_CAP_S = 600.0
# The training loop checks the clock after a step, so a compliant run stops just past 600 s:
# the largest stop time on the main branch's 10-minute track is 600.128 s. Half a second
# covers every record; a 601 s run is over.
TRAIN_TOLERANCE_S = 0.5

# Official validation target counts (first 50,000 documents of FineWeb's val split), by tokenizer,
# after truncation to whole 2048-token sequences. sp1024: the baseline's dataset (SPEC §2);
# sp8192: PR #1394 and every sp8192 record after it; sp8192 CaseOps: FRONTIER F1.1 (PR #1855).
OFFICIAL_VAL_TARGETS = {
    "sp1024": 62_021_632,
    "sp8192": 40_540_160,
    "sp8192-caseops": 47_851_520,
}
CASEOPS_LEAK_SHARDS = 1_499

# submission.json fields the baseline writes (BEYOND §6.2); the first three are required.
REQUIRED_FIELDS = ("name", "github_id", "val_bpb")
BASELINE_FIELDS = ("author", "blurb", "date", "val_loss", "bytes_total", "bytes_code")
TOKENIZER_SUFFIXES = (".model", ".vocab")


@dataclass
class Finding:
    status: str  # PASS | FAIL | WARN | INFO
    check: str
    message: str
    evidence: str = ""

    def line(self) -> str:
        ev = f"  [{self.evidence}]" if self.evidence else ""
        return f"{self.status:<4}  {self.check:<12}  {self.message}{ev}"


def _where(lg: SeedLog, line: int | None = None) -> str:
    return f"{Path(lg.path).name}:{line}" if line else Path(lg.path).name


def _at(lg: SeedLog, block) -> str:
    """file:line of an evaluation block (the re-evaluation log it came from, if any)."""
    if block is None:
        return _where(lg)
    return f"{Path(block.source or lg.path).name}:{block.line}"


def _fmt_s(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000.0:.1f} s"


def tokenizer_key(lg: SeedLog) -> str | None:
    """'sp1024' | 'sp8192' | 'sp8192-caseops' | 'spN' from the log's tokenizer path or vocab size."""
    vocab = lg.vocab_size
    path = lg.tokenizer_path or lg.hparams.get("tokenizer_path") or ""
    m = re.search(r"_(\d+)_bpe", path)
    if m:
        vocab = int(m.group(1))
    if vocab is None:
        return None
    return f"sp{vocab}" + ("-caseops" if lg.caseops else "")


def readme_mentions(text: str, value: float, min_decimals: int = 4) -> str | None:
    """The first number in `text` with >= min_decimals decimals within one unit of its last digit of
    `value`, or None (a README that averages rounded per-seed figures can be one unit off)."""
    pattern = r"(?<![\d.])(\d+\.(\d{" + str(min_decimals) + r",}))(?![\d.])"
    for m in re.finditer(pattern, text):
        d = len(m.group(2))
        if abs(float(m.group(1)) - value) <= 10.0**-d + 1e-12:
            return m.group(1)
    return None


# --------------------------------------------------------------------------- reading a folder
@dataclass
class Folder:
    path: Path
    logs: list[SeedLog]
    log_errors: list[str]
    dedupe_notes: list[str]
    submission: dict | None
    submission_name: str | None
    submission_error: str | None
    readme: str | None
    pgolf: bool


def read_folder(folder: str | Path) -> Folder:
    p = Path(folder)
    if not p.is_dir():
        raise ReportError(f"{p}: not a folder")
    logs, errors = parse_logs([p])
    logs, notes = dedupe_logs(logs)
    sub, sub_name, sub_err = None, None, None
    for cand in [p / "submission.json", *sorted(p.glob("*submission*.json"))]:
        if cand.is_file():
            sub_name = cand.name
            try:
                if cand.stat().st_size > 1_000_000:
                    raise ValueError("larger than 1 MB")
                sub = json.loads(cand.read_text())
                if not isinstance(sub, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                sub, sub_err = None, f"{cand.name}: not readable JSON ({e})"
            break
    readme = None
    if (p / "README.md").is_file():
        with open(p / "README.md", encoding="utf-8", errors="replace") as fh:
            readme = fh.read(1_000_000)  # a README is text; never read an arbitrary file whole
    is_pgolf = bool(sub and isinstance(sub.get("eval_method"), dict) and isinstance(sub.get("seed_results"), dict))
    is_pgolf = is_pgolf or any(lg.family == "pgolf" for lg in logs)
    return Folder(p, logs, errors, notes, sub, sub_name, sub_err, readme, is_pgolf)


def _seed_result(f: Folder, lg: SeedLog) -> dict:
    """pgolf's per-seed figures from submission.json (bytes, evaluation), {} for other folders."""
    if not f.pgolf or not f.submission:
        return {}
    res = f.submission.get("seed_results") or {}
    r = res.get(str(lg.seed))
    return r if isinstance(r, dict) else {}


def _headline(f: Folder, lg: SeedLog) -> tuple[float | None, float | None, str, float | None]:
    """(val_bpb, val_loss, method, eval seconds) of one seed's score-first figure."""
    h = lg.headline
    if h is not None:
        # `total_eval_time:` (April logs) times the whole reported evaluation; older logs time each block.
        ms = lg.total_eval_time_ms if lg.total_eval_time_ms is not None else h.eval_time_ms
        return h.val_bpb, h.val_loss, h.name, None if ms is None else ms / 1000.0
    r = _seed_result(f, lg)
    if r.get("val_bpb") is not None:
        method = ((f.submission or {}).get("eval_method") or {}).get("name", "?")
        return r.get("val_bpb"), r.get("val_loss"), f"{method} (submission.json)", r.get("eval_seconds")
    return None, None, "—", None


# --------------------------------------------------------------------------- checks
def check_files(f: Folder) -> list[Finding]:
    out = []
    for name, why in (
        ("README.md", "the explanation the challenge asks for"),
        ("train_gpt.py", "the counted code, runnable from the folder"),
    ):
        if (f.path / name).is_file():
            out.append(Finding("PASS", "files", f"{name} present", name))
        else:
            out.append(Finding("FAIL", "files", f"{name} missing ({why})"))
    if f.submission_name == "submission.json" and f.submission is not None:
        out.append(Finding("PASS", "files", "submission.json present", "submission.json"))
    elif f.submission_error:
        out.append(Finding("FAIL", "files", f.submission_error))
    elif f.submission_name:
        out.append(Finding("WARN", "files", f"metadata is in {f.submission_name}, not submission.json"))
    else:
        out.append(Finding("FAIL", "files", "submission.json missing"))
    if f.logs:
        names = ", ".join(Path(lg.path).name for lg in f.logs)
        out.append(Finding("PASS", "files", f"{len(f.logs)} training log(s) read: {names}"))
    else:
        out.append(Finding("FAIL", "files", "no training log could be read (*.log / *.txt)"))
    for e in f.log_errors:
        out.append(Finding("INFO", "files", f"skipped: {e}"))
    for n in f.dedupe_notes:
        out.append(Finding("INFO", "files", n))
    return out


def check_submission(f: Folder) -> list[Finding]:
    sub = f.submission
    if sub is None:
        return []
    out = []
    name = f.submission_name or "submission.json"
    missing = [k for k in REQUIRED_FIELDS if sub.get(k) in (None, "")]
    if missing:
        out.append(Finding("FAIL", "submission", f"{name} lacks required field(s): {', '.join(missing)}", name))
    thin = [k for k in BASELINE_FIELDS if k not in sub]
    if thin:
        out.append(Finding("WARN", "submission", f"{name} lacks baseline field(s): {', '.join(thin)}", name))
    if not missing and not thin:
        out.append(Finding("PASS", "submission", f"{name} has every baseline field", name))
    field_name = "val_bpb" if isinstance(sub.get("val_bpb"), (int, float)) else "mean_val_bpb"
    claimed = sub.get(field_name)
    if not isinstance(claimed, (int, float)) or not f.logs:
        return out
    if field_name != "val_bpb":
        out.append(Finding("INFO", "submission", f"the claimed score is in {field_name}: {claimed}", name))
    vals = [h[0] for lg in f.logs if (h := _headline(f, lg))[0] is not None]
    out.append(_claim(f, name, field_name, float(claimed), vals))
    # per-seed results, when submission.json lists them
    res = sub.get("seed_results")
    if isinstance(res, dict):
        logged: dict[str, list[SeedLog]] = {}
        for lg in f.logs:
            logged.setdefault(str(lg.seed), []).append(lg)
        for seed, r in res.items():
            if not isinstance(r, dict) or not isinstance(r.get("val_bpb"), (int, float)):
                continue
            cands = logged.get(seed)
            stated = r.get("bytes_total", r.get("artifact_bytes"))
            sizes = [lg.total_bytes for lg in cands or [] if lg.total_bytes is not None]
            if isinstance(stated, int) and sizes and stated not in sizes:
                msg = f"seed {seed}: seed_results states {stated:,} artifact bytes, its log {sizes[0]:,}"
                if any(lg.model_bytes == stated for lg in cands):
                    msg += " (the stated figure is the compressed model alone, without the code)"
                out.append(Finding("WARN", "submission", msg, Path(cands[0].path).name))
            if not cands:
                out.append(Finding("WARN", "submission", f"seed_results lists seed {seed} but no log has it", name))
                continue
            v = float(r["val_bpb"])
            if any((h := _headline(f, lg))[0] is not None and _close(v, h[0]) for lg in cands):
                continue
            lg = cands[0]
            h = _headline(f, lg)
            hit = [(lg, b) for lg in cands for b in lg.evals.values() if b.val_bpb is not None and _close(v, b.val_bpb)]
            if hit and hit[0][1].score_first is not True:
                lg, block = hit[0]
                msg = f"seed {seed}: seed_results val_bpb {v} is its {block.name} figure, not score-first"
                out.append(Finding("FAIL", "submission", msg, _at(lg, block)))
            elif hit:
                lg, block = hit[0]
                msg = f"seed {seed}: seed_results val_bpb {v} is its {block.name} figure; the log's {h[2]} is {h[0]}"
                out.append(Finding("WARN", "submission", msg, _at(lg, block)))
            else:
                shown = ", ".join(f"{Path(x.path).name}: {_headline(f, x)[0]}" for x in cands)
                msg = f"seed {seed}: seed_results val_bpb {v} is in no evaluation of its log(s) ({shown})"
                out.append(Finding("FAIL", "submission", msg, Path(lg.path).name))
    bt = sub.get("bytes_total")
    logged_bytes = [lg.total_bytes for lg in f.logs if lg.total_bytes is not None]
    if isinstance(bt, int) and logged_bytes and bt not in logged_bytes and bt < max(logged_bytes):
        out.append(
            Finding(
                "WARN",
                "submission",
                f"bytes_total {bt:,} is below the largest logged artifact {max(logged_bytes):,}",
                name,
            )
        )
    return out


def _close(claimed: float, x: float) -> bool:
    """Equal at the precision `claimed` is written with (0.8637 matches 0.86370865)."""
    text = repr(float(claimed))
    d = len(text.split(".")[1]) if "." in text and "e" not in text else 8
    # One unit of the last digit: a mean of per-seed figures rounded first can be one unit off.
    return abs(claimed - x) <= max(10.0**-d + 1e-12, 1e-8)


def _claim(f: Folder, name: str, field_name: str, claimed: float, vals: list[float]) -> Finding:
    """How the claimed score relates to the logs: their score-first mean, one seed's, or something else."""
    if vals and _close(claimed, mean(vals)):
        return Finding(
            "PASS", "submission", f"{field_name} {claimed} = the seeds' score-first mean {mean(vals):.8f}", name
        )
    res = (f.submission or {}).get("seed_results")
    per = [r.get("val_bpb") for r in res.values() if isinstance(r, dict)] if isinstance(res, dict) else []
    if len(per) >= 2 and all(isinstance(v, (int, float)) for v in per) and _close(claimed, mean(per)):
        found = [v for v in per if any((h := _headline(f, lg))[0] is not None and _close(v, h[0]) for lg in f.logs)]
        if len(found) == len(per):
            return Finding(
                "PASS",
                "submission",
                f"{field_name} {claimed} = the mean of seed_results ({len(per)} seeds), each a log's score-first "
                "figure (the folder holds more logs than it claims)",
                name,
            )
    lg = next((lg for lg in f.logs if (h := _headline(f, lg))[0] is not None and _close(claimed, h[0])), None)
    if lg is not None:
        return Finding(
            "WARN",
            "submission",
            f"{field_name} {claimed} is one seed's figure (seed {lg.seed}), not the mean of {len(vals)} seeds "
            f"({mean(vals):.8f})",
            _at(lg, lg.headline),
        )
    names = sorted({n for lg in f.logs for n in lg.evals})
    for n in names:
        blocks = [lg.evals[n] for lg in f.logs if n in lg.evals and lg.evals[n].val_bpb is not None]
        xs = [b.val_bpb for b in blocks]
        if xs and (_close(claimed, mean(xs)) or any(_close(claimed, x) for x in xs)):
            b = blocks[0]
            first = f"{mean(vals):.8f}" if vals else "absent"
            where = f"{name}; {_at(f.logs[0], b)}"
            if b.score_first is not True:
                msg = (
                    f"{field_name} {claimed} is the {n} figure ({mean(xs):.8f}), an evaluation that is not "
                    f"score-first; the score-first figure is {first}"
                )
                return Finding("FAIL", "submission", msg, where)
            msg = f"{field_name} {claimed} is the {n} figure, not the logs' last score-first one ({first})"
            return Finding("WARN", "submission", msg, where)
    first = f"{mean(vals):.8f}" if vals else "absent"
    return Finding(
        "FAIL",
        "submission",
        f"{field_name} {claimed} matches no evaluation in the logs (score-first mean {first})",
        name,
    )


def check_bytes(f: Folder) -> list[Finding]:
    out = []
    for lg in f.logs:
        total, src = lg.total_bytes, _where(lg)
        if total is None and _seed_result(f, lg).get("bytes_total") is not None:
            total, src = int(_seed_result(f, lg)["bytes_total"]), f"submission.json seed_results[{lg.seed}]"
            src += "; pgolf's train.log holds training only"
        if total is None:
            out.append(Finding("WARN", "bytes", f"seed {lg.seed}: no artifact size in the log", src))
        elif total > LIMIT_BYTES:
            out.append(Finding("FAIL", "bytes", f"seed {lg.seed}: artifact {total:,} bytes > {LIMIT_BYTES:,}", src))
        else:
            code = f" (code {lg.code_bytes:,})" if lg.code_bytes else ""
            out.append(
                Finding("PASS", "bytes", f"seed {lg.seed}: artifact {total:,} bytes{code} <= {LIMIT_BYTES:,}", src)
            )
    toks = sorted(
        q for q in f.path.rglob("*") if q.is_file() and (q.suffix in TOKENIZER_SUFFIXES or "tokenizer" in q.name)
    )
    toks = [q for q in toks if q.suffix != ".py"]
    if toks:
        tb = sum(q.stat().st_size for q in toks)
        worst = max((lg.total_bytes or 0) for lg in f.logs) if f.logs else 0
        names = ", ".join(str(q.relative_to(f.path)) for q in toks)
        with_tok = worst + tb
        status = "WARN" if worst and with_tok > LIMIT_BYTES else "INFO"
        out.append(
            Finding(
                status,
                "bytes",
                f"tokenizer files beside the code: {tb:,} bytes ({names}); not counted by the records; "
                f"largest artifact with them: {with_tok:,} bytes",
            )
        )
    return out


def check_time(f: Folder) -> list[Finding]:
    out = []
    for lg in f.logs:
        t = lg.train_time_ms
        if t is None:
            out.append(Finding("WARN", "time", f"seed {lg.seed}: no training time in the log", _where(lg)))
        elif t / 1000.0 > TRAIN_CAP_S + TRAIN_TOLERANCE_S:
            out.append(
                Finding("FAIL", "time", f"seed {lg.seed}: training {t / 1000:.1f} s > {TRAIN_CAP_S:.0f} s", _where(lg))
            )
        else:
            out.append(Finding("PASS", "time", f"seed {lg.seed}: training {t / 1000:.1f} s", _where(lg)))
        bpb, _, method, secs = _headline(f, lg)
        src = _at(lg, lg.headline)
        if lg.headline is None and secs is not None:
            src = f"submission.json seed_results[{lg.seed}]"
        if secs is None:
            out.append(Finding("WARN", "time", f"seed {lg.seed}: no evaluation time for {method}", src))
        elif secs > EVAL_CAP_S:
            out.append(Finding("FAIL", "time", f"seed {lg.seed}: evaluation ({method}) {secs:.1f} s > 600 s", src))
        else:
            out.append(Finding("PASS", "time", f"seed {lg.seed}: evaluation ({method}) {secs:.1f} s", src))
        every = sum(b.eval_time_ms or 0.0 for b in lg.evals.values()) / 1000.0
        if every > EVAL_CAP_S and (secs or 0) <= EVAL_CAP_S:
            out.append(
                Finding(
                    "INFO",
                    "time",
                    f"seed {lg.seed}: all final evaluations together take {every:.1f} s (only the reported one is "
                    "timed by the records)",
                    _where(lg),
                )
            )
    return out


def check_seeds(f: Folder) -> list[Finding]:
    seeds = [lg.seed for lg in f.logs]
    if not seeds:
        return []
    distinct = sorted({s for s in seeds if s is not None})
    out = []
    if len(distinct) != len(seeds):
        out.append(Finding("WARN", "seeds", f"seeds repeat or are missing across the logs: {seeds}"))
    if len(distinct) < 3:
        out.append(
            Finding(
                "WARN",
                "seeds",
                f"{len(distinct)} seed(s) {distinct}: records are asked for 3 (README: enough runs to show p < 0.01)",
            )
        )
    else:
        out.append(Finding("PASS", "seeds", f"{len(distinct)} seeds: {distinct}"))
    return out


def check_val_tokens(f: Folder) -> list[Finding]:
    out = []
    for lg in f.logs:
        key = tokenizer_key(lg)
        official = OFFICIAL_VAL_TARGETS.get(key or "")
        n = lg.val_tokens
        if lg.train_shards == CASEOPS_LEAK_SHARDS:
            out.append(
                Finding(
                    "FAIL",
                    "val_tokens",
                    f"seed {lg.seed}: {CASEOPS_LEAK_SHARDS:,} training shards: the CaseOps leak fingerprint (the whole "
                    "document file converted, validation documents among the training shards)",
                    _where(lg),
                )
            )
        if n is None:
            out.append(
                Finding("WARN", "val_tokens", f"seed {lg.seed}: no validation token count in the log", _where(lg))
            )
            continue
        if official is None:
            out.append(
                Finding(
                    "INFO",
                    "val_tokens",
                    f"seed {lg.seed}: {n:,} validation targets; no official count known for tokenizer {key or '?'}",
                    _where(lg),
                )
            )
            continue
        lens = [int(v) for k in ("train_seq_len", "eval_seq_len") if str(v := lg.hparams.get(k, "")).isdigit()]
        seq = max([2048, *lens])
        if n == official:
            out.append(
                Finding(
                    "PASS",
                    "val_tokens",
                    f"seed {lg.seed}: {n:,} validation targets = the official {key} split",
                    _where(lg),
                )
            )
        elif official - seq < n < official:
            out.append(
                Finding(
                    "WARN",
                    "val_tokens",
                    f"seed {lg.seed}: {n:,} validation targets: the official {official:,} cut to whole {seq}-token "
                    "sequences?",
                    _where(lg),
                )
            )
        else:
            out.append(
                Finding(
                    "FAIL",
                    "val_tokens",
                    f"seed {lg.seed}: {n:,} validation targets, the official {key} split has {official:,}",
                    _where(lg),
                )
            )
    return out


_NOT_SCORE_FIRST_HP = re.compile(r"slot|two_pass|rescore", re.IGNORECASE)


def check_methods(f: Folder) -> list[Finding]:
    out = []
    for lg in f.logs:
        for b in lg.evals.values():
            if b.score_first is False:
                out.append(
                    Finding(
                        "WARN",
                        "methods",
                        f"seed {lg.seed}: {b.label} = {b.val_bpb} bpb is {b.name.upper()}, two-pass, not score-first "
                        "(issue #1017's conditions; pgolf's docs/evaluation.md): not a valid score",
                        _at(lg, b),
                    )
                )
        for k, v in lg.hparams.items():
            if _NOT_SCORE_FIRST_HP.search(k) and str(v).lower() not in ("0", "false", "none", ""):
                out.append(Finding("WARN", "methods", f"seed {lg.seed}: hyper-parameter {k}: {v}", _where(lg)))
    if not out and f.logs:
        out.append(Finding("PASS", "methods", "no SLOT or two-pass evaluation named in the logs"))
    return out


def reference_losses(spec: str) -> tuple[list[float] | float, set[int], str]:
    """--against: a val_loss in nats, or a record folder (its logs' score-first figures).

    Returns (values in nats, the reference's logged validation target counts, description)."""
    try:
        v = float(spec)
    except ValueError:
        pass
    else:
        if not math.isfinite(v) or v <= 0:
            raise ReportError(f"--against {spec}: a published val_loss must be a positive number of nats")
        return v, set(), f"published val_loss {v:.5f} nats"
    p = Path(spec)
    if not p.is_dir():
        raise ReportError(f"--against {spec}: neither a number (val_loss in nats) nor a record folder")
    ref = read_folder(p)
    losses = [h[1] for lg in ref.logs if (h := _headline(ref, lg))[1] is not None]
    if not losses:
        raise ReportError(f"--against {spec}: no score-first val_loss in the folder's logs")
    counts = {lg.val_tokens for lg in ref.logs if lg.val_tokens is not None}
    return losses, counts, f"{len(losses)} seed(s) of {p.name}"


def check_significance(f: Folder, against: str | None) -> list[Finding]:
    if not against:
        return []
    ref, ref_counts, desc = reference_losses(against)
    new = [h[1] for lg in f.logs if (h := _headline(f, lg))[1] is not None]
    if not new:
        return [Finding("FAIL", "significance", "no score-first val_loss in the logs to test")]
    out = []
    counts = {lg.val_tokens for lg in f.logs if lg.val_tokens is not None}
    if counts and ref_counts and counts != ref_counts:
        # nats per token depend on the tokenizer: the nat rule compares like with like only on one split
        out.append(
            Finding(
                "WARN",
                "significance",
                f"the two sides score different token streams ({sorted(counts)} vs {sorted(ref_counts)} targets): "
                "their val_loss (nats per token) are not comparable; compare bpb",
            )
        )
    rule = challenge_significance(new, ref)  # >= 0.005 nats at p < 0.01
    prog = challenge_significance(new, ref, margin=0.0, alpha=0.25)  # beat the predecessor at p < 0.25

    def txt(s) -> str:
        p = "—" if s.p is None else f"{s.p:.3g}"
        t = "—" if s.t is None else f"{s.t:.2f}"
        return f"{s.test} t = {t}, one-sided p = {p}"

    head = (
        f"against {desc}: new mean {rule.mean_new:.6f}, reference {rule.mean_ref:.6f} nats, "
        f"improvement {rule.delta:+.6f}"
    )
    out.append(Finding("INFO", "significance", head))
    out.append(
        Finding(
            "PASS" if rule.passes else "WARN",
            "significance",
            f"README rule (>= {rule.margin} nats at p < {rule.alpha}): {'met' if rule.passes else 'not met'}; "
            f"{txt(rule)}" + (f" ({rule.note})" if rule.p is None else ""),
        )
    )
    out.append(
        Finding(
            "PASS" if prog.passes else "FAIL",
            "significance",
            f"progression rule (better at p < {prog.alpha}, used for the final leaderboard): "
            f"{'met' if prog.passes else 'not met'}; {txt(prog)}" + (f" ({prog.note})" if prog.p is None else ""),
        )
    )
    return out


def check_pgolf_compliance(f: Folder) -> list[Finding]:
    """What pgolf's own submission.json states about the run (its `compliance` block)."""
    comp = (f.submission or {}).get("compliance")
    if not f.pgolf or not isinstance(comp, dict):
        return []
    out = []
    name = f.submission_name or "submission.json"
    if comp.get("full_validation_set") is False:
        out.append(
            Finding("FAIL", "compliance", "the reported evaluation scored only part of the validation split", name)
        )
    elif comp.get("full_validation_set") is True:
        out.append(Finding("PASS", "compliance", "the reported evaluation scored the whole validation split", name))
    if comp.get("timed_on_8xH100") is False:
        hw = (f.submission or {}).get("hardware", "?")
        out.append(
            Finding(
                "WARN",
                "compliance",
                f"timed on {hw}, not 8xH100: the 600 s caps are shown for this hardware only",
                name,
            )
        )
    tp = (f.submission or {}).get("two_pass_slot")
    if isinstance(tp, dict):
        msg = f"a two-pass {tp.get('method', 'SLOT')} figure ({tp.get('val_bpb')} bpb) is kept apart, not claimed"
        out.append(Finding("INFO", "compliance", msg, f"{name}: two_pass_slot"))
    if comp.get("score_first") is not True:
        out.append(Finding("FAIL", "compliance", "compliance.score_first is not true", name))
    return out


def run_checks(folder: str | Path, against: str | None = None) -> dict[str, Any]:
    f = read_folder(folder)
    findings: list[Finding] = []
    checks = (check_files, check_submission, check_bytes, check_time, check_seeds, check_val_tokens, check_methods)
    for fn in (*checks, check_pgolf_compliance):
        findings += fn(f)
    findings += check_significance(f, against)
    if f.pgolf:
        findings.insert(
            0,
            Finding(
                "INFO",
                "folder",
                "written by pgolf: artifact bytes and evaluation figures are read from submission.json's "
                "seed_results (pgolf's train.log holds training only)",
            ),
        )
    per_seed = []
    for lg in f.logs:
        bpb, loss, method, secs = _headline(f, lg)
        per_seed.append(
            {
                "log": lg.path,
                "seed": lg.seed,
                "method": method,
                "val_bpb": bpb,
                "val_loss": loss,
                "eval_seconds": secs,
                "train_seconds": None if lg.train_time_ms is None else lg.train_time_ms / 1000.0,
                "total_bytes": lg.total_bytes or _seed_result(f, lg).get("bytes_total"),
                "val_tokens": lg.val_tokens,
                "train_shards": lg.train_shards,
                "tokenizer": tokenizer_key(lg),
            }
        )
    return {
        "folder": str(f.path),
        "pgolf_folder": f.pgolf,
        "ok": not any(x.status == "FAIL" for x in findings),
        "failures": sum(x.status == "FAIL" for x in findings),
        "warnings": sum(x.status == "WARN" for x in findings),
        "per_seed": per_seed,
        "findings": [asdict(x) for x in findings],
    }


def format_findings(result: dict) -> str:
    lines = [Finding(**d).line() for d in result["findings"]]
    verdict = "no rule broken" if result["ok"] else f"{result['failures']} rule(s) broken"
    lines.append(f"{result['folder']}: {verdict}, {result['warnings']} warning(s)")
    return "\n".join(lines)
