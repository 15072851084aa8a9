"""Plain evaluation: non-overlapping sequences, each target scored once with the
context available inside its sequence (SPEC §8.2)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pgolf import dist
from pgolf.data.bpb import ByteTables
from pgolf.eval.common import (
    Scorer,
    Totals,
    autocast_context,
    default_logits_fn,
    rank_slice,
    to_device_ids,
)


def evaluate_plain(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    batch_seqs: int,
    device: torch.device,
    autocast: str = "auto",
    record: bool = False,
    logits_fn: Callable[[Tensor], Tensor] | None = None,
    progress=None,
    post=None,
    probe=None,
    ledger=None,
) -> Totals:
    """Score targets 0..N-1 of `tokens` (N+1 tokens) in sequences of `seq_len`.

    A final shorter sequence (only when the stream is not a whole number of
    sequences, i.e. with --max-tokens) is scored on its own.
    """
    logits_fn = logits_fn or default_logits_fn(model)
    n_targets = len(tokens) - 1
    n_full = n_targets // seq_len
    rank = torch.distributed.get_rank() if dist.active() else 0
    world = torch.distributed.get_world_size() if dist.active() else 1
    lo, hi = rank_slice(n_full, rank, world)
    batches = [(a, min(a + batch_seqs, hi), seq_len) for a in range(lo, hi, batch_seqs)]
    tail = n_targets - n_full * seq_len
    if tail and rank == world - 1:
        batches.append((n_full, n_full + 1, tail))
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for a, b, length in batches:
            start = a * seq_len
            n = (b - a - 1) * seq_len + length  # targets in this batch
            chunk = to_device_ids(tokens[start : start + n + 1], device)
            x = chunk[:-1].view(b - a, length)
            y = chunk[1:].view(b - a, length)
            with autocast_context(device, autocast):
                logits = logits_fn(x)
            scorer.score(logits, y, x, first_target=start)
            if progress is not None:
                progress.update(n)
    model.train(was_training)
    return scorer.finish(n_targets)
