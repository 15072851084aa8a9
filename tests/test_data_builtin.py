"""The built-in corpus: offline, deterministic, large enough, disjoint splits, exact val bytes.

The corpus is built once for the whole module (about 5-10 s on 2 cores) through the CLI.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform

import numpy as np
import pytest
from _data_fixtures import run_pgolf

import pgolf.cli
from pgolf.data.builtin import builtin_documents, split_documents
from pgolf.data.manifest import documents_sha256, read_manifest, verify_files
from pgolf.data.shards import list_shards, read_shard
from pgolf.data.tokenizer import BOS_ID, file_sha256, load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def documents():
    return builtin_documents()


@pytest.fixture(scope="module")
def built(tmp_path_factory, documents):
    """`pgolf data builtin --out X --json` in this process (sharing the parsed documents),
    then `pgolf data stats X --json` as a real subprocess."""
    out = tmp_path_factory.mktemp("builtin") / "x"
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(pgolf.cli, "COMMAND_MODULES", ("pgolf.data.commands",))
        assert pgolf.cli.main(["data", "builtin", "--out", str(out), "--json"]) == 0
    stats = run_pgolf("data", "stats", str(out), "--json")
    assert stats.returncode == 0, stats.stderr
    return out, json.loads(buf.getvalue()), json.loads(stats.stdout)


def test_documents_are_real_text_in_a_fixed_order(documents):
    names = [d.name for d in documents]
    topics = [n for n in names if n.startswith("topic:")]
    modules = [n for n in names if n.startswith("module:")]
    assert names == topics + modules and topics == sorted(topics) and modules == sorted(modules)
    assert len(topics) > 50 and len(modules) > 300
    assert not any("/test/" in n or "/tests/" in n or "idle_test" in n or "site-packages" in n for n in modules)
    assert not any(n.startswith(("module:test/", "module:tests/")) for n in modules)
    assert len({d.text for d in documents}) == len(documents)  # exact duplicates dropped
    assert sum(len(d.text.encode()) for d in documents) > 1_500_000


def test_split_is_fixed_disjoint_and_sized(documents):
    train, val = split_documents(documents)
    assert 0.05 <= len(val) / len(documents) <= 0.12
    assert not {d.name for d in train} & {d.name for d in val}
    assert not {d.text for d in train} & {d.text for d in val}
    assert len(train) + len(val) == len(documents)


def test_cli_build_meets_the_size_targets(built):
    out, m, s = built
    assert m["kind"] == "builtin" and m["vocab_size"] == 1024
    assert s["train_tokens"] >= 400_000
    assert s["val_tokens"] >= 30_000  # enough for sliding windows of 256-512 tokens
    assert s["val_usable_targets"] >= 2048 * 10
    for key in ("train_tokens", "val_tokens", "train_docs", "val_docs", "val_bytes"):
        assert s[key] == m["counts"][key], key
    assert s["tokenizer_sha256"] == m["tokenizer"]["sha256"]
    assert s["source_fingerprint"] == m["source_fingerprint"]
    assert s["val_unk_tokens"] == 0 and s["val_unk_bytes_uncounted"] == 0
    verify_files(out, read_manifest(out))


def test_val_bytes_equal_decoded_val_text(built, documents):
    out, m, s = built
    sp = load_tokenizer(out / "tokenizer.model", 1024)
    _, val = split_documents(documents)
    decoded = sum(len(sp.decode(sp.encode(d.text)).encode("utf-8")) for d in val)
    assert m["counts"]["val_bytes"] == s["val_bytes"] == decoded
    assert s["val_docs"] == len(val) == m["counts"]["val_docs"]
    stream = np.concatenate([read_shard(p) for p in list_shards(out, "val")])
    assert stream.tolist() == [t for d in val for t in [BOS_ID, *sp.encode(d.text)]]


def test_fingerprint_names_exactly_what_was_used(built, documents):
    out, m, _ = built
    train, val = split_documents(documents)
    fp = m["source_fingerprint"]
    assert fp["python_version"] == platform.python_version()
    assert fp["sha256"] == documents_sha256([d.text for d in val] + [d.text for d in train])
    assert fp["val_sha256"] == documents_sha256(d.text for d in val)
    assert fp["documents"] == len(documents)


def test_tokenizer_was_trained_on_train_documents_only(built, documents, tmp_path):
    out, _, _ = built
    train, _ = split_documents(documents)
    again = train_tokenizer((d.text for d in train), tmp_path / "t.model", 1024)
    assert file_sha256(again) == file_sha256(out / "tokenizer.model")


@pytest.mark.slow
def test_a_fresh_process_builds_a_byte_identical_dataset(built, tmp_path):
    out, m, _ = built
    r = run_pgolf("data", "builtin", "--out", str(tmp_path / "again"), "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again == m  # same documents, tokenizer, shards (all sha256s), counts
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
