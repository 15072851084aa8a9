"""Shared helpers for the tests/test_quant_*.py modules (no tests here).

A briefly trained tiny model and a run directory written the way the trainer writes
one, built once per process: real English text (Python's `pydoc_data/topics.py`, read
through the builtin corpus reader) tokenised with the challenge's published tokenizer
when shared/ is beside the repository, else a byte-fallback tokenizer trained on it.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_TOKENIZER = ROOT.parent / "shared" / "reference" / "tokenizers" / "fineweb_1024_bpe.model"

# Small enough to train in seconds on two cores; matrices >= 8,192 elements are quantised
# in the tests (the seed's threshold of 65,536 would leave every tiny matrix in fp16).
TINY_SETS = [
    "model.num_layers=2", "model.model_dim=128", "model.num_heads=4", "model.num_kv_heads=2",
    "model.bigram_dim=64", "model.ve_dim=64", "model.ve_layers=1", "model.xsa_last_n=2",
    "train.train_seq_len=128", "train.train_batch_tokens=2048", "eval.seq_len=128", "eval.stride=64",
]  # fmt: skip
TINY_PASSTHROUGH = 8192
SEQ = 128


def tiny_config(extra: list[str] | None = None):
    from pgolf.config import load_config

    return load_config("record", sets=[*TINY_SETS, *(extra or [])], environ={})


@functools.lru_cache(maxsize=1)
def corpus() -> dict:
    """Token streams (train, held-out) and byte tables from real text."""
    from pgolf.data.bpb import build_byte_tables
    from pgolf.data.builtin import builtin_documents, stdlib_dir
    from pgolf.data.tokenizer import encode_documents, load_tokenizer, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="pgolf-quant-corpus-"))
    (work / "pydoc_data").mkdir()
    shutil.copy(stdlib_dir() / "pydoc_data" / "topics.py", work / "pydoc_data" / "topics.py")
    docs = [d.text for d in builtin_documents(work)]
    if PUBLISHED_TOKENIZER.is_file():
        tok_path = PUBLISHED_TOKENIZER
    else:
        tok_path = train_tokenizer(docs, work / "tokenizer.model", 1024)
    sp = load_tokenizer(tok_path, 1024)
    ids = np.concatenate([np.asarray(x, dtype=np.uint16) for x in encode_documents(sp, docs)])
    cut = int(len(ids) * 0.9)
    return {
        "train": ids[:cut],
        "heldout": ids[cut:],
        "tables": build_byte_tables(sp, 1024),
        "tokenizer": str(tok_path),
        "workdir": work,
    }


def heldout_bpb(model, tokens: np.ndarray | None = None, max_targets: int = 16384) -> float:
    """Plain next-token bpb over non-overlapping SEQ windows of the held-out stream."""
    from pgolf.data.bpb import bpb, target_bytes

    c = corpus()
    toks = c["heldout"] if tokens is None else tokens
    n = min(len(toks) - 1, max_targets) // SEQ * SEQ
    x = torch.from_numpy(toks[: n + 1].astype(np.int64))
    inputs, targets = x[:-1].view(-1, SEQ), x[1:].view(-1, SEQ)
    loss_sum = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, inputs.size(0), 16):
            logits = model.compute_logits(model.forward_hidden(inputs[i : i + 16]))
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), targets[i : i + 16].reshape(-1), reduction="sum"
            )
            loss_sum += float(nll)
    n_bytes = int(target_bytes(targets, inputs, c["tables"]).sum())
    return bpb(loss_sum, targets.numel(), n_bytes)[1]


@functools.lru_cache(maxsize=1)
def trained_tiny():
    """(config, state dict) of the tiny model after a few hundred Adam steps on the train stream."""
    from pgolf.model import build_model

    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg.model, seed=1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    train = torch.from_numpy(corpus()["train"].astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    steps, batch = 150, 8
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, (steps - step) / 50)  # linear warmdown helps the tiny model settle
        starts = torch.randint(0, len(train) - SEQ - 1, (batch,), generator=gen)
        seqs = torch.stack([train[s : s + SEQ + 1] for s in starts.tolist()])
        loss = model(seqs[:, :-1], seqs[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return cfg, {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_data_dir(data_dir: Path) -> Path:
    """Train and val shards of the corpus (val = the held-out stream) in the challenge's format."""
    from pgolf.data.shards import write_split

    c = corpus()
    write_split(data_dir, "train", c["train"], shard_tokens=60_000)
    write_split(data_dir, "val", c["heldout"])
    return Path(data_dir)


def run_cli(*args: str, cwd: Path | None = None):
    """`python -m pgolf ARGS` in a subprocess with the repository importable."""
    import os
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "pgolf", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def random_tiny_state(extra: list[str] | None = None, seed: int = 0):
    """(config, state) of an untrained tiny model whose zero-initialised matrices got random values,
    so that every quantiser has something to do; no training (fast)."""
    from pgolf.model import build_model

    cfg = tiny_config(extra)
    state = build_model(cfg.model, seed=seed).state_dict()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        noise = torch.randn(v.shape, generator=g) * (0.05 if v.ndim == 2 else 0.01)
        out[k] = (v.float() + noise).to(v.dtype)
    return cfg, out


TINY_ENV = {
    "NUM_LAYERS": "2", "MODEL_DIM": "128", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "BIGRAM_DIM": "64",
    "VE_DIM": "64", "VE_LAYERS": "1", "XSA_LAST_N": "2",
}  # fmt: skip  # the challenge's environment names for the tiny settings (seed-format loading)
