"""Shared inputs of the per-document TTT tests: a small frontier-shaped model and a CaseOps stream.

The model is the `frontier` preset at toy size with every frontier part active (depth
recurrence, two residual lanes, gated skips, SparseAttnGate, the BOS-masked SmearGate,
document attention), its weights drawn at random so that no zero-initialised branch is idle.
The stream is a few dozen CaseOps documents: Python's pydoc topics texts, CaseOps-encoded,
tokenised with the committed 512-piece CaseOps tokenizer (tests/fixtures/caseops_512.model.xz),
cut to varied lengths, each BOS-led, with the byte sidecar the data pipeline writes. No test
lives here.
"""

from __future__ import annotations

import functools
import lzma
import tempfile
from pathlib import Path

import numpy as np
import torch

from pgolf.config import Config, load_config
from pgolf.data.caseops import encode
from pgolf.data.sidecar import SidecarBytes, piece_surfaces, raw_counts
from pgolf.data.tokenizer import load_tokenizer
from pgolf.model.gpt import GPT, build_model

FIX = Path(__file__).parent / "fixtures"

MODEL = [
    "model.vocab_size=512", "model.num_layers=3", "model.model_dim=32", "model.num_heads=4",
    "model.num_kv_heads=2", "model.num_loops=1", "model.loop_start=1", "model.loop_end=1",
    "model.parallel_start_layer=2", "model.xsa_last_n=3", "model.doc_max_len=512",
    "model.embed_dtype=float32", "model.rope_dims=4", "runtime.device=cpu", "runtime.compile=off",
]  # fmt: skip
# Small TTT settings that still exercise everything: several chunks per document, windows
# shorter than the longest documents, batches of mixed sizes, three phases, several SGD chunks.
EVAL = [
    "eval.seq_len=64", "eval.stride=16", "eval.ttt_context=0", "eval.ttt_lora_rank=4", "eval.ttt_chunk=16",
    "eval.ttt_doc_batch=8", "eval.ttt_phases=3", "eval.ttt_prefix_docs=20", "eval.global_ttt_lr=0.003",
    "eval.global_ttt_chunk_tokens=300", "eval.global_ttt_batch_seqs=3",
]  # fmt: skip


def ttt_config(*sets: str) -> Config:
    return load_config("frontier", sets=[*MODEL, *EVAL, *sets], environ={})


@functools.lru_cache(maxsize=2)
def _model(seed: int) -> dict:
    cfg = ttt_config()
    model = build_model(cfg.model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            base = 1.0 if p.ndim < 2 else 1.0 / p.shape[-1] ** 0.5
            noise = torch.randn(p.shape, generator=g) * base * (0.3 if p.ndim < 2 else 1.0)
            p.copy_(p + noise if p.ndim < 2 else noise)
    return model.state_dict()


def ttt_model(seed: int = 0) -> GPT:
    model = build_model(ttt_config().model)
    model.load_state_dict(_model(seed))
    return model.eval()


@functools.lru_cache(maxsize=1)
def _tokenizer():
    path = Path(tempfile.mkdtemp(prefix="pgolf_ttt_")) / "caseops_512.model"
    path.write_bytes(lzma.decompress((FIX / "caseops_512.model.xz").read_bytes()))
    return load_tokenizer(path)


@functools.lru_cache(maxsize=4)
def caseops_stream(n_docs: int = 36, seed: int = 0, max_len: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, sidecar counts): n_docs BOS-led CaseOps documents of 3..max_len pieces."""
    from pgolf.data.builtin import _topics_documents, stdlib_dir

    texts = [d.text for d in _topics_documents(stdlib_dir())][: n_docs + 5]
    rng = np.random.default_rng(seed)
    toks, counts = [], []
    for ids, surfaces in piece_surfaces(_tokenizer(), [encode(t) for t in texts])[:n_docs]:
        n = int(rng.integers(3, max_len))
        toks += [1, *ids[:n]]
        counts += [0, *raw_counts(surfaces[:n], caseops=True)]
    return np.array(toks, dtype=np.int64), np.array(counts, dtype=np.int32)


def sidecar(counts: np.ndarray) -> SidecarBytes:
    return SidecarBytes(counts, 512, caseops=True)
