"""The causal n-gram tilt: the records' own hints (fixture from their C code), F6.8's check
values, the tilt's closed form, scoring-order causality, bounded tables, and the method."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval_fixtures import small_config, tables, trained_model, val_tokens

from pgolf.config import load_config
from pgolf.errors import ConfigError
from pgolf.eval import evaluate, plan_windows
from pgolf.eval.ngram import NgramHints, expert, stream_hints, tilt_logits, tilted_nll_closed_form

FIXTURE = Path(__file__).parent / "fixtures" / "ngram_records.json"  # tests/fixtures/gen_ngram.py


def check_sequence() -> np.ndarray:
    t = np.array([1] + [10 + (i % 17) for i in range(1, 400)], dtype=np.int64)
    t[np.arange(40, 400, 40)] = 99
    return t


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("seq", ["check", "text"])
def test_hints_equal_the_records_c_code(seq):
    d = json.loads(FIXTURE.read_text())["sequences"][seq]
    toks = np.asarray(d["tokens"])
    h, b = stream_hints(toks, expert("1514"))
    rh, rb = np.asarray(d["1514"]["hint"]), np.asarray(d["1514"]["beta"])
    assert (b > 0).sum() == (rb > 0).sum() > 100
    np.testing.assert_array_equal(np.where(b > 0, h, -1), np.where(rb > 0, rh, -1))
    np.testing.assert_array_equal(b, rb)  # beta = 2 * best/count, bit for bit
    h, b = stream_hints(toks, expert("2135"))
    gate = np.asarray(d["2135"]["gate"])
    np.testing.assert_array_equal(b > 0, gate)
    np.testing.assert_array_equal(h[gate], np.asarray(d["2135"]["hint"])[gate])
    assert np.all(b[gate] == 2.625)


def test_frontier_check_values():
    """FRONTIER F6.8 (positions there are token indices; pgolf's target t is token t+1)."""
    s = check_sequence()
    y = s[1:]
    h, b = stream_hints(s, expert("1514"))
    m = b > 0
    assert m.sum() == 277 and (h[m] == y[m]).sum() == 269
    np.testing.assert_array_equal(np.flatnonzero(m)[:5] + 1, [53, 54, 55, 56, 57])
    np.testing.assert_array_equal(b[m][:5], [2.0, 2.0, 2.0, 2.0, 1.0])
    h2, b2 = stream_hints(s, expert("2135"))
    m2 = b2 > 0
    assert m2.sum() == 227 and (h2[m2] == y[m2]).sum() == 218 and np.flatnonzero(m2)[0] == 32
    changed = s.copy()
    changed[205] = 50
    for ex, first in (("1514", 209 - 1), ("2135", 215)):
        ha, ba = stream_hints(s, expert(ex))
        hb, bb = stream_hints(changed, expert(ex))
        diff = np.flatnonzero((ha != hb) | (ba != bb))
        assert diff[0] == first  # nothing at or before target 204 (token 205) moves
        assert np.array_equal(ha[:205], hb[:205]) and np.array_equal(ba[:205], bb[:205])


def test_closed_form_is_the_renormalised_softmax():
    z = torch.tensor([[2.0, 0.5, -1.0, 1.5, 0.0]], dtype=torch.float64)
    beta = torch.tensor([2.625], dtype=torch.float64)
    tilted = torch.log_softmax(tilt_logits(z, torch.tensor([3]), beta), dim=-1)[0]
    assert math.isclose(float(tilted.exp().sum()), 1.0, abs_tol=1e-12)
    logp = torch.log_softmax(z, dim=-1)[0].numpy()
    for y, nll, want in ((3, 1.200512, 0.155457), (0, 0.700512, 2.280457)):
        assert abs(-logp[y] - nll) < 1e-6
        got = tilted_nll_closed_form(np.array([-logp[y]]), np.array([logp[3]]), np.array([y == 3]), np.array([2.625]))
        assert abs(got[0] - want) < 1e-6 and abs(got[0] + float(tilted[y])) < 1e-12


def test_scoring_in_batches_gives_the_one_pass_hints():
    s = np.asarray(val_tokens(3000), dtype=np.int64)
    for ex in ("1514", "2135"):
        want = stream_hints(s, expert(ex))
        online = NgramHints(s, expert(ex))
        got = []
        for lo in range(0, 3000, 96):
            got.append(online.hints(np.arange(lo, min(lo + 96, 3000))))
            online.commit()
        np.testing.assert_array_equal(np.concatenate([g[0] for g in got])[want[1] > 0], want[0][want[1] > 0])
        np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), want[1])


def test_hints_use_only_scored_tokens_in_scoring_order():
    """Runs scored last-first: a run's hints never depend on the (unscored) runs before it in the stream."""
    s = np.tile(np.asarray(val_tokens(401), dtype=np.int64)[:400], 3)  # repeats, so later runs get hints
    runs = [np.arange(a, a + 200) for a in range(0, len(s) - 1 - 199, 200)][::-1]

    def hints_of(stream):
        h = NgramHints(stream, expert("2135"))
        out = []
        for r in runs:
            out.append(h.hints(r))
            h.commit()
        return out

    base = hints_of(s)
    assert sum((b > 0).sum() for _, b in base[1:]) > (base[0][1] > 0).sum()  # later runs learn from scored ones
    # The first scored run sees only its own tokens: everything outside it can change.
    a = int(runs[0][0])
    other = (s + 3) % 1024
    other[a + 1 : a + 201] = s[a + 1 : a + 201]
    first = hints_of(other)[0]
    assert np.array_equal(first[0], base[0][0]) and np.array_equal(first[1], base[0][1])
    changed = s.copy()
    changed[50:60] = (changed[50:60] + 7) % 1024  # inside the last-scored run
    for (ha, ba), (hb, bb) in zip(base[:-1], hints_of(changed)[:-1]):
        assert np.array_equal(ha, hb) and np.array_equal(ba, bb)


def test_tables_are_bounded():
    s = np.asarray(val_tokens(3000), dtype=np.int64)
    h = NgramHints(s, expert("1514"), table_bits=6)
    h.hints(np.arange(3000))
    h.commit()
    assert all(len(c) <= 64 for c in h.tables.ctx) and h.tables.dropped > 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="ngram_expert"):
        load_config("tiny", ["eval.ngram_expert=99"], environ={})
    with pytest.raises(ConfigError, match="ngram_table_bits"):
        load_config("tiny", ["eval.ngram_table_bits=40"], environ={})
    with pytest.raises(ConfigError, match="ngram_order"):
        load_config("tiny", ["eval.ngram_order=future"], environ={})


@pytest.fixture(scope="module")
def model():
    return trained_model()[1]


N = 1500


@pytest.mark.parametrize("ex", ["1514", "2135"])
def test_tilt_method_is_sliding_plus_the_closed_form(model, ex):
    base, nll = evaluate(model, "sliding", val_tokens(), tables(), small_config(), "cpu", max_tokens=N, record=True)
    res, tilted = evaluate(model, "ngram-tilt", val_tokens(), tables(), small_config(f"eval.ngram_expert={ex}"), "cpu",
                           max_tokens=N, record=True)  # fmt: skip
    assert res.score_first and res.tokens == base.tokens == N and res.params["ngram_hinted"] > 0
    h, b = stream_hints(np.asarray(val_tokens(N), dtype=np.int64), expert(ex))  # stream order = scoring order
    assert res.params["ngram_hinted"] == int((b > 0).sum())
    np.testing.assert_array_equal(tilted[b == 0], nll[b == 0])  # untouched where there is no hint
    toks = torch.from_numpy(val_tokens(N).astype(np.int64))
    with torch.no_grad():
        for w in plan_windows(N, 128, 32):
            t = np.arange(w.start + w.score_from, w.start + w.score_to)
            if not (b[t] > 0).any():
                continue
            logits = model.compute_logits(model.forward_hidden(toks[w.start : w.start + w.length][None]))[0]
            logp = torch.log_softmax(logits[w.score_from : w.score_to].double(), -1).numpy()
            rows = np.arange(len(t))
            y = toks[t + 1].numpy()
            want = tilted_nll_closed_form(-logp[rows, y], logp[rows, np.maximum(h[t], 0)], h[t] == y, b[t])
            np.testing.assert_allclose(tilted[t], want, atol=2e-5)
    # Every hinted correct target gains, every wrong one loses.
    y = val_tokens(N)[1:].astype(np.int64)
    m = b > 0
    assert np.all(tilted[m & (h == y)] < nll[m & (h == y)]) and np.all(tilted[m & (h != y)] > nll[m & (h != y)])


def test_tilt_as_a_layer_on_ttt_and_the_stream_variant_label(model):
    res, _ = evaluate(model, "ttt", val_tokens(), tables(), small_config("eval.ngram_tilt=on"), "cpu", max_tokens=N)
    assert res.score_first and res.params["ngram_hinted"] > 0 and res.phases["ttt_training"] > 0
    res, _ = evaluate(model, "ngram-tilt", val_tokens(), tables(), small_config("eval.ngram_order=stream"), "cpu",
                      max_tokens=N)  # fmt: skip
    assert res.score_first is False and res.params["ngram_order"] == "stream"


def test_result_reports_every_phase_and_the_budget(model):
    res, _ = evaluate(model, "ngram-tilt", val_tokens(), tables(), small_config(), "cpu", max_tokens=N)
    d = res.to_dict()
    for k in ("read", "decompress", "dequantise", "compile_warmup", "diagnostic", "scoring", "ttt_training",
              "ngram_hints"):  # fmt: skip
        assert k in d["phases"]
    assert d["phases"]["scoring"] > 0 and d["phases"]["ngram_hints"] > 0
    assert math.isclose(d["total_seconds"], sum(d["phases"].values())) and d["within_600s"] is True


@pytest.mark.parametrize("method", ["plain", "sliding", "slot-causal"])
def test_compile_warmup_covers_every_shape_the_method_runs(model, monkeypatch, method):
    """The warm-up (timed as its own phase) runs each input shape the scoring will use, on random tokens."""
    import pgolf.eval.api as api

    seen: dict[str, list] = {"warm": [], "score": []}
    phase = {"now": "warm"}

    class Recording(api._Compiled):
        def __init__(self, fn):
            self.eager, self.ok = fn, True

            def compiled(x):
                seen[phase["now"]].append(tuple(x.shape))
                return fn(x)

            self.compiled = compiled

    real = api.compile_warmup

    def warm(*a, **k):
        real(*a, **k)
        phase["now"] = "score"

    monkeypatch.setattr(api, "_hidden_fn", lambda m, cfg, dev: Recording(m.forward_hidden))
    monkeypatch.setattr(api, "compile_warmup", warm)
    res, _ = evaluate(model, method, val_tokens(), tables(), small_config(), "cpu", max_tokens=1000)
    assert seen["score"] and set(seen["score"]) <= set(seen["warm"]) and len(seen["warm"]) == len(set(seen["warm"]))
    assert res.phases["compile_warmup"] > 0
