"""Shared helpers for the evaluation tests: a small model trained on real text, once per process.

The text is Python's own `pydoc_data.topics` (the built-in corpus's first documents),
tokenised with the challenge's published 1024-piece tokenizer. No test lives here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from pgolf.config import Config, load_config
from pgolf.data.bpb import ByteTables, build_byte_tables
from pgolf.model.gpt import GPT, build_model

TOKENIZER = Path("/work/shared/reference/tokenizers/fineweb_1024_bpe.model")

SMALL = [
    "model.num_layers=2",
    "model.model_dim=64",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp_mult=2",
    "model.bigram_vocab_size=256",
    "model.bigram_dim=32",
    "model.ve_dim=32",
    "model.ve_layers=1",
    "model.xsa_last_n=2",
    "eval.seq_len=128",
    "eval.stride=32",
    "eval.batch_seqs=8",
    "eval.slot_batch_seqs=8",
    "eval.slot_steps=6",
    "eval.causal_steps=6",
    "eval.ttt_chunk_tokens=512",
    "eval.ttt_batch_seqs=4",
    "eval.ttt_epochs=1",
    "runtime.device=cpu",
]


def small_config(*sets: str) -> Config:
    return load_config("record", sets=[*SMALL, *sets], environ={})


@functools.lru_cache(maxsize=1)
def tokenizer() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


@functools.lru_cache(maxsize=1)
def tables() -> ByteTables:
    return build_byte_tables(tokenizer(), 1024)


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token streams: BOS + ids per document, the last 12 documents are validation."""
    from pgolf.data.builtin import _topics_documents, stdlib_dir

    docs = [d.text for d in _topics_documents(stdlib_dir())]
    ids = tokenizer().encode(docs)
    streams = [np.array([1, *x], dtype=np.uint16) for x in ids]
    return np.concatenate(streams[:-12]), np.concatenate(streams[-12:])


def val_tokens(n: int | None = None) -> np.ndarray:
    val = corpus()[1]
    return val if n is None else val[: n + 1]


def train_small(cfg: Config, steps: int = 200, seq_len: int = 128, batch: int = 8, seed: int = 0) -> GPT:
    """A few hundred Adam steps on the training stream: enough for a model that has learnt something."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, seed=seed)
    train = torch.from_numpy(corpus()[0].astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(train) - seq_len - 1, (batch,), generator=gen)
        chunk = torch.stack([train[s : s + seq_len + 1] for s in starts.tolist()])
        loss = model(chunk[:, :-1], chunk[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


def _cache_path(cfg: Config, steps: int) -> Path:
    """A file keyed by the model code and config, so later test runs skip the training."""
    h = hashlib.sha256(json.dumps(cfg.model.__dict__, sort_keys=True, default=str).encode())
    h.update(f"steps={steps};torch={torch.__version__}".encode())
    for f in sorted((Path(__file__).parents[1] / "pgolf" / "model").glob("*.py")):
        h.update(f.read_bytes())
    return Path(tempfile.gettempdir()) / "pgolf-eval-tests" / f"small-{h.hexdigest()[:16]}.pt"


@functools.lru_cache(maxsize=1)
def _trained_state() -> tuple[Config, dict]:
    cfg = small_config()
    steps = 200
    path = _cache_path(cfg, steps)
    if path.is_file():
        try:
            return cfg, torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a broken cache file is simply rebuilt
            pass
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster on a busy 2-core machine
    try:
        model = train_small(cfg, steps=steps)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)
    return cfg, state


def trained_model() -> tuple[Config, GPT]:
    """A fresh copy of the shared trained model (tests may modify theirs)."""
    cfg, state = _trained_state()
    model = build_model(cfg.model, seed=0)
    model.load_state_dict(state)
    model.eval()
    return cfg, model


def save_model(path: Path) -> Config:
    """Write the trained model as {config, state} for subprocess tests."""
    cfg, state = _trained_state()
    torch.save({"config": cfg.to_dict(), "state": state}, path)
    return cfg
