"""Score-first chunked test-time training (BEYOND §2.A, the accepted records' recipe).

The stream's targets are cut into chunks of `chunk_tokens`; each sliding window
(`plan_windows`) belongs to the chunk of its first scored target. For each chunk in
order: SCORE its windows with the current weights (no grad), then, except after the
last chunk, TRAIN on exactly the targets just scored: `epochs` passes of SGD with
momentum over the chunk cut into sequences of the window length (last one shorter),
minibatches of `batch_seqs` sequences, teacher-forced mean cross-entropy, global
grad-norm clip, cosine learning rate over chunks. No target is trained on before it is
scored, so the result is score-first.

World-size independence: scoring batches are formed per chunk in stream order and
handed out whole; in training every rank takes a share of each minibatch's sequences,
sums its per-token losses divided by the minibatch's GLOBAL token count, and the
gradients are all-reduced with SUM, so every rank applies the one-process update.

The model's parameters (values, dtypes, requires_grad) and its train/eval mode are
restored afterwards, also on error. Embedding tables stored in bf16 are trained in
fp32 copies (bf16 would round most SGD updates away, SPEC §11.21).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from pgolf import dist
from pgolf.data.bpb import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.common import Scorer, Timer, Totals, autocast_context, my_share, rank_slice, rank_world
from pgolf.eval.sliding import make_batch
from pgolf.eval.windows import Window, batches, plan_windows


def chunk_plan(windows: list[Window], n_targets: int, chunk_tokens: int) -> list[list[Window]]:
    """Windows grouped by the chunk of their first scored target (empty chunks dropped)."""
    if chunk_tokens < 1:
        raise ConfigError(f"eval.ttt_chunk_tokens must be >= 1, got {chunk_tokens}")
    n_chunks = max(1, math.ceil(n_targets / chunk_tokens))
    out: list[list[Window]] = [[] for _ in range(n_chunks)]
    for w in windows:
        out[min(w.first_target // chunk_tokens, n_chunks - 1)].append(w)
    return [c for c in out if c]


def chunk_lr(c: int, n_chunks: int, lr: float) -> float:
    """Cosine over chunks: lr at chunk 0, 0 at the last chunk (which is never trained on)."""
    if n_chunks <= 1:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * c / (n_chunks - 1)))


@contextmanager
def restored(model) -> Iterator[list[torch.nn.Parameter]]:
    """Work on fp32 copies of the parameters; put the originals back on exit, whatever happens."""
    saved = [(p, p.data, p.requires_grad, p.grad) for p in model.parameters()]
    was_training = model.training
    _clear_rope_caches(model)
    try:
        for p, data, _, _ in saved:
            p.data = data.detach().to(torch.float32, copy=True)
            p.grad = None
        yield [p for p, *_ in saved]
    finally:
        for p, data, req, grad in saved:
            p.data = data
            p.requires_grad_(req)
            p.grad = grad
        model.train(was_training)


def _clear_rope_caches(model) -> None:
    """Drop cached RoPE tables: ones made under torch.inference_mode (e.g. by an earlier plain
    evaluation of this model) cannot take part in the backward pass."""
    for m in model.modules():
        cache = getattr(m, "_cache", None)
        if isinstance(cache, dict) and type(m).__name__ == "Rotary":
            cache.clear()


def _sync_grads(params: list[torch.nn.Parameter]) -> None:
    """SUM the gradients across ranks in one flat buffer (ranks with no data send zeros)."""
    if not dist.active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce_sum(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def train_chunk(
    model,
    params: list[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    tokens: np.ndarray,
    lo: int,
    hi: int,
    seq_len: int,
    epochs: int,
    batch_seqs: int,
    grad_clip: float,
    device: torch.device,
    autocast: str,
) -> None:
    """SGD on targets [lo, hi) of the stream (inputs tokens[lo:hi], targets tokens[lo+1:hi+1])."""
    seqs = [(a, min(a + seq_len, hi)) for a in range(lo, hi, seq_len)]
    rank, world = rank_world()
    # The model stays in eval mode: our GPT computes the same function in both modes
    # apart from QAT fake quantisation, which must not switch on here.
    for _ in range(epochs):
        for mb in batches(seqs, batch_seqs):
            total = sum(b - a for a, b in mb)  # the minibatch's global token count
            mine = mb[slice(*rank_slice(len(mb), rank, world))]
            opt.zero_grad(set_to_none=True)
            # Equal-length sequences go through the model together; a shorter last one alone.
            for group in _same_length(mine):
                chunk = np.stack([np.asarray(tokens[a : b + 1], dtype=np.int64) for a, b in group])
                ids = torch.from_numpy(chunk).to(device)
                with autocast_context(device, autocast):
                    logits = model.compute_logits(model.forward_hidden(ids[:, :-1]))
                loss = (
                    F.cross_entropy(
                        logits.float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum"
                    )
                    / total
                )
                loss.backward()
            _sync_grads(params)
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()


def _same_length(seqs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for s in seqs:
        if groups and groups[-1][0][1] - groups[-1][0][0] == s[1] - s[0]:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def evaluate_ttt(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    stride: int,
    batch_seqs: int,
    device: torch.device,
    chunk_tokens: int = 32768,
    lr: float = 0.002,
    epochs: int = 3,
    momentum: float = 0.9,
    train_batch_seqs: int = 32,
    grad_clip: float = 1.0,
    freeze_blocks: int = 0,
    autocast: str = "auto",
    record: bool = False,
    progress=None,
    clock: dict | None = None,
    post=None,
    probe=None,
    ledger=None,
) -> Totals:
    """Score-first TTT over targets 0..N-1 of `tokens`; the model is left as it was."""
    n_targets = len(tokens) - 1
    chunks = chunk_plan(plan_windows(n_targets, seq_len, stride), n_targets, chunk_tokens)
    if not 0 <= freeze_blocks <= len(model.blocks):
        raise ConfigError(f"eval.ttt_freeze_blocks={freeze_blocks} is out of range for {len(model.blocks)} blocks")
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    with restored(model) as all_params:
        frozen = {id(p) for blk in model.blocks[:freeze_blocks] for p in blk.parameters()}
        frozen |= {id(p) for p in model.mtp_heads.parameters()}  # training-only heads, unused here
        params = [p for p in all_params if id(p) not in frozen]
        for p in all_params:
            p.requires_grad_(id(p) not in frozen)
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        for c, windows in enumerate(chunks):
            model.eval()
            with torch.no_grad():
                for group in my_share(batches(windows, batch_seqs)):
                    b = make_batch(tokens, group, device, pad_to=seq_len)
                    with autocast_context(device, autocast):
                        logits = model.compute_logits(model.forward_hidden(b.x)[b.rows, b.cols])
                    ys = b.y[b.rows, b.cols]
                    scorer.score(logits, ys, b.x[b.rows, b.cols], first_target=b.first_target)
                    if progress is not None:
                        progress.update(b.n_scored)
            if c == len(chunks) - 1 or epochs <= 0 or not params:
                continue
            for g in opt.param_groups:
                g["lr"] = chunk_lr(c, len(chunks), lr)
            lo, hi = windows[0].first_target, windows[-1].start + windows[-1].score_to
            if ledger is not None:
                ledger.read(np.arange(lo, hi + 1), "TTT step")  # inputs stream[lo:hi], targets stream[lo+1:hi+1]
            with Timer(device) as tt:
                train_chunk(model, params, opt, tokens, lo, hi, seq_len, epochs, train_batch_seqs, grad_clip, device,
                            autocast)  # fmt: skip
            if clock is not None:
                clock["ttt_training"] = clock.get("ttt_training", 0.0) + tt.seconds
    return scorer.finish(n_targets)
