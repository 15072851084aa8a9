"""The behavioural score-first audit: catches two-pass SLOT, clears the causal methods."""

from __future__ import annotations

import pytest
import torch
from test_eval_fixtures import small_config, tables, trained_model, val_tokens

from pgolf.eval.audit import audit, audit_positions, replacement

N = 768


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return trained_model()[1]


@pytest.mark.parametrize("method", ["plain", "sliding", "slot-causal", "ttt"])
def test_causal_methods_are_measured_score_first(model, method):
    rep = audit(model, method, val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    assert rep["score_first"] is True and rep["label"] is True and rep["caught"] is False
    assert rep["max_change"] <= 1e-6
    # The replaced target itself (and what follows) does change: the audit really perturbs.
    assert max(d["change_at_position"] for d in rep["details"]) > 0


def test_ttt_audit_trains_between_chunks(model):
    rep = audit(model, "ttt", val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    assert rep["settings"]["ttt_chunk_tokens"] < N  # several chunks, so training happens inside the stream


def test_two_pass_slot_is_caught(model):
    rep = audit(model, "slot", val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    assert rep["score_first"] is False and rep["label"] is False
    assert rep["caught"] is False  # honestly labelled
    assert rep["max_change"] > 1e-4
    assert any(d["changed_targets_before"] > 0 for d in rep["details"])


def test_a_mislabelled_method_is_caught(model, monkeypatch):
    import pgolf.eval.audit as audit_mod

    monkeypatch.setitem(audit_mod.SCORE_FIRST, "slot", True)
    rep = audit(model, "slot", val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    assert rep["caught"] is True


def test_positions_and_replacements_are_deterministic():
    ps = audit_positions(4096, 3)
    assert ps == audit_positions(4096, 3) and len(ps) == 3
    assert all(p % 32 != 0 for p in ps)  # never at the start of a 32-aligned scored run
    for p in ps:
        for orig in (0, 5, 1023):
            r = replacement(orig, p, 1024)
            assert r != orig and 0 <= r < 1024


def test_training_before_scoring_is_caught(model, monkeypatch):
    """An illegal 'TTT' that adapts on the whole stream before scoring it, labelled score-first."""
    import copy

    import numpy as np

    import pgolf.eval.api as api

    real = api.evaluate_ttt

    def leaky(m, tokens, *args, **kwargs):
        m2 = copy.deepcopy(m)
        ids = torch.from_numpy(np.asarray(tokens, dtype=np.int64))[None]
        m2(ids[:, :-1], ids[:, 1:]).backward()
        with torch.no_grad():
            for p in m2.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
        return real(m2, tokens, *args, **kwargs)

    monkeypatch.setattr(api, "evaluate_ttt", leaky)
    rep = audit(model, "ttt", val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    assert rep["label"] is True and rep["score_first"] is False and rep["caught"] is True


# --------------------------------------------------------------------------- C1-C4 (issue 15)
@pytest.fixture
def planted():
    from _planted_methods import planted as ctx

    with ctx():
        yield


def tiled(period: int = 384, times: int = 3):
    """A stream that repeats itself, so that n-gram contexts recur (the tilt has something to use)."""
    import numpy as np

    return np.tile(val_tokens(period)[:period], times)


@pytest.mark.parametrize(
    ("method", "sets", "failed"),
    [
        ("plain", [], []),
        ("sliding", [], []),
        ("slot-causal", [], []),
        ("ttt", [], []),
        ("ngram-tilt", [], []),
        ("ngram-tilt", ["eval.ngram_expert=2135"], []),
        ("ttt", ["eval.ngram_tilt=on"], []),
        ("slot", [], ["C1", "C3"]),  # fitted on the very targets it scores
        ("ngram-tilt", ["eval.ngram_order=stream"], ["C3"]),  # precompute reads all before scoring; causal in stream
    ],
)
def test_every_method_measured_on_all_four_conditions(model, method, sets, failed):
    rep = audit(model, method, val_tokens(), tables(), small_config(*sets), "cpu", n_targets=N)
    assert rep["failed"] == failed, rep["conditions"]
    c = rep["conditions"]
    assert c["C2"]["checked"] >= 10 and c["C4"]["once"] == N
    assert rep["caught"] == (rep["label"] and bool(failed))


@pytest.mark.parametrize(
    ("method", "sets", "failed"),
    [
        ("planted-pre-ttt", [], ["C1", "C3"]),
        ("planted-hashed-cache", [], ["C2"]),
        ("planted-two-pass", [], ["C4"]),
        ("reversed-segments", ["eval.ngram_tilt=on", "eval.ngram_expert=2135"], []),
        ("reversed-segments", ["eval.ngram_tilt=on", "eval.ngram_expert=2135", "eval.ngram_order=stream"],
         ["C1", "C3"]),
    ],
)  # fmt: skip
def test_planted_illegal_methods_fail_exactly_the_conditions_they_break(model, planted, method, sets, failed):
    rep = audit(model, method, tiled(), tables(), small_config(*sets), "cpu", n_targets=N)
    assert rep["failed"] == failed, rep["conditions"]
    # pgolf labels the stream-order tilt not score-first itself; the planted ones claim to be.
    label = "eval.ngram_order=stream" not in sets
    assert rep["label"] is label and rep["caught"] == (label and bool(failed))
    c = rep["conditions"]
    if "C2" in failed:
        assert c["C2"]["max_sum_error"] > 1e-3
    if "C3" in failed:
        assert c["C3"]["violations"] > 0 and c["C3"]["first"]
    if "C4" in failed:
        assert c["C4"]["more"] == N and c["C4"]["scored_tokens"] == 2 * N


def test_the_tilt_in_scoring_order_really_tilts_the_reversed_method(model, planted):
    from pgolf.eval import evaluate

    cfg = small_config("eval.ngram_tilt=on", "eval.ngram_expert=2135")
    res, _ = evaluate(model, "reversed-segments", tiled(), tables(), cfg, "cpu", max_tokens=N)
    assert res.params["ngram_hinted"] > 20  # the legal variant is not legal by doing nothing


def test_c4_counts_the_stream_bytes_once(model, planted):
    rep = audit(model, "sliding", val_tokens(), tables(), small_config(), "cpu", n_targets=N)
    c4 = rep["conditions"]["C4"]
    assert c4["bytes"] == c4["stream_bytes"] > N
    rep = audit(model, "planted-two-pass", tiled(), tables(), small_config(), "cpu", n_targets=N)
    c4 = rep["conditions"]["C4"]
    assert c4["bytes"] == 2 * c4["stream_bytes"] and not c4["pass"]


def test_explicit_positions_and_bad_ones(model):
    from pgolf.errors import ConfigError

    rep = audit(model, "sliding", val_tokens(), tables(), small_config(), "cpu", n_targets=N, at=[30, 500])
    assert rep["positions"] == [30, 500] and rep["all_pass"]
    with pytest.raises(ConfigError, match="audit positions"):
        audit(model, "sliding", val_tokens(), tables(), small_config(), "cpu", n_targets=N, at=[N])


# --------------------------------------------------------------------------- the document methods
def ab_stream():
    """F7.4.7's pair: a short document A early in the stream and, last, a long document B that
    repeats A's text; length-ordered ttt-phased scores B long before A."""
    import numpy as np
    from _ttt_fixtures import caseops_stream

    toks, counts = caseops_stream()
    bos = [*np.flatnonzero(toks == 1).tolist(), len(toks)]
    docs = [(toks[a:b], counts[a:b]) for a, b in zip(bos[:-1], bos[1:])]
    k = max(range(len(docs)), key=lambda i: len(docs[i][0]))
    a = (docs[k][0][:40], docs[k][1][:40])
    b = (np.concatenate([docs[k][0], docs[k][0][1:]]), np.concatenate([docs[k][1], docs[k][1][1:]]))
    parts = [a, *[d for i, d in enumerate(docs) if i != k][:12], b]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.parametrize(
    ("method", "sets", "failed"),
    [
        ("ttt-lora", [], []),
        ("ttt-phased", [], []),  # C1 in its own scoring order (the stream-order letter: test_eval_ttt_lora.py)
        ("ttt-phased", ["eval.ngram_tilt=on", "eval.ngram_expert=2135"], []),
        # #2135: hints in stream order, documents scored by length: B's hints use A before A is scored.
        ("ttt-phased", ["eval.ngram_tilt=on", "eval.ngram_expert=2135", "eval.ngram_order=stream"], ["C1", "C3"]),
    ],
)
def test_document_methods_on_all_four_conditions(method, sets, failed):
    from _ttt_fixtures import sidecar, ttt_config, ttt_model

    toks, counts = ab_stream()
    rep = audit(ttt_model(), method, toks, sidecar(counts), ttt_config(*sets), "cpu", n_targets=len(toks) - 1,
                at=[30, 1000])  # fmt: skip
    assert rep["failed"] == failed, rep["conditions"]
    assert rep["conditions"]["C2"]["checked"] >= 10  # the document methods show the probe their distributions
    if sets:
        assert rep["settings"]["ngram_expert"] == "2135"
    if failed:
        assert rep["conditions"]["C1"]["max_change"] > 0.1  # B, scored first, moved when A changed
