"""Sliding-window evaluation (SPEC §8.3) without the seed's tail double counting.

Windows come from `windows.plan_windows`: the seed's windows (a start at every
multiple of `stride`), each scoring only targets no earlier window scored. They are
grouped into batches of `batch_seqs` in stream order and whole batches are handed to
ranks, so the result does not depend on how many processes run it.

The model runs once per batch; the head (logits, soft-cap, cross-entropy) runs only on
the scored positions, which gives the same per-target logits as the seed's
whole-window head at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgolf.data.bpb import ByteTables
from pgolf.eval.common import Scorer, Totals, autocast_context, my_share
from pgolf.eval.windows import Window, batches, plan_windows


@dataclass
class WindowBatch:
    """One batch of windows on the device, right-padded with id 0 (to `pad_to` or the longest window)."""

    windows: list[Window]
    x: Tensor  # [b, T] inputs
    y: Tensor  # [b, T] targets
    rows: Tensor  # [n] window index of each scored position, in stream order
    cols: Tensor  # [n] local position of each scored position
    first_target: int  # stream index of the first scored target (the batch's scored run is contiguous)

    @property
    def n_scored(self) -> int:
        return int(self.rows.numel())


def positions(windows: list[Window], lo: list[int], hi: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) index arrays of local positions [lo[i], hi[i]) of each window, window by window."""
    counts = np.array([h - lo_ for lo_, h in zip(lo, hi)], dtype=np.int64)
    rows = np.repeat(np.arange(len(windows), dtype=np.int64), counts)
    starts = np.repeat(np.array(lo, dtype=np.int64), counts)
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, starts + offsets


def make_batch(tokens: np.ndarray, windows: list[Window], device: torch.device, pad_to: int = 0) -> WindowBatch:
    # The seed pads every batch to the evaluation length; above the RoPE reference length the
    # rotary base depends on the padded length, so a short last batch must be padded the same way.
    T = max(pad_to, max(w.length for w in windows))
    x = np.zeros((len(windows), T), dtype=np.int64)
    y = np.zeros((len(windows), T), dtype=np.int64)
    for i, w in enumerate(windows):
        seg = np.asarray(tokens[w.start : w.start + w.length + 1], dtype=np.int64)
        x[i, : w.length] = seg[:-1]
        y[i, : w.length] = seg[1:]
    rows, cols = positions(windows, [w.score_from for w in windows], [w.score_to for w in windows])
    return WindowBatch(
        windows=windows,
        x=torch.from_numpy(x).to(device),
        y=torch.from_numpy(y).to(device),
        rows=torch.from_numpy(rows).to(device),
        cols=torch.from_numpy(cols).to(device),
        first_target=windows[0].first_target,
    )


def window_batches(n_targets: int, seq_len: int, stride: int, batch_seqs: int) -> list[list[Window]]:
    """Every rank's batches (global, stream order); take `my_share` for this rank's."""
    return batches(plan_windows(n_targets, seq_len, stride), batch_seqs)


def evaluate_sliding(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    stride: int,
    batch_seqs: int,
    device: torch.device,
    autocast: str = "auto",
    record: bool = False,
    hidden_fn: Callable[[Tensor], Tensor] | None = None,
    progress=None,
    post=None,
    probe=None,
    ledger=None,
) -> Totals:
    """Score targets 0..N-1 of `tokens` (N+1 tokens) once each with sliding windows."""
    hidden_fn = hidden_fn or model.forward_hidden
    n_targets = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: the model caches tensors (RoPE tables)
            for group in my_share(window_batches(n_targets, seq_len, stride, batch_seqs)):
                b = make_batch(tokens, group, device, pad_to=seq_len)
                with autocast_context(device, autocast):
                    h = hidden_fn(b.x)[b.rows, b.cols]
                    logits = model.compute_logits(h)
                scorer.score(logits, b.y[b.rows, b.cols], b.x[b.rows, b.cols], first_target=b.first_target)
                if progress is not None:
                    progress.update(b.n_scored)
    finally:
        model.train(was_training)
    return scorer.finish(n_targets)
