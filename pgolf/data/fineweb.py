"""`pgolf data fineweb`: the challenge's published, already-tokenized FineWeb shards.

The challenge's downloader (`data/cached_challenge_fineweb.py`) reads the Hugging
Face dataset repo `willdepueoai/parameter-golf`, whose export lives under the
folder `datasets/`:

    datasets/manifest.json                                  shard counts per variant
    datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin ...
    datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ...
    datasets/tokenizers/fineweb_1024_bpe.model

Repo, folder and revision are options, since the layout has changed between
versions of that script. Files are fetched with `hf_hub_download` into the
Hugging Face cache (resumable; a file already cached at the same revision is not
fetched again), every shard is validated, and DIR is laid out like every other
pgolf dataset: shards, `tokenizer.model`, `manifest.json` (plus the repo's own
manifest as `source_manifest.json`). Files are hard-linked from the cache when
possible, copied otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pgolf.data.bpb import build_byte_tables
from pgolf.data.manifest import check_target, file_hashes, new_manifest, staged_directory, write_manifest
from pgolf.data.shards import read_header, read_shard, shard_name
from pgolf.data.stats import stream_counts, unigram_bpb, val_target_histogram
from pgolf.data.tokenizer import TOKENIZER_NAME, caseops_operator_ids, check_challenge_ids, file_sha256, load_tokenizer
from pgolf.errors import DataError

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_REVISION = "main"
SOURCE_MANIFEST = "source_manifest.json"
_VARIANT = re.compile(r"sp(\d+)$")

# The published exports (FRONTIER F1; repository ids from the records' READMEs). The official
# repository has sp1024 only; sp4096/sp8192 are kevclark's (records 2026-04-01 and 2026-04-05),
# CaseOps is romeerp's (PR #1729). Paths follow the challenge's downloader; the repository's
# manifest, when present, overrides the tokenizer path.
VARIANTS: dict[str, dict] = {
    "sp1024": {"repo_id": DEFAULT_REPO_ID, "vocab_size": 1024},
    "sp4096": {"repo_id": "kevclark/parameter-golf", "vocab_size": 4096},
    "sp8192": {"repo_id": "kevclark/parameter-golf", "vocab_size": 8192},
    "sp8192-caseops": {
        "repo_id": "romeerp/parameter-golf-caseops-v1",
        "vocab_size": 8192,
        "dataset_dir": "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
        "tokenizer_path": "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
        "caseops": True,
    },
}


def variant_info(variant: str) -> dict:
    """Repository, dataset folder, vocabulary size, tokenizer path and CaseOps flag of a variant:
    one of VARIANTS, or any `sp<N>` of the official repository."""
    known = VARIANTS.get(variant)
    if known is None:
        m = _VARIANT.match(variant)
        if not m:
            raise DataError(
                f"--variant {variant!r}: only SentencePiece variants are published: "
                f"{', '.join(VARIANTS)}, or sp<VOCAB> of the official repository"
            )
        known = {"repo_id": DEFAULT_REPO_ID, "vocab_size": int(m.group(1))}
    vocab = int(known["vocab_size"])
    if not 0 < vocab <= 65536:
        raise DataError(f"--variant {variant!r}: vocabulary size must be in 1..65536")
    return {
        "repo_id": known["repo_id"],
        "dataset_dir": known.get("dataset_dir", f"fineweb10B_{variant}"),
        "vocab_size": vocab,
        "tokenizer_path": known.get("tokenizer_path", f"tokenizers/fineweb_{vocab}_bpe.model"),
        "caseops": bool(known.get("caseops", False)),
    }


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("…" if len(text) > 300 else "")


class _Hub:
    """hf_hub_download with pgolf's error messages; None for a file the repo does not have."""

    def __init__(self, repo_id, remote_root, revision, endpoint, cache_dir, force_download):
        self.repo_id, self.root, self.revision = repo_id, remote_root.strip("/"), revision
        self.endpoint, self.cache_dir, self.force_download = endpoint, cache_dir, force_download
        self.commit: str | None = None

    def remote(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def where(self, rel: str) -> str:
        return f"{self.repo_id}@{self.revision}:{self.remote(rel)}"

    def get(self, rel: str, required: bool = True) -> Path | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            path = hf_hub_download(
                self.repo_id,
                self.remote(rel),
                repo_type="dataset",
                revision=self.revision,
                endpoint=self.endpoint,
                cache_dir=self.cache_dir,
                force_download=self.force_download,
            )
        except LocalEntryNotFoundError:  # offline and not cached (subclass of EntryNotFoundError)
            raise DataError(
                f"{self.where(rel)}: cannot reach the hub for dataset repository {self.repo_id} (offline?) "
                "and the file is not in the Hugging Face cache"
            ) from None
        except RepositoryNotFoundError:
            raise DataError(f"{self.repo_id}: dataset repository not found (or not accessible)") from None
        except RevisionNotFoundError:
            raise DataError(f"{self.repo_id}: revision {self.revision!r} not found") from None
        except EntryNotFoundError:
            if not required:
                return None
            raise DataError(f"{self.where(rel)}: file not found in the repository") from None
        except (HfHubHTTPError, OSError) as e:
            raise DataError(f"{self.where(rel)}: download failed ({_one_line(e)})") from None
        path = Path(path)
        parts = path.parts
        if "snapshots" in parts:  # cache layout .../snapshots/<commit>/<file>: records what was fetched
            commit = parts[parts.index("snapshots") + 1]
            if re.fullmatch(r"[0-9a-f]{40}", commit):
                self.commit = commit
        return path


def _check_shard(hub: _Hub, rel: str, path: Path, vocab: int | None) -> int:
    """Validate a downloaded shard; the error names the remote file and the problem."""
    try:
        read_shard(path, vocab)
        return read_header(path)
    except DataError as e:
        msg = str(e)
        prefix = f"{path}: "
        problem = msg[len(prefix) :] if msg.startswith(prefix) else msg
        raise DataError(f"{hub.where(rel)}: {problem} (corrupt download? re-run with --force-download)") from None


def _place(src: Path, dst: Path) -> None:
    src = src.resolve(strict=True)  # the cache's snapshot entries are symlinks to blobs
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def fetch_fineweb(
    out: str | Path,
    variant: str = "sp1024",
    train_shards: int = 1,
    *,
    repo_id: str | None = None,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    revision: str = DEFAULT_REVISION,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    force_download: bool = False,
    max_leaked: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Download the first `train_shards` train shards, all val shards (and their byte sidecar
    for CaseOps) and the tokenizer into `out`, then verify it (`pgolf data verify`).

    `repo_id` defaults to the variant's repository; `endpoint`/`cache_dir` to
    huggingface_hub's own (HF_ENDPOINT, HF_HOME). Returns the manifest.
    """
    from pgolf.data.sidecar import list_sidecar_shards, load_sidecar, sidecar_name

    say = log or (lambda _msg: None)
    out = check_target(out, force)
    info = variant_info(variant)
    repo_id = repo_id or info["repo_id"]
    if train_shards < 1:
        raise DataError(f"--train-shards={train_shards}: must be >= 1")
    hub = _Hub(repo_id, remote_root, revision, endpoint, cache_dir, force_download)

    say(f"fineweb: reading {hub.where('manifest.json')}")
    remote_manifest_path = hub.get("manifest.json", required=False)
    remote_manifest = None
    n_val: int | None = None
    tokenizer_rel = info["tokenizer_path"]
    if remote_manifest_path is not None:
        try:
            remote_manifest = json.loads(remote_manifest_path.read_text(encoding="utf-8"))
            entry = next(d for d in remote_manifest.get("datasets", []) if d.get("name") == info["dataset_dir"])
        except (ValueError, AttributeError) as e:
            raise DataError(f"{hub.where('manifest.json')}: unreadable manifest ({_one_line(e)})") from None
        except StopIteration:
            raise DataError(f"{hub.where('manifest.json')}: no dataset named {info['dataset_dir']}") from None
        stats = entry.get("stats") or {}
        n_val = int(stats.get("files_val", 1))
        if entry.get("val_bytes_glob"):
            info["sidecar"] = True
        max_train = stats.get("files_train")
        if max_train is not None and train_shards > int(max_train):
            raise DataError(f"--train-shards={train_shards}: {variant} has only {int(max_train)} train shards")
        tokenizers = remote_manifest.get("tokenizers", [])
        tok = next((t for t in tokenizers if t.get("name") == entry.get("tokenizer_name")), None)
        if tok and (tok.get("model_path") or tok.get("path")):
            tokenizer_rel = str(tok.get("model_path") or tok.get("path"))

    prefix = f"datasets/{info['dataset_dir']}"
    files: list[tuple[str, str, Path]] = []  # (split, remote rel path, cached path)
    i = 0
    while n_val is None or i < n_val:  # without a manifest: every val shard until one is missing
        rel = f"{prefix}/{shard_name('val', i)}"
        say(f"fineweb: {hub.where(rel)}")
        p = hub.get(rel, required=n_val is not None or i == 0)
        if p is None:
            break
        _check_shard(hub, rel, p, info["vocab_size"])
        files.append(("val", rel, p))
        i += 1
    if info["caseops"] or info.get("sidecar"):
        for k in range(sum(1 for f in files if f[0] == "val")):
            rel = f"{prefix}/{sidecar_name(k)}"
            say(f"fineweb: {hub.where(rel)}")
            p = hub.get(rel)
            assert p is not None
            _check_shard(hub, rel, p, None)
            files.append(("val_bytes", rel, p))
    for i in range(train_shards):
        rel = f"{prefix}/{shard_name('train', i)}"
        say(f"fineweb: {hub.where(rel)}")
        p = hub.get(rel)
        assert p is not None
        _check_shard(hub, rel, p, info["vocab_size"])
        files.append(("train", rel, p))
    say(f"fineweb: {hub.where(tokenizer_rel)}")
    tok_cached = hub.get(tokenizer_rel)
    assert tok_cached is not None
    sp = load_tokenizer(tok_cached, info["vocab_size"])
    check_challenge_ids(sp, tok_cached)
    operators = caseops_operator_ids(sp, hub.where(tokenizer_rel), info["vocab_size"])
    if info["caseops"] and operators is None:
        raise DataError(f"{hub.where(tokenizer_rel)}: does not reserve the CaseOps operators U+E001-U+E004")

    with staged_directory(out, force) as tmp:
        for _split, rel, p in files:
            _place(p, tmp / Path(rel).name)
        _place(tok_cached, tmp / TOKENIZER_NAME)
        if remote_manifest_path is not None:
            _place(remote_manifest_path, tmp / SOURCE_MANIFEST)
        tables = build_byte_tables(sp, info["vocab_size"])
        val_paths = [tmp / Path(rel).name for s, rel, _ in files if s == "val"]
        train_paths = [tmp / Path(rel).name for s, rel, _ in files if s == "train"]
        say("fineweb: counting tokens and validation bytes")
        val = stream_counts(val_paths, tables, info["vocab_size"])
        train = stream_counts(train_paths, None, info["vocab_size"])
        _check_remote_counts(hub, remote_manifest, info, val, train, train_shards)
        val_bytes, byte_source = val["bytes"], "tables"
        if list_sidecar_shards(tmp):
            val_bytes = int(load_sidecar(tmp, val_paths)[1:].astype("int64").sum())
            byte_source = "sidecar:raw"
        counts = {
            "train_tokens": train["tokens"],
            "val_tokens": val["tokens"],
            "train_docs": train["docs"],
            "val_docs": val["docs"],
            "val_bytes": val_bytes,
            "val_byte_source": byte_source,
            "val_unk_tokens": val["unk_tokens"],
            "val_unk_bytes_uncounted": None,  # the export's text is not downloaded; see docs/data.md
            "train_shards": len(train_paths),
            "val_shards": len(val_paths),
            "unigram_bpb": unigram_bpb(train["histogram"], val_target_histogram(val), val_bytes),
        }
        say("fineweb: hashing files")
        hashes = file_hashes(tmp)
        shard_hashes = [hashes[p.name] for p in val_paths + train_paths]  # the sidecar is hashed in `files`
        fingerprint = {
            "sha256": _sha256_lines(shard_hashes),
            "order": "sha256 of the shard files' sha256 hex digests, one per line, val then train",
            "description": f"challenge FineWeb export {repo_id} {hub.remote(prefix)} ({variant})",
            "repo_id": repo_id,
            "revision": revision,
            "commit": hub.commit,
            "remote_root": remote_root,
            "variant": variant,
            "tokenizer_source": hub.remote(tokenizer_rel),
        }
        manifest = new_manifest("fineweb", info["vocab_size"], counts, file_sha256(tmp / TOKENIZER_NAME), fingerprint)
        if byte_source != "tables":
            manifest["byte_sidecar"] = {
                "rule": "raw",
                "glob": "fineweb_val_bytes_*.bin",
                "files": [Path(rel).name for s, rel, _ in files if s == "val_bytes"],
                "description": "the export's per-token original byte counts (FRONTIER F1.4)",
            }
        if operators is not None:
            manifest["caseops"] = {"transform": "lossless_caps_caseops_v1", "operators": operators}
        manifest["files"] = hashes
        write_manifest(tmp, manifest)
        from pgolf.data.verify import require_verified

        say("fineweb: verifying (pgolf data verify)")
        require_verified(tmp, out, max_leaked=max_leaked, log=say)
    say(f"fineweb: {counts['train_tokens']:,} train tokens, {counts['val_tokens']:,} val tokens in {out}")
    return manifest


def _check_remote_counts(hub: _Hub, manifest: dict | None, info: dict, val: dict, train: dict, n_train: int) -> None:
    """The downloaded shards against the repository manifest's own statistics."""
    if not manifest:
        return
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == info["dataset_dir"]), {})
    stats = entry.get("stats") or {}
    checks = [("tokens_val", val["tokens"]), ("docs_val", val["docs"])]
    if stats.get("files_train") is not None and n_train == int(stats["files_train"]):
        checks += [("tokens_train", train["tokens"]), ("docs_train", train["docs"])]
    for key, actual in checks:
        if stats.get(key) is not None and int(stats[key]) != actual:
            raise DataError(
                f"{hub.where('manifest.json')}: {info['dataset_dir']} {key} is {int(stats[key]):,} "
                f"but the downloaded shards hold {actual:,} (corrupt download? re-run with --force-download)"
            )


def _sha256_lines(lines: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(f"{x}\n" for x in lines).encode()).hexdigest()
