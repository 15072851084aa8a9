"""Decide from behaviour whether an evaluation method is score-first.

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
from pgolf.eval.api import canonical_method, evaluate, method_params
from pgolf.eval.common import SCORE_FIRST

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
) -> dict:
    """Measure whether `method` is score-first on the first `n_targets` targets of `tokens`.

    Returns a dict with method, score_first (measured), label (claimed), caught
    (claimed score-first but measured not), max_change, positions and per-position details.
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

    def score(s: np.ndarray) -> np.ndarray:
        _, nll = evaluate(model, method, s, tables, run_cfg, device, max_tokens=n_targets, record=True)
        return nll

    base = score(stream)
    details = []
    for p in audit_positions(n_targets, positions):
        changed = stream.copy()
        orig = int(changed[p + 1])  # target p is token p+1
        changed[p + 1] = replacement(orig, p, vocab)
        nll = score(changed)
        diff = np.abs(nll[:p] - base[:p])
        worst = int(np.argmax(diff)) if p else 0
        details.append(
            {
                "position": p,
                "from_id": orig,
                "to_id": int(changed[p + 1]),
                "max_change_before": float(diff.max()) if p else 0.0,
                "worst_target": worst,
                "changed_targets_before": int((diff > tolerance).sum()),
                "change_at_position": float(abs(nll[p] - base[p])),
            }
        )
    max_change = max(d["max_change_before"] for d in details)
    measured = max_change <= tolerance
    label = SCORE_FIRST[method]
    return {
        "method": method,
        "score_first": measured,
        "label": label,
        "caught": label and not measured,
        "max_change": max_change,
        "tolerance": tolerance,
        "tokens": n_targets,
        "positions": [d["position"] for d in details],
        "details": details,
        "settings": method_params(method, run_cfg),
    }
