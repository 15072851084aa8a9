"""The causal token n-gram tilt (FRONTIER F6.8): a hint token h from the scored prefix, and
the scored distribution p'(t) = softmax(z + beta * e_h).

Two experts, selected by `eval.ngram_expert`:

- "1514" (PR #1514): context lengths 8, 10, 12, 14, 16 (the last k tokens before the target,
  BOS included); the longest context that is known and passes its threshold gives the hint:
  best_count / count >= tau and count >= m with (tau, m) = (0.70, 3) for 8-10, (0.60, 2) for
  11-13, (0.50, 2) for 14-16; beta = 2 * confidence.
- "2135" (PR #2130/#2135): one context of the last 15 tokens; gated when
  top_count / total >= 0.8 (in float32, as the record); beta = 2.625.

Per context the statistics are those of both records' C code: the number of times the
context was seen, and the "best" next token, which changes only when another token's pair
count exceeds the best one's (so the best is the token that first reached the highest pair
count). After a target is scored, every context length is updated with its true token.

Scoring order, not stream order (issue 15). The tables hold only targets already scored;
the hints for a batch of targets come from those tables plus, inside each contiguous run
of the batch, the run's own earlier targets (they are the run's context, as they are the
model's). A context is usable only when every one of its tokens is known: scored earlier,
the stream's first token, or inside the run before the target. For a method that scores in
stream order this is exactly the records' left-to-right pass. The stream-order variant of
#2135 (all hints precomputed from the whole stream before scoring, F8.31) is
`eval.ngram_order=stream`: it reads every token before any is scored and is labelled not
score-first.

Memory: each context length keeps at most 2**eval.ngram_table_bits contexts; a new context
that would exceed it is not stored (the records' tables drop an insert that finds no slot).
Cost: a Python loop on one core, measured (benchmarks/audit_table.py) about 17 us per target for
#1514 (5 context lengths) and 4 us for #2135 (one): 14 and 3 minutes for the 47.9M-target split.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgolf.errors import ConfigError

# The records' 32 hash multipliers (both C sources), for the context keys.
PRIMES = np.array(
    [36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433, 917521, 1048583, 1179653,
     1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169, 2228243, 2359319, 2490389, 2621471, 2752549,
     2883617, 3014687, 3145757, 3276833, 3407903, 3538973],
    dtype=np.uint64,
)  # fmt: skip

EXPERTS = ("1514", "2135")
ORDERS = ("score", "stream")


@dataclass(frozen=True)
class Expert:
    name: str
    lengths: tuple[int, ...]  # context lengths, ascending
    tau: tuple[float, ...]  # confidence threshold per length
    min_count: tuple[int, ...]  # context count threshold per length
    beta_scale: float  # 1514: beta = scale * confidence
    beta_fixed: float  # 2135: beta constant
    float32_gate: bool  # 2135 compares in float32

    @property
    def max_len(self) -> int:
        return self.lengths[-1]


def _tau_1514(k: int) -> tuple[float, int]:
    return (0.70, 3) if k <= 10 else (0.60, 2) if k <= 13 else (0.50, 2)


def expert(name: str, beta: float | None = None, threshold: float | None = None) -> Expert:
    """The record's expert; `beta` overrides 1514's scale (2.0) or 2135's fixed boost (2.625),
    `threshold` overrides 2135's gate (0.8)."""
    if name == "1514":
        lengths = (8, 10, 12, 14, 16)
        tm = [_tau_1514(k) for k in lengths]
        return Expert("1514", lengths, tuple(t for t, _ in tm), tuple(m for _, m in tm),
                      2.0 if beta is None else beta, 0.0, False)  # fmt: skip
    if name == "2135":
        tau = 0.8 if threshold is None else threshold
        return Expert("2135", (15,), (tau,), (1,), 0.0, 2.625 if beta is None else beta, True)
    raise ConfigError(f"eval.ngram_expert must be one of {', '.join(EXPERTS)}, got {name!r}")


# --------------------------------------------------------------------------- pure math
def tilt_logits(logits: Tensor, hint: Tensor, beta: Tensor) -> Tensor:
    """z + beta * e_h row by row (rows with beta == 0 unchanged); a new fp32 (or fp64) tensor."""
    out = (logits if logits.dtype == torch.float64 else logits.float()).clone()
    rows = torch.nonzero(beta > 0).flatten()
    if rows.numel():
        out[rows, hint[rows]] += beta[rows].to(out.dtype)
    return out


def tilted_nll_closed_form(nll: np.ndarray, logp_hint: np.ndarray, hit: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """NLL' = NLL - beta [y = h] + log(1 + p_h (e^beta - 1)) in float64 (both records' formula)."""
    q = np.exp(np.minimum(np.asarray(logp_hint, dtype=np.float64), 0.0))
    b = np.asarray(beta, dtype=np.float64)
    return np.asarray(nll, dtype=np.float64) - b * np.asarray(hit, dtype=np.float64) + np.log1p(q * np.expm1(b))


def context_keys(stream: np.ndarray, targets: np.ndarray, max_len: int) -> np.ndarray:
    """[n, max_len] uint64: column k-1 is the key of the k tokens ending at stream[t] (target t
    is stream[t+1]); the records' XOR of token * prime over the most recent first. Positions
    before the stream's start contribute 0 (such contexts are never used)."""
    s = np.asarray(stream, dtype=np.uint64)
    t = np.asarray(targets, dtype=np.int64)
    out = np.zeros((t.size, max_len), dtype=np.uint64)
    h = np.zeros(t.size, dtype=np.uint64)
    for k in range(max_len):
        j = t - k
        tok = np.where(j >= 0, s[np.maximum(j, 0)], np.uint64(0))
        h ^= tok * PRIMES[k % len(PRIMES)]
        out[:, k] = h
    return out


class _Tables:
    """Per context length: key -> [count, best_tok, best_count]; (key, tok) -> pair count."""

    def __init__(self, n_lengths: int, cap: int):
        self.ctx: list[dict] = [{} for _ in range(n_lengths)]
        self.pair: list[dict] = [{} for _ in range(n_lengths)]
        self.cap = cap
        self.dropped = 0

    def update(self, j: int, key: int, tok: int) -> None:
        pk = (key, tok)
        pair = self.pair[j]
        ctx = self.ctx[j]
        e = ctx.get(key)
        if e is None:
            if len(ctx) >= self.cap:
                self.dropped += 1
                return
            ctx[key] = [1, tok, 1]
            pair[pk] = 1
            return
        c = pair.get(pk, 0) + 1
        pair[pk] = c
        e[0] += 1
        if c > e[2]:  # a strictly higher pair count takes over (the incumbent's own count also rises)
            e[1] = tok
            e[2] = c


class _Overlay:
    """Copy-on-write view of _Tables for one run: updates stay here; lookups fall through."""

    def __init__(self, base: _Tables):
        self.base = base
        self.ctx: list[dict] = [{} for _ in base.ctx]
        self.pair: list[dict] = [{} for _ in base.pair]
        self.dropped = 0

    def get(self, j: int, key: int):
        e = self.ctx[j].get(key)
        return e if e is not None else self.base.ctx[j].get(key)

    def update(self, j: int, key: int, tok: int) -> None:
        pk = (key, tok)
        e = self.ctx[j].get(key)
        if e is None:
            b = self.base.ctx[j].get(key)
            if b is None:
                if len(self.base.ctx[j]) + len(self.ctx[j]) >= self.base.cap:
                    self.dropped += 1
                    return
                self.ctx[j][key] = [1, tok, 1]
                self.pair[j][pk] = 1
                return
            e = self.ctx[j][key] = list(b)
        c = self.pair[j].get(pk)
        if c is None:
            c = self.base.pair[j].get(pk, 0)
        c += 1
        self.pair[j][pk] = c
        e[0] += 1
        if c > e[2]:
            e[1] = tok
            e[2] = c


def select_hints(
    ex: Expert, found_tok: np.ndarray, best: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hint, beta) per target from the per-length lookups ([n, J]; count 0 = unusable/unseen)."""
    n = found_tok.shape[0]
    hint = np.full(n, -1, dtype=np.int64)
    beta = np.zeros(n, dtype=np.float64)
    for j in range(len(ex.lengths)):  # ascending, so a longer passing context overwrites
        c = count[:, j]
        if ex.float32_gate:
            with np.errstate(divide="ignore", invalid="ignore"):
                conf32 = best[:, j].astype(np.float32) / c.astype(np.float32)
            ok = (c >= ex.min_count[j]) & (c > 0) & (conf32 >= np.float32(ex.tau[j]))
            b = np.full(n, ex.beta_fixed)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                conf = best[:, j].astype(np.float64) / np.maximum(c, 1)
            ok = (c >= ex.min_count[j]) & (c > 0) & (conf >= ex.tau[j])
            b = ex.beta_scale * conf
        hint[ok] = found_tok[ok, j]
        beta[ok] = b[ok]
    beta[hint < 0] = 0.0
    return hint, beta


def runs_of(targets: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) slices of `targets` that are consecutive stream indices."""
    t = np.asarray(targets, dtype=np.int64)
    if t.size == 0:
        return []
    cut = np.flatnonzero(np.diff(t) != 1) + 1
    edges = np.concatenate(([0], cut, [t.size]))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


@contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class NgramHints:
    """Causal hints in scoring order: `hints(targets)` before scoring a batch, `commit(targets)`
    after it (the statistics update, reported to the ledger as a read of the tokens it uses)."""

    def __init__(self, stream: np.ndarray, ex: Expert, table_bits: int = 22, ledger=None):
        self.s = np.asarray(stream, dtype=np.int64)
        self.ex = ex
        self.n_targets = len(self.s) - 1
        self.known = np.zeros(len(self.s), dtype=bool)  # stream position j known: j == 0 or target j-1 scored
        self.known[0] = True
        self.tables = _Tables(len(ex.lengths), 1 << table_bits)
        self.ledger = ledger
        self.hinted = 0
        self._pending: list[tuple[np.ndarray, np.ndarray, list, _Overlay]] = []

    def _avail(self, t: np.ndarray, lo_target: int) -> np.ndarray:
        """Known tokens ending at stream[t] (capped at the longest context), for a run starting at lo_target."""
        a = lo_target  # stream[a] is the run's first input; stream[a+1..t] are the run's own tokens
        back = 0
        while back < self.ex.max_len and a - back >= 0 and self.known[a - back]:
            back += 1
        return np.minimum(t - a + back, self.ex.max_len)

    def hints(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Millions of small table entries: the cyclic garbage collector would rescan them all, over and over.
        with _no_gc():
            return self._hints(targets)

    def commit(self) -> None:
        """Add the batch's targets (hinted just before) to the tables; mark them known."""
        with _no_gc():
            self._commit()

    def _hints(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(targets, dtype=np.int64)
        J = len(self.ex.lengths)
        found = np.zeros((t.size, J), dtype=np.int64)
        best = np.zeros((t.size, J), dtype=np.int64)
        count = np.zeros((t.size, J), dtype=np.int64)
        lengths = self.ex.lengths
        for lo, hi in runs_of(t):
            tr = t[lo:hi]
            avail = self._avail(tr, int(tr[0]))
            cols = [k - 1 for k in lengths]
            keys = context_keys(self.s, tr, self.ex.max_len)[:, cols].view(np.int64).tolist()  # [n, J]
            view = _Overlay(self.tables)
            av = avail.tolist()
            for i, tok in enumerate(self.s[tr + 1].tolist()):
                ks = keys[i]
                row = lo + i
                for j, k in enumerate(lengths):
                    if av[i] < k:
                        break
                    e = view.get(j, ks[j])
                    if e is not None:
                        count[row, j], found[row, j], best[row, j] = e
                for j, k in enumerate(lengths):
                    if av[i] < k:
                        break
                    view.update(j, ks[j], tok)
            self._pending.append((tr, avail, keys, view))
        hint, beta = select_hints(self.ex, found, best, count)
        self.hinted += int((beta > 0).sum())
        return hint, beta

    def _commit(self) -> None:
        lengths = self.ex.lengths
        single = len(self._pending) == 1
        for tr, avail, keys, view in self._pending:
            used = avail >= lengths[0]
            if self.ledger is not None and used.any():
                # The update for target t reads its context stream[t-k+1..t] and its token stream[t+1].
                span = np.minimum(avail[used], lengths[-1])
                lo = tr[used] - span + 1
                pos = np.unique(np.concatenate([np.arange(a, b + 2) for a, b in zip(lo.tolist(), tr[used].tolist())]))
                self.ledger.read(pos, "ngram statistics")
            if single:
                # One run: its overlay already holds the committed tables plus exactly these updates.
                for j in range(len(lengths)):
                    self.tables.ctx[j].update(view.ctx[j])
                    self.tables.pair[j].update(view.pair[j])
                self.tables.dropped += view.dropped
            else:  # several runs hinted against the same tables: replay their updates in scoring order
                av = avail.tolist()
                for i, tok in enumerate(self.s[tr + 1].tolist()):
                    for j, k in enumerate(lengths):
                        if av[i] < k:
                            break
                        self.tables.update(j, keys[i][j], tok)
            self.known[tr + 1] = True
        self._pending.clear()


def stream_hints(stream: np.ndarray, ex: Expert, table_bits: int = 22) -> tuple[np.ndarray, np.ndarray]:
    """(hint, beta) of every target from one left-to-right pass over the stream (the records' precompute)."""
    h = NgramHints(stream, ex, table_bits)
    n = len(stream) - 1
    return h.hints(np.arange(n, dtype=np.int64))


class NgramTilt:
    """The scorer's logits post-processor: (targets, logits) -> the tilted log-probabilities.

    order "score": hints from `NgramHints` in the order the method scores (score-first);
    order "stream": all hints precomputed in stream order before scoring (#2135, F8.31);
    the precompute reads every token at once (reported to the ledger), so it is not score-first.
    """

    def __init__(self, stream: np.ndarray, ex: Expert, table_bits: int = 22, order: str = "score", ledger=None):
        if order not in ORDERS:
            raise ConfigError(f"eval.ngram_order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.order = order
        self.ledger = ledger
        self.n_targets = len(stream) - 1
        self.seconds = 0.0
        self.hinted = 0
        self.scored = 0
        if order == "stream":
            if ledger is not None:
                ledger.read(np.arange(len(stream)), "ngram precompute (stream order)")
            self._hint, self._beta = stream_hints(stream, ex, table_bits)
            self.online = None
        else:
            self.online = NgramHints(stream, ex, table_bits, ledger)

    def __call__(self, targets: np.ndarray, logits: Tensor) -> Tensor:
        import time

        t0 = time.perf_counter()
        t = np.asarray(targets, dtype=np.int64)
        if self.online is not None:
            self._catch_up(t)
            hint, beta = self.online.hints(t)
        else:
            hint, beta = self._hint[t], self._beta[t]
        self.hinted += int((beta > 0).sum())
        self.scored += int(t.size)
        dev = logits.device
        out = tilt_logits(logits, torch.from_numpy(np.maximum(hint, 0)).to(dev), torch.from_numpy(beta).to(dev))
        self.seconds += time.perf_counter() - t0
        return torch.log_softmax(out, dim=-1)

    def _catch_up(self, t: np.ndarray) -> None:
        """Under torchrun each rank scores only its share of the batches; before a batch, its tables
        first take the targets before it that other ranks scored (stream-order methods: the
        one-process tables exactly)."""
        from pgolf.eval.common import rank_world

        if rank_world()[1] == 1 or not t.size:
            return
        gap = np.flatnonzero(~self.online.known[1 : int(t.min()) + 1])
        if gap.size:
            led, self.online.ledger = self.online.ledger, None
            self.online.hints(gap)
            self.online.commit()
            self.online.ledger = led

    def after_scored(self, targets: np.ndarray) -> None:
        if self.online is not None:
            self.online.commit()

    def stats(self) -> dict:
        """Hinted targets over all ranks (a collective under torchrun: every rank calls it)."""
        from pgolf import dist

        counts = torch.tensor([self.hinted, self.scored], dtype=torch.float64)
        if dist.active():
            dev = (
                torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
            )
            counts = counts.to(dev) if dev is not None else counts
            dist.all_reduce_sum(counts)
        hinted, scored = (int(round(float(x))) for x in counts.cpu())
        return {"ngram_hinted": hinted, "ngram_fraction": hinted / max(scored, 1), "ngram_seconds": self.seconds}
