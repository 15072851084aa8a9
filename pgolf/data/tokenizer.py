"""SentencePiece tokenizers: train (challenge settings), load, encode, and audit `<unk>`.

Ids follow the challenge: 0 `<pad>`, 1 `<s>` (BOS, starts every document), 2 `</s>`
(never written), 3 `<unk>`. Our tokenizers use byte fallback, so every character is
representable and the byte tables count every byte; the published
`fineweb_1024_bpe.model` has no byte pieces, so characters outside its vocabulary
become `<unk>` and their bytes are not counted (see docs/data.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf.data.bpb import WORD_MARK, ByteTables, build_byte_tables, target_bytes
from pgolf.errors import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
TOKENIZER_NAME = "tokenizer.model"

# SPEC 2.3. hard_vocab_limit=True: the vocabulary is exactly vocab_size or training
# fails, because the model's embedding size and the shards' id range depend on it.
TRAINER_SETTINGS: dict[str, object] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": PAD_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "unk_id": UNK_ID,
    "hard_vocab_limit": True,
}

# sentencepiece silently skips training sentences longer than this (default 4192
# bytes); documents are cut at whitespace below it instead.
MAX_SENTENCE_BYTES = 1 << 16


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _sentences(texts: Iterable[str], limit: int = MAX_SENTENCE_BYTES) -> Iterator[str]:
    """Documents as training sentences: whole, or cut at whitespace when too long.

    Cutting at whitespace keeps every word intact (BPE pieces never cross a space
    with sentencepiece's default split_by_whitespace), so only very long words lose.
    """
    for text in texts:
        if not text or text.isspace():
            continue
        text = text.replace("\x00", " ")  # as the challenge's exporter trains (DL:235-248)
        data = text.encode("utf-8")
        if len(data) <= limit:
            yield text
            continue
        start = 0
        while start < len(data):
            end = min(start + limit, len(data))
            if end < len(data):
                cut = max(data.rfind(b" ", start, end), data.rfind(b"\n", start, end))
                if cut > start:
                    end = cut
            chunk = data[start:end].decode("utf-8", errors="ignore")
            if chunk.strip():
                yield chunk
            start = end


def train_tokenizer(
    texts: Iterable[str],
    out_path: str | Path,
    vocab_size: int = 1024,
    *,
    num_threads: int = 2,
    caseops: bool = False,
    extra: dict[str, object] | None = None,
) -> Path:
    """Train a BPE SentencePiece model on `texts` (in order) and write it atomically.

    Deterministic: the input order is the iteration order, nothing is sampled
    (input_sentence_size=0) and the result does not depend on `num_threads`
    (tests/test_data_tokenizer.py checks byte-identical models).

    With `caseops`, the model is trained on the CaseOps-transformed texts and the four
    operators are reserved as user-defined symbols, so they get ids 4-7 and are always
    one token each (FRONTIER F1.2).
    """
    out_path = Path(out_path)
    if vocab_size < 264:
        # 4 special ids + 256 byte pieces leave no room for a single learned piece.
        raise DataError(f"vocab_size={vocab_size}: too small for a byte-fallback tokenizer (need >= 264)")
    settings = dict(TRAINER_SETTINGS)
    settings.update(
        vocab_size=vocab_size,
        num_threads=num_threads,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=MAX_SENTENCE_BYTES,
        minloglevel=2,
    )
    if caseops:
        from pgolf.data import caseops as _caseops

        settings["user_defined_symbols"] = list(_caseops.OPERATORS)
        texts = (_caseops.encode(t) for t in texts)
        if vocab_size < 268:
            raise DataError(f"vocab_size={vocab_size}: too small for a CaseOps byte-fallback tokenizer (need >= 268)")
    settings.update(extra or {})
    sentences = _sentences(texts)
    try:
        first = next(sentences)
    except StopIteration:
        raise DataError(f"{out_path}: no training text for the tokenizer") from None

    def chained() -> Iterator[str]:
        yield first
        yield from sentences

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=chained(), model_writer=buf, **settings)
    except (RuntimeError, ValueError) as e:
        raise DataError(f"{out_path}: tokenizer training failed: {_one_line(e)}") from None
    _write_atomic(out_path, buf.getvalue())
    return out_path


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model; refuse a missing file, a non-model, or the wrong vocabulary size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tokenizer not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"{path}: not a SentencePiece model ({_one_line(e)})") from None
    n = int(sp.vocab_size())
    if vocab_size is not None and n != vocab_size:
        raise DataError(f"{path}: tokenizer vocabulary size {n} does not match vocab_size={vocab_size}")
    return sp


def check_challenge_ids(sp: spm.SentencePieceProcessor, path: str | Path) -> None:
    """Documents start with id 1 as BOS (SPEC 2.2), so the tokenizer must agree."""
    if int(sp.bos_id()) != BOS_ID:
        raise DataError(f"{path}: tokenizer's BOS id is {int(sp.bos_id())}; the challenge format needs {BOS_ID}")


def caseops_operator_ids(
    sp: spm.SentencePieceProcessor, path: str | Path, vocab_size: int | None = None
) -> dict[str, int] | None:
    """The ids of the four CaseOps operators when the tokenizer reserves them all, None when it
    reserves none; a tokenizer reserving some, or ids outside `vocab_size`, is refused."""
    from pgolf.data import caseops

    unk = int(sp.unk_id())
    ids: dict[str, int] = {}
    for name, op in zip(caseops.OPERATOR_NAMES, caseops.OPERATORS):
        i = int(sp.piece_to_id(op))
        if i != unk and sp.id_to_piece(i) == op and list(sp.encode(op)) == [i]:
            ids[name] = i
    if not ids:
        return None
    if len(ids) < len(caseops.OPERATORS):
        missing = [n for n in caseops.OPERATOR_NAMES if n not in ids]
        raise DataError(f"{path}: reserves only some CaseOps operators ({', '.join(missing)} missing)")
    limit = int(sp.vocab_size()) if vocab_size is None else vocab_size
    for name, i in ids.items():
        if not 0 <= i < limit:
            raise DataError(f"{path}: CaseOps operator {name} has id {i}, outside the vocabulary of {limit}")
    return ids


def find_tokenizer(data_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """An explicit tokenizer path, else DATA_DIR/tokenizer.model, else the tokenizer of the
    challenge's own layout (`challenge_tokenizer`)."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise DataError(f"{p}: tokenizer not found")
        return p
    p = Path(data_dir) / TOKENIZER_NAME
    if p.is_file():
        return p
    found = challenge_tokenizer(data_dir)
    if found is not None:
        return found
    raise DataError(
        f"{data_dir}: no {TOKENIZER_NAME} in the data directory, and no challenge-layout tokenizer "
        "(../../tokenizers/fineweb_<V>_bpe*.model); pass --tokenizer PATH"
    )


_CHALLENGE_DIR = re.compile(r"fineweb10B_sp(\d+)(_\w+)?$")


def challenge_tokenizer(data_dir: str | Path) -> Path | None:
    """The tokenizer of a download in the challenge's layout, found as its downloader leaves it:

        ROOT/manifest.json                         (the repository's manifest, cached)
        ROOT/datasets/fineweb10B_sp1024/...        (DATA_DIR)
        ROOT/tokenizers/fineweb_1024_bpe.model

    The manifest's entry for DATA_DIR names the model; without a manifest the name follows
    the directory (`fineweb10B_sp<V><suffix>` -> `fineweb_<V>_bpe<suffix>.model`).
    """
    d = Path(data_dir)
    root = d.parent.parent
    manifest = root / "manifest.json"
    if manifest.is_file() and manifest.stat().st_size < (64 << 20):
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
            entry = next(x for x in m.get("datasets", []) if isinstance(x, dict) and x.get("name") == d.name)
            name = entry.get("tokenizer_name")
            tok = next(t for t in m.get("tokenizers", []) if isinstance(t, dict) and t.get("name") == name)
            rel = tok.get("model_path") or tok.get("path")
            if isinstance(rel, str) and rel.endswith(".model"):
                p = (root / rel).resolve()
                if p.is_file() and p.is_relative_to(root.resolve()):
                    return p
        except (ValueError, AttributeError, StopIteration, OSError):
            pass
    m = _CHALLENGE_DIR.match(d.name)
    if m:
        p = root / "tokenizers" / f"fineweb_{m.group(1)}_bpe{m.group(2) or ''}.model"
        if p.is_file():
            return p
    return None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_document(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """SPEC 2.2: BOS then the ids, no EOS."""
    return [BOS_ID, *sp.encode(text)]


def encode_documents(sp: spm.SentencePieceProcessor, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
    """`encode_document` for a batch (sentencepiece encodes the batch on `num_threads`)."""
    if not texts:
        return []
    return [[BOS_ID, *ids] for ids in sp.encode(list(texts), num_threads=num_threads)]


def normalized_text(sp: spm.SentencePieceProcessor, text: str) -> str:
    """The text the pieces spell: the tokenizer's normalisation with the word mark as a space.

    With nmt_nfkc this is NFKC plus whitespace collapsing: runs of spaces, tabs and
    newlines become one space, leading and trailing whitespace is dropped.
    """
    return sp.normalize(text).replace(WORD_MARK, " ")


def reference_bytes(sp: spm.SentencePieceProcessor, text: str) -> int:
    """UTF-8 length of the normalised text: what the byte tables should count for the document."""
    return len(normalized_text(sp, text).encode("utf-8"))


def unk_report(tokens: np.ndarray, tables: ByteTables) -> dict:
    """What a token stream alone says about `<unk>` (targets tokens[1:], each with its predecessor).

    `unk_tokens` counts targets that are an unknown id; their text is lost, so the
    bytes they stood for cannot be recovered from tokens (see `document_unk_report`).
    `uncounted_space_bytes` is the part that can: a word-start piece right after an
    `<unk>` loses its space, because `<unk>` counts as a boundary.
    """
    x = np.asarray(tokens, dtype=np.int64)
    unk = np.zeros(tables.size, dtype=bool)
    unk[list(tables.unk_ids)] = True
    if x.size < 2:
        return {"unk_tokens": 0, "uncounted_space_bytes": 0}
    y, p = x[1:], x[:-1]
    space = tables.has_leading_space.numpy()
    return {
        "unk_tokens": int(unk[y].sum()),
        "uncounted_space_bytes": int((space[y] & unk[p]).sum()),
    }


def document_unk_report(
    sp: spm.SentencePieceProcessor,
    documents: Iterable[str],
    tables: ByteTables | None = None,
    encoded: Iterable[Sequence[int]] | None = None,
) -> dict:
    """Bytes the challenge's tables count for each document versus the bytes it really has.

    Each document is encoded as [BOS] + ids (`encoded` may supply the ids, without
    BOS, to save encoding twice); `counted_bytes` sums the table bytes of every
    target given its predecessor; `reference_bytes` is the UTF-8 length of the
    normalised text (for a byte-fallback tokenizer this equals the length of
    `sp.decode(ids)`). `uncounted_bytes` = reference - counted, attributed to the
    characters that became `<unk>` (`unk_surface_bytes`: sentencepiece reports an
    unknown piece's normalised surface text) and to the space of a word that follows
    an `<unk>` (`uncounted_space_bytes`). All are 0 for byte-fallback tokenizers.
    """
    if tables is None:
        tables = build_byte_tables(sp, int(sp.vocab_size()))
    unk_ids = set(tables.unk_ids)
    unk_arr = np.asarray(sorted(unk_ids), dtype=np.int64)
    space = tables.has_leading_space.numpy()
    out = {
        "documents": 0,
        "tokens": 0,
        "unk_tokens": 0,
        "counted_bytes": 0,
        "reference_bytes": 0,
        "uncounted_bytes": 0,
        "unk_surface_bytes": 0,
        "uncounted_space_bytes": 0,
    }
    id_lists = iter(encoded) if encoded is not None else None
    for text in documents:
        ids = list(next(id_lists)) if id_lists is not None else sp.encode(text)
        stream = np.asarray([BOS_ID, *ids], dtype=np.int64)
        counted = int(target_bytes(*_pairs(stream), tables).sum()) if stream.size > 1 else 0
        ref = reference_bytes(sp, text)
        out["documents"] += 1
        out["tokens"] += int(stream.size)
        out["counted_bytes"] += counted
        out["reference_bytes"] += ref
        out["uncounted_bytes"] += ref - counted
        if unk_arr.size and np.isin(stream, unk_arr).any():
            # Rare (never with byte fallback): only then pay for the per-piece surfaces.
            enc = sp.encode_as_offset_mapping(text)
            pieces, eids = enc["pieces"], enc["ids"]
            for i, (tid, piece) in enumerate(zip(eids, pieces)):
                if tid in unk_ids:
                    out["unk_tokens"] += 1
                    out["unk_surface_bytes"] += len(piece.replace(WORD_MARK, " ").encode("utf-8"))
                    if i + 1 < len(eids) and space[eids[i + 1]] and eids[i + 1] not in unk_ids:
                        out["uncounted_space_bytes"] += 1
    return out


def _pairs(stream: np.ndarray):
    import torch

    t = torch.from_numpy(stream)
    return t[1:], t[:-1]
