"""Decide from behaviour whether an evaluation method meets the four conditions (FRONTIER F7).

- C1 causal: the perturbation test below, in the method's own scoring order.
- C2 normalised: at sampled targets the full distribution the method scores with sums to 1
  (1e-6, float64) and -log p(y) is the NLL it accumulated (pgolf.eval.probe).
- C3 score before update: every token an update step read (TTT/LoRA steps, SLOT fits,
  n-gram statistics) had been scored when the step ran (pgolf.eval.ledger, filled by the method).
- C4 single pass: every target scored exactly once (ledger) and the totals count each once.

C1 in detail:

A method is score-first (issue #1017's conditions 1 and 3) when the probability it
assigns to target t depends only on the artifact and the tokens before t. So: score a
short stream once, then again with the target at position p replaced by another id, for
a few positions p; in a score-first method the NLL of every target before p is
unchanged. Any change beyond `tolerance` proves that some earlier target's score used
the replaced token, i.e. the token was seen before (or while) that target was scored.

Two-pass SLOT is caught because the delta/bias that score a window's earlier targets
were fitted on the replaced target too.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from pgolf.config import Config
from pgolf.data.bpb import ByteTables
from pgolf.errors import ConfigError, DataError
from pgolf.eval.api import canonical_method, evaluate, is_score_first, method_params
from pgolf.eval.common import SCORE_FIRST
from pgolf.eval.ledger import ScoreLedger
from pgolf.eval.probe import Probe

DEFAULT_POSITIONS = 3
DEFAULT_TOLERANCE = 1e-6  # nats, absolute; causal methods change nothing before p (measured: exactly 0)


def audit_config(cfg: Config, method: str, n_targets: int) -> Config:
    """Cheaper settings of the same algorithm: fewer SLOT steps, one TTT epoch, small TTT chunks.

    None of these changes what a target's score may depend on, so the verdict is that of
    the full-size method; only its cost shrinks.
    """
    out = copy.deepcopy(cfg)
    e = out.eval
    e.slot_steps = min(e.slot_steps, 4) if e.slot_steps > 0 else 4
    e.causal_steps = min(e.causal_steps, 4) if e.causal_steps > 0 else 4
    e.ttt_epochs = 1
    if method == "slot-causal":
        # A batch fits every window at once, and window i's context is window i-1's scored run, which the
        # ledger sees scored only after the batch; one window per batch makes the recorded order the logical
        # one (the numbers do not depend on the batching: tests/test_eval_methods.py).
        e.slot_batch_seqs = 1
    # Several chunks inside the short stream, so that TTT really trains between scoring them.
    stride = max(1, e.stride)
    e.ttt_chunk_tokens = max(stride, (n_targets // 4) // stride * stride)
    return out


# Positions are offset from the even grid by this odd number so that they do not sit at
# the start of a window's scored run for the usual strides (multiples of 32, 96): a
# replaced target at the start of a run has no earlier target in its window that a
# two-pass method could leak it into.
OFFSET = 17


def audit_positions(n_targets: int, k: int) -> list[int]:
    """k target positions spread evenly over the stream (never the first)."""
    if k < 1:
        raise ConfigError(f"--positions must be >= 1, got {k}")
    ps = {min(n_targets - 1, (n_targets * (i + 1)) // (k + 1) + OFFSET) for i in range(k)}
    return sorted(p for p in ps if p >= 1)


def replacement(orig: int, p: int, vocab: int) -> int:
    """A deterministic id different from `orig`."""
    return (orig + 1 + (p * 7919) % (vocab - 1)) % vocab


CONDITIONS = ("C1", "C2", "C3", "C4")
C2_SAMPLES = 12


def c2_targets(n_targets: int, k: int = C2_SAMPLES) -> np.ndarray:
    """k sampled targets spread over the stream (first and last included)."""
    return np.unique(np.linspace(0, n_targets - 1, k).round().astype(np.int64))


def audit(
    model,
    method: str,
    tokens: np.ndarray,
    tables: ByteTables,
    cfg: Config,
    device: torch.device | str,
    n_targets: int | None = None,
    positions: int = DEFAULT_POSITIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    small: bool = True,
    at: list[int] | None = None,
) -> dict:
    """Measure C1-C4 for `method` on the first `n_targets` targets of `tokens`.

    `at`: replace these targets for C1 instead of `positions` evenly spread ones (e.g. inside a
    document that is scored late, to expose a dependence across documents).

    Returns a dict with method, conditions {C1..C4: {pass, evidence...}}, all_pass, label
    (claimed score-first), caught (claimed but some condition fails), and the C1 details
    (score_first = C1 measured, max_change, positions, details) as before.
    """
    method = canonical_method(method)
    if n_targets is None:
        n_targets = 2 * cfg.eval_seq_len
    if n_targets < 2:
        raise ConfigError(f"--tokens must be >= 2, got {n_targets}")
    tokens = np.asarray(tokens)
    if len(tokens) < n_targets + 1:
        raise DataError(f"the audit needs {n_targets + 1} validation tokens; the split has {len(tokens)}")
    stream = np.array(tokens[: n_targets + 1], dtype=np.uint16)
    run_cfg = audit_config(cfg, method, n_targets) if small else cfg
    vocab = int(model.config.vocab_size)

    def score(s: np.ndarray, probe: Probe | None = None):
        led = ScoreLedger(n_targets)
        res, _ = evaluate(model, method, s, tables, run_cfg, device, max_tokens=n_targets, ledger=led, probe=probe)
        return res, led

    probe = Probe(c2_targets(n_targets))
    base_res, base = score(stream, probe)
    details = []
    if at is not None and any(not 1 <= int(p) < n_targets for p in at):
        raise ConfigError(f"audit positions must be targets 1..{n_targets - 1}, got {list(at)}")
    from pgolf.cliutil import progress_iter

    chosen = sorted({int(p) for p in at}) if at is not None else audit_positions(n_targets, positions)
    for p in progress_iter(chosen, len(chosen), f"audit {method}", unit="position"):
        changed = stream.copy()
        orig = int(changed[p + 1])  # target p is token p+1
        changed[p + 1] = replacement(orig, p, vocab)
        _, led = score(changed, Probe(probe.targets))  # the same (float64) numerics as the base run
        before = base.scored_before(p)
        change = np.abs(led.nll - base.nll)
        diff = change * before
        worst = int(np.argmax(diff)) if before.any() else 0
        stream_change = float(change[:p].max()) if p else 0.0  # C1 by the stream-order letter (F7.4.1)
        details.append(
            {
                "position": p,
                "from_id": orig,
                "to_id": int(changed[p + 1]),
                "max_change_before": float(diff.max()) if before.any() else 0.0,
                "worst_target": worst,
                "changed_targets_before": int((diff > tolerance).sum()),
                "scored_before": int(before.sum()),
                "change_at_position": float(abs(led.nll[p] - base.nll[p])),
                "max_change_before_in_stream": stream_change,
            }
        )
    max_change = max(d["max_change_before"] for d in details)
    c1 = max_change <= tolerance
    stream_change = max(d["max_change_before_in_stream"] for d in details)
    c2 = probe.verdict()
    c3_lines = [v.line() for v in base.violations if v.condition == "C3"]
    c4_lines = [v.line() for v in base.violations if v.condition == "C4"]
    counts = np.bincount(np.minimum(base.times_scored, 2), minlength=3)
    # The totals: N tokens and exactly the stream's bytes (each target's bytes counted once).
    s64 = torch.from_numpy(stream.astype(np.int64))
    want_bytes = int(tables.count(s64[1:], s64[:-1], torch.arange(n_targets)).sum())
    c4 = base.c4_ok() and base_res.tokens == n_targets and base_res.bytes == want_bytes
    conditions = {
        "C1": {"pass": c1, "max_change": max_change, "tolerance": tolerance,
               "changed_targets": sum(d["changed_targets_before"] for d in details),
               "stream_order": {"pass": stream_change <= tolerance, "max_change": stream_change}},
        "C2": c2,
        "C3": {"pass": base.c3_ok(), "update_steps": base.reads, "tokens_read": base.tokens_read,
               "violations": len(c3_lines), "first": c3_lines[:2]},
        "C4": {"pass": c4, "targets": n_targets, "scored_tokens": base_res.tokens, "bytes": base_res.bytes,
               "stream_bytes": want_bytes, "never": int(counts[0]),
               "once": int(counts[1]), "more": int(counts[2]), "first": c4_lines[:2]},
    }  # fmt: skip
    all_pass = all(conditions[c]["pass"] for c in CONDITIONS)
    label = is_score_first(method, run_cfg) if method in SCORE_FIRST else False
    return {
        "method": method,
        "conditions": conditions,
        "all_pass": all_pass,
        "failed": [c for c in CONDITIONS if not conditions[c]["pass"]],
        # Causal by the letter of C1 in STREAM order (the original audit): targets before p in the
        # stream unchanged. Differs from C1 (scoring order) only for methods that score out of
        # stream order with cross-document state, e.g. length-ordered ttt-phased (F7.3(b)).
        "score_first": stream_change <= tolerance,
        "label": label,
        "caught": label and not all_pass,
        "max_change": max_change,
        "tolerance": tolerance,
        "tokens": n_targets,
        "positions": [d["position"] for d in details],
        "details": details,
        "settings": method_params(method, run_cfg),
    }


def table_row(rep: dict) -> str:
    """One console line: method, label, C1..C4 with their evidence."""
    c = rep["conditions"]
    cells = [
        f"C1 {'pass' if c['C1']['pass'] else 'FAIL'} (max change {c['C1']['max_change']:.2g})",
        f"C2 {'pass' if c['C2']['pass'] else 'FAIL'} (|sum-1| {c['C2']['max_sum_error']:.1e})",
        f"C3 {'pass' if c['C3']['pass'] else 'FAIL'} ({c['C3']['violations']}/{c['C3']['update_steps']} steps)",
        f"C4 {'pass' if c['C4']['pass'] else 'FAIL'} ({c['C4']['once']}/{c['C4']['targets']} once)",
    ]
    claim = "score-first" if rep["label"] else "not score-first"
    s1 = c["C1"].get("stream_order", {})
    note = (
        ""
        if s1.get("pass", True) == c["C1"]["pass"]
        else (f"  [stream-order letter of C1: {'pass' if s1['pass'] else 'FAIL'} ({s1['max_change']:.2g})]")
    )
    return f"{rep['method']:<14} {claim:<16} " + "  ".join(cells) + note
