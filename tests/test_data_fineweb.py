"""`pgolf data fineweb` against a local stand-in of the Hugging Face hub (real huggingface_hub code path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_fixtures import OFFICIAL_MODEL, FakeHub, run_pgolf, shard_bytes

from pgolf.data.fineweb import fetch_fineweb, variant_info
from pgolf.data.manifest import read_manifest, verify_files
from pgolf.data.shards import read_shard
from pgolf.data.stats import dataset_stats
from pgolf.errors import DataError

pytestmark = pytest.mark.skipif(not OFFICIAL_MODEL.is_file(), reason="needs the challenge's tokenizer model")

REPO = "willdepueoai/parameter-golf"
PREFIX = "datasets/datasets/fineweb10B_sp1024"


def tokens(seed: int, n: int) -> np.ndarray:
    t = np.random.default_rng(seed).integers(4, 1024, size=n).astype(np.uint16)
    t[::37] = 1  # documents start with BOS
    return t


def hub_files(n_train: int = 3, with_manifest: bool = True) -> dict[str, bytes]:
    files = {
        f"{PREFIX}/fineweb_val_000000.bin": shard_bytes(tokens(0, 700)),
        f"{PREFIX}/fineweb_val_000001.bin": shard_bytes(tokens(1, 300)),
        "datasets/tokenizers/fineweb_1024_bpe.model": OFFICIAL_MODEL.read_bytes(),
    }
    for i in range(n_train):
        files[f"{PREFIX}/fineweb_train_{i:06d}.bin"] = shard_bytes(tokens(10 + i, 1000))
    if with_manifest:  # the shape of the challenge's manifest.json (only the fields the downloader reads)
        files["datasets/manifest.json"] = json.dumps(
            {
                "datasets": [
                    {
                        "name": "fineweb10B_sp1024",
                        "tokenizer_name": "sp_bpe_1024",
                        "stats": {"files_train": n_train, "files_val": 2},
                    }
                ],
                "tokenizers": [
                    {
                        "name": "sp_bpe_1024",
                        "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
                    }
                ],
            }
        ).encode()
    return files


def test_download_layout_counts_and_idempotence(tmp_path):
    cache = tmp_path / "cache"
    with FakeHub(REPO, hub_files()) as hub:
        m = fetch_fineweb(tmp_path / "fw", "sp1024", 2, endpoint=hub.url, cache_dir=cache)
        out = tmp_path / "fw"
        names = sorted(p.name for p in out.iterdir())
        assert names == [
            "fineweb_train_000000.bin",
            "fineweb_train_000001.bin",
            "fineweb_val_000000.bin",
            "fineweb_val_000001.bin",
            "manifest.json",
            "source_manifest.json",
            "tokenizer.model",
        ]
        assert (out / "tokenizer.model").read_bytes() == OFFICIAL_MODEL.read_bytes()
        assert m["kind"] == "fineweb" and m["vocab_size"] == 1024
        c = m["counts"]
        assert (c["train_tokens"], c["val_tokens"], c["train_shards"], c["val_shards"]) == (2000, 1000, 2, 2)
        fp = m["source_fingerprint"]
        assert fp["repo_id"] == REPO and fp["commit"] == hub.commit and fp["revision"] == "main"
        verify_files(out, read_manifest(out))
        s = dataset_stats(out)
        assert s["val_bytes"] == c["val_bytes"] and s["val_docs"] == c["val_docs"] == 19 + 9
        assert s["val_unk_bytes_uncounted"] is None  # no text to measure it from
        assert read_shard(out / "fineweb_val_000001.bin").tolist() == tokens(1, 300).tolist()

        # Again (into a new directory): everything comes from the cache, nothing is fetched twice.
        gets = dict(hub.gets)
        assert all(v == 1 for v in gets.values()) and len(gets) == 6
        fetch_fineweb(tmp_path / "fw2", "sp1024", 2, endpoint=hub.url, cache_dir=cache)
        assert hub.gets == gets
        # More train shards: only the new one is downloaded.
        fetch_fineweb(tmp_path / "fw", "sp1024", 3, endpoint=hub.url, cache_dir=cache, force=True)
        assert hub.gets[f"{PREFIX}/fineweb_train_000002.bin"] == 1
        assert sum(hub.gets.values()) == 7
        assert read_manifest(tmp_path / "fw")["counts"]["train_shards"] == 3


def test_corrupted_shard_is_refused_in_one_line(tmp_path):
    files = hub_files()
    bad = bytearray(files[f"{PREFIX}/fineweb_train_000001.bin"])
    bad[:4] = b"\0\0\0\0"
    files[f"{PREFIX}/fineweb_train_000001.bin"] = bytes(bad)
    short = files[f"{PREFIX}/fineweb_val_000001.bin"][:-6]
    with FakeHub(REPO, files) as hub:
        with pytest.raises(DataError) as e:
            fetch_fineweb(tmp_path / "fw", "sp1024", 2, endpoint=hub.url, cache_dir=tmp_path / "c")
        msg = str(e.value)
        assert "\n" not in msg and "fineweb_train_000001.bin" in msg and "bad magic 0" in msg
        assert not (tmp_path / "fw").exists()
        hub.files[f"{PREFIX}/fineweb_val_000001.bin"] = short
        with pytest.raises(DataError, match=r"fineweb_val_000001\.bin: truncated"):
            fetch_fineweb(tmp_path / "fw", "sp1024", 1, endpoint=hub.url, cache_dir=tmp_path / "c2")
        # Once the repository serves good files again (a new commit), the same cache recovers.
        hub.files.update({k: v for k, v in hub_files().items() if "fineweb_" in k})
        hub.commit = "f" * 40
        m = fetch_fineweb(tmp_path / "fw", "sp1024", 2, endpoint=hub.url, cache_dir=tmp_path / "c")
        assert m["counts"]["train_tokens"] == 2000


def test_out_of_vocab_token_and_missing_files(tmp_path):
    files = hub_files()
    files[f"{PREFIX}/fineweb_train_000000.bin"] = shard_bytes(np.array([1, 5, 4000], np.uint16))
    with FakeHub(REPO, files) as hub:
        with pytest.raises(DataError, match=r"fineweb_train_000000\.bin: token id 4000 .* >= vocab size 1024"):
            fetch_fineweb(tmp_path / "fw", "sp1024", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
        with pytest.raises(DataError, match="sp1024 has only 3 train shards"):
            fetch_fineweb(tmp_path / "fw", "sp1024", 4, endpoint=hub.url, cache_dir=tmp_path / "c")
        with pytest.raises(DataError, match="no dataset named fineweb10B_sp2048"):
            fetch_fineweb(tmp_path / "fw", "sp2048", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="only SentencePiece variants"):
        variant_info("byte260")


def test_without_a_repo_manifest_val_shards_are_probed(tmp_path):
    with FakeHub(REPO, hub_files(2, with_manifest=False)) as hub:
        m = fetch_fineweb(tmp_path / "fw", "sp1024", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
        assert m["counts"]["val_shards"] == 2 and m["counts"]["train_shards"] == 1
        assert not (tmp_path / "fw" / "source_manifest.json").exists()
        with pytest.raises(DataError, match=r"fineweb_train_000002\.bin: file not found in the repository"):
            fetch_fineweb(tmp_path / "fw", "sp1024", 3, endpoint=hub.url, cache_dir=tmp_path / "c", force=True)
    assert read_manifest(tmp_path / "fw")["counts"]["train_shards"] == 1  # the good copy survived


def test_cli_uses_hf_endpoint_and_hf_home(tmp_path):
    """The real command line, configured only through huggingface_hub's own variables."""
    with FakeHub(REPO, hub_files()) as hub:
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        r = run_pgolf(
            "data",
            "fineweb",
            "--variant",
            "sp1024",
            "--train-shards",
            "1",
            "--out",
            str(tmp_path / "fw"),
            "--json",
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["counts"]["train_shards"] == 1
        assert any((tmp_path / "hf").rglob("fineweb_train_000000.bin"))  # cached under HF_HOME


def test_force_download_replaces_a_corrupted_cache_entry(tmp_path):
    cache = tmp_path / "c"
    with FakeHub(REPO, hub_files()) as hub:
        fetch_fineweb(tmp_path / "fw", "sp1024", 1, endpoint=hub.url, cache_dir=cache)
        blob = next(cache.rglob("fineweb_train_000000.bin")).resolve()
        blob.unlink()  # a damaged transfer left a short file in the cache
        blob.write_bytes(b"\0" * 100)
        with pytest.raises(DataError, match=r"truncated header .*--force-download"):
            fetch_fineweb(tmp_path / "fw2", "sp1024", 1, endpoint=hub.url, cache_dir=cache)
        m = fetch_fineweb(tmp_path / "fw2", "sp1024", 1, endpoint=hub.url, cache_dir=cache, force_download=True)
        assert m["counts"]["train_tokens"] == 1000
    assert read_shard(tmp_path / "fw" / "fineweb_train_000000.bin").size == 1000  # first copy unaffected


CASEOPS_REPO = "romeerp/parameter-golf-caseops-v1"
CASEOPS_PREFIX = "datasets/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
CASEOPS_TOK = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


def caseops_hub_files(tmp_path, n_val_docs: int = 12) -> dict[str, bytes]:
    """The record's published CaseOps layout, with a small pgolf CaseOps tokenizer standing in for
    the record's (the shards' ids are < 512 <= 8192, so the 8192 variant's checks apply)."""
    import lzma
    from pathlib import Path

    from _data_fixtures import random_documents

    from pgolf.data import caseops
    from pgolf.data.sidecar import piece_surfaces, raw_counts
    from pgolf.data.tokenizer import load_tokenizer

    model = tmp_path / "co.model"
    model.write_bytes(lzma.decompress((Path(__file__).parent / "fixtures" / "caseops_512.model.xz").read_bytes()))
    sp = load_tokenizer(model)
    docs = [d for d in random_documents(60, seed=7) if d.strip()] + ["The NASA Launch", "iPhone McDonald"]
    toks, side = {"val": [], "train": []}, []
    for i, d in enumerate(docs):
        [(ids, surf)] = piece_surfaces(sp, [caseops.encode(d)])
        split = "val" if i < n_val_docs else "train"
        toks[split] += [1, *ids]
        if split == "val":
            side += [0, *raw_counts(surf, caseops=True)]
    manifest = {
        "datasets": [
            {
                "name": "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                "tokenizer_name": "sp_bpe_8192_lossless_caps_caseops_v1_reserved",
                "val_bytes_glob": "fineweb_val_bytes_*.bin",
                "stats": {"files_train": 1, "files_val": 1, "docs_val": n_val_docs, "tokens_val": len(toks["val"])},
            }
        ],
        "tokenizers": [{"name": "sp_bpe_8192_lossless_caps_caseops_v1_reserved", "model_path": CASEOPS_TOK}],
    }
    return {
        "datasets/manifest.json": json.dumps(manifest).encode(),
        f"{CASEOPS_PREFIX}/fineweb_val_000000.bin": shard_bytes(np.array(toks["val"])),
        f"{CASEOPS_PREFIX}/fineweb_val_bytes_000000.bin": shard_bytes(np.array(side)),
        f"{CASEOPS_PREFIX}/fineweb_train_000000.bin": shard_bytes(np.array(toks["train"])),
        f"datasets/{CASEOPS_TOK}": model.read_bytes(),
    }


def test_caseops_variant_downloads_the_sidecar_and_verifies(tmp_path):
    from pgolf.data.bpb import load_byte_source
    from pgolf.data.sidecar import SidecarBytes

    files = caseops_hub_files(tmp_path)
    with FakeHub(CASEOPS_REPO, files) as hub, pytest.raises(DataError, match="512 does not match vocab_size=8192"):
        fetch_fineweb(tmp_path / "fw", "sp8192-caseops", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
    # The same export with a tokenizer of the variant's size is read and verified as is.
    from pgolf.data import fineweb

    info = dict(fineweb.VARIANTS["sp8192-caseops"])
    fineweb.VARIANTS["sp8192-caseops"] = {**info, "vocab_size": 512}
    try:
        with FakeHub(CASEOPS_REPO, files) as hub:
            m = fetch_fineweb(tmp_path / "fw", "sp8192-caseops", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
            assert m["caseops"]["operators"] == {"TITLE": 4, "ALLCAPS": 5, "CAPNEXT": 6, "ESC": 7}
            assert m["byte_sidecar"]["rule"] == "raw" and m["counts"]["val_byte_source"] == "sidecar:raw"
            src = load_byte_source(tmp_path / "fw")
            assert isinstance(src, SidecarBytes) and src.total() == m["counts"]["val_bytes"]
            # A sidecar that does not match its shard is refused, naming the remote file's copy.
            bad = dict(files)
            bad[f"{CASEOPS_PREFIX}/fineweb_val_bytes_000000.bin"] = shard_bytes(np.zeros(5, np.uint16))
            hub.files.update(bad)
            hub.commit = "e" * 40
            with pytest.raises(DataError, match=r"fineweb_val_bytes_000000\.bin: 5 byte counts"):
                fetch_fineweb(tmp_path / "fw2", "sp8192-caseops", 1, endpoint=hub.url, cache_dir=tmp_path / "c")
        # Offline: one line naming the repository.
        with pytest.raises(DataError, match=f"{CASEOPS_REPO}") as e:
            dead = "http://127.0.0.1:9"
            fetch_fineweb(tmp_path / "fw3", "sp8192-caseops", 1, endpoint=dead, cache_dir=tmp_path / "e")
        assert "\n" not in str(e.value)
    finally:
        fineweb.VARIANTS["sp8192-caseops"] = info
