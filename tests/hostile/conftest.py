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
from _hostile import TINY  # noqa: E402


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
