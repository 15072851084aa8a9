"""The sliding-window plan: every target scored exactly once, the seed's windows otherwise."""

from __future__ import annotations

import itertools

import pytest

from pgolf.errors import ConfigError
from pgolf.eval.windows import batches, plan_windows, seed_scored_count, seed_windows

VAL_TARGETS = 62_021_632  # the challenge's validation split, truncated to whole 2048-token sequences


def test_seed_counts_match_spec():
    # SPEC §8.3 / Appendix A: windows and (double-counted) scored targets of the seed.
    assert len(range(0, VAL_TARGETS, 96)) == 646_059
    assert len(range(0, VAL_TARGETS, 64)) == 969_088
    assert seed_scored_count(VAL_TARGETS, 2048, 96) == 62_023_584
    assert seed_scored_count(VAL_TARGETS, 2048, 64) == 62_023_616


def test_full_split_plan_scores_each_target_once():
    plan = plan_windows(VAL_TARGETS, 2048, 96)
    assert sum(w.scored for w in plan) == VAL_TARGETS
    assert plan[-1].start + plan[-1].score_to == VAL_TARGETS
    # Only the tail differs from the seed: 646,059 windows less the ones with nothing new.
    assert 646_059 - len(plan) == 20  # the seed's last 20 windows only re-scored the tail
    # The last full window is the seed's; the one after it scores only the final 32 new targets.
    assert plan[-2] == (62_019_552, 2048, 1952, 2048)
    assert plan[-1] == (62_019_648, 1984, 1952, 1984)


def _check(n: int, seq_len: int, stride: int) -> None:
    plan = plan_windows(n, seq_len, stride)
    seed = seed_windows(n, seq_len, stride)
    covered = 0
    for i, w in enumerate(plan):
        # Same windows as the seed's (a prefix of its list), same lengths.
        assert (w.start, w.length) == (seed[i].start, seed[i].length)
        assert w.start % stride == 0 and w.length == min(w.start + seq_len, n) - w.start
        assert 0 <= w.score_from < w.score_to == w.length
        # Contiguous, disjoint, in stream order.
        assert w.start + w.score_from == covered
        covered = w.start + w.score_to
        if i > 0:
            assert w.score_from >= seq_len - stride  # context of every scored target
            assert w.score_from >= seed[i].score_from  # never scores more than the seed's window
    assert covered == n
    assert sum(w.scored for w in seed) == seed_scored_count(n, seq_len, stride)


@pytest.mark.parametrize(
    "n,seq_len,stride",
    [(1, 1, 1), (1, 8, 3), (7, 8, 3), (8, 8, 8), (9, 8, 8), (100, 8, 3), (100, 16, 16), (1000, 128, 32),
     (1001, 128, 96), (4097, 2048, 96), (5000, 2048, 64)],
)  # fmt: skip
def test_plan_properties(n, seq_len, stride):
    _check(n, seq_len, stride)


def test_plan_properties_exhaustive_small():
    for n, seq_len in itertools.product(range(1, 40), range(1, 12)):
        for stride in range(1, seq_len + 1):
            _check(n, seq_len, stride)


def test_first_window_scores_everything_it_sees():
    plan = plan_windows(1000, 128, 32)
    assert plan[0] == (0, 128, 0, 128)
    assert plan[1] == (32, 128, 96, 128)


def test_short_stream_is_one_window():
    assert plan_windows(50, 128, 32) == [(0, 50, 0, 50)]


def test_impossible_geometry_is_refused():
    with pytest.raises(ConfigError):
        plan_windows(100, 16, 17)
    with pytest.raises(ConfigError):
        plan_windows(100, 16, 0)
    with pytest.raises(ConfigError):
        plan_windows(0, 16, 4)


def test_batches_are_consecutive_and_world_size_free():
    plan = plan_windows(1000, 128, 32)
    groups = batches(plan, 8)
    assert [w for g in groups for w in g] == plan
    assert all(len(g) == 8 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 8
