"""Byte sidecar, the one byte-source loader, and `pgolf data verify` on good and broken datasets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _data_fixtures import run_pgolf

from pgolf.data.bpb import build_byte_tables, load_byte_source, stream_bytes
from pgolf.data.builtin import build_builtin, builtin_documents, split_documents
from pgolf.data.loader import load_val_tokens
from pgolf.data.manifest import read_manifest
from pgolf.data.shards import list_shards, read_shard, write_shard
from pgolf.data.sidecar import SidecarBytes, covered_text, load_sidecar
from pgolf.data.text import build_text
from pgolf.data.tokenizer import find_tokenizer, load_tokenizer
from pgolf.data.verify import source_documents, verify_dataset
from pgolf.errors import ConfigError, DataError


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def caseops_dir(tmp_path_factory):
    """The builtin corpus with --vocab-size 8192 --caseops (built and verified by the builder)."""
    out = tmp_path_factory.mktemp("co") / "b8k"
    build_builtin(out, 8192, caseops=True, log=quiet)
    return out


@pytest.fixture(scope="module")
def sidecar_dirs(builtin_dir, tmp_path_factory):
    """The builtin corpus (vocab 1024, its tokenizer) with a normalized and a raw sidecar."""
    tok = builtin_dir / "tokenizer.model"
    root = tmp_path_factory.mktemp("sc")
    dirs = {}
    for rule in ("normalized", "raw"):
        dirs[rule] = root / rule
        _rebuild_builtin(dirs[rule], tok, rule)
    return dirs


def _rebuild_builtin(out, tok, rule):
    from pgolf.data.builtin import source_description
    from pgolf.data.text import write_document_dataset

    train, val = split_documents(builtin_documents())
    write_document_dataset(
        out, kind="builtin", train_docs=lambda: (d.text for d in train), val_docs=lambda: (d.text for d in val),
        vocab_size=1024, tokenizer=tok, source=source_description(), sidecar=rule, log=quiet,
    )  # fmt: skip


def test_caseops_builtin_8192_passes_verify_and_its_sidecar_counts_original_bytes(caseops_dir):
    m = read_manifest(caseops_dir)
    assert m["vocab_size"] == 8192 and m["caseops"]["operators"] == {"TITLE": 4, "ALLCAPS": 5, "CAPNEXT": 6, "ESC": 7}
    assert m["byte_sidecar"]["rule"] == "raw" and m["counts"]["val_byte_source"] == "sidecar:raw"
    names = sorted(p.name for p in caseops_dir.iterdir())
    assert "fineweb_val_bytes_000000.bin" in names
    assert [p.name for p in list_shards(caseops_dir, "val")] == ["fineweb_val_000000.bin"]  # glob excludes sidecar
    rep = verify_dataset(caseops_dir)
    assert rep["ok"], rep
    assert [v["check"] for v in rep["checks"]] == ["shards", "bytes", "leak"]
    assert rep["checks"][1]["checked_against"] == "source text"
    # The sidecar sums to the original text's bytes, less the edges the normaliser strips.
    sp = load_tokenizer(caseops_dir / "tokenizer.model")
    _, val = split_documents(builtin_documents())
    want = sum(len(covered_text(sp, d.text).encode()) for d in val)
    src = load_byte_source(caseops_dir)
    assert isinstance(src, SidecarBytes) and src.caseops and src.total() == want == m["counts"]["val_bytes"]


def test_verify_catches_a_sidecar_with_one_entry_changed(caseops_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(caseops_dir, bad)
    p = bad / "fineweb_val_bytes_000000.bin"
    counts = np.array(read_shard(p))
    tokens = np.array(read_shard(bad / "fineweb_val_000000.bin"))
    k = int(np.flatnonzero((tokens > 263) & (counts > 0))[5])  # an ordinary piece
    counts[k] += 1
    write_shard(p, counts)
    rep = verify_dataset(bad)
    assert not rep["ok"]
    by = {v["check"]: v for v in rep["checks"]}
    assert not by["shards"]["ok"] and "sha256" in by["shards"]["summary"]
    # Without the manifest's hashes the bytes check still names the document and token.
    (bad / "manifest.json").unlink()
    rep = verify_dataset(bad, val_texts=lambda: (d.text for d in split_documents(builtin_documents())[1]))
    by = {v["check"]: v for v in rep["checks"]}
    assert by["shards"]["ok"] and not by["bytes"]["ok"]
    assert f"token {k:,}" in by["bytes"]["summary"] and "validation document" in by["bytes"]["summary"]
    # A sidecar shifted by one token breaks the exact structure even without any source.
    write_shard(p, np.concatenate([[0], counts[:-1]]).astype(np.uint16))
    rep = verify_dataset(bad, checks=["bytes"])
    assert not rep["ok"] and "BOS" in rep["checks"][0]["summary"] or "operator" in rep["checks"][0]["summary"]


def test_verify_catches_a_byte_table_counting_byte_fallback_as_three(tmp_path):
    from _data_fixtures import random_documents

    src = tmp_path / "docs.jsonl"
    docs = [d for d in random_documents(300, seed=11, max_len=80) if d.strip()]  # emoji, CJK: byte fallback
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    d = tmp_path / "ds"
    build_text([src], d, vocab_size=400, val_docs=40, log=quiet)
    sp = load_tokenizer(d / "tokenizer.model")
    good = build_byte_tables(sp, 400)
    base = good.base_bytes.clone()
    byte_ids = [i for i in range(400) if sp.is_byte(i)]
    base[byte_ids] = 3  # the removed record's bug
    bad = type(good)(base, good.has_leading_space, good.is_boundary, good.unk_ids)
    assert np.isin(load_val_tokens(d), byte_ids).any()
    assert verify_dataset(d, checks=["bytes"], byte_source=good)["ok"]
    rep = verify_dataset(d, checks=["bytes"], byte_source=bad)
    v = rep["checks"][0]
    assert not rep["ok"] and "validation document" in v["summary"] and "<0x" in v["summary"]
    assert "counts 3, the piece has 1" in v["summary"]


def test_verify_catches_a_validation_document_copied_into_train(builtin_dir, tmp_path):
    bad = tmp_path / "leak"
    shutil.copytree(builtin_dir, bad)
    val = load_val_tokens(bad)
    bos = np.flatnonzero(val == 1)
    doc = val[bos[3] : bos[4]]
    train = np.array(read_shard(bad / "fineweb_train_000000.bin"))
    at = int(np.flatnonzero(train == 1)[10])  # between two training documents
    write_shard(bad / "fineweb_train_000000.bin", np.concatenate([train[:at], doc, train[at:]]))
    (bad / "manifest.json").unlink()
    rep = verify_dataset(bad, checks=["shards", "leak"])
    leak = rep["checks"][1]
    assert not rep["ok"] and leak["leaked_val_documents"] == 1 and leak["examples"][0]["val_document"] == 3
    assert "1 of" in leak["summary"] and "fineweb_train_000000.bin" in leak["summary"]
    assert verify_dataset(bad, checks=["leak"], max_leaked=1)["ok"]
    r = run_pgolf("data", "verify", str(bad), "--check", "leak")
    assert r.returncode == 1 and "leak    FAIL" in r.stdout


def test_normalized_sidecar_scores_equal_the_tables(builtin_dir, sidecar_dirs, tiny_run, tmp_path):
    """One model, the same val stream: tables vs a normalized sidecar give the identical bpb for every
    evaluator; a raw sidecar counts the original bytes instead, and only the denominator changes."""
    from pgolf.config import load_config
    from pgolf.eval import evaluate
    from pgolf.quant.artifact import export_run, load_artifact

    art = tmp_path / "m.pgolf"
    export_run(tiny_run, art, quant="rtn", data=builtin_dir)
    model = load_artifact(art, device="cpu")
    cfg = load_config("tiny", ["eval.slot_steps=1", "eval.ttt_epochs=1", "eval.ttt_chunk_tokens=1024"], environ={})
    tables = load_byte_source(builtin_dir)
    norm = load_byte_source(sidecar_dirs["normalized"])
    raw = load_byte_source(sidecar_dirs["raw"])
    tokens = load_val_tokens(builtin_dir)
    assert np.array_equal(tokens, load_val_tokens(sidecar_dirs["raw"]))
    assert isinstance(norm, SidecarBytes) and norm.rule == "normalized" and raw.rule == "raw"
    for method in ("plain", "sliding", "ttt"):
        a, _ = evaluate(model, method, tokens, tables, cfg, "cpu", max_tokens=3000)
        b, _ = evaluate(model, method, tokens, norm, cfg, "cpu", max_tokens=3000)
        c, _ = evaluate(model, method, tokens, raw, cfg, "cpu", max_tokens=3000)
        assert (a.bytes, a.val_bpb, a.val_loss) == (b.bytes, b.val_bpb, b.val_loss), method
        assert c.val_loss == a.val_loss and c.bytes == raw.total(3000) >= a.bytes
        assert c.val_bpb * c.bytes == pytest.approx(a.val_bpb * a.bytes, rel=1e-12)
    # Whole split: the normalized sidecar is the tables; the raw one is the original text's bytes.
    assert norm.total() == stream_bytes(tokens, tables)
    sp = load_tokenizer(builtin_dir / "tokenizer.model")
    _, val = split_documents(builtin_documents())
    assert raw.total() == sum(len(covered_text(sp, d.text).encode()) for d in val)
    # The prefix cut (prepare_stream) keeps the indices aligned: a raw sidecar on the 8192 CaseOps
    # dataset counts the very same bytes for the same documents.
    assert verify_dataset(sidecar_dirs["raw"])["ok"] and verify_dataset(sidecar_dirs["normalized"])["ok"]


def test_raw_sidecars_are_tokenizer_independent(sidecar_dirs, caseops_dir):
    assert load_byte_source(sidecar_dirs["raw"]).total() == load_byte_source(caseops_dir).total()


def test_sidecar_byte_source_indexing():
    counts = np.array([0, 5, 6, 7, 0, 9], dtype=np.int32)
    src = SidecarBytes(counts, vocab_size=10)
    t = torch.tensor([3, 4, 5])
    assert src.count(t, t, torch.tensor([0, 2, 4])).tolist() == [5, 7, 9]  # target i is token i+1
    with pytest.raises(ValueError, match="stream index"):
        src.count(t, t, None)
    with pytest.raises(DataError, match="outside the byte sidecar"):
        src.count(t[:1], t[:1], torch.tensor([5]))
    assert src.total() == 27 and src.total(2) == 11


def test_bad_input_one_line_each(caseops_dir, builtin_dir, tmp_path):
    # A sidecar whose length differs from its shard.
    d = tmp_path / "short"
    shutil.copytree(caseops_dir, d)
    p = d / "fineweb_val_bytes_000000.bin"
    write_shard(p, np.array(read_shard(p))[:-1])
    with pytest.raises(DataError, match=r"fineweb_val_bytes_000000\.bin: .* byte counts for the .* tokens"):
        load_byte_source(d)
    r = run_pgolf("data", "stats", str(d))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "fineweb_val_bytes_000000.bin" in r.stderr
    # A CaseOps dataset without a sidecar.
    p.unlink()
    with pytest.raises(DataError, match="CaseOps dataset .* without a byte sidecar"):
        load_byte_source(d)
    r = run_pgolf("data", "verify", str(d))
    assert r.returncode == 1 and "without a byte sidecar" in r.stdout
    # An operator id outside the vocabulary (the manifest's record of them).
    d2 = tmp_path / "ops"
    shutil.copytree(caseops_dir, d2)
    m = json.loads((d2 / "manifest.json").read_text())
    m["caseops"]["operators"]["ESC"] = 9000
    (d2 / "manifest.json").write_text(json.dumps(m))
    rep = verify_dataset(d2, checks=["shards"])
    assert not rep["ok"] and "outside the vocabulary of 8192" in rep["checks"][0]["summary"]
    # The config's assertions about the data.
    with pytest.raises(ConfigError, match="CASEOPS_ENABLED"):
        load_byte_source(builtin_dir, caseops="1")
    with pytest.raises(ConfigError, match="3 bytes per operator"):
        load_byte_source(caseops_dir, caseops="0")
    with pytest.raises(DataError, match="without a byte sidecar"):
        load_byte_source(caseops_dir, source="tables")


def test_text_builder_drops_train_copies_of_val_documents(tmp_path):
    src = tmp_path / "docs.jsonl"
    docs = [f"Document number {i} says {'hello ' * (i % 7)}World." for i in range(40)]
    docs += [docs[1], docs[2]]  # copies of validation documents
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    m = build_text([src], tmp_path / "out", vocab_size=300, val_docs=4, caseops=True, log=quiet)
    assert m["counts"]["train_docs_dropped_as_val_copies"] == 2 and m["counts"]["train_docs"] == 36
    # the manifest records input names, not machine paths (issue 11): the source is given, as --source does
    rep = verify_dataset(tmp_path / "out", val_texts=source_documents(tmp_path / "out", [src]))
    assert rep["ok"] and rep["checks"][1]["checked_against"] == "source text"


def test_challenge_layout_is_accepted_as_data(builtin_dir, tmp_path):
    """data/datasets/fineweb10B_sp1024 with data/tokenizers/ beside it (the official downloader's layout)."""
    root = tmp_path / "data"
    d = root / "datasets" / "fineweb10B_sp1024"
    d.mkdir(parents=True)
    for f in builtin_dir.glob("fineweb_*.bin"):
        shutil.copyfile(f, d / f.name)
    (root / "tokenizers").mkdir()
    shutil.copyfile(builtin_dir / "tokenizer.model", root / "tokenizers" / "fineweb_1024_bpe.model")
    assert find_tokenizer(d) == root / "tokenizers" / "fineweb_1024_bpe.model"
    assert load_byte_source(d).size == 1024
    # The downloader's cached manifest names the model.
    (root / "tokenizers" / "fineweb_1024_bpe.model").rename(root / "tokenizers" / "other.model")
    with pytest.raises(DataError, match="pass --tokenizer"):
        find_tokenizer(d)
    (root / "manifest.json").write_text(json.dumps({
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "t"}],
        "tokenizers": [{"name": "t", "model_path": "tokenizers/other.model"}],
    }))  # fmt: skip
    assert find_tokenizer(d) == (root / "tokenizers" / "other.model").resolve()
    assert verify_dataset(d)["ok"]
    assert load_sidecar is not None


def test_the_evaluated_stream_is_a_prefix_so_sidecar_indices_line_up(sidecar_dirs):
    from pgolf.eval.common import prepare_stream

    tokens = load_val_tokens(sidecar_dirs["raw"])
    raw = load_byte_source(sidecar_dirs["raw"])
    assert len(raw) == len(tokens)
    for seq, cap in ((256, None), (2048, None), (256, 1000)):
        s = prepare_stream(tokens, seq, cap)
        assert np.array_equal(s, tokens[: len(s)])
        n = len(s) - 1
        idx = torch.arange(n)
        t = torch.from_numpy(s.astype(np.int64))
        assert int(raw.count(t[1:], t[:-1], idx).sum()) == raw.total(n)
