"""Sliding-window plans: which window scores which targets (pure functions, no torch).

A window is `Window(start, length, score_from, score_to)`: it reads inputs
tokens[start : start+length] (targets start+1 .. start+length) and scores its local
positions [score_from, score_to), i.e. stream targets [start+score_from, start+score_to).

The seed (SPEC §8.3) starts a window at every multiple of `stride` below N, scores all
positions of the first window and the last `stride` positions of every other one. Near
the end of the stream its windows are shorter than `seq_len` and keep re-scoring the
same last targets (1,952 extra scored targets at stride 96 on the 62,021,632-target
validation set). `plan_windows` keeps the seed's windows but lets each one score only
targets that no earlier window scored; windows left with nothing new are dropped. For
every full-length window this is exactly the seed's rule, so only the tail differs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pgolf.errors import ConfigError


class Window(NamedTuple):
    start: int  # stream index of the window's first input token (= first target index)
    length: int  # positions in the window (<= seq_len)
    score_from: int  # first scored local position
    score_to: int  # one past the last scored local position

    @property
    def scored(self) -> int:
        return self.score_to - self.score_from

    @property
    def first_target(self) -> int:
        return self.start + self.score_from


def check_geometry(n_targets: int, seq_len: int, stride: int) -> None:
    if n_targets < 1:
        raise ConfigError(f"nothing to score: the stream has {n_targets} targets")
    if seq_len < 1:
        raise ConfigError(f"eval.seq_len must be >= 1, got {seq_len}")
    if not 1 <= stride <= seq_len:
        # stride > seq_len would leave targets that no window covers.
        raise ConfigError(f"eval.stride={stride} must be between 1 and the window length {seq_len}")


def seed_windows(n_targets: int, seq_len: int, stride: int) -> list[Window]:
    """The seed's plan, tail double counting included (for comparison and tests)."""
    check_geometry(n_targets, seq_len, stride)
    out = []
    for ws in range(0, n_targets, stride):
        length = min(ws + seq_len, n_targets) - ws
        sf = 0 if ws == 0 else max(length - stride, 0)
        out.append(Window(ws, length, sf, length))
    return out


def seed_scored_count(n_targets: int, seq_len: int, stride: int) -> int:
    """How many targets the seed scores (counting repeats)."""
    check_geometry(n_targets, seq_len, stride)
    starts = np.arange(0, n_targets, stride, dtype=np.int64)
    lengths = np.minimum(starts + seq_len, n_targets) - starts
    return int(lengths[0] + np.minimum(lengths[1:], stride).sum())


def plan_windows(n_targets: int, seq_len: int, stride: int) -> list[Window]:
    """The seed's windows, each scoring only targets no earlier window scored.

    Union of the scored ranges is [0, n_targets), the ranges are disjoint and in stream
    order (so a run of consecutive windows scores one contiguous block of targets), and
    every scored target except those of the first window has at least
    seq_len - stride tokens of context.
    """
    check_geometry(n_targets, seq_len, stride)
    starts = np.arange(0, n_targets, stride, dtype=np.int64)
    ends = np.minimum(starts + seq_len, n_targets)
    # Ends grow until the first window that reaches the end of the stream; every later
    # window also ends there and has nothing new to score.
    keep = int(np.argmax(ends == n_targets)) + 1
    starts, ends = starts[:keep], ends[:keep]
    lengths = ends - starts
    done_before = np.concatenate(([0], ends[:-1]))  # targets [0, done_before) are already scored
    score_from = np.maximum(lengths - stride, done_before - starts)
    score_from[0] = 0
    return list(map(Window._make, zip(starts.tolist(), lengths.tolist(), score_from.tolist(), lengths.tolist())))


def batches(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows in groups of `batch_size` (stream order; independent of world size)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    return [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
