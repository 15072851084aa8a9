"""Evaluation at the May records' lengths (2560-3072) with the sliding stride, over the whole split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ttt_fixtures import caseops_stream, sidecar, ttt_config, ttt_model

from pgolf.errors import DataError
from pgolf.eval import evaluate
from pgolf.eval.ttt_lora import chunk_window
from pgolf.eval.windows import plan_windows

FRONTIER_TARGETS = 47_851_520  # every prediction of the CaseOps validation split (F6.4)


@pytest.mark.parametrize("seq_len", [2048, 2560, 3072])
def test_whole_split_windows_score_every_target_once(seq_len):
    plan = plan_windows(FRONTIER_TARGETS, seq_len, 64)
    starts = np.array([w.first_target for w in plan])
    ends = np.array([w.start + w.score_to for w in plan])
    assert starts[0] == 0 and ends[-1] == FRONTIER_TARGETS and np.array_equal(starts[1:], ends[:-1])
    assert all(w.length == seq_len for w in plan[:-1]) and plan[-1].length <= seq_len
    # Every target after the first window has at least seq_len - 64 tokens of context.
    assert min(w.score_from for w in plan[1:]) >= seq_len - 64


def test_ttt_windows_at_a_longer_context():
    # 3,000 predictions with a 2,560 window: the last chunks slide, each still scoring only its new targets.
    s, e = chunk_window(62, 3000, 48, 2560)  # the last chunk: predictions [2976, 3000)
    assert (s, e) == (440, 3000) and e - s == 2560
    assert chunk_window(53, 3000, 48, 2560) == (32, 2592)
    assert chunk_window(10, 3000, 48, 3072) == (0, 528)


@pytest.mark.parametrize("seq_len", [2560, 3072])
def test_sliding_at_long_lengths_scores_the_tail(seq_len):
    torch.set_num_threads(1)
    tokens, counts = caseops_stream()  # 2,828 targets: not a multiple of either length
    model = ttt_model()
    cfg = ttt_config(f"eval.seq_len={seq_len}", "eval.stride=64", "model.doc_max_len=4096")
    res, nll = evaluate(model, "sliding", tokens, sidecar(counts), cfg, "cpu", record=True)
    assert res.tokens == len(tokens) - 1 and res.bytes == int(counts[1:].sum())
    # The final target, scored by the last window: the model on that window directly.
    n = len(tokens) - 1
    lo = max(0, n - seq_len)
    start = next(w.start for w in plan_windows(n, seq_len, 64) if w.start + w.score_to == n)
    assert start >= lo - 64
    x = torch.tensor(tokens[start:n])[None]
    with torch.no_grad():
        direct = F.cross_entropy(model.compute_logits(model.forward_hidden(x))[0, -1:], torch.tensor(tokens[n:]))
    assert abs(float(direct) - nll[-1]) < 1e-5
    # The seed's truncation drops the tail (whole_split=false), here all or most of the stream.
    seed_cfg = ttt_config(f"eval.seq_len={seq_len}", "eval.whole_split=false")
    if n < seq_len:
        with pytest.raises(DataError, match="too short"):
            evaluate(model, "sliding", tokens, sidecar(counts), seed_cfg, "cpu")
    else:
        cut, _ = evaluate(model, "sliding", tokens, sidecar(counts), seed_cfg, "cpu")
        assert cut.tokens == (n // seq_len) * seq_len < res.tokens
