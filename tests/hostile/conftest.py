"""The hostile-input suite (issue 11): each case is a test; the shared fixtures live one level up."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/_data_fixtures.py and friends are imported by name, as the tests one level up do, and so is
# _crafted.py here. This directory is a package (hostile.conftest), so that its conftest does not
# shadow tests/conftest.py, which the tests one level up import as `conftest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

# A model small enough that `pgolf train` takes seconds on two cores.
TINY = [
    "--preset", "tiny", "--no-env",
    "--set", "model.vocab_size=512", "--set", "model.num_layers=2", "--set", "model.model_dim=64",
    "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1", "--set", "model.ve_layers=1",
    "--set", "model.xsa_last_n=2", "--set", "model.bigram_dim=32", "--set", "model.ve_dim=32",
    "--set", "train.train_seq_len=128", "--set", "train.train_batch_tokens=1024", "--set", "eval.seq_len=128",
    "--set", "train.iterations=2", "--set", "train.max_wallclock_seconds=0", "--set", "train.val_loss_every=0",
    "--set", "train.val_max_tokens=2048", "--set", "train.checkpoint_every=1", "--set", "runtime.num_threads=1",
]  # fmt: skip


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A 512-token `data text` dataset (manifest with hashes) built from the pydoc topics (~3 s)."""
    from _data_fixtures import topics_texts

    from pgolf.data.text import build_text

    root = tmp_path_factory.mktemp("hostile_data")
    src = root / "src" / "docs.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in topics_texts(60)))
    build_text([src], root / "data", vocab_size=512)
    return root / "data"


@pytest.fixture(scope="session")
def other_tokenizer(tmp_path_factory) -> Path:
    """A second 512-token tokenizer (other documents): the same vocabulary size, other pieces."""
    from _data_fixtures import topics_texts

    from pgolf.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("hostile_tok") / "other.model"
    train_tokenizer(iter(topics_texts()[60:140]), out, 512)
    return out


@pytest.fixture(scope="session")
def small_run(small_data, tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny model (with checkpoints), trained once through the CLI."""
    from _data_fixtures import run_pgolf

    out = tmp_path_factory.mktemp("hostile_runs") / "run"
    r = run_pgolf("train", *TINY, "--data", str(small_data), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture()
def run_copy(small_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(small_run, dst)
    return dst


def one_line_error(r) -> str:
    """The CLI's refusal: exit 2 and exactly one line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return lines[0]


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def cli(capsys):
    """`pgolf ARGS` in this process (the CLI's own main and error handling, no interpreter start-up)."""
    from pgolf.cli import main

    def run(*args: str) -> _Result:
        capsys.readouterr()
        rc = main(list(args))
        out = capsys.readouterr()
        return _Result(rc, out.out, out.err)

    return run
