"""Sliding, SLOT (both implementations), causal SLOT and TTT on a small trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_eval_fixtures import small_config, tables, trained_model, val_tokens

from pgolf.errors import ConfigError, DataError
from pgolf.eval import evaluate, plan_windows
from pgolf.eval.slot import lr_at
from pgolf.eval.windows import batches

N = 1000  # targets; not a multiple of the window (128) or the stride (32), so the tail is exercised


@pytest.fixture(autouse=True)
def _one_thread():
    # Small ops on a shared 2-core machine: one thread is several times faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return trained_model()[1]


def run(model, method, *sets, n=N, **kw):
    return evaluate(model, method, val_tokens(), tables(), small_config(*sets), "cpu", max_tokens=n, record=True, **kw)


@pytest.fixture(scope="module")
def sliding(model):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(model, "sliding")
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("method", ["plain", "sliding", "slot", "slot-causal", "ttt"])
def test_each_target_scored_once(model, method):
    res, nll = run(model, method)
    assert res.tokens == N and nll.shape == (N,)
    assert math.isclose(nll.sum() / N, res.val_loss, rel_tol=1e-12)
    assert res.max_tokens == N and res.score_first == (method != "slot")
    assert np.all(np.isfinite(nll)) and np.all(nll >= 0)


def test_sliding_nll_is_each_windows_own(model, sliding):
    """Each target's NLL is what the model gives it inside its plan window (batching changes nothing)."""
    _, nll = sliding
    toks = torch.from_numpy(val_tokens(N).astype(np.int64))
    with torch.no_grad():
        for w in plan_windows(N, 128, 32)[::5]:
            x = toks[w.start : w.start + w.length][None]
            y = toks[w.start + 1 : w.start + w.length + 1]
            logits = model.compute_logits(model.forward_hidden(x))[0]
            ref = F.cross_entropy(logits[w.score_from :].float(), y[w.score_from :], reduction="none")
            got = nll[w.start + w.score_from : w.start + w.score_to]
            np.testing.assert_allclose(got, ref.double().numpy(), atol=2e-5)


def test_sliding_with_full_stride_is_plain(model):
    a, _ = run(model, "plain", n=1024)
    b, _ = run(model, "sliding", "eval.stride=128", n=1024)
    assert abs(a.val_bpb - b.val_bpb) < 1e-6 and a.tokens == b.tokens and a.bytes == b.bytes


def test_sliding_beats_plain(model, sliding):
    plain, _ = run(model, "plain")
    assert sliding[0].val_bpb < plain.val_bpb  # more context per scored target


# ----------------------------------------------------------------------------- SLOT
def test_slot_lr_schedule():
    # SPEC §8.4: 0.012 / 0.0065 / ~0.0010470 at steps 0 / 12 / 23; never reaches the minimum.
    assert lr_at(0, 24, 0.012, 0.001) == pytest.approx(0.012)
    assert lr_at(12, 24, 0.012, 0.001) == pytest.approx(0.0065)
    assert lr_at(23, 24, 0.012, 0.001) == pytest.approx(0.0010470, abs=1e-7)
    assert lr_at(23, 24, 0.012, 0.001, "exact") == pytest.approx(0.001)
    assert lr_at(0, 24, 0.012, 0.001, "exact") == pytest.approx(0.012)
    assert lr_at(0, 1, 0.012, 0.001, "exact") == pytest.approx(0.012)
    with pytest.raises(ConfigError):
        lr_at(0, 24, 0.012, 0.001, "linear")


def test_slot_without_steps_is_sliding(model, sliding):
    res, nll = run(model, "slot", "eval.slot_steps=0")
    np.testing.assert_allclose(nll, sliding[1], atol=1e-5)
    assert abs(res.val_bpb - sliding[0].val_bpb) < 1e-7


def test_slot_scored_equals_full(model):
    """The scored-only loop gives the seed's whole-window numbers (24 steps, the seed's settings)."""
    a, na = run(model, "slot", "eval.slot_steps=24", "eval.slot_impl=scored")
    b, nb = run(model, "slot", "eval.slot_steps=24", "eval.slot_impl=full")
    assert abs(a.val_bpb - b.val_bpb) < 1e-6
    np.testing.assert_allclose(na, nb, atol=1e-4)


def _seed_slot_reference(model, tokens, seq_len, stride, bsz, steps, lr, lr_min):
    """SPEC §8.4 written out directly: [bsz, S] zero-padded buffers, logits over every position."""
    n = len(tokens) - 1
    toks = torch.from_numpy(tokens.astype(np.int64))
    for p in model.parameters():
        p.requires_grad_(False)
    loss_sum, count = 0.0, 0
    for group in batches(plan_windows(n, seq_len, stride), bsz):
        x = torch.zeros(len(group), seq_len, dtype=torch.long)
        y = torch.zeros_like(x)
        mask = torch.zeros(len(group), seq_len)
        for i, w in enumerate(group):
            x[i, : w.length] = toks[w.start : w.start + w.length]
            y[i, : w.length] = toks[w.start + 1 : w.start + w.length + 1]
            mask[i, w.score_from : w.score_to] = 1
        with torch.no_grad():
            hid = model.forward_hidden(x).float()
        delta = torch.zeros(len(group), 1, hid.size(-1), requires_grad=True)
        bias = torch.zeros(len(group), 1, 1024, requires_grad=True)
        opt = torch.optim.AdamW([delta, bias], lr=lr, weight_decay=1e-8, eps=1e-5)
        for i in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * i / steps))
            opt.zero_grad()
            logits = model.compute_logits(hid + delta, bias)
            nll = F.cross_entropy(logits.reshape(-1, 1024), y.reshape(-1), reduction="none").view_as(mask)
            ((nll * mask).sum() / mask.sum()).backward()
            opt.step()
        with torch.no_grad():
            logits = model.compute_logits(hid + delta, bias)
            nll = F.cross_entropy(logits.reshape(-1, 1024), y.reshape(-1), reduction="none").view_as(mask)
            loss_sum += float((nll * mask).sum())
            count += int(mask.sum())
    return loss_sum / count, count


def test_slot_matches_seed_algorithm():
    _, model = trained_model()  # own copy: the reference switches requires_grad off
    res, _ = run(model, "slot", "eval.slot_steps=8")
    ref_loss, ref_count = _seed_slot_reference(model, val_tokens(N), 128, 32, 8, 8, 0.012, 0.001)
    assert ref_count == res.tokens
    assert abs(ref_loss - res.val_loss) < 1e-5


def test_slot_is_far_below_sliding(model, sliding):
    """Two-pass SLOT fits the answers: a big 'gain' that is not a compression score."""
    res, _ = run(model, "slot", "eval.slot_steps=24")
    assert res.val_bpb < sliding[0].val_bpb - 0.02
    assert res.score_first is False


# ----------------------------------------------------------------------------- causal SLOT
def test_causal_batching_is_exactly_one_window_at_a_time(model):
    a, na = run(model, "slot-causal", "eval.slot_batch_seqs=1")
    b, nb = run(model, "slot-causal", "eval.slot_batch_seqs=8")
    np.testing.assert_allclose(na, nb, atol=2e-5)
    assert abs(a.val_bpb - b.val_bpb) < 1e-6


def test_causal_first_window_is_plain_and_zero_steps_is_sliding(model, sliding):
    _, nll = run(model, "slot-causal")
    np.testing.assert_allclose(nll[:128], sliding[1][:128], atol=1e-5)
    res0, nll0 = run(model, "slot-causal", "eval.causal_steps=0")
    np.testing.assert_allclose(nll0, sliding[1], atol=1e-5)


def test_causal_gains_over_sliding(model, sliding):
    res, _ = run(model, "slot-causal", "eval.causal_steps=8")
    assert res.val_bpb < sliding[0].val_bpb
    last_k, _ = run(model, "slot-causal", "eval.causal_steps=8", "eval.causal_context=32", "eval.causal_bias=false")
    assert last_k.val_bpb != res.val_bpb


# ----------------------------------------------------------------------------- TTT
def test_ttt_with_zero_lr_is_sliding(model, sliding):
    res, nll = run(model, "ttt", "eval.ttt_lr=0")
    np.testing.assert_allclose(nll, sliding[1], atol=1e-5)


def test_ttt_scores_first_chunk_before_training(model, sliding):
    res, nll = run(model, "ttt", "eval.ttt_lr=0.05", "eval.ttt_epochs=2")
    chunk = 512
    first = [w for w in plan_windows(N, 128, 32) if w.first_target < chunk]
    end = first[-1].start + first[-1].score_to
    np.testing.assert_allclose(nll[:end], sliding[1][:end], atol=1e-5)  # before any update
    assert np.abs(nll[end:] - sliding[1][end:]).max() > 1e-3  # after training on chunk 0


def _snapshot(model):
    return {n: (p.detach().clone(), p.dtype, p.requires_grad) for n, p in model.named_parameters()}


def test_ttt_restores_the_model():
    _, model = trained_model()
    model.blocks[0].attn.c_q.weight.requires_grad_(False)
    before = _snapshot(model)
    run(model, "ttt", "eval.ttt_lr=0.05", "eval.ttt_freeze_blocks=1")
    after = _snapshot(model)
    assert not model.training
    for name, (t, dtype, req) in before.items():
        t2, dtype2, req2 = after[name]
        assert dtype == dtype2 and req == req2, name
        assert torch.equal(t, t2), name


def test_ttt_restores_the_model_on_error(monkeypatch):
    import pgolf.eval.ttt as ttt

    _, model = trained_model()
    model.train()
    before = _snapshot(model)

    def boom(*a, **k):
        for p in model.parameters():
            p.data.add_(1.0)  # damage the working copy, then fail
        raise RuntimeError("boom")

    monkeypatch.setattr(ttt, "train_chunk", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run(model, "ttt")
    assert model.training
    for name, p in model.named_parameters():
        t, dtype, req = before[name]
        assert p.dtype == dtype and p.requires_grad == req and torch.equal(p.detach(), t), name


# ----------------------------------------------------------------------------- input checks
def test_max_tokens_uses_exactly_n_plus_one_tokens(model):
    toks = val_tokens().copy()
    a, na = evaluate(model, "sliding", toks, tables(), small_config(), "cpu", max_tokens=300, record=True)
    toks[301:] = 5  # beyond the first N+1 tokens: must not matter
    b, nb = evaluate(model, "sliding", toks, tables(), small_config(), "cpu", max_tokens=300, record=True)
    assert a.tokens == b.tokens == 300 and np.array_equal(na, nb)


def test_bad_inputs_are_refused(model):
    with pytest.raises(ConfigError):
        evaluate(model, "beam", val_tokens(), tables(), small_config(), "cpu", max_tokens=100)
    bad = val_tokens(200).astype(np.int64)
    bad[50] = 2000
    with pytest.raises(DataError):
        evaluate(model, "sliding", bad, tables(), small_config(), "cpu", max_tokens=100)
    with pytest.raises(DataError):
        evaluate(model, "sliding", val_tokens(), tables(), small_config(), "cpu", max_tokens=10**7)


def test_closed_form_gradients_match_autograd():
    """WindowOffsets' hand-written gradients equal autograd through the seed's expression."""
    from pgolf.eval.slot import Head, WindowOffsets, ce

    _, model = trained_model()
    head = Head(model)
    gen = torch.Generator().manual_seed(0)
    n, nwin, d = 40, 3, head.weight.size(1)
    h = torch.randn(n, d, generator=gen)
    y = torch.randint(0, 1024, (n,), generator=gen)
    win = torch.tensor(sorted(torch.randint(0, nwin, (n,), generator=gen).tolist()))
    wweight = torch.tensor([0.5, 0.25, 0.125])
    fitter = WindowOffsets(head, h, y, win, wweight, nwin)
    fitter.delta.normal_(0, 0.1, generator=gen)
    fitter.bias.normal_(0, 0.1, generator=gen)
    fitter.backward()
    delta = fitter.delta.clone().requires_grad_(True)
    bias = fitter.bias.clone().requires_grad_(True)
    loss = (ce(head(h + delta[win], bias[win]), y) * wweight[win]).sum()
    loss.backward()
    torch.testing.assert_close(fitter.delta.grad, delta.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fitter.bias.grad, bias.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fitter.nll(), ce(head(h + delta[win], bias[win]), y).detach(), atol=1e-5, rtol=0)
