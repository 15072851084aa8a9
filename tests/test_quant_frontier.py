"""The frontier quantisers equal the records' own functions (fixture: tests/fixtures/gen_frontier_quant.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from _frontier_quant_inputs import check_inputs, gate_input, small_act_rms, small_state

from pgolf.config import QuantConfig
from pgolf.errors import ArtifactError
from pgolf.quant import lqer
from pgolf.quant.awq import group_scores
from pgolf.quant.frontier import dequantize_frontier, quantize_frontier
from pgolf.quant.sdclip import Protect, gptq_sdclip, output_error, quantize_gate_int8

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def rec():
    from safetensors.torch import load_file

    return load_file(str(FIX / "frontier_quant.safetensors"))


@pytest.fixture(scope="module")
def info():
    return json.loads((FIX / "frontier_quant.json").read_text())


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.mark.parametrize(("tag", "k", "cr"), [("k12", 12.85, 31), ("k3", 3.0, 31), ("k14", 14.0, 63)])
def test_gptq_sdclip_equals_record(rec, tag, k, cr):
    w, h, _ = check_inputs()
    q, s, awq = gptq_sdclip(w, h, k, cr)
    assert awq is None
    assert torch.equal(q, rec[f"gptq_{tag}.q"]) and torch.equal(s, rec[f"gptq_{tag}.scale"])


def test_gptq_sdclip_matches_frontier_check_values():
    """F5.4's check line, independently of the fixture."""
    w, h, _ = check_inputs()
    q, s, _ = gptq_sdclip(w, h, 12.85, 31)
    assert hashlib.sha256(q.numpy().tobytes()).hexdigest()[:16] == "15487610b66054ab"
    assert int(q.abs().sum()) == 18759 and int(q.sum()) == -9
    assert int((q.abs() == 31).sum()) == 1 and int(q[3, 7]) == 31
    assert q[0, :12].tolist() == [0, 3, 2, -2, -3, 0, 3, 1, -3, -3, 1, 3] and not q[:, 5].any()
    assert s[:4].tolist() == [0.005863189697265625, 0.005878448486328125, 0.005889892578125, 0.0160675048828125]
    e_gptq = output_error(w, q.float() * s.float()[:, None], h)
    plain = torch.clamp(torch.round(w / s.float()[:, None]), -31, 31)
    assert e_gptq == pytest.approx(7.981756, rel=1e-5)
    assert output_error(w, plain * s.float()[:, None], h) == pytest.approx(8.271955, rel=1e-5)
    assert int((plain != q).sum()) == 299
    q14, _, _ = gptq_sdclip(w, h, 14.0, 63)
    assert int(q14[3, 7]) == 58


def test_stable_and_record_sort_agree(rec):
    w, h, _ = check_inputs()
    q, _, _ = gptq_sdclip(w, h, 12.85, 31, stable_sort=False)
    assert torch.equal(q, rec["gptq_k12.q"])


def test_stable_sort_breaks_ties_by_column():
    """Tied Hessian diagonals (integer activations): the stable order is the index order, and
    the codes can differ from the record's unstable sort (F8.19), which stays reachable."""
    state, hessians = small_state()
    differ = 0
    for name in ("blocks.0.attn.c_k.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.fc.weight"):
        a, _, _ = gptq_sdclip(state[name], hessians[name], 13.0, 31, stable_sort=True)
        b, _, _ = gptq_sdclip(state[name], hessians[name], 13.0, 31, stable_sort=False)
        diag = torch.diagonal(hessians[name])
        assert len(set(diag.tolist())) < diag.numel()  # there are ties
        differ += not torch.equal(a, b)
    assert differ


def test_int8_gate_equals_record(rec):
    gq, gs = quantize_gate_int8(gate_input())
    assert torch.equal(gq, rec["gate.gq"]) and torch.equal(gs, rec["gate.gs"])
    assert gq[0].tolist() == [0, 46, 86, 114, 127, 123, 102, 67, 23, -24, -68, -102]


@pytest.mark.parametrize("kind", ["asym", "sym"])
def test_lqer_factors_equal_record(rec, kind):
    w, h, _ = check_inputs()
    q, s, _ = gptq_sdclip(w, h, 12.85, 31)
    e = w - q.float() * s.float()[:, None]
    fit = lqer.fit(e, rank=4, asym=kind == "asym", group=64, factor_bits=4)
    assert fit["kind"] == kind
    for suffix, part in zip(lqer.ASYM_SUFFIXES if kind == "asym" else lqer.SYM_SUFFIXES, ("qA", "sA", "qB", "sB")):
        assert torch.equal(fit["tensors"][suffix], rec[f"lqer_{kind}.{part}"]), part
    if kind == "asym":  # F5.7's check line
        assert float((e - fit["delta"]).norm()) == pytest.approx(0.191818, abs=2e-6)
        assert sorted(set(fit["tensors"][".lqA_a"].flatten().tolist())) == [0, 1]


def test_lqer_best_sign_never_worse():
    w, h, _ = check_inputs()
    q, s, _ = gptq_sdclip(w, h, 12.85, 31)
    e = w - q.float() * s.float()[:, None]
    svd = float((e - lqer.fit(e, sign="svd")["delta"]).norm())
    best = float((e - lqer.fit(e, sign="best")["delta"]).norm())
    assert best <= svd


def test_awq_lite_equals_v21(rec, info):
    w, h, x = check_inputs()
    act = x.square().mean(dim=0).sqrt()
    scores = group_scores(w, act, 64)
    assert [sc for sc, _, _ in scores] == pytest.approx(info["awq_scores"], rel=1e-6)
    q, s, awq = gptq_sdclip(w, h, 12.85, 31, protect=Protect([64], 64, 127))
    assert torch.equal(q, rec["awq.q"]) and torch.equal(s, rec["awq.scale"])
    assert torch.equal(awq["s_hi"], rec["awq.s_hi"]) and torch.equal(awq["starts"], rec["awq.starts"])
    assert int(q[:, 64:128].abs().max()) == 123 and int(q[:, :64].abs().max()) == 31


@pytest.mark.parametrize("tag", ["mixed", "mixed_awq"])
def test_whole_export_equals_record(info, tag):
    """The record's gptq_mixed_quantize (V21's with AWQ) on a small state dict: every stored
    tensor, every meta string and every dequantised tensor, bit for bit."""
    state, hessians = small_state()
    q = QuantConfig(scheme="frontier", awq_lite_enabled=tag == "mixed_awq", gptq_stable_sort=False)
    out = quantize_frontier(state, hessians, q, act_rms=small_act_rms(hessians))
    want = info[tag]
    assert out.meta == want["meta"]
    assert set(out.result) == set(want["result"])
    for name, (dtype, shape, digest) in want["result"].items():
        t = out.result[name]
        assert (str(t.dtype), list(t.shape), sha(t)) == (dtype, shape, digest), name
    deq = dequantize_frontier(out.result, out.meta, state)
    for name, (dtype, digest) in want["dequant"].items():
        assert (str(deq[name].dtype), sha(deq[name])) == (dtype, digest), name


def test_dequantize_refuses_bad_lqer_factor():
    state, hessians = small_state()
    out = quantize_frontier(state, hessians, QuantConfig(scheme="frontier"))
    name = next(n for n, m in out.meta.items() if "lqer_asym" in m)
    bad = dict(out.result)
    bad[name + ".lqB_a"] = bad[name + ".lqB_a"][:, :-1]
    with pytest.raises(ArtifactError, match=r"LQER factors of .* have shapes"):
        dequantize_frontier(bad, out.meta, state, "x.pgrp")
    bad = dict(out.result)
    del bad[name + ".lqA_a"]
    with pytest.raises(ArtifactError, match="lqA_a is missing"):
        dequantize_frontier(bad, out.meta, state, "x.pgrp")
    meta = dict(out.meta)
    meta[name] = "gptq (int6)+something"
    with pytest.raises(ArtifactError, match="unknown quantisation"):
        dequantize_frontier(out.result, meta, state, "x.pgrp")
