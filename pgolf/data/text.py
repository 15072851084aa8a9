"""Datasets from documents: local text files (`pgolf data text`) and the shared writer.

Inputs, in the order given: a `.jsonl` file is one document per line (a JSON
object with a string `text` field; blank lines are skipped), any other file is
one document, and a directory contributes its `.txt` and `.jsonl` files,
recursively, in sorted path order. Empty documents are skipped. As in the
challenge's export, the first N documents are the validation split and the rest
the training split; the tokenizer (unless given) is trained on the training
documents only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from pgolf.cliutil import progress
from pgolf.data.bpb import build_byte_tables
from pgolf.data.manifest import (
    DocumentHasher,
    check_target,
    file_hashes,
    new_manifest,
    staged_directory,
    write_manifest,
)
from pgolf.data.shards import MAX_SHARD_TOKENS, shard_name, write_shard
from pgolf.data.stats import stream_counts, unigram_bpb, val_target_histogram
from pgolf.data.tokenizer import (
    BOS_ID,
    TOKENIZER_NAME,
    caseops_operator_ids,
    check_challenge_ids,
    document_unk_report,
    file_sha256,
    load_tokenizer,
    train_tokenizer,
)
from pgolf.errors import DataError

DIR_SUFFIXES = (".txt", ".jsonl")
ENCODE_BATCH_BYTES = 1 << 22  # documents are encoded in batches of about this much text
DEFAULT_VAL_FRACTION = 0.05
MAX_DEFAULT_VAL_DOCS = 50_000  # the challenge's validation split size


class ShardWriter:
    """Append documents' tokens to one split; shards are cut purely by size (SPEC 2.2)."""

    def __init__(self, out_dir: str | Path, split: str, shard_tokens: int = MAX_SHARD_TOKENS) -> None:
        if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
            raise DataError(f"shard_tokens={shard_tokens}: must be in 1..{MAX_SHARD_TOKENS}")
        self.out_dir, self.split, self.shard_tokens = Path(out_dir), split, shard_tokens
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        self.paths: list[Path] = []
        self.tokens = 0
        self.docs = 0

    def add(self, tokens: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
            raise DataError(f"{self.out_dir}: token ids must fit in uint16")
        self._buf.append(arr.astype(np.uint16))
        self._buffered += arr.size
        self.tokens += arr.size
        self.docs += 1
        while self._buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        data = np.concatenate(self._buf) if self._buf else np.zeros(0, np.uint16)
        path = self.out_dir / shard_name(self.split, len(self.paths))
        write_shard(path, data[:n])
        self.paths.append(path)
        rest = data[n:]
        self._buf = [rest] if rest.size else []
        self._buffered = int(rest.size)

    def close(self) -> list[Path]:
        if self._buffered:
            self._flush(self._buffered)
        return self.paths


def _batches(docs: Iterable[str], max_bytes: int = ENCODE_BATCH_BYTES) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _non_empty(docs: Iterable[str]) -> Iterator[str]:
    return (d for d in docs if d and not d.isspace())


def write_document_dataset(
    out: str | Path,
    *,
    kind: str,
    train_docs: Callable[[], Iterable[str]],
    val_docs: Callable[[], Iterable[str]],
    vocab_size: int | None = 1024,
    tokenizer: str | Path | None = None,
    source: dict | None = None,
    force: bool = False,
    shard_tokens: int = MAX_SHARD_TOKENS,
    num_threads: int = 2,
    caseops: bool = False,
    sidecar: str | None = None,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Tokenize documents into a dataset directory (shards, tokenizer.model, manifest.json).

    `train_docs`/`val_docs` are called each time the documents are needed (once
    to train the tokenizer, once to encode), so they can stream from disk.
    `caseops` applies the CaseOps transform before tokenizing (and trains the tokenizer
    with the operators reserved); `sidecar` ("raw" or "normalized", see pgolf.data.sidecar)
    writes the per-token byte sidecar, always "raw" for CaseOps. Training documents whose
    tokens equal a validation document's are dropped (counted in the manifest). With
    `verify`, `pgolf data verify`'s checks run on the new directory before it replaces
    anything. Returns the manifest.
    """
    from pgolf.data import caseops as co
    from pgolf.data import sidecar as sc
    from pgolf.data.leak import document_key

    say = log or (lambda _msg: None)
    out = check_target(out, force)
    if caseops:
        sidecar = sidecar or "raw"
        if sidecar != "raw":
            raise DataError(f"--sidecar {sidecar}: a CaseOps dataset counts original bytes (raw) only")
    if sidecar is not None and sidecar not in sc.RULES:
        raise DataError(f"--sidecar {sidecar!r}: choose one of {', '.join(sc.RULES)}")
    transform = co.encode if caseops else (lambda t: t)
    with staged_directory(out, force) as tmp:
        tok_path = tmp / TOKENIZER_NAME
        if tokenizer is not None:
            sp = load_tokenizer(tokenizer, vocab_size)
            check_challenge_ids(sp, tokenizer)
            shutil.copyfile(tokenizer, tok_path)
        else:
            what = "CaseOps " if caseops else ""
            say(f"training a {vocab_size or 1024}-token {what}BPE tokenizer on the train documents")
            train_tokenizer(
                _non_empty(train_docs()), tok_path, vocab_size or 1024, num_threads=num_threads, caseops=caseops
            )
            sp = load_tokenizer(tok_path, vocab_size or 1024)
        vocab = int(sp.vocab_size())
        if vocab > 65536:
            raise DataError(f"{tokenizer}: vocabulary of {vocab} ids does not fit the uint16 shard format")
        operators = caseops_operator_ids(sp, tokenizer or tok_path, vocab)
        if caseops and operators is None:
            raise DataError(f"{tokenizer}: does not reserve the CaseOps operators U+E001-U+E004; cannot encode CaseOps")
        if not caseops and operators is not None:
            raise DataError(f"{tokenizer}: reserves the CaseOps operators; pass --caseops (or use another tokenizer)")
        tables = build_byte_tables(sp, vocab)

        hashers = {"val": DocumentHasher(), "train": DocumentHasher()}
        combined = DocumentHasher()
        report: dict[str, int] = {}
        writers = {}
        side = ShardWriter(tmp, "val_bytes", shard_tokens) if sidecar else None
        val_keys: set[bytes] = set()
        dropped = 0
        text_bytes = covered_bytes = 0
        for split, docs_fn in (("val", val_docs), ("train", train_docs)):
            say(f"encoding {split} documents")
            w = ShardWriter(tmp, split, shard_tokens)
            bar = progress(None, f"encode {split}", unit="doc")
            for batch in _batches(_non_empty(docs_fn())):
                bar.update(len(batch))
                inputs = [transform(t) for t in batch]
                if split == "val" and side is not None:
                    pieces = sc.piece_surfaces(sp, inputs, num_threads)
                    encoded = [ids for ids, _ in pieces]
                else:
                    encoded = sp.encode(inputs, num_threads=num_threads)
                for k, (text, ids) in enumerate(zip(batch, encoded)):
                    if split == "val":
                        val_keys.add(document_key(ids))
                    elif ids and document_key(ids) in val_keys:
                        dropped += 1  # a copy of a validation document (same normalised text)
                        continue
                    hashers[split].update(text)
                    combined.update(text)
                    w.add([BOS_ID, *ids])
                    if split == "val":
                        text_bytes += len(text.encode("utf-8"))
                    if split == "val" and side is not None:
                        where = f"{out}: validation document {w.docs - 1}"
                        if sidecar == "raw":
                            counts = sc.raw_counts(pieces[k][1], caseops)
                            covered = len(sc.covered_text(sp, text).encode("utf-8"))
                            if sum(counts) != covered:  # two independent computations must agree
                                raise DataError(f"{where}: sidecar sums to {sum(counts)} bytes, text has {covered}")
                            covered_bytes += covered
                        else:
                            counts = sc.normalized_counts(ids, tables)
                        sc.check_counts(counts, where)
                        side.add([0, *counts])
                if split == "val" and not caseops:
                    for key, v in document_unk_report(sp, batch, tables, encoded).items():
                        report[key] = report.get(key, 0) + v
            w.close()
            bar.close()
            if w.docs == 0:
                raise DataError(f"{out}: empty {split} split (no non-empty {split} documents)")
            writers[split] = w
        if side is not None:
            side.close()

        val = stream_counts(writers["val"].paths, None if caseops else tables, vocab)
        train = stream_counts(writers["train"].paths, None, vocab)
        if not caseops and val["bytes"] != report["counted_bytes"]:  # stream and per-document counts agree
            raise AssertionError(f"val bytes {val['bytes']} != per-document {report['counted_bytes']}")
        side_total = None
        if side is not None:
            side_total = sc.load_sidecar(tmp, writers["val"].paths)[1:].astype(np.int64).sum().item()
        val_bytes = side_total if side_total is not None else val["bytes"]
        counts = {
            "train_tokens": writers["train"].tokens,
            "val_tokens": writers["val"].tokens,
            "train_docs": writers["train"].docs,
            "val_docs": writers["val"].docs,
            "val_bytes": val_bytes,
            "val_byte_source": f"sidecar:{sidecar}" if sidecar else "tables",
            "val_text_bytes": text_bytes,
        }
        if not caseops:
            counts.update(
                val_table_bytes=val["bytes"],
                val_reference_bytes=report["reference_bytes"],
                val_unk_tokens=report["unk_tokens"],
                val_unk_bytes_uncounted=report["uncounted_bytes"],
            )
        else:
            counts.update(val_unk_tokens=0, val_unk_bytes_uncounted=0)  # byte fallback: no <unk>
        if sidecar == "raw":
            counts["val_covered_bytes"] = covered_bytes
        counts.update(
            train_docs_dropped_as_val_copies=dropped,
            train_shards=len(writers["train"].paths),
            val_shards=len(writers["val"].paths),
            unigram_bpb=unigram_bpb(train["histogram"], val_target_histogram(val), val_bytes),
        )
        fingerprint = {
            "sha256": combined.hexdigest(),
            "order": "validation documents, then training documents; each UTF-8, length-prefixed",
            "val_sha256": hashers["val"].hexdigest(),
            "train_sha256": hashers["train"].hexdigest(),
            "documents": combined.count,
            **(source or {}),
        }
        manifest = new_manifest(kind, vocab, counts, file_sha256(tok_path), fingerprint)
        if sidecar:
            manifest["byte_sidecar"] = {
                "rule": sidecar,
                "glob": sc.SIDECAR_GLOB,
                "files": [p.name for p in side.paths],
                "description": "one uint16 byte count per val token, aligned 1:1 with the val shards",
            }
        if caseops:
            manifest["caseops"] = {"transform": co.TRANSFORM_NAME, "operators": operators}
        manifest["files"] = file_hashes(tmp)
        write_manifest(tmp, manifest)
        if dropped:
            say(f"{kind}: dropped {dropped} train documents identical to a validation document")
        say(
            f"{kind}: {counts['train_tokens']:,} train tokens ({counts['train_docs']:,} docs), "
            f"{counts['val_tokens']:,} val tokens ({counts['val_docs']:,} docs, {counts['val_bytes']:,} bytes)"
        )
        if verify:
            from pgolf.data.verify import require_verified

            require_verified(tmp, out, val_texts=lambda: _non_empty(val_docs()), log=say)
    return manifest


# --- local text inputs ------------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Input files in order: given files as is, directories' .txt/.jsonl files sorted."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                (
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix in DIR_SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                ),
                key=lambda f: f.relative_to(p).as_posix(),
            )
            if not found:
                raise DataError(f"{p}: directory has no .txt or .jsonl files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: input not found")
    return files


def _decode(path: Path, data: bytes, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}{where}: not UTF-8 text (invalid byte at offset {e.start})") from None


def iter_documents(files: Sequence[Path], field: str = "text") -> Iterator[tuple[str, str]]:
    """(name, text) for every non-empty document of the input files, in order."""
    for path in files:
        if path.suffix == ".jsonl":
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    line = _decode(path, raw, f":{lineno}").strip()
                    if not line:
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                        raise DataError(f"{path}:{lineno}: expected a JSON object with a string {field!r} field")
                    text = obj[field]
                    if text.strip():
                        yield f"{path}:{lineno}", text
        else:
            text = _decode(path, path.read_bytes())
            if text.strip():
                yield str(path), text


def build_text(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    vocab_size: int | None = None,
    val_docs: int | None = None,
    field: str = "text",
    force: bool = False,
    shard_tokens: int = MAX_SHARD_TOKENS,
    num_threads: int = 2,
    caseops: bool = False,
    sidecar: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write a dataset from local text; returns its manifest.

    `val_docs` defaults to 5% of the documents (at least 1, at most 50,000).
    Without `tokenizer`, one of `vocab_size` (default 1024) ids is trained.
    """
    check_target(out, force)
    files = expand_inputs(inputs)
    from pgolf.safeio import inside

    for item in [*inputs, *([tokenizer] if tokenizer else [])]:
        if Path(out).exists() and inside(item, out):
            raise DataError(f"--out {out} contains the input {item}: a dataset never replaces its own input")
        if Path(item).is_dir() and inside(out, item):
            raise DataError(f"--out {out} lies inside the input directory {item}")
    n = sum(1 for _ in iter_documents(files, field))
    if n < 2:
        where = ", ".join(map(str, inputs))
        raise DataError(f"{where}: need at least 2 non-empty documents (1 val + 1 train), found {n}")
    if val_docs is None:
        val_docs = min(MAX_DEFAULT_VAL_DOCS, max(1, round(n * DEFAULT_VAL_FRACTION)))
    if not 0 < val_docs < n:
        raise DataError(f"--val-docs={val_docs}: must be between 1 and {n - 1} for {n} documents")
    if tokenizer is None and vocab_size is None:
        vocab_size = 1024
    if log:
        log(f"text: {n} documents from {len(files)} file(s); first {val_docs} are validation")

    def texts() -> Iterator[str]:
        return (t for _, t in iter_documents(files, field))

    return write_document_dataset(
        out,
        kind="text",
        train_docs=lambda: islice(texts(), val_docs, None),
        val_docs=lambda: islice(texts(), val_docs),
        vocab_size=vocab_size,
        tokenizer=tokenizer,
        # Relative to the dataset: a manifest names no path of the machine (same layout elsewhere: same bytes).
        source={
            "description": "local text",
            "inputs": [os.path.relpath(Path(p).resolve(), Path(out).resolve()) for p in inputs],
            "files": len(files),
            "field": field,
        },
        force=force,
        shard_tokens=shard_tokens,
        num_threads=num_threads,
        caseops=caseops,
        sidecar=sidecar,
        log=log,
    )
