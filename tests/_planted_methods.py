"""Deliberately illegal evaluation methods, for the audit to catch (tests only; never registered by pgolf).

Each is registered under a name with `pgolf.eval.api.register_method`, labelled score-first
(as their authors would claim), and breaks the conditions named beside it:

- planted-pre-ttt: trains on each chunk of the validation stream, THEN scores it (C1, C3);
- planted-hashed-cache: mixes a hashed bigram cache into the model's softmax without
  renormalising (collisions and empty contexts leave a total other than 1) (C2 only);
- planted-two-pass: scores every window twice and adds both (C4 only);
- reversed-segments: scores fixed-length segments last-first, each on its own; with the
  tilt in scoring order it is legal, with eval.ngram_order=stream (#2135's precompute) the
  hints use tokens that are scored later (C1 in scoring order, C3).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from pgolf.eval.api import register_method, unregister_method
from pgolf.eval.common import Scorer, autocast_context, to_device_ids
from pgolf.eval.sliding import make_batch, window_batches
from pgolf.eval.ttt import chunk_plan, restored, train_chunk
from pgolf.eval.windows import batches, plan_windows


def _logits(model, b):
    return model.compute_logits(model.forward_hidden(b.x)[b.rows, b.cols])


def pre_scoring_ttt(model, tokens, tables, cfg, *, device, autocast, record, progress, post, probe, ledger):
    e, seq_len = cfg.eval, cfg.eval_seq_len
    n = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    with restored(model) as params:
        train = [p for p in params if p.is_floating_point()]
        for p in train:
            p.requires_grad_(True)
        opt = torch.optim.SGD(train, lr=e.ttt_lr, momentum=e.ttt_momentum)
        for windows in chunk_plan(plan_windows(n, seq_len, e.stride), n, e.ttt_chunk_tokens):
            lo, hi = windows[0].first_target, windows[-1].start + windows[-1].score_to
            if ledger is not None:
                ledger.read(np.arange(lo, hi + 1), "TTT step (before scoring: illegal)")
            train_chunk(model, train, opt, tokens, lo, hi, seq_len, 1, e.ttt_batch_seqs, 0.0, device, autocast)
            model.eval()
            with torch.no_grad():
                for group in batches(windows, e.batch_seqs):
                    b = make_batch(tokens, group, device, pad_to=seq_len)
                    ys = b.y[b.rows, b.cols]
                    scorer.score(_logits(model, b), ys, b.x[b.rows, b.cols], first_target=b.first_target)
    return scorer.finish(n)


class HashedCache:
    """p = (1 - lam) softmax(z) + lam * pair[h(c, v)] / ctx[h(c)] with c the previous token, B buckets.
    Updated after scoring (causal, score-first) but never renormalised over the vocabulary."""

    def __init__(self, stream, vocab, buckets=256, lam=0.3, ledger=None):
        self.s = np.asarray(stream, dtype=np.int64)
        self.vocab, self.B, self.lam, self.ledger = vocab, buckets, lam, ledger
        self.ctx = np.zeros(buckets)
        self.pair = np.zeros(buckets)
        self.seconds = 0.0

    def _h2(self, c, v):
        return (c[:, None] * 7919 + v[None, :] * 104729) % self.B

    def __call__(self, targets, logits):
        c = self.s[targets]
        v = np.arange(self.vocab)
        cnt = self.ctx[c % self.B]
        cache = self.pair[self._h2(c, v)] / np.maximum(cnt, 1)[:, None]
        p = (1 - self.lam) * torch.softmax(logits, -1) + self.lam * torch.from_numpy(cache).to(logits)
        return torch.log(p)

    def after_scored(self, targets):
        t = np.asarray(targets, dtype=np.int64)
        if self.ledger is not None:
            self.ledger.read(np.concatenate([t, t + 1]), "hashed cache update")
        c, y = self.s[t], self.s[t + 1]
        np.add.at(self.ctx, c % self.B, 1)
        np.add.at(self.pair, (c * 7919 + y * 104729) % self.B, 1)  # the bucket _h2 gives (c, y)


def hashed_cache(model, tokens, tables, cfg, *, device, autocast, record, progress, post, probe, ledger):
    seq_len = cfg.eval_seq_len
    n = len(tokens) - 1
    cache = HashedCache(tokens, int(model.config.vocab_size), ledger=ledger)
    scorer = Scorer(tables, device, record=record, post=cache, probe=probe, ledger=ledger)
    with torch.no_grad():
        for group in window_batches(n, seq_len, cfg.eval.stride, cfg.eval.batch_seqs):
            b = make_batch(tokens, group, device, pad_to=seq_len)
            with autocast_context(device, autocast):
                logits = _logits(model, b)
            scorer.score(logits, b.y[b.rows, b.cols], b.x[b.rows, b.cols], first_target=b.first_target)
    return scorer.finish(n)


def two_pass(model, tokens, tables, cfg, *, device, autocast, record, progress, post, probe, ledger):
    seq_len = cfg.eval_seq_len
    n = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    with torch.no_grad():
        for _ in range(2):  # score everything, then score it all again
            for group in window_batches(n, seq_len, cfg.eval.stride, cfg.eval.batch_seqs):
                b = make_batch(tokens, group, device, pad_to=seq_len)
                scorer.score(_logits(model, b), b.y[b.rows, b.cols], b.x[b.rows, b.cols], first_target=b.first_target)
    return scorer.finish(n)


def reversed_segments(model, tokens, tables, cfg, *, device, autocast, record, progress, post, probe, ledger):
    seg = cfg.eval_seq_len
    n = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    with torch.no_grad():
        for a in reversed(range(0, n, seg)):
            b = min(a + seg, n)
            chunk = to_device_ids(tokens[a : b + 1], device)
            x, y = chunk[:-1][None], chunk[1:]
            with autocast_context(device, autocast):
                logits = model.compute_logits(model.forward_hidden(x))[0]
            scorer.score(logits, y, x[0], first_target=a)
    return scorer.finish(n)


PLANTED = {
    "planted-pre-ttt": pre_scoring_ttt,
    "planted-hashed-cache": hashed_cache,
    "planted-two-pass": two_pass,
    "reversed-segments": reversed_segments,
}


@contextlib.contextmanager
def planted():
    """Register the planted methods for the duration (all labelled score-first)."""
    for name, fn in PLANTED.items():
        register_method(name, fn, True)
    try:
        yield
    finally:
        for name in PLANTED:
            unregister_method(name)
