"""`pgolf data verify`: the checks that catch the field's known scoring bugs.

Three verdicts, each pass/fail with what it looked at:

shards  every shard's header, size and ids < vocab; the sidecar aligned 1:1 with the val
        shards; the manifest's file hashes and counts; CaseOps datasets have a sidecar and
        their operator ids agree with the tokenizer.
bytes   the validation split document by document: the bytes the scorer will count against
        the bytes of the text. What "the bytes of the text" are depends on the byte source:

        tables, sidecar:normalized   the normalised text the pieces spell (SentencePiece's
            decode: NFKC, whitespace runs collapsed, document edges stripped), minus the
            characters behind `<unk>` (reported, never counted). Exact per document.
        sidecar:raw (the record's rule, CaseOps)   the original text less the edges the
            normaliser strips (`sidecar.covered_text`). The original is not in the shards
            (normalisation is lossy), so without it only the structure is exact (BOS and
            operators count 0, an escaped operator 3, `normalized` sidecars equal the
            tables token by token) and the difference to the normalised text is reported;
            with the source documents (builders pass them; `--source` for a download)
            every entry is recomputed and compared.

        A byte table that counts a byte-fallback piece as 3 bytes, a sidecar entry off by
        one, or a sidecar shifted by a token fails here, naming the document and token.
leak    no validation document (by a hash of its normalised text: its token ids) appears
        in the training split; reports how many and where.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from pgolf.data.bpb import build_byte_tables, target_bytes
from pgolf.data.manifest import MANIFEST_NAME, read_manifest
from pgolf.data.shards import list_shards, read_header, read_shard
from pgolf.data.tokenizer import BOS_ID, caseops_operator_ids, find_tokenizer, load_tokenizer
from pgolf.errors import DataError

CHECKS = ("shards", "bytes", "leak")
MAX_LISTED = 5


def _verdict(name: str, ok: bool, summary: str, **details) -> dict:
    return {"check": name, "ok": bool(ok), "summary": summary, **details}


def _snippet(text: str, n: int = 48) -> str:
    t = " ".join(text.split())
    return repr(t[:n] + ("…" if len(t) > n else ""))


# --------------------------------------------------------------------------- shards
def check_shards(data_dir: Path, tok_path: Path, sp, byte_source) -> dict:
    vocab = int(sp.vocab_size())
    problems: list[str] = []
    info: dict = {"vocab_size": vocab}
    try:
        train = list_shards(data_dir, "train")
        val = list_shards(data_dir, "val")
    except DataError as e:
        return _verdict("shards", False, str(e))
    sizes = {}
    for f in [*train, *val]:
        try:
            read_shard(f, vocab)
            sizes[f.name] = read_header(f)
        except DataError as e:
            problems.append(str(e))
    info.update(train_shards=len(train), val_shards=len(val))
    info["train_tokens"] = sum(sizes.get(f.name, 0) for f in train)
    info["val_tokens"] = sum(sizes.get(f.name, 0) for f in val)
    manifest = None
    try:
        manifest = read_manifest(data_dir)
    except DataError as e:
        problems.append(str(e))
    if manifest is not None:
        from pgolf.data.tokenizer import file_sha256

        for name, digest in (manifest.get("files") or {}).items():
            p = data_dir / name
            if not p.is_file():
                problems.append(f"{p}: listed in {MANIFEST_NAME} but missing")
            elif file_sha256(p) != digest:
                problems.append(f"{p}: sha256 differs from {MANIFEST_NAME}")
        counts = manifest.get("counts") or {}
        actual = {"train_tokens": info["train_tokens"], "val_tokens": info["val_tokens"]}
        if byte_source is not None:
            actual["val_bytes"] = _total_bytes(data_dir, byte_source)
        for key, v in actual.items():
            if key in counts and counts[key] is not None and int(counts[key]) != v:
                problems.append(f"{data_dir / MANIFEST_NAME}: {key} is {counts[key]} but the shards give {v}")
        claimed = (manifest.get("caseops") or {}).get("operators")
        where = data_dir / MANIFEST_NAME
        if claimed is not None:
            ops = caseops_operator_ids(sp, tok_path, vocab)
            bad = {k: v for k, v in claimed.items() if not isinstance(v, int) or not 0 <= v < vocab}
            if bad:
                problems.append(f"{where}: CaseOps operator ids {bad} outside the vocabulary of {vocab}")
            elif ops != claimed:
                problems.append(f"{where}: CaseOps operators {claimed} but {tok_path.name} has {ops}")
    info["manifest"] = "absent" if manifest is None else "hashes checked"
    if problems:
        return _verdict("shards", False, problems[0], problems=problems[:MAX_LISTED], **info)
    what = f"{len(train)} train + {len(val)} val shards, ids < {vocab}"
    if byte_source is not None and getattr(byte_source, "rule", None):
        what += ", sidecar aligned"
    what += ", manifest hashes and counts match" if manifest is not None else ", no manifest"
    return _verdict("shards", True, what, **info)


def _total_bytes(data_dir: Path, byte_source) -> int:
    if hasattr(byte_source, "total"):
        return byte_source.total()
    from pgolf.data.bpb import stream_bytes
    from pgolf.data.loader import load_val_tokens

    return stream_bytes(load_val_tokens(data_dir), byte_source)


# --------------------------------------------------------------------------- bytes
def _piece_bytes(sp, ids: np.ndarray) -> np.ndarray:
    """Bytes each piece adds to the decoded text, from the pieces themselves (independent of the
    byte tables): used only to point at the first token where a count differs. The decode
    drops the whitespace before the first character of the text and after each `<unk>`."""
    out = np.zeros(len(ids), dtype=np.int64)
    at_start = True
    for k, i in enumerate(ids.tolist()):
        if sp.is_unknown(i):
            at_start = True
        elif sp.is_control(i) or sp.is_unused(i):
            continue
        elif sp.is_byte(i):
            out[k], at_start = 1, False
        else:
            text = sp.id_to_piece(i).replace("\u2581", " ")
            if at_start:
                text = text.lstrip(" ")
                at_start = not text
            out[k] = len(text.encode("utf-8"))
    return out


def _decoded_bytes(sp, ids: np.ndarray, unk: set[int]) -> tuple[int, int]:
    """(UTF-8 bytes of the text the ids spell, <unk> tokens): decoded between <unk>s, whose
    characters are unknown (the tables count them 0, and the space after them is lost too)."""
    if not unk or not np.isin(ids, list(unk)).any():
        return len(sp.decode(ids.tolist()).encode("utf-8")), 0
    total, n_unk, seg = 0, 0, []
    for i in ids.tolist():
        if i in unk:
            total += len(sp.decode(seg).encode("utf-8")) if seg else 0
            n_unk += 1
            seg = []
        else:
            seg.append(i)
    total += len(sp.decode(seg).encode("utf-8")) if seg else 0
    return total, n_unk


def _operator_roles(tokens: np.ndarray, ops: dict[str, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(acting operator mask, escaped literal mask) over a token stream, following ESC."""
    acting = np.zeros(len(tokens), dtype=bool)
    literal = np.zeros(len(tokens), dtype=bool)
    if not ops:
        return acting, literal
    op_ids = np.asarray(sorted(ops.values()))
    esc = ops["ESC"]
    pos = np.flatnonzero(np.isin(tokens, op_ids))
    last_esc = -2
    for p in pos.tolist():
        if p == last_esc + 1:
            literal[p] = True
            last_esc = -2
        else:
            acting[p] = True
            last_esc = p if int(tokens[p]) == esc else -2
    return acting, literal


def check_bytes(
    data_dir: Path,
    sp,
    byte_source,
    tokens: np.ndarray,
    val_texts: Iterable[str] | None,
    caseops_ids: dict[str, int] | None,
) -> dict:
    from pgolf.data.documents import document_spans

    spans = document_spans(tokens)
    if not spans:
        return _verdict("bytes", False, f"{data_dir}: the validation split has no document (no BOS id {BOS_ID})")
    n = len(tokens)
    x = torch.from_numpy(tokens.astype(np.int64))
    is_sidecar = getattr(byte_source, "rule", None) is not None
    rule = getattr(byte_source, "rule", "tables")
    # What the scorer counts for each token as a target (token 0 is never one).
    if is_sidecar:
        counted = byte_source.counts.numpy().astype(np.int64)
    else:
        counted = np.zeros(n, dtype=np.int64)
        counted[1:] = target_bytes(x[1:], x[:-1], byte_source).numpy()
    unk = set(byte_source.unk_ids)
    acting, literal = _operator_roles(tokens, caseops_ids)
    failures: list[str] = []
    details: dict = {"byte_source": "tables" if not is_sidecar else f"sidecar:{rule}", "documents": len(spans)}

    def fail(msg: str) -> None:
        failures.append(msg)

    # Structure, exact for every byte source: BOS counts 0; operators 0, an escaped one 3.
    bos = np.flatnonzero(tokens == BOS_ID)
    bad = bos[counted[bos] != 0]
    bad = bad[bad > 0]
    if bad.size:
        p = int(bad[0])
        fail(f"token {p:,} is a BOS but counts {counted[p]} bytes (a shifted sidecar?); {bad.size} such BOS")
    if caseops_ids:
        for mask, want, what in ((acting, 0, "an operator"), (literal, 3, "an escaped literal operator")):
            wrong = np.flatnonzero(mask & (counted != want))
            if wrong.size:
                p = int(wrong[0])
                fail(f"token {p:,} (id {int(tokens[p])}) is {what} but counts {counted[p]}, not {want}")
    if is_sidecar and rule == "normalized":
        table = build_byte_tables(sp, int(sp.vocab_size()))
        want = np.zeros(n, dtype=np.int64)
        want[1:] = target_bytes(x[1:], x[:-1], table).numpy()
        wrong = np.flatnonzero(want != counted)
        if wrong.size:
            p = int(wrong[0])
            fail(f"token {p:,} (id {int(tokens[p])} {sp.id_to_piece(int(tokens[p]))!r}) counts {counted[p]}, "
                 f"the tables give {want[p]}: {wrong.size} entries differ")  # fmt: skip

    texts = iter(val_texts) if val_texts is not None else None
    totals = {"counted": 0, "text": 0, "unk_tokens": 0}
    differing_docs = 0
    delta_total = 0
    from pgolf.data import caseops as co
    from pgolf.data import sidecar as sc

    transform = co.encode if caseops_ids else (lambda t: t)
    for d, (s, e) in enumerate(spans):
        ids = tokens[s + 1 : e]
        mine = counted[s + 1 : e]
        doc_counted = int(mine.sum())
        totals["counted"] += doc_counted
        text = None
        if texts is not None:
            text = next(texts, None)
            if text is None:
                fail(f"the source has only {d} documents for the {len(spans)} validation documents")
                texts = None
        if text is not None and rule == "raw":
            # Exact: every entry recomputed from the original text with the record's rule.
            [(src_ids, surfaces)] = sc.piece_surfaces(sp, [transform(text)])
            if list(src_ids) != ids.tolist():
                fail(f"validation document {d} (tokens {s:,}-{e:,}): the source text {_snippet(text)} does not "
                     "encode to the shards' tokens (wrong --source?)")  # fmt: skip
                texts = None
                continue
            want = np.asarray(sc.raw_counts(surfaces, bool(caseops_ids)), dtype=np.int64)
            ref = len(sc.covered_text(sp, text).encode("utf-8"))
            totals["text"] += ref
            if not np.array_equal(want, mine):
                k = int(np.flatnonzero(want != mine)[0])
                p = s + 1 + k
                fail(f"validation document {d} {_snippet(text)}: token {p:,} (id {int(tokens[p])} "
                     f"{sp.id_to_piece(int(tokens[p]))!r}) counts {mine[k]} bytes, its text has {want[k]}")  # fmt: skip
            elif doc_counted != ref:
                fail(f"validation document {d} {_snippet(text)}: the sidecar sums to {doc_counted} bytes, "
                     f"the text has {ref}")  # fmt: skip
            continue
        if text is not None and list(sp.encode(transform(text))) != ids.tolist():
            fail(f"validation document {d} (tokens {s:,}-{e:,}): the source text {_snippet(text)} does not "
                 "encode to the shards' tokens (wrong --source?)")  # fmt: skip
            texts = None
        decoded, n_unk = _decoded_bytes(sp, ids, unk)
        totals["unk_tokens"] += n_unk
        ops_here = int(acting[s + 1 : e].sum()) if caseops_ids else 0
        ref = decoded - co.OPERATOR_BYTES * ops_here  # operators are in the decoded text, not in the original
        totals["text"] += ref
        if rule == "raw":
            if doc_counted != ref:
                differing_docs += 1
                delta_total += doc_counted - ref
            continue
        if doc_counted == ref:
            continue
        if len(failures) >= MAX_LISTED:
            failures.append("")  # counted, not listed
            continue
        own = _piece_bytes(sp, ids)
        k_all = np.flatnonzero(own != mine)
        where = ""
        if k_all.size:
            k = int(k_all[0])
            p = s + 1 + k
            where = (f"; first differing token {p:,} (id {int(tokens[p])} {sp.id_to_piece(int(tokens[p]))!r}) "
                     f"counts {mine[k]}, the piece has {own[k]}")  # fmt: skip
        fail(f"validation document {d} (tokens {s:,}-{e:,}) {_snippet(sp.decode(ids.tolist()))}: the scorer counts "
             f"{doc_counted} bytes, the decoded text has {ref}{where}")  # fmt: skip
    if texts is not None and next(texts, None) is not None:
        fail(f"the source has more documents than the {len(spans)} validation documents")
    head = [f for f in failures if f]
    details.update(counted_bytes=totals["counted"], text_bytes=totals["text"], unk_tokens=totals["unk_tokens"])
    if spans[0][0] > 0:
        details["tokens_before_first_bos"] = spans[0][0]
    mode = "source text" if val_texts is not None else "decoded text"
    details["checked_against"] = mode
    if rule == "raw" and val_texts is None:
        details.update(normalised_text_bytes=totals["text"], documents_differing_from_normalised=differing_docs,
                       raw_minus_normalised_bytes=delta_total)  # fmt: skip
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return _verdict("bytes", False, (head[0] if head else "byte counts differ") + more, failures=head, **details)
    if rule == "raw" and val_texts is None:
        summary = (f"{len(spans):,} documents, {totals['counted']:,} bytes counted (raw sidecar: BOS, operators "
                   f"and structure exact; {differing_docs:,} documents differ from their normalised text by "
                   f"{delta_total:+,} bytes in total; pass --source to check every entry)")  # fmt: skip
    else:
        summary = f"{len(spans):,} documents, {totals['counted']:,} bytes counted = bytes of the {mode}"
        if totals["unk_tokens"]:
            summary += f" ({totals['unk_tokens']:,} <unk> tokens: their characters are not counted)"
    return _verdict("bytes", True, summary, **details)


# --------------------------------------------------------------------------- leak
def check_leak(data_dir: Path, max_leaked: int = 0, log: Callable[[str], None] | None = None) -> dict:
    from pgolf.data.leak import find_leaks

    rep = find_leaks(
        list_shards(data_dir, "val"),
        list_shards(data_dir, "train"),
        max_examples=MAX_LISTED,
        progress=(lambda k: log(f"verify: leak: {k:,} train documents scanned")) if log else None,
    )
    n, v = rep["leaked_val_documents"], rep["val_documents"]
    if n > max_leaked:
        ex = rep["examples"][0]
        where = f"e.g. validation document {ex['val_document']} at {ex['train_shard']} offset {ex['offset']:,}"
        summary = f"{n:,} of {v:,} validation documents ({n / max(v, 1):.1%}) appear in the training split ({where})"
        return _verdict("leak", False, summary, **rep)
    summary = f"none of {v:,} validation documents appears among {rep['train_documents']:,} training documents"
    if n:
        summary = f"{n:,} of {v:,} validation documents appear in training (allowed: {max_leaked})"
    return _verdict("leak", True, summary, **rep)


# --------------------------------------------------------------------------- all
def verify_dataset(
    data_dir: str | Path,
    tokenizer: str | Path | None = None,
    *,
    val_texts: Callable[[], Iterable[str]] | None = None,
    byte_source=None,
    max_leaked: int = 0,
    checks: Iterable[str] = CHECKS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the checks on a dataset directory; returns {"data_dir", "ok", "checks": [...]}.

    `val_texts` returns the validation documents' original texts in order (for the exact
    sidecar check); without it the source is looked up (`find_source`). `byte_source`
    replaces the one the scorer would load (API and tests: verify a given byte table).
    """
    from pgolf.data.bpb import load_byte_source
    from pgolf.data.loader import load_val_tokens

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    tok_path = find_tokenizer(data_dir, tokenizer)
    sp = load_tokenizer(tok_path)
    checks = list(checks)
    verdicts = []
    try:
        source = byte_source if byte_source is not None else load_byte_source(data_dir, tok_path)
        load_error = None
    except DataError as e:
        source, load_error = None, str(e)
    if "shards" in checks:
        v = check_shards(data_dir, tok_path, sp, source)
        if load_error:
            v.update(ok=False, summary=load_error)
        verdicts.append(v)
    shards_ok = all(v["ok"] for v in verdicts)
    if "bytes" in checks:
        if source is None or not shards_ok:
            verdicts.append(_verdict("bytes", False, "not checked: the shards check failed"))
        else:
            if val_texts is None:
                val_texts = find_source(data_dir, log=log)
            tokens = np.asarray(load_val_tokens(data_dir, int(sp.vocab_size())))
            ops = caseops_operator_ids(sp, tok_path)
            verdicts.append(check_bytes(data_dir, sp, source, tokens, val_texts() if val_texts else None, ops))
    if "leak" in checks:
        if not shards_ok:
            verdicts.append(_verdict("leak", False, "not checked: the shards check failed"))
        else:
            verdicts.append(check_leak(data_dir, max_leaked, log))
    return {"data_dir": str(data_dir), "ok": all(v["ok"] for v in verdicts), "checks": verdicts}


def find_source(data_dir: Path, log: Callable[[str], None] | None = None) -> Callable[[], Iterable[str]] | None:
    """The validation documents of a pgolf-built dataset, when they can be read again with the
    same fingerprint: the builtin corpus of this Python, or a text dataset's input files."""
    from pgolf.data.manifest import documents_sha256

    try:
        manifest = read_manifest(data_dir)
    except DataError:
        return None
    if not manifest:
        return None
    fp = manifest.get("source_fingerprint") or {}
    want = fp.get("val_sha256")
    if not want:
        return None
    kind = manifest.get("kind")
    docs: list[str] | None = None
    try:
        if kind == "builtin":
            from pgolf.data.builtin import builtin_documents, split_documents

            _, val = split_documents(builtin_documents())
            docs = [d.text for d in val]
        elif kind == "text" and fp.get("inputs"):
            from itertools import islice

            from pgolf.data.text import expand_inputs, iter_documents

            n_val = int((manifest.get("counts") or {}).get("val_docs", 0))
            # Recorded relative to the dataset directory (older manifests: as given).
            given = [Path(data_dir) / x if (Path(data_dir) / x).exists() else Path(x) for x in fp["inputs"]]
            files = expand_inputs(given)
            docs = [t for _, t in islice(iter_documents(files, fp.get("field", "text")), n_val)]
    except (DataError, OSError):
        return None
    if docs is None:
        return None
    docs = [d for d in docs if d and not d.isspace()]
    if documents_sha256(docs) != want:
        if log:
            log(f"verify: {data_dir}: the {kind} source found here differs from the one the dataset was built from")
        return None
    return lambda: iter(docs)


def source_documents(data_dir: str | Path, paths, field: str = "text") -> Callable[[], Iterable[str]]:
    """The first N documents of `paths` (as `pgolf data text` reads them; N = the validation
    split's document count): e.g. the challenge's docs_selected.jsonl for a download."""
    from itertools import islice

    from pgolf.data.loader import load_val_tokens
    from pgolf.data.text import expand_inputs, iter_documents

    files = expand_inputs(paths)
    n_val = int(np.count_nonzero(np.asarray(load_val_tokens(data_dir)) == BOS_ID))
    return lambda: (t for _, t in islice(iter_documents(files, field), n_val))


def format_report(rep: dict) -> str:
    lines = [f"{v['check']:6s}  {'ok  ' if v['ok'] else 'FAIL'}  {v['summary']}" for v in rep["checks"]]
    lines.append(f"{rep['data_dir']}: {'verified' if rep['ok'] else 'FAILED verification'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- cache and callers
def _cache_path(data_dir: Path) -> Path:
    """Where a passing verdict is remembered: outside the dataset, so its files stay as built."""
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgolf" / "verify"
    key = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:32]
    return base / f"{key}.json"


def _fingerprint(data_dir: Path) -> list:
    out = []
    for p in sorted(data_dir.iterdir()):
        if p.is_file():
            st = p.stat()
            out.append([p.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def write_cache(data_dir: Path, rep: dict, files_of: Path | None = None) -> None:
    """Remember a passing verdict for `data_dir` (its files as they are now, or those of
    `files_of`, a staged copy about to be renamed to it); any OSError just skips it."""
    from pgolf import __version__

    path = _cache_path(data_dir)
    body = {"pgolf": __version__, "data_dir": str(Path(data_dir).resolve()), "report": rep}
    try:
        body["files"] = _fingerprint(files_of or data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def cached_report(data_dir: Path) -> dict | None:
    """The remembered passing verdict, if no file of the directory changed since."""
    from pgolf import __version__

    try:
        body = json.loads(_cache_path(data_dir).read_text(encoding="utf-8"))
        files = _fingerprint(data_dir)
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("pgolf") != __version__ or body.get("files") != files:
        return None
    rep = body.get("report")
    return rep if isinstance(rep, dict) and rep.get("ok") is True else None


def require_verified(
    staged: Path,
    out: Path,
    *,
    val_texts: Callable[[], Iterable[str]] | None = None,
    max_leaked: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Verify a freshly built directory before it replaces `out`; refuse it on any failure."""
    rep = verify_dataset(staged, val_texts=val_texts, max_leaked=max_leaked)
    if not rep["ok"]:
        bad = next(v for v in rep["checks"] if not v["ok"])
        msg = bad["summary"].replace(str(staged), str(out))
        raise DataError(f"{out}: the new dataset fails `pgolf data verify` ({bad['check']}: {msg})")
    if log:
        log(f"verify: {out}: " + "; ".join(f"{v['check']} ok" for v in rep["checks"]))
    rep["data_dir"] = str(out)
    write_cache(out, rep, files_of=staged)
    return rep


def verify_for_run(data_dir: str | Path, tokenizer: str | Path | None, mode: str, log: Callable[[str], None]) -> None:
    """`pgolf run`'s check before training: `mode` on (a failure stops), warn, or off."""
    if mode == "off":
        return
    data_dir = Path(data_dir)
    rep = cached_report(data_dir)
    if rep is None:
        log(f"verify: checking {data_dir} (pgolf data verify)")
        rep = verify_dataset(data_dir, tokenizer, log=log)
        if rep["ok"]:
            write_cache(data_dir, rep)
    if rep["ok"]:
        return
    bad = next(v for v in rep["checks"] if not v["ok"])
    msg = f"{data_dir}: fails `pgolf data verify` ({bad['check']}: {bad['summary']})"
    if mode == "warn":
        log(f"warning: {msg}")
        return
    raise DataError(f"{msg}; set data.verify=warn to train anyway")


def check_before_run(data_dir: str | Path, cfg, is_main: bool, log: Callable[[str], None]) -> None:
    """`pgolf run`: rank 0 verifies (data.verify), every rank stops on a failure."""
    from pgolf import dist

    err = None
    if is_main:
        try:
            verify_for_run(data_dir, cfg.data.tokenizer_path or None, cfg.data.verify, log)
        except DataError as e:
            err = str(e)
    err = dist.broadcast_object(err)
    if err:
        raise DataError(err)
