"""The training stream and batcher (SPEC 2.4) and the validation tokens (SPEC 2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _data_fixtures import stream_positions_dataset

from pgolf.data.loader import DistributedBatcher, TokenStream, batch_geometry, load_val_tokens, truncate_val
from pgolf.data.shards import list_shards, write_shard
from pgolf.errors import ConfigError, DataError

SIZES = [1000, 537, 1200]  # uneven shards; total 2737, so steps cross boundaries and wrap
TOTAL = sum(SIZES)


@pytest.fixture()
def data_dir(tmp_path):
    return stream_positions_dataset(tmp_path / "d", SIZES)


def rank_spans(data_dir, world: int, accum: int, steps: int, global_tokens: int, seq_len: int):
    """For every step, every (micro-step, rank) span as absolute stream positions (token = position)."""
    batchers = [DistributedBatcher(data_dir, r, world) for r in range(world)]
    out = []
    for _ in range(steps):
        step = []
        for m in range(accum):
            for r, b in enumerate(batchers):
                x, y = b.next_batch(global_tokens, seq_len, accum)
                assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.device.type == "cpu"
                assert x.shape == y.shape == (global_tokens // (world * accum) // seq_len, seq_len)
                assert torch.equal(x.flatten()[1:], y.flatten()[:-1])  # y is x shifted by one
                span = torch.cat([x.flatten(), y.flatten()[-1:]]).tolist()
                step.append((m, r, span))
        out.append(step)
    return out


def test_token_stream_concatenates_shards_and_wraps(data_dir):
    s = TokenStream(list_shards(data_dir, "train"))
    first = s.take(900)
    assert first.dtype == np.uint16 and first.tolist() == list(range(900))
    across = s.take(700)  # crosses shard 0 -> 1 -> 2
    assert across.tolist() == list(range(900, 1600))
    rest = s.take(TOTAL - 1600 + 10)  # runs off the end and wraps to the first shard
    assert rest.tolist() == list(range(1600, TOTAL)) + list(range(10))
    big = s.take(3 * TOTAL)  # more than the whole stream in one call
    assert big.tolist() == [(10 + i) % TOTAL for i in range(3 * TOTAL)]
    assert s.take(0).size == 0
    first[:] = 0  # a copy, not a view of the shard
    assert TokenStream(list_shards(data_dir, "train")).take(5).tolist() == [0, 1, 2, 3, 4]


def test_token_stream_skips_empty_shards_and_refuses_an_all_empty_split(tmp_path):
    d = tmp_path / "d"
    write_shard(d / "fineweb_train_000000.bin", np.zeros(0, np.uint16))
    write_shard(d / "fineweb_train_000001.bin", np.arange(5, dtype=np.uint16))
    s = TokenStream(list_shards(d, "train"))
    assert s.take(12).tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1]
    e = tmp_path / "e"
    write_shard(e / "fineweb_train_000000.bin", np.zeros(0, np.uint16))
    with pytest.raises(DataError, match="empty train split"):
        TokenStream(list_shards(e, "train"))


def test_token_stream_checks_vocab(data_dir):
    s = TokenStream(list_shards(data_dir, "train"), vocab_size=1024)
    s.take(1000)
    with pytest.raises(DataError, match=r"fineweb_train_000001\.bin: token id .* >= vocab size 1024"):
        s.take(1)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("accum", [1, 2, 4])
def test_each_step_uses_one_contiguous_range_once(data_dir, world, accum):
    seq_len = 8
    global_tokens = world * accum * seq_len * 3  # 3 sequences per rank per micro-step
    span = global_tokens // (world * accum) + 1
    n_steps = TOTAL // (world * accum * span) + 2  # enough to run past the end of the stream
    steps = rank_spans(data_dir, world, accum, steps=n_steps, global_tokens=global_tokens, seq_len=seq_len)
    pos = 0
    for step in steps:
        # absolute positions: the token value is the position modulo the stream length
        used = []
        for m, r, tokens in step:
            start = pos + (m * world + r) * span
            assert tokens == [(start + i) % TOTAL for i in range(span)], (m, r)
            used.extend(range(start, start + span))
        assert sorted(used) == list(range(pos, pos + world * accum * span))  # contiguous, none twice
        pos += world * accum * span
    assert pos > TOTAL  # the test crossed the wrap-around


def test_effective_batch_is_independent_of_world_size_and_accumulation(data_dir):
    seq_len, global_tokens = 4, 64
    seen = {}
    for world, accum in ((1, 4), (2, 2), (4, 1)):
        steps = rank_spans(data_dir, world, accum, steps=3, global_tokens=global_tokens, seq_len=seq_len)
        seen[(world, accum)] = [sorted(tuple(t) for _, _, t in step) for step in steps]
    assert seen[(1, 4)] == seen[(2, 2)] == seen[(4, 1)]


def test_spec_geometry_for_the_record_run():
    # 8 GPUs, 786,432 tokens: 98,304 = 48 x 2048 per rank; the stream advances 8 x 98,305.
    assert batch_geometry(786_432, 2048, 8, 1) == 98_304
    assert batch_geometry(786_432, 2048, 3, 1) == 262_144  # any world size whose share is whole sequences
    with pytest.raises(ConfigError, match="not divisible into whole sequences"):
        batch_geometry(786_432, 2048, 5, 1)
    with pytest.raises(ConfigError, match="train_batch_tokens=100"):
        batch_geometry(100, 8, 1, 1)
    with pytest.raises(ConfigError, match="accum_steps=0"):
        batch_geometry(64, 8, 1, 0)


def test_batcher_refuses_bad_rank(data_dir):
    with pytest.raises(ConfigError, match="rank=2 world_size=2"):
        DistributedBatcher(data_dir, 2, 2)


def test_resume_gives_the_same_future_batches(data_dir):
    a = DistributedBatcher(data_dir, 1, 2)
    for _ in range(7):
        a.next_batch(48, 8, 3)
    state = a.state_dict()
    future = [a.next_batch(48, 8, 3) for _ in range(9)]
    b = DistributedBatcher(data_dir, 1, 2)
    b.load_state_dict(state)
    for x, y in future:
        bx, by = b.next_batch(48, 8, 3)
        assert torch.equal(x, bx) and torch.equal(y, by)
    b.reset()
    assert b.next_batch(48, 8, 3)[0].flatten()[0].item() == 8 + 1  # rank 1's span starts at 8+1


def test_resume_refuses_a_different_data_dir(data_dir, tmp_path):
    state = DistributedBatcher(data_dir, 0, 1).state_dict()
    other = stream_positions_dataset(tmp_path / "other", [10, 10, 10, 10])
    with pytest.raises(DataError, match="resume state"):
        DistributedBatcher(other, 0, 1).load_state_dict(state)


def test_val_tokens_concatenate_and_truncate(tmp_path):
    d = tmp_path / "v"
    write_shard(d / "fineweb_val_000001.bin", np.arange(100, 110, dtype=np.uint16))
    write_shard(d / "fineweb_val_000000.bin", np.arange(0, 13, dtype=np.uint16))
    v = load_val_tokens(d)
    assert v.dtype == np.uint16 and v.tolist() == list(range(13)) + list(range(100, 110))  # sorted order
    t = truncate_val(v, 4)  # 23 tokens -> usable = (22 // 4) * 4 = 20 targets, 21 tokens kept
    assert len(t) == 21 and t.tolist() == v[:21].tolist()
    assert len(truncate_val(v, 22)) == 23
    with pytest.raises(DataError, match="validation split too short for seq_len=23"):
        truncate_val(v, 23)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty val split"):
        load_val_tokens(tmp_path / "empty")
