"""Malformed datasets: every problem is one DataError line naming the file, and `pgolf data stats` exits 2."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _data_fixtures import OFFICIAL_MODEL, run_pgolf, synthetic_dataset

import pgolf.cli
from pgolf.data.shards import HEADER_BYTES, read_header, read_shard, write_shard
from pgolf.data.stats import dataset_stats
from pgolf.errors import DataError

pytestmark = pytest.mark.skipif(not OFFICIAL_MODEL.is_file(), reason="needs the challenge's tokenizer model")


def _patch_header(path, index: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[4 * index : 4 * index + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(bytes(data))


def wrong_magic(d):
    _patch_header(d / "fineweb_val_000000.bin", 0, 12345)
    return "fineweb_val_000000.bin", "bad magic 12345"


def wrong_version(d):
    _patch_header(d / "fineweb_train_000001.bin", 1, 2)
    return "fineweb_train_000001.bin", "unsupported shard version 2"


def extra_bytes(d):
    with open(d / "fineweb_train_000000.bin", "ab") as f:
        f.write(b"\0\0\0")
    return "fineweb_train_000000.bin", "size mismatch"


def short_payload(d):
    p = d / "fineweb_val_000000.bin"
    p.write_bytes(p.read_bytes()[:-10])
    return "fineweb_val_000000.bin", "truncated"


def truncated_header(d):
    p = d / "fineweb_train_000001.bin"
    p.write_bytes(p.read_bytes()[: HEADER_BYTES - 100])
    return "fineweb_train_000001.bin", "truncated header"


def token_out_of_vocab(d):
    toks = np.full(100, 5, np.uint16)
    toks[42] = 1024
    write_shard(d / "fineweb_val_000000.bin", toks)
    return "fineweb_val_000000.bin", "token id 1024 at position 42 is >= vocab size 1024"


def no_val_shards(d):
    (d / "fineweb_val_000000.bin").unlink()
    return str(d), "empty val split"


def empty_val_shard(d):
    write_shard(d / "fineweb_val_000000.bin", np.zeros(0, np.uint16))
    return str(d), "empty val split"


def no_train_shards(d):
    for p in d.glob("fineweb_train_*.bin"):
        p.unlink()
    return str(d), "empty train split"


def missing_directory(d):
    shutil.rmtree(d)
    return str(d), "data directory not found"


def missing_tokenizer(d):
    (d / "tokenizer.model").unlink()
    return str(d), "pass --tokenizer"


CASES = [
    wrong_magic,
    wrong_version,
    extra_bytes,
    short_payload,
    truncated_header,
    token_out_of_vocab,
    no_val_shards,
    empty_val_shard,
    no_train_shards,
    missing_directory,
    missing_tokenizer,
]


def test_the_synthetic_dataset_is_valid(tmp_path):
    d = synthetic_dataset(tmp_path / "d")
    s = dataset_stats(d)
    assert s["train_tokens"] == 6000 and s["val_tokens"] == 2000 and s["train_shards"] == 2
    assert s["val_docs"] == int((read_shard(d / "fineweb_val_000000.bin") == 1).sum())
    assert s["manifest"] == "absent" and s["source_fingerprint"] is None


@pytest.mark.parametrize("corrupt", CASES, ids=[c.__name__ for c in CASES])
def test_malformed_dataset_is_one_line_naming_file_and_problem(tmp_path, corrupt, capsys, monkeypatch):
    d = synthetic_dataset(tmp_path / "d")
    name, problem = corrupt(d)
    with pytest.raises(DataError) as e:
        dataset_stats(d)
    msg = str(e.value)
    assert "\n" not in msg and name in msg and problem in msg, msg
    # The CLI turns it into exactly one stderr line and exit code 2 (in-process, data commands only).
    monkeypatch.setattr(pgolf.cli, "COMMAND_MODULES", ("pgolf.data.commands",))
    assert pgolf.cli.main(["data", "stats", str(d), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("pgolf: error: ") and problem in err


def test_cli_subprocess_reports_one_line(tmp_path):
    d = synthetic_dataset(tmp_path / "d")
    wrong_magic(d)
    r = run_pgolf("data", "stats", str(d))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: ") and "bad magic" in lines[0]
    assert "fineweb_val_000000.bin" in lines[0]


def test_read_header_counts_and_write_shard_roundtrip(tmp_path):
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, np.arange(7, dtype=np.uint16))
    assert read_header(p) == 7 and p.stat().st_size == HEADER_BYTES + 14
    assert read_shard(p).tolist() == list(range(7))
    with pytest.raises(DataError, match="shard not found"):
        read_header(tmp_path / "nope.bin")


def test_vocab_size_option_must_match_tokenizer(tmp_path):
    d = synthetic_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="does not match vocab_size=2048"):
        dataset_stats(d, vocab_size=2048)
