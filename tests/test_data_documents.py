"""Document boundaries: FRONTIER F1.6's cu_seqlens check values and the mask forms agree."""

from __future__ import annotations

import numpy as np
import torch

from pgolf.data.documents import (
    bos_positions,
    build_cu_seqlens,
    document_spans,
    segment_ids,
    segment_positions,
    segment_starts,
)


def test_cu_seqlens_matches_the_record_check_values():
    cu, max_len = build_cu_seqlens([5, 4000], 6000, max_doc_len=2048, bucket=64)
    assert len(cu) == 64 and cu.dtype == np.int32
    assert cu[:5].tolist() == [0, 5, 2053, 4000, 6000]
    assert set(cu[4:].tolist()) == {6000}
    assert max_len == 2048
    cu, _ = build_cu_seqlens([], 5000, max_doc_len=2048, bucket=64)
    assert cu[:4].tolist() == [0, 2048, 4096, 5000]


def test_segment_ids_agree_with_cu_seqlens():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 50, size=700)
    ids[[0, 17, 18, 300, 699]] = 1
    ids[0] = 7  # a partial document at the row start
    for max_len in (0, 64, 100):
        starts = segment_starts(bos_positions(ids), len(ids), max_len)
        seg = segment_ids(torch.from_numpy(ids)[None], max_doc_len=max_len)[0].numpy()
        expect = np.searchsorted(np.asarray(starts), np.arange(len(ids)), side="right") - 1
        assert np.array_equal(seg, expect)
        pos = segment_positions(torch.from_numpy(ids)[None], max_doc_len=max_len)[0].numpy()
        assert np.array_equal(pos, np.arange(len(ids)) - np.asarray(starts)[expect])


def test_document_spans_start_at_bos():
    toks = np.array([1, 5, 6, 1, 7, 1, 1, 9])
    assert document_spans(toks) == [(0, 3), (3, 5), (5, 6), (6, 8)]
    assert document_spans(np.array([4, 4, 1, 2])) == [(2, 4)]
