"""`pgolf train`: --force, failed starts, the run lock and the data it reads (issue 11, items 1, 3, 4, 8)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from _data_fixtures import REPO_ROOT, run_pgolf
from _hostile import TINY, one_line_error

from pgolf.data.shards import write_shard
from pgolf.runlock import LOCK_NAME, RunLock


def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- item 1: --force
def test_force_with_a_mistyped_data_keeps_the_finished_run(run_copy, tmp_path):
    before = _snapshot(run_copy)
    r = run_pgolf("train", *TINY, "--data", str(tmp_path / "no-such-data"), "--out", str(run_copy), "--force")
    assert "no-such-data" in one_line_error(r)
    assert _snapshot(run_copy) == before


def test_force_refuses_an_out_that_contains_the_data(small_data, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(small_data, proj / "data")
    (proj / "config.json").write_text("{}")  # even when it looks like a run
    before = _snapshot(proj)
    r = run_pgolf("train", *TINY, "--data", str(proj / "data"), "--out", str(proj), "--force")
    assert "contains --data" in one_line_error(r)
    assert _snapshot(proj) == before


def test_force_refuses_a_directory_that_is_not_a_run(small_data, tmp_path, cli):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    r = cli("train", *TINY, "--data", str(small_data), "--out", str(notes), "--force")
    assert "not a pgolf run directory" in one_line_error(r)
    assert (notes / "thesis.tex").read_text() == "years of work"


def test_force_refuses_a_dataset_directory(small_data, tmp_path, cli):
    d = tmp_path / "d"
    shutil.copytree(small_data, d)
    (d / "train.log").write_text("")  # a stray log does not make a dataset a run
    r = cli("train", *TINY, "--data", str(small_data), "--out", str(d), "--force")
    assert "not a pgolf run directory" in one_line_error(r)
    assert (d / "manifest.json").is_file()


def test_force_replaces_a_run_only_after_the_new_one_started(run_copy, small_data):
    (run_copy / "old-marker").write_text("old")
    r = run_pgolf("train", *TINY, "--data", str(small_data), "--out", str(run_copy), "--force")
    assert r.returncode == 0, r.stderr
    assert not (run_copy / "old-marker").exists() and (run_copy / "final_model.safetensors").is_file()
    assert not list(run_copy.parent.glob(f".{run_copy.name}.old-*"))  # the set-aside copy is gone
    assert not (run_copy / LOCK_NAME).exists()  # released at the end


def test_a_failed_start_restores_the_replaced_run(run_copy, small_data, tmp_path, cli):
    """The Trainer refuses (empty val split) after the old run was set aside: it comes back."""
    bad = tmp_path / "bad"
    shutil.copytree(small_data, bad)
    for p in bad.glob("fineweb_val_*.bin"):
        p.unlink()
    write_shard(bad / "fineweb_val_000000.bin", np.zeros(0, np.uint16))
    (bad / "manifest.json").unlink()  # a hand-made directory: only the Trainer can notice
    before = _snapshot(run_copy)
    r = cli("train", *TINY, "--data", str(bad), "--out", str(run_copy), "--force")
    assert "validation split has 0 tokens" in one_line_error(r)  # not "--max-tokens must be >= 1"
    assert _snapshot(run_copy) == before


def test_a_failed_start_leaves_no_half_made_out(small_data, tmp_path, cli):
    bad = tmp_path / "bad"
    shutil.copytree(small_data, bad)
    (bad / "manifest.json").unlink()
    (bad / "fineweb_val_000000.bin").unlink()
    write_shard(bad / "fineweb_val_000000.bin", np.zeros(0, np.uint16))
    out = tmp_path / "new"
    one_line_error(cli("train", *TINY, "--data", str(bad), "--out", str(out)))
    assert not out.exists()  # the retry is not blocked


# ---------------------------------------------------------------- item 3: tokenizer and shards
def test_a_swapped_tokenizer_is_refused_by_train(small_data, other_tokenizer, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(small_data, d)
    shutil.copyfile(other_tokenizer, d / "tokenizer.model")  # the same vocabulary size
    msg = one_line_error(run_pgolf("train", *TINY, "--data", str(d), "--out", str(tmp_path / "r")))
    assert "tokenizer.model" in msg and "sha256" in msg and "bpb would be wrong" in msg


def test_a_one_bit_shard_edit_is_refused(small_data, tmp_path, cli):
    d = tmp_path / "d"
    shutil.copytree(small_data, d)
    shard = d / "fineweb_train_000000.bin"
    b = bytearray(shard.read_bytes())
    b[5000] ^= 1
    shard.write_bytes(bytes(b))
    msg = one_line_error(cli("train", *TINY, "--data", str(d), "--out", str(tmp_path / "r")))
    assert "fineweb_train_000000.bin" in msg and "differs from manifest.json" in msg


def test_an_unlisted_shard_is_refused(small_data, tmp_path, cli):
    d = tmp_path / "d"
    shutil.copytree(small_data, d)
    shutil.copyfile(d / "fineweb_train_000000.bin", d / "fineweb_train_000001.bin")
    msg = one_line_error(cli("train", *TINY, "--data", str(d), "--out", str(tmp_path / "r")))
    assert "fineweb_train_000001.bin" in msg and "does not list" in msg


@pytest.mark.parametrize("body", ["{", "[1, 2]", "[" * 200_000 + "]" * 200_000])
def test_an_invalid_manifest_is_refused(small_data, tmp_path, body, cli):
    d = tmp_path / "d"
    shutil.copytree(small_data, d)
    (d / "manifest.json").write_text(body)
    msg = one_line_error(cli("train", *TINY, "--data", str(d), "--out", str(tmp_path / "r")))
    assert "manifest.json" in msg


def test_a_run_records_what_it_read_relative_to_itself(small_run, small_data):
    rec = json.loads((small_run / "inputs.json").read_text())
    manifest = json.loads((small_data / "manifest.json").read_text())
    assert rec["manifest"] == "checked"
    assert rec["tokenizer"]["sha256"] == manifest["tokenizer"]["sha256"]
    assert rec["files"] == manifest["files"]
    assert not os.path.isabs(rec["data_dir"]) and (small_run / rec["data_dir"]).resolve() == small_data.resolve()
    cfg = json.loads((small_run / "config.json").read_text())
    assert not os.path.isabs(cfg["data_dir"]) and not os.path.isabs(cfg["tokenizer"])


# ---------------------------------------------------------------- item 4: the lock
def test_a_run_directory_in_use_is_refused(small_data, tmp_path):
    out = tmp_path / "busy"
    with RunLock(out):
        msg = one_line_error(run_pgolf("train", *TINY, "--data", str(small_data), "--out", str(out)))
        assert "in use by another pgolf process" in msg and str(os.getpid()) in msg
        (out / "config.json").write_text("{}")
        msg = one_line_error(run_pgolf("train", *TINY, "--data", str(small_data), "--out", str(out), "--force"))
        assert "in use by another pgolf process" in msg
    assert not (out / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "stale"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "here"}))
    with RunLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_two_trains_into_one_out_one_is_refused(small_data, tmp_path):
    out = tmp_path / "race"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    long = [*TINY, "--set", "train.iterations=100000", "--set", "train.checkpoint_every=0"]
    first = subprocess.Popen(
        [sys.executable, "-m", "pgolf", "train", *long, "--data", str(small_data), "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.2)
        second = run_pgolf("train", *TINY, "--data", str(small_data), "--out", str(out), "--force")
        assert "in use by another pgolf process" in one_line_error(second)
    finally:
        first.kill()
        first.wait()
