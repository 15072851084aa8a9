"""Phased score-first TTT (`--method ttt-phased`; FRONTIER F6.6): ttt-lora plus global SGD pauses.

With `prefix_docs` N (at most the number of documents) and `phases` K, the boundaries are
B_k = floor(N k / K). Phase k pauses scoring after the queue batch that completes the first
B_k documents of the scoring order (a batch is never split), trains ALL base weights for
`epochs` of SGD on a set of B_k already-scored documents, then scoring continues with the
updated base (cumulative over phases) and, as always, fresh per-document adapters.

The documents trained on (`selection`):
- "first" (default, the documented rule): the first B_k documents in scoring order;
- "shortest" (the record's code, F8.8): the B_k shortest of all documents scored at the pause.

Global SGD (F6.6 step 4): the documents' tokens joined in that order ("single": each
document's BOS-led span, so a document's last target is the next document's BOS as in the
stream; "record": its span plus the next BOS, which doubles every BOS, F8.11); the targets
cut into chunks of `chunk_tokens`, each into sequences of the evaluation length (the last
one shorter), minibatches of `batch_seqs` sequences; plain SGD with momentum (fresh each
phase), lr = lr0 * (1 + cos(pi c / C)) / 2 over the C trained chunks, global gradient-norm
clip, teacher-forced mean cross-entropy with the model's document-bounded attention (rows
are bounded by their BOS tokens when the model has document attention).
`last_chunk="skip"` is the record's rule (F8.9): the last chunk is not trained on and
sequences shorter than the evaluation length are dropped; the default "train" uses all.

Every token a global-SGD step reads belongs to a document scored before the pause (the
ledger records the reads; documents' own leading BOS are given, as in
`pgolf.eval.ttt_lora`). Ranks split each minibatch's sequences, sum their losses over
the minibatch's GLOBAL token count and all-reduce the gradients with SUM, so every rank
applies the one-process update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pgolf.data.bpb import ByteTables
from pgolf.data.tokenizer import BOS_ID
from pgolf.errors import ConfigError
from pgolf.eval.common import Timer, Totals, autocast_context, rank_slice, rank_world
from pgolf.eval.ttt import _same_length, _sync_grads
from pgolf.eval.ttt_lora import Document, LoraOptions, run_documents


@dataclass(frozen=True)
class PhaseOptions:
    phases: int = 3
    prefix_docs: int = 2500
    lr: float = 0.001
    momentum: float = 0.9
    epochs: int = 1
    chunk_tokens: int = 32768
    batch_seqs: int = 32
    grad_clip: float = 1.0
    seq_len: int = 2048
    selection: str = "first"
    last_chunk: str = "train"
    join: str = "single"


def phase_options(cfg) -> PhaseOptions:
    e = cfg.eval
    return PhaseOptions(
        phases=e.ttt_phases, prefix_docs=e.ttt_prefix_docs, lr=e.global_ttt_lr, momentum=e.global_ttt_momentum,
        epochs=e.global_ttt_epochs, chunk_tokens=e.global_ttt_chunk_tokens, batch_seqs=e.global_ttt_batch_seqs,
        grad_clip=e.global_ttt_grad_clip, seq_len=cfg.eval_seq_len, selection=e.global_ttt_selection,
        last_chunk=e.global_ttt_last_chunk, join=e.global_ttt_join,
    )  # fmt: skip


def phase_plan(queue: list[list[Document]], prefix_docs: int, phases: int) -> list[tuple[int, int]]:
    """[(queue index to pause after, B_k)] for the phases with B_k >= 1."""
    if phases < 1:
        raise ConfigError(f"eval.ttt_phases must be >= 1, got {phases}")
    ends = np.cumsum([len(b) for b in queue])
    n = min(max(prefix_docs, 0), int(ends[-1]) if len(ends) else 0)
    out = []
    for k in range(1, phases + 1):
        b = n * k // phases
        if b >= 1:
            out.append((int(np.searchsorted(ends, b)), b))
    return out


def select_documents(queue: list[list[Document]], upto: int, boundary: int, rule: str) -> list[Document]:
    """The B_k documents phase k trains on, from those of queue batches 0..upto (all scored)."""
    order = [d for b in queue for d in b]
    if rule == "first":
        return order[:boundary]
    if rule != "shortest":
        raise ConfigError(f"eval.global_ttt_selection must be 'first' or 'shortest', got {rule!r}")
    # The record's sort key (batch index in ascending-length order, position in batch) is the
    # document's rank in the stable ascending-length sort.
    rank = {d.index: r for r, d in enumerate(sorted(order, key=lambda d: (d.n_pred, d.index)))}
    scored = [d for b in queue[: upto + 1] for d in b]
    return sorted(scored, key=lambda d: rank[d.index])[:boundary]


def join_documents(tokens: np.ndarray, docs: list[Document], rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, their stream positions) of the documents joined in the given order."""
    if rule not in ("single", "record"):
        raise ConfigError(f"eval.global_ttt_join must be 'single' or 'record', got {rule!r}")
    pos = []
    for k, d in enumerate(docs):
        # A document's tokens are its span; its last target, the next BOS, comes from the next
        # document's own BOS unless it is the last one joined, its end is not a BOS, or "record".
        keep_end = rule == "record" or k == len(docs) - 1 or tokens[d.start + d.n_pred] != BOS_ID
        pos.append(np.arange(d.start, d.start + d.n_pred + int(keep_end), dtype=np.int64))
    p = np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)
    return np.asarray(tokens)[p].astype(np.int64), p


def sgd_chunks(n_targets: int, opts: PhaseOptions) -> list[list[tuple[int, int]]]:
    """The trained chunks, each a list of (a, b): inputs [a, b), targets [a+1, b+1) of the joined tokens."""
    T, L = opts.chunk_tokens, opts.seq_len
    n_chunks = -(-n_targets // T)
    if opts.last_chunk not in ("train", "skip"):
        raise ConfigError(f"eval.global_ttt_last_chunk must be 'train' or 'skip', got {opts.last_chunk!r}")
    out = []
    for c in range(n_chunks - (opts.last_chunk == "skip")):
        lo, hi = c * T, min((c + 1) * T, n_targets)
        seqs = [(a, min(a + L, hi)) for a in range(lo, hi, L)]
        if opts.last_chunk == "skip":
            seqs = [s for s in seqs if s[1] - s[0] == L]  # the record's integer number of sequences
        out.append(seqs)
    return out


def global_sgd(model, params, joined: np.ndarray, positions: np.ndarray, opts: PhaseOptions, device, autocast: str,
               ledger=None, given: np.ndarray | None = None) -> int:  # fmt: skip
    """One phase of SGD on all base weights; returns the number of optimiser steps.
    `given`: the stream positions of the documents' own leading BOS (not reported as reads)."""
    given = np.zeros(0, dtype=np.int64) if given is None else given
    chunks = sgd_chunks(len(joined) - 1, opts)
    if not chunks or opts.epochs <= 0:
        return 0
    rank, world = rank_world()
    ids = torch.from_numpy(joined).to(device)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum)
    steps = 0
    try:
        for c, seqs in enumerate(chunks):
            for g in opt.param_groups:
                g["lr"] = opts.lr * 0.5 * (1.0 + math.cos(math.pi * c / len(chunks)))
            for _ in range(opts.epochs):
                for m in range(0, len(seqs), opts.batch_seqs):
                    mb = seqs[m : m + opts.batch_seqs]
                    total = sum(b - a for a, b in mb)  # the minibatch's global token count
                    mine = mb[slice(*rank_slice(len(mb), rank, world))]
                    if ledger is not None and mine:
                        read = np.concatenate([positions[a : b + 1] for a, b in mine])
                        ledger.read(read[~np.isin(read, given)], "global-sgd")
                    opt.zero_grad(set_to_none=True)
                    for group in _same_length(mine):
                        x = torch.stack([ids[a:b] for a, b in group])
                        y = torch.stack([ids[a + 1 : b + 1] for a, b in group])
                        with torch.enable_grad(), autocast_context(device, autocast):
                            loss = model(x, y) * (y.numel() / total)
                        loss.backward()
                    _sync_grads(params)
                    if opts.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
                    opt.step()
                    steps += 1
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return steps


def evaluate_ttt_phased(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    device: torch.device,
    opts: LoraOptions,
    phase: PhaseOptions,
    *,
    autocast: str = "auto",
    record: bool = False,
    progress=None,
    ledger=None,
    stats: dict | None = None,
    post=None,
    probe=None,
) -> Totals:
    """ttt-lora with global-SGD pauses; the model is left as it was."""
    tokens = np.asarray(tokens)
    info: dict = {"phases": []}

    def pauses(queue: list[list[Document]]):
        out = []
        for k, (upto, boundary) in enumerate(phase_plan(queue, phase.prefix_docs, phase.phases)):

            def run(k=k, upto=upto, boundary=boundary) -> None:
                docs = select_documents(queue, upto, boundary, phase.selection)
                joined, positions = join_documents(tokens, docs, phase.join)
                params = [p for n, p in model.named_parameters() if not n.startswith("mtp_heads")]
                with Timer(device) as t:
                    given = np.array([d.start for d in docs], dtype=np.int64)
                    steps = global_sgd(model, params, joined, positions, phase, device, autocast, ledger, given)
                scored = sum(len(b) for b in queue[: upto + 1])
                row = {"phase": k + 1, "docs_scored": scored, "docs_trained": len(docs), "tokens": int(len(joined))}
                info["phases"].append({**row, "sgd_steps": steps, "seconds": t.seconds})

            out.append((upto, run))
        return out

    totals = run_documents(model, tokens, tables, device, opts, method="ttt-phased", pauses=pauses,
                           autocast=autocast, record=record, progress=progress, ledger=ledger, stats=stats,
                           post=post, probe=probe)  # fmt: skip
    if stats is not None:
        stats.update(info)
    return totals
