"""ttt-lora and ttt-phased (FRONTIER F6.4-F6.6) against a straightforward implementation written
here: one document at a time, no batching, no padding, plain loops, its own adapters."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _ttt_fixtures import caseops_stream, sidecar, ttt_config, ttt_model

from pgolf.errors import ConfigError, DataError
from pgolf.eval import evaluate
from pgolf.eval.ledger import ScoreLedger
from pgolf.eval.lora import DocumentAdapters, num_slots
from pgolf.eval.ttt_lora import Document, chunk_window, find_documents, lora_options, plan_queue
from pgolf.eval.ttt_phased import phase_options, phase_plan


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- the reference
class RefLoRA:
    """delta(x) = x A^T B^T alpha/r for one document (A [r, in], B [out, r]); A from u in U(0, 1)."""

    def __init__(self, in_f, out_f, r, alpha, u):
        self.A = ((2 * u[: r * in_f] - 1) / math.sqrt(in_f)).view(r, in_f).requires_grad_(True)
        del u[: r * in_f]
        self.B = torch.zeros(out_f, r, requires_grad=True)
        self.scale = alpha / r

    def __call__(self, x):
        return (x @ self.A.T) @ self.B.T * self.scale


class Slicer:
    """Hands out consecutive slices of a 1-D tensor (`u[:n]` then `del u[:n]`)."""

    def __init__(self, t):
        self.t, self.at = t, 0

    def __getitem__(self, sl):
        return self.t[self.at : self.at + sl.stop]

    def __delitem__(self, sl):
        self.at += sl.stop


def ref_adapters(model, o, seed):
    """One document's adapters, drawn in the documented order: head, then per pass q, k, v, o, mlp."""
    cfg = model.config
    d, kv = cfg.model_dim, cfg.num_kv_heads * cfg.model_dim // cfg.num_heads
    outs = {"q": d, "k": kv, "v": kv, "o": d, "mlp": d}
    passes = len(model.schedules[True][0]) + len(model.schedules[True][1])
    total = o.rank * d * (1 + passes * len(o.parts))  # every A has `in` = d
    u = torch.empty(total).uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
    u = Slicer(u)
    head = RefLoRA(d, cfg.vocab_size, o.rank, o.alpha, u)
    slots = []
    for _ in range(passes):
        parts = {n: (RefLoRA(d, outs[n], o.rank, o.alpha, u) if n in o.parts else None) for n in outs}
        slots.append(SimpleNamespace(**parts))
    loras = [head, *(lo for s in slots for lo in vars(s).values() if lo is not None)]
    return SimpleNamespace(head=head, slot=lambda k: slots[k]), [t for lo in loras for t in (lo.A, lo.B)]


def ref_docs(tokens):
    bos = [i for i, t in enumerate(tokens.tolist()) if t == 1]
    ends = [*bos[1:], len(tokens) - 1]
    return [(k, s, e - s) for k, (s, e) in enumerate(zip(bos, ends))]  # (index, start, predictions)


def ref_order(docs, bsz, order):
    if order == "stream":
        return [docs[i : i + bsz] for i in range(0, len(docs), bsz)]
    by_len = sorted(docs, key=lambda d: d[2])
    batches = [by_len[i : i + bsz] for i in range(0, len(by_len), bsz)]
    return sorted(batches, key=lambda b: -max(d[2] for d in b))


def ref_score_document(model, tokens, counts, doc, o):
    """(nll sum, bytes, {target: nll}) of one document, its own LoRA trained chunk by chunk."""
    k, start, P = doc
    ad, params = ref_adapters(model, o, (o.seed << 32) + k)
    opt = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    n = -(-P // o.chunk)
    loss_sum, nbytes, per = 0.0, 0, {}
    for i in range(n):
        e = P if i == n - 1 else o.chunk * (i + 1)
        s = max(0, e - o.context)
        x = torch.tensor(tokens[start + s : start + e])[None]
        y = torch.tensor(tokens[start + s + 1 : start + e + 1])[None]
        logits = model.compute_logits(model.forward_hidden(x, adapters=ad), adapters=ad)
        nll = F.cross_entropy(logits[0].float(), y[0], reduction="none")
        for j in range(o.chunk * i, e):
            per[start + j] = float(nll[j - s].detach())
            loss_sum += float(nll[j - s].detach())
            nbytes += int(counts[start + j + 1])
        if i < n - 1:
            opt.zero_grad()
            nll[o.chunk * i - s : o.chunk * i - s + o.chunk].mean().backward()
            opt.step()
    return loss_sum, nbytes, per


def ref_global_sgd(model, tokens, chosen, ph):
    pieces = []
    for k, (_, start, P) in enumerate(chosen):
        end = start + P
        keep = ph.join == "record" or k == len(chosen) - 1 or tokens[end] != 1
        pieces += tokens[start : end + keep].tolist()
    g = torch.tensor(pieces)
    n_t = len(g) - 1
    n_chunks = -(-n_t // ph.chunk_tokens)
    trained = range(n_chunks - 1) if ph.last_chunk == "skip" else range(n_chunks)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=ph.lr, momentum=ph.momentum)
    for c in trained:
        for group in opt.param_groups:
            group["lr"] = ph.lr * 0.5 * (1 + math.cos(math.pi * c / len(trained)))
        lo, hi = c * ph.chunk_tokens, min((c + 1) * ph.chunk_tokens, n_t)
        seqs = [(a, min(a + ph.seq_len, hi)) for a in range(lo, hi, ph.seq_len)]
        if ph.last_chunk == "skip":
            seqs = [q for q in seqs if q[1] - q[0] == ph.seq_len]
        for m in range(0, len(seqs), ph.batch_seqs):
            mb = seqs[m : m + ph.batch_seqs]
            total = sum(b - a for a, b in mb)
            opt.zero_grad()
            for a, b in mb:
                (model(g[a:b][None], g[a + 1 : b + 1][None]) * (b - a) / total).backward()
            torch.nn.utils.clip_grad_norm_(params, ph.grad_clip)
            opt.step()
    for p in params:
        p.requires_grad_(False)


def reference(model, tokens, counts, cfg, phased):
    o, ph = lora_options(cfg), phase_options(cfg)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    docs = ref_docs(tokens)
    batches = ref_order(docs, o.doc_batch, o.order)
    order = [d for b in batches for d in b]
    ends = np.cumsum([len(b) for b in batches])
    n_prefix = min(ph.prefix_docs, len(docs))
    bounds = [n_prefix * k // ph.phases for k in range(1, ph.phases + 1)] if phased else []
    loss, nbytes, per = 0.0, 0, {}
    for j, doc in enumerate(order):
        ls, nb, pd = ref_score_document(model, tokens, counts, doc, o)
        loss, nbytes = loss + ls, nbytes + nb
        per.update(pd)
        for b in bounds:  # pause after the batch holding the b-th document of the scoring order
            if b >= 1 and j + 1 == ends[np.searchsorted(ends, b)]:
                if ph.selection == "first":
                    chosen = order[:b]
                else:
                    rank = {d[0]: r for r, d in enumerate(sorted(docs, key=lambda d: d[2]))}
                    chosen = sorted(order[: j + 1], key=lambda d: rank[d[0]])[:b]
                ref_global_sgd(model, tokens, chosen, ph)
    nll = np.array([per[t] for t in range(len(tokens) - 1)])
    return loss / (math.log(2) * nbytes), nll


# --------------------------------------------------------------------------- equality
CASES = {
    "ttt-lora": ("ttt-lora", []),
    "ttt-lora-stream-order": ("ttt-lora", ["eval.ttt_doc_order=stream", "eval.ttt_context=40"]),
    "ttt-phased": ("ttt-phased", []),
    "ttt-phased-record-rules": ("ttt-phased", ["eval.global_ttt_selection=shortest",
                                               "eval.global_ttt_last_chunk=skip", "eval.global_ttt_join=record"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_equals_one_document_at_a_time(case):
    method, sets = CASES[case]
    cfg = ttt_config(*sets)
    tokens, counts = caseops_stream()
    model = ttt_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ledger = ScoreLedger(len(tokens) - 1)
    stats: dict = {}
    res, nll = evaluate(model, method, tokens, sidecar(counts), cfg, "cpu", record=True, ledger=ledger, stats=stats)
    want_bpb, want_nll = reference(model, tokens, counts, cfg, phased=method == "ttt-phased")
    assert res.tokens == len(tokens) - 1 and res.bytes == int(counts[1:].sum())  # the whole stream, the sidecar
    assert abs(res.val_bpb - want_bpb) < 1e-6, (res.val_bpb, want_bpb)
    np.testing.assert_allclose(nll, want_nll, atol=1e-4, rtol=0)
    # Score-first and single pass, measured by the ledger; the model is left as it was.
    assert ledger.c3_ok() and ledger.c4_ok(), [v.line() for v in ledger.violations[:3]]
    assert ledger.reads == stats["lora_steps"] + sum(p["sgd_steps"] for p in stats.get("phases", []))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if method == "ttt-phased":
        assert [p["docs_trained"] for p in stats["phases"]] == [6, 13, 20]  # floor(20 k / 3)
        assert all(p["sgd_steps"] > 0 for p in stats["phases"])


def test_the_adaptation_does_something():
    """Phases and LoRA change scores (else equality above would be vacuous), and differently."""
    tokens, counts = caseops_stream()
    model, cfg = ttt_model(), ttt_config()
    got = {m: evaluate(model, m, tokens, sidecar(counts), cfg, "cpu")[0].val_bpb for m in ("ttt-lora", "ttt-phased")}
    plain = evaluate(model, "plain", tokens, sidecar(counts), ttt_config("eval.whole_split=true"), "cpu")[0].val_bpb
    assert len({round(v, 6) for v in (*got.values(), plain)}) == 3, (got, plain)


def test_fresh_adapters_change_nothing():
    """B = 0: the adapted forward is bit-identical to the plain one; one set per executed pass."""
    model = ttt_model()
    assert num_slots(model) == 4  # 3 layers, layer 1 run twice
    ad = DocumentAdapters(model, 2, 4, 144.0)
    ad.init_rows([5, 6])
    assert len(ad.slots) == 4 and not torch.equal(ad.head.A[0], ad.head.A[1])
    ids = torch.tensor(caseops_stream()[0][:80]).view(2, 40)
    with torch.no_grad():
        plain = model.compute_logits(model.forward_hidden(ids))
        adapted = model.compute_logits(model.forward_hidden(ids, adapters=ad), adapters=ad)
    assert torch.equal(plain, adapted)
    with torch.no_grad():
        ad.slots[3].mlp.B.normal_()
        assert not torch.equal(plain, model.compute_logits(model.forward_hidden(ids, adapters=ad), adapters=ad))


# --------------------------------------------------------------------------- FRONTIER's checks
def test_documents_queue_and_windows_are_the_records():
    docs = find_documents(np.array([1, 5, 6, 7, 1, 8, 9, 1, 10, 11, 12, 13]))
    assert [(d.start, d.n_pred + 1) for d in docs] == [(0, 5), (4, 4), (7, 5)]  # F6.6 (start, length)
    lengths = [5, 3, 9, 2, 4, 7, 6]
    queue = plan_queue([Document(i, 0, n - 1) for i, n in enumerate(lengths)], 3)
    assert [[d.index for d in b] for b in queue] == [[2], [0, 6, 5], [3, 1, 4]]  # F6.6's queue
    # F6.5's table: (window start, window length, scored offset, scored length)
    for P, i, want in [(2100, 0, (0, 48, 0, 48)), (2100, 42, (16, 2048, 2000, 48)), (2100, 43, (52, 2048, 2012, 36)),
                       (100, 2, (0, 100, 96, 4))]:  # fmt: skip
        s, e = chunk_window(i, P, 48, 2048)
        assert (s, e - s, 48 * i - s, e - 48 * i) == want
    queue = [[Document(0, 0, 10)] * 64 for _ in range(60)]
    assert [b for _, b in phase_plan(queue, 2500, 3)] == [833, 1666, 2500]
    assert [q for q, _ in phase_plan(queue, 2500, 3)] == [13, 26, 39]  # the batches holding docs 833, 1666, 2500


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_one_clear_error():
    tokens, counts = caseops_stream()
    model, cfg = ttt_model(), ttt_config()
    no_bos = np.where(tokens == 1, 2, tokens)
    with pytest.raises(DataError, match="ttt-lora needs documents, but the validation split has no BOS markers"):
        evaluate(model, "ttt-lora", no_bos, sidecar(counts), cfg, "cpu")
    with pytest.raises(ConfigError, match=r"eval.ttt_chunk=80 is longer than the TTT window of 64 tokens"):
        evaluate(model, "ttt-phased", tokens, sidecar(counts), ttt_config("eval.ttt_chunk=80"), "cpu")
    with pytest.raises(ConfigError, match=r"eval.ttt_lora_rank=20 is larger than the k projection .*32 -> 16"):
        evaluate(model, "ttt-lora", tokens, sidecar(counts), ttt_config("eval.ttt_lora_rank=20"), "cpu")
    with pytest.raises(ConfigError, match="ttt_doc_order"):
        ttt_config("eval.ttt_doc_order=random")


# --------------------------------------------------------------------------- C1 (pgolf audit)
@pytest.mark.parametrize(
    "method,sets,causal",
    [
        ("ttt-lora", [], True),  # documents are independent: nothing earlier in the stream moves
        ("ttt-phased", ["eval.ttt_doc_order=stream"], True),  # pauses only carry earlier documents forward
        # Length order: global SGD on (often later) documents reaches documents earlier in the
        # stream that are scored after the pause -- FRONTIER F7.3(b), by the letter of C1.
        ("ttt-phased", [], False),
    ],
)
def test_stream_order_causality_by_audit(method, sets, causal):
    from pgolf.eval.audit import audit

    tokens, counts = caseops_stream()
    rep = audit(ttt_model(), method, tokens, sidecar(counts), ttt_config(*sets), "cpu", n_targets=len(tokens) - 1,
                positions=2)  # fmt: skip
    assert rep["score_first"] is causal, rep["details"]
    if causal:
        assert rep["max_change"] == 0.0


# --------------------------------------------------------------------------- planted violations (C3)
class LateLedger(ScoreLedger):
    """Records each chunk's scores only after the next update step: what a method that trains
    on a chunk before scoring it would report. The reads must then be caught."""

    def __post_init__(self):
        super().__post_init__()
        self.pending: list = []

    def scored(self, targets) -> None:
        self.pending.append(targets)

    def read(self, positions, what: str) -> None:
        super().read(positions, what)
        for t in self.pending:
            super().scored(t)
        self.pending = []


def test_the_ledger_sees_a_step_before_its_chunk_is_scored():
    tokens, counts = caseops_stream()
    ledger = LateLedger(len(tokens) - 1)
    evaluate(ttt_model(), "ttt-lora", tokens, sidecar(counts), ttt_config(), "cpu", ledger=ledger)
    assert not ledger.c3_ok() and {v.what for v in ledger.violations} == {"lora-step"}


def test_the_ledger_sees_global_sgd_on_unscored_documents(monkeypatch):
    from pgolf.eval import ttt_phased

    def last_documents(queue, upto, boundary, rule):  # the documents scored LAST instead of first
        return [d for b in queue for d in b][-boundary:]

    monkeypatch.setattr(ttt_phased, "select_documents", last_documents)
    tokens, counts = caseops_stream()
    ledger = ScoreLedger(len(tokens) - 1)
    evaluate(ttt_model(), "ttt-phased", tokens, sidecar(counts), ttt_config(), "cpu", ledger=ledger)
    assert not ledger.c3_ok() and {v.what for v in ledger.violations} == {"global-sgd"}
