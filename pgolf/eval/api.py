"""`evaluate`: one entry point for every evaluation method.

Each method scores every target of the (prepared) stream exactly once, in one process
or split across torchrun ranks, with the same result either way: batches are formed
globally in stream order and only whole batches are handed to ranks.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from pgolf.config import Config, validate
from pgolf.data.bpb import ByteTables
from pgolf.errors import ConfigError, DataError
from pgolf.eval.common import DOCUMENT_METHODS, SCORE_FIRST, EvalResult, Timer, make_result, prepare_stream, rank_world
from pgolf.eval.plain import evaluate_plain
from pgolf.eval.sliding import evaluate_sliding
from pgolf.eval.slot import evaluate_slot
from pgolf.eval.slot_causal import evaluate_slot_causal
from pgolf.eval.ttt import evaluate_ttt
from pgolf.eval.ttt_lora import evaluate_ttt_lora, lora_options
from pgolf.eval.ttt_phased import evaluate_ttt_phased, phase_options
from pgolf.eval.windows import check_geometry

METHODS = tuple(SCORE_FIRST)  # plain, sliding, slot, slot-causal, ttt, ngram-tilt


# Methods registered by other modules (and the audit's planted illegal ones in tests):
# name -> fn(model, stream, tables, cfg, device=, autocast=, record=, progress=, post=, probe=, ledger=) -> Totals.
EXTRA_METHODS: dict = {}


def register_method(name: str, fn, score_first: bool) -> None:
    """Make `name` a method of `evaluate` (and of the audit), labelled score-first or not."""
    EXTRA_METHODS[name] = fn
    SCORE_FIRST[name] = score_first


def unregister_method(name: str) -> None:
    EXTRA_METHODS.pop(name, None)
    SCORE_FIRST.pop(name, None)


def canonical_method(method: str) -> str:
    m = method.strip().lower().replace("_", "-")
    if m not in SCORE_FIRST:
        raise ConfigError(f"unknown evaluation method {method!r} (choose from {', '.join(SCORE_FIRST)})")
    return m


def method_params(method: str, cfg: Config) -> dict:
    """The settings a method's number depends on (recorded in its result)."""
    e = cfg.eval
    out: dict = {"seq_len": cfg.eval_seq_len, "batch_seqs": e.batch_seqs}
    if method != "plain":
        out["stride"] = e.stride
    if method == "slot":
        out.update(batch_seqs=e.slot_batch_seqs, slot_steps=e.slot_steps, slot_lr=e.slot_lr,
                   slot_lr_min=e.slot_lr_min, slot_schedule=e.slot_schedule, slot_impl=e.slot_impl)  # fmt: skip
    elif method == "slot-causal":
        out.update(batch_seqs=e.slot_batch_seqs, causal_steps=e.causal_steps, causal_lr=e.causal_lr,
                   causal_lr_min=e.causal_lr_min, causal_context=e.causal_context, causal_bias=e.causal_bias,
                   slot_schedule=e.slot_schedule)  # fmt: skip
    if tilt_on(method, cfg):
        out.update(ngram_expert=e.ngram_expert, ngram_order=e.ngram_order, ngram_table_bits=e.ngram_table_bits,
                   ngram_beta=e.ngram_beta)  # fmt: skip
    if method == "ttt":
        out.update(ttt_chunk_tokens=e.ttt_chunk_tokens, ttt_lr=e.ttt_lr, ttt_epochs=e.ttt_epochs,
                   ttt_momentum=e.ttt_momentum, ttt_batch_seqs=e.ttt_batch_seqs, ttt_grad_clip=e.ttt_grad_clip,
                   ttt_freeze_blocks=e.ttt_freeze_blocks)  # fmt: skip
    if method in DOCUMENT_METHODS:  # [eval] field names, so that `pgolf sweep` finds them
        keys = LORA_FIELDS + (PHASE_FIELDS if method == "ttt-phased" else ())
        out = {"seq_len": cfg.eval_seq_len, **{k: getattr(e, k) for k in keys}}
        if tilt_on(method, cfg):
            out.update(ngram_expert=e.ngram_expert, ngram_order=e.ngram_order, ngram_table_bits=e.ngram_table_bits,
                       ngram_beta=e.ngram_beta)  # fmt: skip
    return out


LORA_FIELDS = ("ttt_lora_rank", "ttt_lora_alpha", "ttt_lora_lr", "ttt_lora_beta1", "ttt_lora_beta2", "ttt_lora_eps",
               "ttt_lora_wd", "ttt_lora_seed", "ttt_k_lora", "ttt_o_lora", "ttt_mlp_lora", "ttt_chunk", "ttt_context",
               "ttt_doc_batch", "ttt_doc_order")  # fmt: skip
PHASE_FIELDS = ("ttt_phases", "ttt_prefix_docs", "global_ttt_lr", "global_ttt_momentum", "global_ttt_epochs",
                "global_ttt_chunk_tokens", "global_ttt_batch_seqs", "global_ttt_grad_clip", "global_ttt_selection",
                "global_ttt_last_chunk", "global_ttt_join")  # fmt: skip


def tilt_on(method: str, cfg: Config) -> bool:
    """Whether the n-gram tilt post-processes the method's logits."""
    return method == "ngram-tilt" or cfg.eval.ngram_tilt == "on"


def make_tilt(method: str, cfg: Config, stream: np.ndarray, ledger=None):
    """The n-gram tilt of cfg.eval for this stream, or None."""
    if not tilt_on(method, cfg):
        return None
    from pgolf.eval.ngram import NgramTilt, expert

    e = cfg.eval
    if method in DOCUMENT_METHODS and e.ngram_order == "score" and rank_world()[1] > 1:
        # A rank cannot know which documents other ranks have scored so far (it catches up in stream order).
        raise ConfigError(f"eval.ngram_tilt with {method} runs in one process only (or set eval.ngram_order=stream)")
    beta = e.ngram_beta if e.ngram_beta > 0 else None
    return NgramTilt(stream, expert(str(e.ngram_expert), beta), e.ngram_table_bits, e.ngram_order, ledger)


def is_score_first(method: str, cfg: Config) -> bool:
    return SCORE_FIRST[method] and not (tilt_on(method, cfg) and cfg.eval.ngram_order == "stream")


def warmup_shapes(method: str, cfg: Config, n_targets: int) -> list[tuple[int, int]]:
    """The (batch, length) input shapes this rank's compiled forward will see."""
    from pgolf.eval.common import my_share
    from pgolf.eval.sliding import window_batches

    e, seq_len = cfg.eval, cfg.eval_seq_len
    if method == "plain":
        n_full = n_targets // seq_len
        shapes = {(min(e.batch_seqs, n_full), seq_len)} if n_full else set()
        if n_targets % seq_len:
            shapes.add((1, n_targets % seq_len))
        return sorted(shapes)
    bs = e.slot_batch_seqs if method in ("slot", "slot-causal") else e.batch_seqs
    return sorted({(len(g), seq_len) for g in my_share(window_batches(n_targets, seq_len, e.stride, bs))})


def compile_warmup(hidden, shapes: list[tuple[int, int]], vocab: int, device: torch.device, autocast: str) -> None:
    """Run the compiled forward once per input shape on random tokens (never validation data)."""
    from pgolf.eval.common import autocast_context

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b, t in shapes:
            x = torch.randint(0, vocab, (b, t), generator=g).to(device)
            with autocast_context(device, autocast):
                hidden(x)


def check_settings(method: str, cfg: Config, n_targets: int) -> None:
    """The config's own validation (every field, with its name) plus the stream's geometry."""
    validate(cfg)
    if method != "plain" and method not in DOCUMENT_METHODS:
        check_geometry(n_targets, cfg.eval_seq_len, cfg.eval.stride)


def check_vocab(model, tokens: np.ndarray, tables: ByteTables) -> None:
    vocab = int(model.config.vocab_size)
    if len(tokens) and int(np.max(tokens)) >= vocab:
        top = int(np.max(tokens))
        raise DataError(f"validation token id {top} is outside the model's vocabulary ({vocab}): wrong data or model")
    if tables.size < vocab:
        raise DataError(f"the tokenizer's byte tables cover {tables.size} ids, the model has {vocab}: wrong tokenizer")


class _Compiled:
    """torch.compile'd hidden-state function that falls back to eager if compilation fails on its first call."""

    def __init__(self, fn):
        self.eager = fn
        self.compiled = torch.compile(fn, dynamic=False)
        self.ok: bool | None = None

    def __call__(self, x):
        if self.ok is False:
            return self.eager(x)
        try:
            out = self.compiled(x)
        except Exception as e:  # noqa: BLE001 - a missing compiler toolchain must not stop an evaluation
            if self.ok:
                raise
            self.ok = False
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); evaluating eagerly", stacklevel=2)
            return self.eager(x)
        self.ok = True
        return out


def _hidden_fn(model, cfg: Config, device: torch.device):
    """The model's hidden-state function, compiled when runtime.compile asks for it (auto: on CUDA)."""
    mode = cfg.runtime.compile
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        return _Compiled(model.forward_hidden)
    return model.forward_hidden


def evaluate(
    model,
    method: str,
    tokens: np.ndarray,
    tables: ByteTables,
    cfg: Config,
    device: torch.device | str,
    *,
    max_tokens: int | None = None,
    record: bool = False,
    progress=False,
    autocast: str = "auto",
    ledger=None,
    stats: dict | None = None,
    probe=None,
) -> tuple[EvalResult, np.ndarray | None]:
    """Score `tokens` (the whole validation stream) with `method`.

    `max_tokens` N scores exactly the first N targets; otherwise the stream is cut to
    whole windows of the eval length as the seed does. With `record`, the NLL (nats) of
    every scored target in stream order is returned as well (on every rank).
    `progress`: True for a bar on stderr (rank 0, terminals only), or an object with update(n).
    `autocast`: "auto" follows cfg.runtime.autocast (bf16 on CUDA), "bf16" or "off".
    `ledger` (a `pgolf.eval.ledger.ScoreLedger`, ttt-lora/ttt-phased) records scores and update reads;
    `stats` (a dict) receives a document method's counts and per-phase seconds.
    The document methods (ttt-lora, ttt-phased) and `eval.whole_split` score the whole split.
    `ledger` (a ScoreLedger of the stream's targets) and `probe` (pgolf.eval.probe.Probe) let the
    audit watch the method (C2-C4); None costs nothing.

    The result's `phases` are the seconds of the artifact's load (when the model carries them,
    `model.artifact_info["load_seconds"]`), the compile warm-up, the scoring, TTT training and
    n-gram hints; `total_seconds` their sum, `within_600s` against the challenge's budget.
    """
    method = canonical_method(method)
    device = torch.device(device)
    seq_len = cfg.eval_seq_len
    whole = method in DOCUMENT_METHODS or cfg.eval.whole_split
    stream = prepare_stream(np.asarray(tokens), seq_len, max_tokens, whole=whole)
    n_targets = len(stream) - 1
    check_settings(method, cfg, n_targets)
    check_vocab(model, stream, tables)
    if autocast == "auto":
        autocast = cfg.runtime.autocast
    e = cfg.eval
    rank, _ = rank_world()
    with contextlib.ExitStack() as stack:
        bar = progress
        if progress is True or progress is False:
            from pgolf.cliutil import progress as make_bar

            bar = stack.enter_context(make_bar(n_targets, method, enabled=bool(progress) and rank == 0, unit="tok"))
        post = make_tilt(method, cfg, stream, ledger)
        clock: dict[str, float] = {}
        common = {"device": device, "autocast": autocast, "record": record, "progress": bar,
                  "post": post, "probe": probe, "ledger": ledger}  # fmt: skip
        hidden = _hidden_fn(model, cfg, device) if method != "ttt" and method not in DOCUMENT_METHODS else None
        warm = 0.0
        if isinstance(hidden, _Compiled):
            with Timer(device) as tw:
                compile_warmup(hidden, warmup_shapes(method, cfg, n_targets), int(model.config.vocab_size), device,
                               autocast)  # fmt: skip
            warm = tw.seconds
        with Timer(device) as t:
            if method in EXTRA_METHODS:
                totals = EXTRA_METHODS[method](model, stream, tables, cfg, **common)
            elif method == "plain":
                totals = evaluate_plain(model, stream, tables, seq_len, e.batch_seqs,
                                        logits_fn=lambda x: model.compute_logits(hidden(x)), **common)  # fmt: skip
            elif method in ("sliding", "ngram-tilt"):
                totals = evaluate_sliding(model, stream, tables, seq_len, e.stride, e.batch_seqs,
                                          hidden_fn=hidden, **common)  # fmt: skip
            elif method == "slot":
                totals = evaluate_slot(model, stream, tables, seq_len, e.stride, e.slot_batch_seqs,
                                       steps=e.slot_steps, lr=e.slot_lr, lr_min=e.slot_lr_min,
                                       schedule=e.slot_schedule, impl=e.slot_impl,
                                       hidden_fn=hidden, **common)  # fmt: skip
            elif method == "slot-causal":
                totals = evaluate_slot_causal(model, stream, tables, seq_len, e.stride, e.slot_batch_seqs,
                                              steps=e.causal_steps, lr=e.causal_lr, lr_min=e.causal_lr_min,
                                              schedule=e.slot_schedule, context=e.causal_context,
                                              use_bias=e.causal_bias,
                                              hidden_fn=hidden, **common)  # fmt: skip
            elif method in DOCUMENT_METHODS:
                stats = {} if stats is None else stats
                doc = {k: v for k, v in common.items() if k != "device"}
                doc["stats"] = stats
                if method == "ttt-lora":
                    totals = evaluate_ttt_lora(model, stream, tables, device, lora_options(cfg), **doc)
                else:
                    totals = evaluate_ttt_phased(model, stream, tables, device, lora_options(cfg), phase_options(cfg),
                                                 **doc)  # fmt: skip
            else:
                totals = evaluate_ttt(model, stream, tables, seq_len, e.stride, e.batch_seqs,
                                      chunk_tokens=e.ttt_chunk_tokens, lr=e.ttt_lr, epochs=e.ttt_epochs,
                                      momentum=e.ttt_momentum, train_batch_seqs=e.ttt_batch_seqs,
                                      grad_clip=e.ttt_grad_clip, freeze_blocks=e.ttt_freeze_blocks,
                                      clock=clock, **common)  # fmt: skip
    result = make_result(method, totals, t.seconds, device, method_params(method, cfg), max_tokens)
    result.score_first = is_score_first(method, cfg)
    ngram_s = post.seconds if post is not None else 0.0
    train_s = clock.get("ttt_training", 0.0)
    if method in DOCUMENT_METHODS and stats:  # global SGD pauses; LoRA steps share the scoring forward
        train_s = sum(float(p.get("seconds", 0.0)) for p in stats.get("phases") or [])
    load = dict(getattr(model, "artifact_info", None) or {}).get("load_seconds") or {}
    result.set_phases({**{k: load.get(k, 0.0) for k in ("imports", "read", "decompress", "dequantise", "to_device")},
                       "compile_warmup": warm, "diagnostic": 0.0, "scoring": max(t.seconds - train_s - ngram_s, 0.0),
                       "ttt_training": train_s, "ngram_hints": ngram_s})  # fmt: skip
    if post is not None:
        result.params.update(post.stats())
    return result, totals.nll
