"""GPTQ: reduces to RTN without correlations, beats it with them; calibration never touches validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pgolf.data import shards
from pgolf.errors import DataError
from pgolf.quant.gptq import (
    collect_hessians,
    generate_calibration_tokens,
    gptq_int6,
    make_int6_fn,
    output_error,
    train_calibration_tokens,
)
from pgolf.quant.rtn import INT6_PERCENTILES, quantize_int6


def _weights(rows=48, cols=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * 2.5


def _correlated_h(cols=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5
    x = torch.randn(4000, cols, generator=g) @ (torch.eye(cols) + 0.9 * mix)
    return (x.T @ x) / x.size(0)


def test_identity_hessian_reduces_to_rtn():
    w = _weights()
    for p in INT6_PERCENTILES:
        q, s, info = gptq_int6(w, torch.eye(w.size(1)), percentiles=[p])
        rq, rs, _ = quantize_int6(w, [p])
        assert torch.equal(q, rq) and torch.equal(s, rs), p
    q, s, info = gptq_int6(w, torch.eye(w.size(1)))
    assert info["percentile"] == info["rtn_percentile"]
    assert info["out_err"] == pytest.approx(info["rtn_out_err"], rel=1e-9)


def test_gptq_beats_rtn_on_correlated_inputs():
    w, h = _weights(), _correlated_h()
    q, s, info = gptq_int6(w, h)
    assert q.dtype == torch.int8 and s.dtype == torch.float16 and s.shape == (w.size(0),)
    assert int(q.abs().max()) <= 31
    recon = q.float() * s.float()[:, None]
    assert info["out_err"] == pytest.approx(output_error(w, recon, h), rel=1e-9)
    assert info["out_err"] < 0.8 * info["rtn_out_err"]
    # the kept candidate is the best of the five on output error
    errs = [
        output_error(w, (lambda r: r[0].float() * r[1].float()[:, None])(gptq_int6(w, h, percentiles=[p])), h)
        for p in INT6_PERCENTILES
    ]
    assert info["out_err"] == pytest.approx(min(errs), rel=1e-9)


def test_dead_columns_are_zeroed():
    w, h = _weights(cols=64), _correlated_h(cols=64)
    h[5, :] = 0
    h[:, 5] = 0
    q, _s, info = gptq_int6(w, h)
    assert info["dead_columns"] == 1
    assert int(q[:, 5].abs().sum()) == 0


def test_int6_fn_falls_back_to_rtn_without_a_hessian():
    fn = make_int6_fn({"a.weight": torch.eye(300)})
    w = _weights()
    assert fn("a.weight", w)[2]["method"] == "gptq"
    q, s, info = fn("b.weight", w)
    assert info["method"] == "rtn" and torch.equal(q, quantize_int6(w)[0])


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lin = nn.Linear(16, 8, bias=False)
        self.out = nn.Linear(8, 4, bias=False)

    def forward_hidden(self, ids):
        return self.out(self.lin(self.emb(ids)))


def test_hessian_is_mean_outer_product_of_layer_inputs():
    torch.manual_seed(0)
    m = _Toy()
    batches = [torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (2, 7))]
    hs = collect_hessians(m, batches, ["lin.weight"])
    assert set(hs) == {"lin.weight"}
    x = torch.cat([m.emb(b).reshape(-1, 16) for b in batches]).double()
    torch.testing.assert_close(hs["lin.weight"], ((x.T @ x) / x.size(0)).float())
    assert not m.lin._forward_hooks  # hooks are removed


# --------------------------------------------------------------------------- calibration data legality
def _data_dir(tmp_path):
    shards.write_split(tmp_path, "train", np.arange(1000) % 97, shard_tokens=300)
    shards.write_split(tmp_path, "val", np.full(500, 7))
    return tmp_path


def test_train_calibration_reads_only_train_shards(tmp_path, monkeypatch):
    d = _data_dir(tmp_path)
    opened = []
    real = shards.read_shard

    def spy(path, *a, **k):
        opened.append(path.name)
        return real(path, *a, **k)

    monkeypatch.setattr(shards, "read_shard", spy)
    toks = train_calibration_tokens(d, n_seqs=5, seq_len=100)
    assert toks.shape == (5, 100) and toks.dtype == torch.int64
    assert torch.equal(toks.flatten(), torch.arange(500) % 97)  # the train stream, from its start
    assert opened and all(n.startswith("fineweb_train_") for n in opened)
    many = train_calibration_tokens(d, n_seqs=50, seq_len=100)  # asks for more than there is
    assert many.shape == (10, 100)
    assert not any("val" in n for n in opened)


def test_val_only_directory_is_refused(tmp_path):
    shards.write_split(tmp_path, "val", np.full(500, 7))
    with pytest.raises(DataError, match="empty train split"):
        train_calibration_tokens(tmp_path, 2, 10)
    with pytest.raises(DataError):
        train_calibration_tokens(tmp_path / "fineweb_val_000000.bin", 2, 10)


def test_self_generated_calibration_is_deterministic():
    from test_quant_support import tiny_config

    from pgolf.model import build_model

    model = build_model(tiny_config().model, seed=3)
    a = generate_calibration_tokens(model, n_seqs=3, seq_len=6, seed=11, batch=2)
    b = generate_calibration_tokens(model, n_seqs=3, seq_len=6, seed=11, batch=2)
    assert a.shape == (3, 6) and torch.equal(a, b)
    assert torch.all(a[:, 0] == 1) and int(a.max()) < 1024
