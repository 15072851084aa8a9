"""`pgolf data text`: inputs, the val split, shards, manifest, atomic replacement, <unk> with the official model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_fixtures import OFFICIAL_MODEL, random_documents, run_pgolf, topics_texts

import pgolf.cli
import pgolf.data.text as text_mod
from pgolf.data.manifest import documents_sha256, read_manifest, verify_files
from pgolf.data.shards import list_shards, read_shard
from pgolf.data.stats import dataset_stats
from pgolf.data.text import build_text, expand_inputs, iter_documents
from pgolf.data.tokenizer import BOS_ID, file_sha256, load_tokenizer, reference_bytes
from pgolf.errors import DataError


@pytest.fixture(scope="module")
def docs() -> list[str]:
    # Real English plus random documents with odd characters, some starting with spaces.
    return topics_texts(30) + random_documents(40, seed=3, max_len=200) + ["  leading spaces", "x"]


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, docs):
    p = tmp_path_factory.mktemp("in") / "docs.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for d in docs:
            if d.strip():
                f.write(json.dumps({"text": d, "id": 1}) + "\n")
        f.write("\n")  # blank lines are skipped
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory, jsonl):
    out = tmp_path_factory.mktemp("out") / "ds"
    m = build_text([jsonl], out, vocab_size=512, val_docs=5, shard_tokens=3000)
    return out, m


def non_empty(docs):
    return [d for d in docs if d.strip()]


def test_layout_manifest_and_val_split(built, docs):
    out, m = built
    kept = non_empty(docs)
    assert m["kind"] == "text" and m["vocab_size"] == 512
    c = m["counts"]
    assert c["val_docs"] == 5 and c["train_docs"] == len(kept) - 5
    assert c["train_shards"] > 1  # cut by size
    names = sorted(p.name for p in out.iterdir())
    assert "manifest.json" in names and "tokenizer.model" in names
    assert names.count("fineweb_val_000000.bin") == 1
    verify_files(out, read_manifest(out))
    assert set(m["files"]) == {n for n in names if n != "manifest.json"}
    assert m["tokenizer"]["sha256"] == file_sha256(out / "tokenizer.model")
    fp = m["source_fingerprint"]
    assert fp["sha256"] == documents_sha256(kept)  # val first, then train == input order here
    assert fp["val_sha256"] == documents_sha256(kept[:5]) and fp["train_sha256"] == documents_sha256(kept[5:])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_streams_are_bos_plus_ids_per_document(built, docs):
    out, _ = built
    sp = load_tokenizer(out / "tokenizer.model", 512)
    kept = non_empty(docs)
    expect_val = np.concatenate([[BOS_ID, *sp.encode(d)] for d in kept[:5]])
    expect_train = np.concatenate([[BOS_ID, *sp.encode(d)] for d in kept[5:]])
    val = np.concatenate([read_shard(p) for p in list_shards(out, "val")])
    train = np.concatenate([read_shard(p) for p in list_shards(out, "train")])
    assert val.tolist() == expect_val.tolist()
    assert train.tolist() == expect_train.tolist()  # documents straddle shard boundaries intact


def test_val_bytes_are_exact(built, docs):
    out, m = built
    sp = load_tokenizer(out / "tokenizer.model", 512)
    kept = non_empty(docs)[:5]
    decoded = sum(len(sp.decode(sp.encode(d)).encode("utf-8")) for d in kept)
    assert m["counts"]["val_bytes"] == decoded == sum(reference_bytes(sp, d) for d in kept)
    assert m["counts"]["val_unk_bytes_uncounted"] == 0 and m["counts"]["val_unk_tokens"] == 0
    s = dataset_stats(out)
    assert s["val_bytes"] == decoded and s["val_docs"] == 5 and s["train_docs"] == m["counts"]["train_docs"]
    assert s["train_tokens"] == m["counts"]["train_tokens"] and s["val_unk_bytes_uncounted"] == 0


def test_tokenizer_is_trained_on_train_documents_only(built, docs, tmp_path):
    from pgolf.data.tokenizer import train_tokenizer

    out, _ = built
    again = train_tokenizer(non_empty(docs)[5:], tmp_path / "t.model", 512)
    assert file_sha256(again) == file_sha256(out / "tokenizer.model")


def test_inputs_txt_and_directories(tmp_path):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("first document", encoding="utf-8")
    (root / "b" / "c.txt").write_text("second document", encoding="utf-8")
    (root / "b" / "skip.md").write_text("not a .txt", encoding="utf-8")
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    (root / "b" / "empty.txt").write_text("  \n", encoding="utf-8")
    single = tmp_path / "z.text"
    single.write_text("third", encoding="utf-8")
    files = expand_inputs([single, root])
    assert [f.name for f in files] == ["z.text", "a.txt", "c.txt", "empty.txt"]
    assert [t for _, t in iter_documents(files)] == ["third", "first document", "second document"]
    with pytest.raises(DataError, match="input not found"):
        expand_inputs([tmp_path / "missing"])


def test_malformed_inputs_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON line"):
        list(iter_documents([bad]))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"nofield\.jsonl:1: expected a JSON object with a string 'text' field"):
        list(iter_documents([nofield]))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt: not UTF-8 text"):
        list(iter_documents([latin]))
    one = tmp_path / "one.txt"
    one.write_text("only one", encoding="utf-8")
    with pytest.raises(DataError, match="need at least 2 non-empty documents"):
        build_text([one], tmp_path / "o")
    two = tmp_path / "two.txt"
    two.write_text("two", encoding="utf-8")
    with pytest.raises(DataError, match="--val-docs=3: must be between 1 and 1"):
        build_text([one, two], tmp_path / "o", val_docs=3)


def test_official_tokenizer_unk_is_reported(tmp_path):
    if not OFFICIAL_MODEL.is_file():
        pytest.skip("needs the challenge's tokenizer model")
    src = tmp_path / "in.jsonl"
    rows = ["café au lait", "é word", "plain English text here"] + ["the information is here"] * 3
    src.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows), encoding="utf-8")
    m = build_text([src], tmp_path / "o", tokenizer=OFFICIAL_MODEL, val_docs=3)
    c = m["counts"]
    # Each of "café au lait" and "é word" loses é (2 bytes) and the space after it (1 byte),
    # because the word after an <unk> follows a boundary id.
    assert c["val_unk_tokens"] == 2 and c["val_unk_bytes_uncounted"] == 6
    assert c["val_bytes"] + 6 == c["val_reference_bytes"]
    s = dataset_stats(tmp_path / "o")
    assert s["val_unk_tokens"] == 2 and s["val_unk_bytes_uncounted"] == 6
    assert s["val_unk_space_bytes_uncounted"] == 2 and s["val_bytes"] == c["val_bytes"]
    assert (tmp_path / "o" / "tokenizer.model").read_bytes() == OFFICIAL_MODEL.read_bytes()
    with pytest.raises(DataError, match="does not match vocab_size=512"):
        build_text([src], tmp_path / "o2", tokenizer=OFFICIAL_MODEL, vocab_size=512)


def test_existing_output_is_refused_then_replaced_atomically(tmp_path, jsonl, monkeypatch):
    out = tmp_path / "ds"
    build_text([jsonl], out, vocab_size=400, val_docs=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match="already exists; pass --force"):
        build_text([jsonl], out, vocab_size=400, val_docs=3)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(text_mod, "write_manifest", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_text([jsonl], out, vocab_size=400, val_docs=4, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old dataset is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing half-written left behind
    monkeypatch.undo()
    m = build_text([jsonl], out, vocab_size=400, val_docs=4, force=True)
    assert m["counts"]["val_docs"] == 4 and read_manifest(out)["counts"]["val_docs"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_cli_text(tmp_path, jsonl, capsys, monkeypatch):
    out = tmp_path / "cli"
    r = run_pgolf(
        "data", "text", "--input", str(jsonl), "--out", str(out), "--vocab-size", "400", "--val-docs", "2", "--json"
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["counts"]["val_docs"] == 2 and m["vocab_size"] == 400
    monkeypatch.setattr(pgolf.cli, "COMMAND_MODULES", ("pgolf.data.commands",))
    assert pgolf.cli.main(["data", "text", "--input", str(jsonl), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pgolf: error: ") and "--force" in err


def test_unigram_baseline(built):
    """unigram_bpb: add-one smoothed train frequencies, scored on every val target, over val bytes."""
    import math
    from collections import Counter

    out, m = built
    train = np.concatenate([read_shard(p) for p in list_shards(out, "train")]).tolist()
    val = np.concatenate([read_shard(p) for p in list_shards(out, "val")]).tolist()
    counts, n, vocab = Counter(train), len(train), m["vocab_size"]
    bits = sum(-math.log2((counts[t] + 1) / (n + vocab)) for t in val[1:])
    expected = bits / m["counts"]["val_bytes"]
    assert m["counts"]["unigram_bpb"] == pytest.approx(expected, abs=1e-6)
    assert dataset_stats(out)["unigram_bpb"] == m["counts"]["unigram_bpb"]
