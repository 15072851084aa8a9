"""The seed's quantisers, each checked against a direct computation of SPEC 7.2-7.5 / 7.7."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.config import SEED_CONTROL_PATTERNS, load_config
from pgolf.quant.rtn import (
    INT6_PERCENTILES,
    INT8_CLIP_Q,
    classify,
    dequantize,
    dequantize_state_dict,
    quantize_int6,
    quantize_int8,
    quantize_state_dict,
    restore_passthrough,
    tensor_category,
)


def _rng_matrix(rows: int, cols: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # heavy-ish tails so the percentiles differ; rows with very different ranges
    t = torch.randn(rows, cols, generator=g) * scale
    t[0] *= 0.01  # a row whose clip is below 1: hits the 1/31 floor
    t[1, 3] = 40.0  # an outlier
    return t


def _quantile32(row: np.ndarray, p: float) -> np.float32:
    """The seed's clip value: torch.quantile (linear interpolation) on the fp32 |row|.

    torch computes the rank (n-1)*p in fp32, so a float64 numpy quantile can differ in
    the last bits; the interpolation rule itself is checked in test_quantile_is_linear.
    """
    return np.float32(torch.quantile(torch.from_numpy(np.abs(row).astype(np.float32)), p))


def test_quantile_is_linear_interpolation():
    v = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert float(torch.quantile(v, 0.5)) == 2.5
    assert float(torch.quantile(v, 0.9)) == pytest.approx(3.7)


def _direct_int6(t: torch.Tensor, p: float) -> tuple[np.ndarray, np.ndarray, float]:
    """SPEC 7.3 written out with numpy, row by row."""
    a = t.double().numpy()
    qs, scales = [], []
    for row in a:
        c = _quantile32(row, p) if p < 1.0 else np.float32(np.abs(row).max())
        # the seed computes c/31 in fp32, floors it at 1/31, then rounds to fp16
        step = np.float16(max(np.float32(c) / np.float32(31), np.float32(1.0) / np.float32(31)))
        q = np.clip(np.round(row.astype(np.float32) / np.float32(step)), -31, 31)
        qs.append(q)
        scales.append(step)
    q = np.stack(qs).astype(np.int8)
    s = np.array(scales, dtype=np.float16)
    err = float(np.mean((a.astype(np.float32) - q.astype(np.float32) * s.astype(np.float32)[:, None]) ** 2))
    return q, s, err


# --------------------------------------------------------------------------- classification
def test_categories_follow_the_seed_names():
    assert tensor_category("tok_emb.weight") == "embed"
    assert tensor_category("lm_head.weight") == "embed"
    assert tensor_category("blocks.3.mlp.fc.weight") == "mlp"
    assert tensor_category("blocks.3.mlp.proj.weight") == "mlp"
    assert tensor_category("blocks.3.attn.c_q.weight") == "attn"
    assert tensor_category("bigram.proj.weight") == "attn"  # ".proj." without ".mlp."
    assert tensor_category("ve_shared.proj.weight") == "attn"
    assert tensor_category("bigram.embed.weight") == "other"
    assert tensor_category("ve_shared.embed.weight") == "other"


def test_classification_order():
    big = torch.zeros(300, 300)
    assert classify("mtp_heads.0.weight", big) == "drop"
    assert classify("blocks.0.attn.c_q.weight", torch.zeros(256, 256)) == "passthrough"  # exactly 65,536
    assert classify("blocks.0.attn.c_q.weight", torch.zeros(257, 256)) == "int6"
    assert classify("blocks.0.attn.c_q.weight", torch.zeros(300, 300, dtype=torch.int32)) == "passthrough"
    assert classify("blocks.0.attn_scale_big", big) == "passthrough_ctrl"  # control pattern before category
    assert classify("blocks.0.attn.q_gain", big) == "passthrough_ctrl"
    assert classify("tok_emb.weight", big) == "int8"
    assert classify("something.else", big) == "int8"
    assert classify("blocks.0.attn.c_q.weight", big, control_patterns=("c_q",)) == "passthrough_ctrl"
    assert classify("blocks.0.attn.c_q.weight", torch.zeros(10, 10), passthrough_max_numel=50) == "int6"


def test_record_model_gives_131_entries():
    from pgolf.quant.artifact import skeleton

    cfg = load_config("record", environ={})
    state = skeleton(cfg.model).state_dict()  # names, shapes, dtypes (meta device): all classification reads
    kinds: dict[str, list[str]] = {}
    for name, t in state.items():
        kinds.setdefault(classify(name, t, cfg.model.control_patterns), []).append(name)
    assert len(state) == 131
    assert {k: len(v) for k, v in kinds.items()} == {"int6": 66, "int8": 3, "passthrough": 62}
    assert sorted(kinds["int8"]) == ["bigram.embed.weight", "tok_emb.weight", "ve_shared.embed.weight"]
    assert "bigram.proj.weight" in kinds["passthrough"] and "ve_shared.proj.weight" in kinds["passthrough"]
    assert all(".attn." in n or ".mlp." in n for n in kinds["int6"])


def test_mtp_heads_are_dropped():
    state = {"mtp_heads.0.weight": torch.ones(300, 300), "tok_emb.weight": torch.ones(300, 300)}
    q = quantize_state_dict(state)
    assert q.dropped == ["mtp_heads.0.weight"]
    assert set(q.meta) == {"tok_emb.weight"}


# --------------------------------------------------------------------------- int6
@pytest.mark.parametrize("p", INT6_PERCENTILES)
def test_int6_candidate_matches_direct_formula(p):
    t = _rng_matrix(12, 700)
    q, s, err = _direct_int6(t, p)
    got_q, got_s, info = quantize_int6(t, [p])
    assert got_s.dtype == torch.float16 and got_q.dtype == torch.int8
    np.testing.assert_array_equal(got_s.numpy(), s)
    np.testing.assert_array_equal(got_q.numpy(), q)
    assert info["percentile"] == p
    assert info["mse"] == pytest.approx(err, rel=1e-6)


def test_int6_search_keeps_the_best_percentile_per_tensor():
    t = _rng_matrix(12, 700, seed=3)
    errs = {p: _direct_int6(t, p)[2] for p in INT6_PERCENTILES}
    best = min(INT6_PERCENTILES, key=lambda p: (errs[p], INT6_PERCENTILES.index(p)))
    q, s, info = quantize_int6(t)
    assert info["percentile"] == best
    np.testing.assert_array_equal(q.numpy(), _direct_int6(t, best)[0])


def test_int6_ties_keep_the_earlier_candidate():
    # every row below the 1/31 floor: all candidates give identical steps and errors
    t = torch.full((4, 100), 0.2)
    t[:, ::2] = -0.1
    _, _, info = quantize_int6(t, [0.999, 1.0])
    assert info["percentile"] == 0.999


def test_int6_scale_is_rounded_to_fp16_before_use():
    step32 = torch.tensor(1.2345678)  # c/31 for c = 31 * 1.2345678; not representable in fp16
    step16 = step32.half().float()
    row = [float(step32 * 31)] + [float((k + 0.4995) * step32) for k in range(1, 12)]
    t = torch.tensor([row * 10])
    q, s, _ = quantize_int6(t, [1.0])
    assert float(s[0]) == float(step16)
    assert torch.equal(q.float(), torch.clamp(torch.round(t / step16), -31, 31))
    assert not torch.equal(q.float(), torch.clamp(torch.round(t / step32), -31, 31))  # the test discriminates


def test_int6_scale_floor_and_saturation():
    t = torch.tensor([[0.5, -0.25, 0.01, 0.0] * 30, [100.0, 1.0, -2.0, 3.0] * 30])
    q, s, _ = quantize_int6(t, [0.999])
    assert float(s[0]) == float(torch.tensor(1 / 31).half())  # row max 0.5 < 1: fixed step
    assert int(q.abs().max()) <= 31


def test_int6_non_2d():
    t = torch.tensor([0.5, -3.1, 2.0, 0.0])
    q, s, info = quantize_int6(t)
    assert s.ndim == 0 and s.dtype == torch.float16
    assert float(s) == float(torch.tensor(3.1 / 31).half())
    assert torch.equal(q, torch.clamp(torch.round(t / s.float()), -31, 31).to(torch.int8))
    q0, s0, _ = quantize_int6(torch.zeros(5))
    assert float(s0) == 1.0 and int(q0.abs().sum()) == 0


# --------------------------------------------------------------------------- int8
def test_int8_matches_direct_formula_with_fp32_rounding_and_fp16_storage():
    t = _rng_matrix(9, 5000, seed=5) * 7
    a = t.numpy().astype(np.float64)
    q_exp, s_exp = [], []
    for row in a:
        c = _quantile32(row, INT8_CLIP_Q)
        clipped = np.clip(row.astype(np.float32), -c, c)
        step = np.float32(max(c / np.float32(127), np.float32(1 / 127)))
        q_exp.append(np.clip(np.round(clipped / step), -127, 127))
        s_exp.append(step)
    q, s, _ = quantize_int8(t)
    assert s.dtype == torch.float16
    np.testing.assert_array_equal(q.numpy(), np.stack(q_exp).astype(np.int8))
    np.testing.assert_array_equal(s.numpy(), np.array(s_exp, dtype=np.float32).astype(np.float16))


def test_int8_rounds_with_the_fp32_step_not_the_stored_fp16_one():
    step32 = torch.tensor(0.0123456)
    c = float(step32 * 127)
    row = torch.zeros(1, 2000)
    row[0, 0], row[0, 1] = c, -c  # the clip quantile lies between these two: exactly c
    row[0, 2:12] = torch.tensor([(k + 0.4995) * float(step32) for k in range(10, 20)])
    q, s, _ = quantize_int8(row)
    step = torch.quantile(row.abs(), INT8_CLIP_Q, dim=1)[0] / 127
    assert torch.equal(q[0].float(), torch.clamp(torch.round(row[0] / step), -127, 127))
    with_fp16 = torch.clamp(torch.round(row[0] / s[0].float()), -127, 127)
    assert not torch.equal(q[0].float(), with_fp16)  # the stored fp16 step would round differently
    assert s.dtype == torch.float16 and float(s[0]) == float(step.half())


def test_int8_non_2d_uses_a_0d_fp32_scale():
    t = torch.linspace(-2, 3, 1000)
    q, s, _ = quantize_int8(t)
    c = torch.quantile(t.abs(), INT8_CLIP_Q)
    assert s.dtype == torch.float32 and s.ndim == 0
    assert float(s) == pytest.approx(float(c / 127), rel=1e-6)
    assert torch.equal(q, torch.clamp(torch.round(t.clamp(-c, c) / s), -127, 127).to(torch.int8))


# --------------------------------------------------------------------------- dequantisation
def test_dequantize_broadcasts_rows_and_restores_dtypes():
    q = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
    s = torch.tensor([0.5, 0.25], dtype=torch.float16)
    out = dequantize(q, s, torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), torch.tensor([[0.5, -1.0], [0.75, 1.0]]))
    assert torch.equal(dequantize(q, torch.tensor(2.0), torch.float32), q.float() * 2)
    h = torch.tensor([1.5], dtype=torch.float16)
    assert restore_passthrough(h, torch.bfloat16).dtype == torch.bfloat16
    assert restore_passthrough(h, torch.float32).dtype == torch.float32
    ints = torch.tensor([1, 2], dtype=torch.int64)
    assert restore_passthrough(ints, torch.int64) is ints


def test_state_dict_round_trip_and_report():
    g = torch.Generator().manual_seed(1)
    state = {
        "tok_emb.weight": (torch.randn(300, 300, generator=g) * 0.1).to(torch.bfloat16),
        "blocks.0.attn.c_q.weight": torch.randn(300, 300, generator=g),
        "blocks.0.attn_scale": torch.rand(300, generator=g),
        "steps": torch.tensor([3], dtype=torch.int64),
    }
    q = quantize_state_dict(state)
    assert q.meta == {
        "tok_emb.weight": {"type": "int8"},
        "blocks.0.attn.c_q.weight": {"type": "int6"},
        "blocks.0.attn_scale": "passthrough",
        "steps": "passthrough",
    }
    assert set(q.packed) == {
        "tok_emb.weight.q",
        "tok_emb.weight.scale",
        "blocks.0.attn.c_q.weight.q",
        "blocks.0.attn.c_q.weight.scale",
        "blocks.0.attn_scale",
        "steps",
    }
    assert q.packed["blocks.0.attn_scale"].dtype == torch.float16
    back = dequantize_state_dict(q.packed, q.meta, state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
    assert torch.equal(back["steps"], state["steps"])
    rep = q.report["blocks.0.attn.c_q.weight"]
    d = state["blocks.0.attn.c_q.weight"].double() - back["blocks.0.attn.c_q.weight"].double()
    assert rep["mse"] == pytest.approx(float(d.square().mean()), rel=1e-9)
    norm = state["blocks.0.attn.c_q.weight"].double().norm()
    assert rep["rel"] == pytest.approx(float(d.norm() / norm), rel=1e-9)
    assert 0 < rep["rel"] < 0.05
    assert q.counts() == {"passthrough": 2, "passthrough_ctrl": 0, "int6": 1, "int8": 1}


def test_control_patterns_default_to_the_seed():
    assert "resid_mix" in SEED_CONTROL_PATTERNS and "ve_shared.scale" in SEED_CONTROL_PATTERNS
