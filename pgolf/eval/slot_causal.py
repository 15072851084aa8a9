"""Causal (context-only) SLOT: SLOT as its paper uses it, score-first by construction.

For a window scoring local positions [s, L), positions [0, s) are context whose targets
earlier windows have already scored. Per window, a fresh zero delta [d] (and a logit
bias [V] with `bias=True`) is fitted by AdamW on the context only (optionally on its
last K positions), then the window's new positions [s, L) are scored with it. The
score of a target depends only on tokens before it. The first window has no context
and is scored plainly.

Every window has its own pair and its own loss normalisation (mean over its own
context positions), and the losses are summed: a window's gradient, and hence its
AdamW trajectory, is independent of its batch mates, so a batch of windows gives the
same numbers as one window at a time (BEYOND §3's pitfall: one delta shared by
overlapping windows would be fitted on other windows' new tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pgolf.data.bpb import ByteTables
from pgolf.eval.common import Scorer, Totals, my_share
from pgolf.eval.sliding import WindowBatch, make_batch, positions, window_batches
from pgolf.eval.slot import Head, WindowOffsets, fit, hidden_fp32, lr_at


def context_positions(b: WindowBatch, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols) of each window's fitting positions (none for the first window), and per window 1/count."""
    lo = [max(0, w.score_from - context) if context > 0 else 0 for w in b.windows]
    hi = [w.score_from for w in b.windows]
    rows, cols = positions(b.windows, lo, hi)
    counts = np.array([h - lo_ for lo_, h in zip(lo, hi)], dtype=np.float64)
    return rows, cols, 1.0 / np.maximum(counts, 1.0)


def causal_batch(
    head: Head,
    b: WindowBatch,
    h: Tensor,
    steps: int,
    lr: float,
    lr_min: float,
    schedule: str,
    context: int,
    use_bias: bool,
    ledger=None,
) -> Tensor:
    """Final logits of the batch's scored targets after per-window fitting on each window's context."""
    dev = h.device
    r, c, wt = context_positions(b, context)
    r_t, c_t = torch.from_numpy(r).to(dev), torch.from_numpy(c).to(dev)
    weight = torch.from_numpy(wt).to(dev, torch.float32)
    # Each window's rows weigh 1/(its context count): the sum over windows of each window's own mean.
    fitter = WindowOffsets(head, h[r_t, c_t], b.y[r_t, c_t], r_t, weight, h.size(0), use_bias=use_bias)
    if r.size:
        if ledger is not None and steps > 0:
            # Each window's fit reads its context inputs and their targets: stream[start .. start+score_from].
            starts = np.array([w.start for w in b.windows], dtype=np.int64)
            pos = np.unique(np.concatenate([starts[r] + c, starts[r] + c + 1]))
            ledger.read(pos, "causal SLOT fit")
        fit(fitter.params, fitter.backward, steps, lr, lr_min, schedule)
    with torch.no_grad():
        return fitter.logits_of(h[b.rows, b.cols], b.rows)


def evaluate_slot_causal(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    stride: int,
    batch_seqs: int,
    device: torch.device,
    steps: int = 24,
    lr: float = 0.012,
    lr_min: float = 0.001,
    schedule: str = "seed",
    context: int = 0,
    use_bias: bool = True,
    autocast: str = "auto",
    record: bool = False,
    hidden_fn: Callable[[Tensor], Tensor] | None = None,
    progress=None,
    post=None,
    probe=None,
    ledger=None,
) -> Totals:
    """Causal SLOT over targets 0..N-1 of `tokens`, each scored once, before anything fits on it."""
    lr_at(0, max(steps, 1), lr, lr_min, schedule)  # validates the schedule name up front
    hidden_fn = hidden_fn or model.forward_hidden
    n_targets = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    head = Head(model)
    was_training = model.training
    model.eval()
    try:
        for group in my_share(window_batches(n_targets, seq_len, stride, batch_seqs)):
            b = make_batch(tokens, group, device, pad_to=seq_len)
            h = hidden_fp32(model, b, device, autocast, hidden_fn)
            logits = causal_batch(head, b, h, steps, lr, lr_min, schedule, context, use_bias, ledger)
            scorer.score(logits, b.y[b.rows, b.cols], b.x[b.rows, b.cols], first_target=b.first_target)
            if progress is not None:
                progress.update(b.n_scored)
    finally:
        model.train(was_training)
    return scorer.finish(n_targets)
