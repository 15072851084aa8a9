"""Tokenizers: deterministic training, loading errors, document encoding, exact byte counts, <unk>."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _data_fixtures import OFFICIAL_MODEL, random_documents, topics_texts

from pgolf.data.bpb import build_byte_tables, stream_bytes, target_bytes
from pgolf.data.tokenizer import (
    BOS_ID,
    document_unk_report,
    encode_document,
    encode_documents,
    file_sha256,
    find_tokenizer,
    load_tokenizer,
    normalized_text,
    train_tokenizer,
    unk_report,
)
from pgolf.errors import DataError


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return topics_texts(40)


@pytest.fixture(scope="module")
def ours(tmp_path_factory, corpus):
    """A byte-fallback tokenizer of the full 1024 ids, trained on real English."""
    path = train_tokenizer(corpus, tmp_path_factory.mktemp("tok") / "t.model", 1024)
    sp = load_tokenizer(path, 1024)
    return path, sp, build_byte_tables(sp, 1024)


@pytest.fixture(scope="module")
def official():
    if not OFFICIAL_MODEL.is_file():
        pytest.skip("the challenge's fineweb_1024_bpe.model is not available")
    sp = load_tokenizer(OFFICIAL_MODEL, 1024)
    return sp, build_byte_tables(sp, 1024)


def counted_bytes(sp, tables, docs: list[str]) -> int:
    """The challenge's count over the concatenated stream of [BOS]+ids documents."""
    stream = np.concatenate([np.asarray(encode_document(sp, d), dtype=np.int64) for d in docs])
    return stream_bytes(stream, tables)


# --- training -----------------------------------------------------------------------------------


def test_training_is_deterministic_and_settings_match_the_challenge(tmp_path, corpus, ours):
    path, sp, _ = ours
    again = train_tokenizer(corpus, tmp_path / "again.model", 1024, num_threads=2)
    assert file_sha256(again) == file_sha256(path), "two runs on 2 threads must give byte-identical models"
    # One thread learns the same pieces; only the stored num_threads setting differs.
    one = load_tokenizer(train_tokenizer(corpus, tmp_path / "one.model", 1024, num_threads=1))
    assert [one.id_to_piece(i) for i in range(1024)] == [sp.id_to_piece(i) for i in range(1024)]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(1024)) == 256  # byte fallback uses 256 ids, 1024 still works
    assert sp.encode("12345") == [sp.piece_to_id(c) for c in "12345"]  # split_digits
    # no dummy prefix: the first word of a document carries no word mark
    assert not sp.id_to_piece(sp.encode("Hello world")[0]).startswith("\u2581")
    assert not list(tmp_path.glob(".*"))  # atomic write leaves no temp files


def test_training_refuses_tiny_corpus_and_tiny_vocab(tmp_path):
    with pytest.raises(DataError) as e:
        train_tokenizer(["just a few words"], tmp_path / "t.model", 1024)
    msg = str(e.value)
    assert "t.model" in msg and "tokenizer training failed" in msg and "\n" not in msg
    assert not (tmp_path / "t.model").exists()
    with pytest.raises(DataError, match="too small"):
        train_tokenizer(["text"], tmp_path / "t.model", 100)
    with pytest.raises(DataError, match="no training text"):
        train_tokenizer(["", "  \n"], tmp_path / "t.model", 512)


def test_long_documents_are_cut_at_whitespace_not_dropped(tmp_path, corpus):
    # One document far beyond sentencepiece's per-sentence limit: training still sees all of it
    # (were it skipped, there would be nothing to learn 1024 ids from).
    doc = "\n\n".join(corpus)
    assert len(doc.encode()) > 3 * (1 << 16)
    path = train_tokenizer([doc], tmp_path / "long.model", 1024)
    sp = load_tokenizer(path, 1024)
    assert len(sp.encode(doc)) < len(doc) / 2.5  # it learned from the text


# --- loading and locating -----------------------------------------------------------------------


def test_load_tokenizer_errors_name_the_file(tmp_path, ours):
    path, _, _ = ours
    missing = tmp_path / "missing.model"
    with pytest.raises(DataError, match="tokenizer not found") as e:
        load_tokenizer(missing)
    assert str(missing) in str(e.value)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(DataError, match="not a SentencePiece model") as e:
        load_tokenizer(junk)
    assert str(junk) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="vocabulary size 1024 does not match vocab_size=2048") as e:
        load_tokenizer(path, 2048)
    assert str(path) in str(e.value)


def test_find_tokenizer(tmp_path, ours):
    path, _, _ = ours
    assert find_tokenizer(tmp_path, str(path)) == path
    with pytest.raises(DataError, match="--tokenizer"):
        find_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(path.read_bytes())
    assert find_tokenizer(tmp_path) == tmp_path / "tokenizer.model"
    with pytest.raises(DataError, match="tokenizer not found"):
        find_tokenizer(tmp_path, str(tmp_path / "nope.model"))


def test_encode_document_is_bos_then_ids_without_eos(ours):
    _, sp, _ = ours
    ids = encode_document(sp, "The quick brown fox.")
    assert ids[0] == BOS_ID and ids[1:] == sp.encode("The quick brown fox.") and 2 not in ids
    assert encode_documents(sp, ["a b", "c"]) == [encode_document(sp, "a b"), encode_document(sp, "c")]
    assert encode_document(sp, "") == [BOS_ID]


# --- exact bytes with our (byte-fallback) tokenizers --------------------------------------------

CASES = [
    "Digits 0123456789 and 3.14159, 1e-10.",
    "café, naïve, über, Straße",
    "中文字符 and 日本語",
    "emoji 😀🎉 here",
    " starts with a space",
    "   several leading spaces and trailing   ",
    "multiple   spaces\n\nand\nnew lines\r\n\ttabs",
    "ﬁ ligature, x² superscript, ＡＢＣ fullwidth, e\u0301 decomposed",
    "the word mark \u2581 itself",
    "",
]


@pytest.mark.parametrize("text", CASES)
def test_counted_bytes_equal_decoded_text(ours, text):
    _, sp, tables = ours
    ids = sp.encode(text)
    decoded = sp.decode(ids)
    assert counted_bytes(sp, tables, [text]) == len(decoded.encode("utf-8"))
    assert decoded == normalized_text(sp, text)  # what is preserved: the normalised text


def test_whitespace_and_nfkc_are_what_decoding_gives_back(ours):
    _, sp, _ = ours
    assert sp.decode(sp.encode("  a  b\n\nc\t")) == "a b c"  # collapsed, trimmed
    assert sp.decode(sp.encode("ﬁ²")) == "fi2"  # NFKC compatibility forms
    assert sp.decode(sp.encode("e\u0301")) == "é"  # composed


def test_counted_bytes_equal_decoded_text_on_random_documents(ours):
    _, sp, tables = ours
    docs = random_documents(400, seed=1)
    for d in docs:
        assert counted_bytes(sp, tables, [d]) == len(sp.decode(sp.encode(d)).encode("utf-8")), repr(d)
    # Over the concatenated stream too (each document's first target follows BOS).
    total = sum(len(sp.decode(sp.encode(d)).encode("utf-8")) for d in docs)
    assert counted_bytes(sp, tables, docs) == total
    report = document_unk_report(sp, docs, tables)
    assert report["unk_tokens"] == 0 and report["uncounted_bytes"] == 0
    assert report["counted_bytes"] == report["reference_bytes"] == total


def test_byte_fallback_pieces_count_one_byte_each(ours):
    _, sp, tables = ours
    ids = sp.encode("😀")
    assert all(sp.is_byte(i) for i in ids) and len(ids) == 4
    assert counted_bytes(sp, tables, ["😀"]) == 4


# --- the challenge's published tokenizer (no byte pieces) ---------------------------------------


def test_official_tables_match_spec_3_1(official):
    sp, t = official
    assert int(sp.vocab_size()) == 1024 and not any(sp.is_byte(i) for i in range(1024))
    assert int(t.base_bytes.sum()) == 3058
    assert int(t.has_leading_space.sum()) == 476
    assert torch.nonzero(t.is_boundary).flatten().tolist() == [0, 1, 2, 3]
    assert sp.id_to_piece(650) == "\u2581information" and int(t.base_bytes[650]) == 11
    assert sp.id_to_piece(940) == "\u2581" and int(t.base_bytes[940]) == 0 and bool(t.has_leading_space[940])
    assert int(t.base_bytes.max()) == 11
    assert t.unk_ids == (3,)


def test_official_model_counts_unk_as_zero_bytes(official):
    sp, t = official
    ids = encode_document(sp, "café")
    assert ids == [1, sp.piece_to_id("c"), sp.piece_to_id("a"), sp.piece_to_id("f"), 3]
    x = torch.tensor(ids)
    per_target = target_bytes(x[1:], x[:-1], t).tolist()
    assert per_target == [1, 1, 1, 0]  # "é" became <unk>: 2 real bytes, 0 counted
    r = document_unk_report(sp, ["café"], t)
    assert r["unk_tokens"] == 1 and r["counted_bytes"] == 3 and r["reference_bytes"] == 5
    assert r["uncounted_bytes"] == 2 == r["unk_surface_bytes"]
    assert unk_report(np.array(ids), t) == {"unk_tokens": 1, "uncounted_space_bytes": 0}


def test_official_model_loses_the_space_after_unk(official):
    sp, t = official
    # "é word": <unk> then "▁wor": the space is not counted because <unk> is a boundary id.
    r = document_unk_report(sp, ["é word"], t)
    assert r["unk_tokens"] == 1 and r["uncounted_bytes"] == 3
    assert r["unk_surface_bytes"] == 2 and r["uncounted_space_bytes"] == 1
    stream = np.array(encode_document(sp, "é word"))
    assert unk_report(stream, t)["uncounted_space_bytes"] == 1


def test_official_unk_report_accounts_for_every_missing_byte(official):
    sp, t = official
    docs = random_documents(400, seed=2)
    r = document_unk_report(sp, docs, t)
    assert r["unk_tokens"] > 0
    assert r["counted_bytes"] == counted_bytes(sp, t, docs)
    assert r["counted_bytes"] + r["uncounted_bytes"] == r["reference_bytes"]
    assert r["uncounted_bytes"] == r["unk_surface_bytes"] + r["uncounted_space_bytes"]
    # Text inside the vocabulary is counted exactly, as with our tokenizers.
    plain = ["The information is here.", "Numbers 2024 and words"]
    assert document_unk_report(sp, plain, t)["uncounted_bytes"] == 0
