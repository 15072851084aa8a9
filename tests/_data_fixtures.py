"""Shared helpers for the tests/test_data_*.py modules (tiny corpora, shards, CLI runner, fake hub)."""

from __future__ import annotations

import ast
import hashlib
import http.server
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from pgolf.data.builtin import stdlib_dir
from pgolf.data.shards import write_shard

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_MODEL = Path("/work/shared/reference/tokenizers/fineweb_1024_bpe.model")
if not OFFICIAL_MODEL.is_file():  # a checkout elsewhere keeps shared/ next to the repository
    OFFICIAL_MODEL = REPO_ROOT.parent / "shared" / "reference" / "tokenizers" / "fineweb_1024_bpe.model"

# Characters that exercise normalisation and byte fallback: accents, decomposed accents,
# CJK, emoji, NFKC compatibility forms (fullwidth, ligature, superscript, roman numeral),
# the word mark itself, odd whitespace and control characters.
ODD_CHARS = [
    "é",
    "ü",
    "ß",
    "中",
    "文",
    "😀",
    "🎉",
    "e\u0301",
    "Ａ",
    "ﬁ",
    "²",
    "▁",
    "\u00a0",
    "\u200b",
    "\x00",
    "\x7f",
    "\u3000",
    "\r\n",
    "…",
    "Ω",
    "Ⅷ",
    "ｶ",
    "\ufeff",
    "\u2028",
    "\x0b",
    "\t",
]
ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'\"()-") + [" ", "  ", "\n", "\n\n"] + ODD_CHARS


def random_documents(n: int, seed: int = 0, max_len: int = 60) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        k = rng.randint(0, max_len)
        docs.append("".join(rng.choice(ALPHABET) for _ in range(k)))
    return docs


def topics_texts(limit: int | None = None) -> list[str]:
    """Real English for quick tokenizer training: the pydoc topics texts, sorted by name."""
    path = stdlib_dir() / "pydoc_data" / "topics.py"
    tree = ast.parse(path.read_bytes())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "topics":
            topics = ast.literal_eval(node.value)
            return [topics[k] for k in sorted(topics)][:limit]
    raise RuntimeError("no topics in pydoc_data")


def stream_positions_dataset(root: Path, sizes: list[int], val_tokens: int = 50, vocab: int = 1 << 16) -> Path:
    """A dataset whose train token at stream position p is p (mod vocab): batches reveal positions."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        write_shard(root / f"fineweb_train_{i:06d}.bin", (np.arange(start, start + n) % vocab).astype(np.uint16))
        start += n
    write_shard(root / "fineweb_val_000000.bin", (np.arange(val_tokens) % vocab).astype(np.uint16))
    return root


def synthetic_dataset(root: Path, tokenizer: Path = OFFICIAL_MODEL, seed: int = 0) -> Path:
    """A small valid dataset (random ids < 1024, documents starting with BOS) plus a tokenizer."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n_shards, n in (("train", 2, 3000), ("val", 1, 2000)):
        for i in range(n_shards):
            toks = rng.integers(4, 1024, size=n).astype(np.uint16)
            toks[:: rng.integers(50, 200)] = 1
            write_shard(root / f"fineweb_{split}_{i:06d}.bin", toks)
    (root / "tokenizer.model").write_bytes(tokenizer.read_bytes())
    return root


def _full_cli_available() -> bool:
    import importlib.util

    import pgolf.cli

    try:
        return all(importlib.util.find_spec(m) is not None for m in pgolf.cli.COMMAND_MODULES)
    except ImportError:
        return False


def run_pgolf(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m pgolf ARGS` in a fresh process. While other sub-commands' modules are not
    written yet, the same CLI (pgolf.cli.main, same error handling) with only the data commands."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    if _full_cli_available():
        cmd = [sys.executable, "-m", "pgolf", *args]
    else:
        shim = (
            "import sys, pgolf.cli as c; c.COMMAND_MODULES = ('pgolf.data.commands',); "
            "sys.argv[0] = 'pgolf'; sys.exit(c.main(sys.argv[1:]))"
        )
        cmd = [sys.executable, "-c", shim, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd or REPO_ROOT, timeout=300)


class FakeHub:
    """A local stand-in for the Hugging Face hub's file endpoints, enough for hf_hub_download.

    Serves HEAD/GET /datasets/<repo>/resolve/<revision>/<path> with the X-Repo-Commit and
    ETag headers huggingface_hub requires, Range requests for resumed downloads, and the
    hub's 404 + X-Error-Code: EntryNotFound for missing files. Counts GETs per path.
    """

    def __init__(self, repo_id: str, files: dict[str, bytes], commit: str = "c0ffee" * 6 + "abcd") -> None:
        self.repo_id, self.files, self.commit = repo_id, dict(files), commit
        self.gets: dict[str, int] = {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                prefix = f"/datasets/{hub.repo_id}/resolve/"
                path = self.path.split("?", 1)[0]
                data = None
                rel = None
                if path.startswith(prefix):
                    _rev, _, rel = path[len(prefix) :].partition("/")
                    data = hub.files.get(rel)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if rel else "RepoNotFound")
                    self.send_header("X-Repo-Commit", hub.commit)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                chunk = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(chunk)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if body:
                    hub.gets[rel] = hub.gets.get(rel, 0) + 1
                    self.wfile.write(chunk)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def shard_bytes(tokens: np.ndarray) -> bytes:
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    return header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes()
