"""Score-first per-document LoRA test-time training (`--method ttt-lora`; FRONTIER F6.4-F6.5).

Documents: the stream is cut at its BOS tokens; document k runs from its BOS to the next
one, which is its last target (the last document runs to the end of the stream). A
document with P predictions scores targets start .. start+P-1.

Batches: documents sorted by length (stable), cut into batches of `doc_batch`, the queue
ordered by descending longest document (the record's order, F6.4), or with order="stream"
batches of consecutive documents in stream order. The queue's document order is the
SCORING ORDER.

Per batch, every document gets a fresh adapter set (`pgolf.eval.lora`, A drawn from the
document's own seed, B = 0) and a fresh AdamW. Chunk loop (F6.5), chunk c tokens and a
window of W tokens of same-document context: the document's chunk i ends at e = P for its
last chunk and c(i+1) otherwise; its window of predictions is [max(0, e - W), e) and it
scores [c i, e). The record pads all rows to one width min(c(i+1), W); pgolf pads only to
the longest window present and runs the head only from the first column any row scores (the
columns before are context). Documents with no chunk i left have left the batch (their
adapter rows and optimiser state are dropped, so a finished document costs nothing). Each
chunk is run once with gradients enabled; the scores of its targets are added under
no_grad, and only then one AdamW step on the sum over documents of the mean loss of each
document's chunk, for the documents that have a later chunk (no step ever follows a
document's last chunk). Every target is scored once, by a model whose adapters were
trained only on targets scored before it: score-first by construction, and the
ScoreLedger (if given) records it. Convention: a document's own leading BOS is given to
it, as s[0] is to the stream (the cut at BOS is the method's premise; that the queue
order itself is computed from every document's length is F7.3(b)), so reads of it are
not reported; every other token a step reads is.

World-size independence: the queue is built identically on every rank and cut into
segments at the phase pauses (`pgolf.eval.ttt_phased`; ttt-lora has none); a segment's
batches are dealt round-robin to the ranks. Documents are independent given the base
weights, so which rank scores a batch changes nothing (no work stealing, F8.15).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pgolf.data.bpb import ByteTables
from pgolf.data.documents import document_spans
from pgolf.data.tokenizer import BOS_ID
from pgolf.errors import ConfigError, DataError
from pgolf.eval.common import Scorer, Timer, Totals, autocast_context, nll_per_position, rank_world
from pgolf.eval.lora import BatchedAdamW, DocumentAdapters, adapter_parts, check_rank, document_seed
from pgolf.eval.ttt import restored


@dataclass(frozen=True)
class Document:
    index: int  # in stream order
    start: int  # stream position of its BOS (= its first target index)
    n_pred: int  # predictions: targets start .. start + n_pred - 1


@dataclass(frozen=True)
class LoraOptions:
    rank: int = 80
    alpha: float = 144.0
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-10
    weight_decay: float = 0.5
    chunk: int = 48
    context: int = 2048
    doc_batch: int = 64
    order: str = "length"
    seed: int = 0
    parts: tuple[str, ...] = adapter_parts()


def lora_options(cfg) -> LoraOptions:
    """The options of the config's [eval] section (context 0 = the evaluation length)."""
    e = cfg.eval
    return LoraOptions(
        rank=e.ttt_lora_rank, alpha=e.ttt_lora_alpha, lr=e.ttt_lora_lr, beta1=e.ttt_lora_beta1,
        beta2=e.ttt_lora_beta2, eps=e.ttt_lora_eps, weight_decay=e.ttt_lora_wd, chunk=e.ttt_chunk,
        context=e.ttt_context or cfg.eval_seq_len, doc_batch=e.ttt_doc_batch, order=e.ttt_doc_order,
        seed=e.ttt_lora_seed, parts=adapter_parts(e.ttt_k_lora, e.ttt_o_lora, e.ttt_mlp_lora),
    )  # fmt: skip


def find_documents(tokens: np.ndarray, method: str = "ttt-lora") -> list[Document]:
    """The stream's documents (F6.4); the stream must start with a BOS so every target is in one."""
    tokens = np.asarray(tokens)
    if len(tokens) < 2:
        raise DataError(f"{method}: the validation stream has {len(tokens)} token(s), nothing to score")
    if tokens[0] != BOS_ID:
        what = "has no BOS markers" if not np.any(tokens == BOS_ID) else f"does not start with BOS (id {BOS_ID})"
        raise DataError(f"{method} needs documents, but the validation split {what}: use a document dataset")
    docs = []
    for s, e in document_spans(tokens):
        # The span [s, e) plus the next BOS (its last target); the last runs to the stream's end.
        n_pred = e - s if e < len(tokens) else e - s - 1
        if n_pred >= 1:
            docs.append(Document(len(docs), s, n_pred))
    return docs


def plan_queue(docs: list[Document], doc_batch: int, order: str = "length") -> list[list[Document]]:
    """Batches in scoring order. "length": the record's (F6.4 batching); "stream": consecutive documents."""
    if doc_batch < 1:
        raise ConfigError(f"eval.ttt_doc_batch must be >= 1, got {doc_batch}")
    if order == "stream":
        return [docs[i : i + doc_batch] for i in range(0, len(docs), doc_batch)]
    if order != "length":
        raise ConfigError(f"eval.ttt_doc_order must be 'length' or 'stream', got {order!r}")
    by_len = sorted(docs, key=lambda d: d.n_pred)  # stable: equal lengths keep stream order
    batches = [by_len[i : i + doc_batch] for i in range(0, len(by_len), doc_batch)]
    return sorted(batches, key=lambda b: -max(d.n_pred for d in b))  # stable: ties keep ascending order


def chunk_window(i: int, n_pred: int, chunk: int, context: int) -> tuple[int, int]:
    """(s, e): chunk i's window of predictions [s, e) of a document with n_pred; it scores [chunk*i, e)."""
    n_chunks = -(-n_pred // chunk)
    e = n_pred if i == n_chunks - 1 else chunk * (i + 1)
    return max(0, e - context), e


def check_options(model, opts: LoraOptions, method: str) -> None:
    if opts.chunk > opts.context:
        raise ConfigError(
            f"eval.ttt_chunk={opts.chunk} is longer than the TTT window of {opts.context} tokens "
            "(eval.ttt_context, 0 = eval.seq_len)"
        )
    check_rank(model, opts.rank, opts.parts)


class BatchRunner:
    """Scores batches of documents with per-document LoRA (one instance per rank and evaluation)."""

    def __init__(self, model, stream: torch.Tensor, scorer: Scorer, opts: LoraOptions, device, autocast: str,
                 ledger=None, progress=None):  # fmt: skip
        self.model, self.stream, self.scorer, self.opts = model, stream, scorer, opts
        self.device, self.autocast, self.ledger, self.progress = device, autocast, ledger, progress
        self.lora_steps = 0

    def run(self, batch: list[Document]) -> None:
        o, model, dev = self.opts, self.model, self.device
        ad = DocumentAdapters(model, len(batch), o.rank, o.alpha, o.parts)
        ad.init_rows([document_seed(o.seed, d.index) for d in batch])
        opt = BatchedAdamW(list(ad.parameters()), o.lr, (o.beta1, o.beta2), o.eps, o.weight_decay)
        n_chunks = [-(-d.n_pred // o.chunk) for d in batch]
        rows = list(range(len(batch)))  # the documents the adapters' rows hold: those with chunk i left
        last = len(self.stream) - 1
        for i in range(max(n_chunks)):
            wins = [chunk_window(i, batch[b].n_pred, o.chunk, o.context) for b in rows]
            # The record pads every row to min(c(i+1), W); the longest window here is enough
            # (padding sits after every real token, so causal attention makes it inert).
            width = max(e - s for s, e in wins)
            first = torch.tensor([batch[b].start + s for b, (s, _) in zip(rows, wins)], device=dev)
            win_len = torch.tensor([e - s for s, e in wins], device=dev)
            off = torch.tensor([o.chunk * i - s for s, _ in wins], device=dev)  # first scored column
            train = torch.tensor([i < n_chunks[b] - 1 for b in rows], device=dev)
            cols = torch.arange(width, device=dev)
            valid = cols[None, :] < win_len[:, None]
            pos = first[:, None] + cols[None, :]  # stream position of each input = its target's index
            x = torch.where(valid, self.stream[pos.clamp(max=last)], 0)
            y = torch.where(valid, self.stream[(pos + 1).clamp(max=last)], 0)
            # Columns before every row's chunk are context only: the head runs from the first chunk column on.
            lo = int(off.min())
            window = (pos, valid)  # what the forward reads (for the ledger)
            cols, valid, pos, y = cols[lo:], valid[:, lo:], pos[:, lo:], y[:, lo:]
            with torch.enable_grad(), autocast_context(dev, self.autocast):
                hidden = model.forward_hidden(x, adapters=ad)[:, lo:]
                logits = model.compute_logits(hidden, adapters=ad)
            x = x[:, lo:]
            ptl = nll_per_position(logits, y)
            scored = valid & (cols[None, :] >= off[:, None])
            with torch.no_grad():
                if self.scorer.post is None and self.scorer.probe is None:
                    self.scorer.add(ptl.detach()[scored], y[scored], x[scored], index=pos[scored])
                else:  # the n-gram tilt and the audit's C2 probe take the final logits (training stays untilted)
                    self.scorer.score(logits.detach()[scored], y[scored], x[scored], index=pos[scored])
            if self.progress is not None:
                self.progress.update(int(scored.sum()))
            if not bool(train.any()):
                break  # every remaining document has just had its last chunk
            # Each trained document's chunk is [off, off + chunk) (a full chunk: not its last one).
            in_chunk = (cols[None, :] >= off[:, None]) & (cols[None, :] < off[:, None] + o.chunk) & train[:, None]
            loss = (ptl * in_chunk).sum() / o.chunk
            if self.ledger is not None:  # the step reads each trained window's inputs and targets
                wpos, wvalid = window
                read = wvalid & train[:, None]
                own_bos = wpos == torch.tensor([batch[b].start for b in rows], device=dev)[:, None]
                self.ledger.read(torch.cat([wpos[read & ~own_bos], (wpos + 1)[read]]).cpu().numpy(), "lora-step")
            opt.zero_grad()
            loss.backward()
            if not bool(train.all()):  # documents done after this chunk leave the batch before the step
                keep = torch.nonzero(train).flatten()
                ad.keep_rows(keep)
                opt.keep_rows(keep, list(ad.parameters()))
                rows = [rows[j] for j in keep.tolist()]
            opt.step()
            self.lora_steps += 1


def run_documents(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    device: torch.device,
    opts: LoraOptions,
    *,
    method: str = "ttt-lora",
    pauses: Callable[[list[list[Document]]], list[tuple[int, Callable[[], None]]]] | None = None,
    autocast: str = "auto",
    record: bool = False,
    progress=None,
    ledger=None,
    stats: dict | None = None,
    post=None,
    probe=None,
) -> Totals:
    """Score every target of `tokens` document by document; `pauses(queue)` names queue
    indices after which (all ranks, once those batches are scored everywhere) to call a function."""
    docs = find_documents(tokens, method)
    check_options(model, opts, method)
    queue = plan_queue(docs, opts.doc_batch, opts.order)
    plan = pauses(queue) if pauses is not None else []
    rank, world = rank_world()
    # The scorer tells the ledger what it scored, before the tilt's statistics update reads it.
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    n_targets = len(tokens) - 1
    with restored(model) as params:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        stream = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)
        runner = BatchRunner(model, stream, scorer, opts, device, autocast, ledger, progress)
        lo, seconds = 0, []
        for end, fn in [*plan, (len(queue) - 1, None)]:
            segment = queue[lo : end + 1]
            with Timer(device) as t:
                for batch in segment[rank::world]:
                    runner.run(batch)
            seconds.append(t.seconds)
            lo = end + 1
            if fn is not None:
                fn()
        if stats is not None:
            stats.update(documents=len(docs), batches=len(queue), lora_steps=runner.lora_steps,
                         scoring_seconds=seconds)  # fmt: skip
        totals = scorer.finish(n_targets)
    return totals


def evaluate_ttt_lora(model, tokens, tables, device, opts: LoraOptions, **kw) -> Totals:
    return run_documents(model, tokens, tables, device, opts, method="ttt-lora", **kw)
