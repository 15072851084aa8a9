"""The document-packing training loader (FRONTIER F1.6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.data.documents import build_cu_seqlens
from pgolf.data.packing import DocumentPackingLoader, build_train_loader
from pgolf.data.shards import write_shard
from pgolf.errors import ConfigError, DataError

VOCAB = 1 << 16


def position_shards(root, sizes, bos_every=7, first_bos=3):
    """Shards whose token at global position p is 2 + p (BOS=1 every `bos_every`, from `first_bos`
    in each shard), so a batch reveals exactly which positions it came from."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        t = (2 + np.arange(start, start + n)) % VOCAB
        t[first_bos::bos_every] = 1
        write_shard(root / f"fineweb_train_{i:06d}.bin", t.astype(np.uint16))
        start += n
    write_shard(root / "fineweb_val_000000.bin", np.array([1, 5, 6, 7], np.uint16))
    return root


def take(loaders, A, G=16, T=4):
    """One step: every micro-step of every rank, as a list of input rows in (micro, rank) order."""
    rows = []
    for _ in range(A):
        for ld in loaders:
            x, y = ld.next_batch(G, T, A)
            assert x.shape == y.shape == (1, G // (len(loaders) * A))
            assert torch.equal(x[0, 1:], y[0, :-1])
            rows.append(x[0].tolist())
    return rows


def test_cursor_starts_at_the_first_bos_and_rows_follow_the_record(tmp_path):
    d = position_shards(tmp_path / "d", [200, 150])
    ld = DocumentPackingLoader(d, 0, 1, VOCAB, max_doc_len=4)
    x, y = ld.next_batch(16, 4, 1)
    assert x[0, 0].item() == 1 and ld.cursor == 3 + 17  # entered at position 3, moved by local+1
    # cu_seqlens: the BOS positions of the inputs window, as the record builds them.
    bos = np.flatnonzero(x[0].numpy() == 1)
    cu, mx = build_cu_seqlens(bos, 16, 4, 64)
    assert torch.equal(ld.cu_seqlens, torch.from_numpy(cu)) and ld.max_seqlen == mx
    assert ld.cu_seqlens.dtype == torch.int32 and ld.cu_seqlens.numel() == 64


def test_tokens_per_step_do_not_depend_on_the_world_size(tmp_path):
    d = position_shards(tmp_path / "d", [300, 170, 90])
    one = [DocumentPackingLoader(d, 0, 1, VOCAB)]
    two = [DocumentPackingLoader(d, r, 2, VOCAB) for r in range(2)]
    four = [DocumentPackingLoader(d, r, 4, VOCAB) for r in range(4)]
    for _ in range(40):  # several wraps over all shards, with tails dropped
        a = take(one, 4, G=32, T=2)
        b = take(two, 2, G=32, T=2)
        c = take(four, 1, G=32, T=2)
        assert a == b == c


def test_shard_tails_are_dropped_never_concatenated_and_it_wraps(tmp_path):
    d = position_shards(tmp_path / "d", [60, 60])
    ld = DocumentPackingLoader(d, 0, 1, VOCAB)
    seen = []
    for _ in range(8):
        x, _ = ld.next_batch(16, 4, 1)
        row = x[0].numpy()
        pos = [(int(v) - 2) % VOCAB for v in row if v != 1]
        assert all(p // 60 == pos[0] // 60 for p in pos)  # every token of a step from one shard
        seen.append((ld.shard, pos[0]))
    shards = [s for s, _ in seen]
    assert shards[:3] == [0, 0, 0] and 1 in shards and shards.count(0) > 3  # wrapped back to shard 0
    # Shard 0 gives (60 - 3) // 17 = 3 steps; then shard 1 starts at its first BOS (position 63).
    assert seen[3][1] == 63 + 1


def test_exact_resume_and_reset(tmp_path):
    d = position_shards(tmp_path / "d", [200, 150])
    a = DocumentPackingLoader(d, 1, 2, VOCAB)
    for _ in range(5):
        a.next_batch(16, 4, 2)
    state = a.state_dict()
    want = [a.next_batch(16, 4, 2)[0] for _ in range(9)]
    b = DocumentPackingLoader(d, 1, 2, VOCAB)
    b.load_state_dict(state)
    assert all(torch.equal(w, b.next_batch(16, 4, 2)[0]) for w in want)
    b.reset()
    c = DocumentPackingLoader(d, 1, 2, VOCAB)
    assert torch.equal(b.next_batch(16, 4, 2)[0], c.next_batch(16, 4, 2)[0])
    with pytest.raises(DataError, match="not a packing loader"):
        c.load_state_dict({"stream": {}})
    stream = build_train_loader("stream", d, 0, 1, VOCAB, 4)
    with pytest.raises(DataError, match="not a stream loader"):
        stream.load_state_dict(state)


def test_refuses_impossible_geometry(tmp_path):
    d = position_shards(tmp_path / "d", [30, 30])
    ld = DocumentPackingLoader(d, 0, 1, VOCAB)
    with pytest.raises(DataError, match="no train shard holds one step"):
        ld.next_batch(64, 4, 1)
    with pytest.raises(ConfigError, match="train.loader"):
        build_train_loader("shuffled", d, 0, 1, VOCAB, 4)


@pytest.mark.slow
def test_trainer_trains_with_the_packing_loader(builtin_dir, tmp_path):
    from pgolf.config import load_config
    from pgolf.train.trainer import Trainer

    sets = [
        "train.loader=packing",
        "train.iterations=2",
        "train.max_wallclock_seconds=0",
        "train.val_loss_every=0",
        "train.checkpoint_every=0",
        "train.train_batch_tokens=1024",
        "eval.seq_len=256",
        "train.warmdown_iters=1",
    ]
    cfg = load_config("tiny", sets, environ={})
    tr = Trainer(cfg, builtin_dir, tmp_path / "run", show_progress=False)
    assert isinstance(tr.batcher, DocumentPackingLoader)
    out = tr.run()
    assert out["steps"] == 2 and np.isfinite(out["post_ema_val_bpb"])
    assert tr.batcher.cu_seqlens is not None and tr.batcher.max_seqlen <= 256
