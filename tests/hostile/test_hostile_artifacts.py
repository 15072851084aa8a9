"""Crafted artifacts, resume and a full disk (issue 11, items 5, 7 and 8)."""

from __future__ import annotations

import errno
import json
import shutil
import time

import _crafted
import pytest
import torch
from _data_fixtures import run_pgolf
from _hostile import TINY, one_line_error

from pgolf.errors import ArtifactError, PgolfError

FAST_S = 2.0  # every header refusal is milliseconds; the bound leaves room for a loaded CI machine


@pytest.mark.parametrize("label", list(_crafted.CASES))
def test_a_crafted_artifact_is_refused_in_one_line(label, tmp_path):
    import pgolf.quant.frontier_export  # noqa: F401 - imported before the clock starts (seconds of torch modules)
    from pgolf.quant.artifact import load_artifact

    path = tmp_path / "crafted.pgolf"
    path.write_bytes(_crafted.CASES[label]())
    t = time.perf_counter()
    with pytest.raises(ArtifactError) as e:
        load_artifact(path)
    seconds = time.perf_counter() - t
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    bomb = "brotli stream -> 3 GiB, declared" in label or "xz stream" in label
    assert seconds < (30.0 if bomb else FAST_S), (label, seconds)  # bombs stop at the 256 MiB bound


def test_the_decompression_bound_is_the_plausible_maximum():
    from pgolf.quant import codecs, container, pergroup, seedfmt

    assert codecs.MAX_ARTIFACT_RAW == 256 << 20
    assert container.MAX_RAW == pergroup.MAX_RAW == seedfmt.MAX_DECOMPRESSED == codecs.MAX_ARTIFACT_RAW


def test_brotli_never_produces_much_more_than_its_bound():
    from pgolf.quant import codecs

    with pytest.raises(ArtifactError, match="header says 1048576"):
        codecs.decompress(_crafted.BROTLI_3GIB.read_bytes(), "brotli", 1 << 20, "bomb")
    dec = codecs._brotli("x").Decompressor()
    out, done = codecs._brotli_bounded(dec, _crafted.BROTLI_3GIB.read_bytes(), 5 << 20)
    assert not done and len(out) <= (5 << 20) + (1 << 20)


def test_deep_json_is_one_line():
    from pgolf.safeio import loads_json

    with pytest.raises(PgolfError, match="nested 200000 deep"):
        loads_json("[" * 200_000 + "]" * 200_000, "x.json")
    assert loads_json('{"a": ["[[[[", {"b": 1}]}', "ok.json") == {"a": ["[[[[", {"b": 1}]}  # brackets in strings


def test_eval_refuses_a_crafted_artifact_end_to_end(small_data, tmp_path):
    path = tmp_path / "layers.pgolf"
    path.write_bytes(_crafted.many_layers_small_index())
    msg = one_line_error(run_pgolf("eval", str(path), "--data", str(small_data), "--method", "plain"))
    assert "num_layers must be <= 128" in msg


# ---------------------------------------------------------------- NaN weights
@pytest.fixture()
def exported(run_copy, cli):
    r = cli("export", str(run_copy), "--out", str(run_copy / "a.pgolf"))
    assert r.returncode == 0, r.stderr
    return run_copy


def test_nan_weights_are_refused_not_reported_as_bare_nan(exported, small_data, tmp_path, cli):
    from safetensors.torch import load_file, save_file

    from pgolf.quant import container

    header, tensors = container.read_container(exported / "a.pgolf")
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() < 100)  # kept as fp16/fp32
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    container.write_container(tmp_path / "nan.pgolf", header, tensors, "xz")
    r = cli("eval", str(tmp_path / "nan.pgolf"), "--data", str(small_data), "--method", "plain", "--json")
    assert "non-finite weights" in one_line_error(r) and r.stdout == ""
    # and a run whose weights went NaN is refused by export, naming the file
    w = exported / "final_model.safetensors"
    state = load_file(str(w))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(w))
    r = cli("export", str(exported), "--out", str(tmp_path / "b.pgolf"))
    assert "final_model.safetensors" in one_line_error(r) and "non-finite" in r.stderr


def test_export_json_never_describes_another_artifact(exported, cli, monkeypatch):
    """A kill right after the artifact's rename: the old export.json is already gone, never stale."""
    from pgolf.quant import container

    report = json.loads((exported / "export.json").read_text())
    assert report["sha256"] == __import__("hashlib").sha256((exported / "a.pgolf").read_bytes()).hexdigest()
    real = container.os.replace

    def killed_after_rename(src, dst):
        real(src, dst)
        if str(dst).endswith("b.pgolf"):
            raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(container.os, "replace", killed_after_rename)
    assert cli("export", str(exported), "--out", str(exported / "b.pgolf")).returncode == 130
    assert not (exported / "export.json").exists()


# ---------------------------------------------------------------- a full disk
class _FullDisk:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_export_is_one_line_and_keeps_the_old_artifact(exported, cli, monkeypatch):
    from pgolf.quant import container

    good = (exported / "a.pgolf").read_bytes()
    monkeypatch.setattr(container.os, "fdopen", _FullDisk)
    r = cli("export", str(exported), "--out", str(exported / "a.pgolf"))
    assert "disk full" in one_line_error(r)
    assert (exported / "a.pgolf").read_bytes() == good
    assert not [p for p in exported.iterdir() if p.name.startswith(".a.pgolf.")]  # no temp file left


def test_a_full_disk_while_checkpointing_is_one_line(small_data, tmp_path, cli, monkeypatch):
    from pgolf.train import checkpoint

    def full(_obj, _path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    r = cli("train", *TINY, "--data", str(small_data), "--out", str(tmp_path / "r"))
    last = r.stderr.strip().splitlines()[-1]  # train logs to stderr first; the error is its last line
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert last.startswith("pgolf: error: ") and "disk full" in last and "optim_rank0.pt" in last


# ---------------------------------------------------------------- --resume of a damaged run
@pytest.mark.parametrize(
    "damage,expect",
    [
        ("config_deep", "nested"),
        ("config_garbage", "unreadable JSON"),
        ("config_range", "model.model_dim must be <= 4096"),
        ("config_list", "expected a JSON object"),
        ("state_truncated", "corrupt checkpoint"),
        ("state_garbage", "corrupt checkpoint"),
        ("state_wrong", "does not fit this run"),
    ],
)
def test_resume_of_a_damaged_run_is_one_line(run_copy, damage, expect, cli):
    cfg = run_copy / "config.json"
    ckpt = sorted((run_copy / "checkpoints").iterdir())[-1]
    if damage == "config_deep":
        cfg.write_text("[" * 200_000 + "]" * 200_000)
    elif damage == "config_garbage":
        cfg.write_text('{"model": ')
    elif damage == "config_range":
        d = json.loads(cfg.read_text())
        d["model"]["model_dim"] = 2**70
        cfg.write_text(json.dumps(d))
    elif damage == "config_list":
        cfg.write_text("[]")
    elif damage == "state_truncated":
        b = (ckpt / "state.pt").read_bytes()
        (ckpt / "state.pt").write_bytes(b[: len(b) // 2])
    elif damage == "state_garbage":
        (ckpt / "state.pt").write_bytes(b"\x80\x04garbage" * 100)
    elif damage == "state_wrong":
        torch.save({"model": {}, "world_size": 1}, ckpt / "state.pt")
    r = cli("train", "--resume", str(run_copy))
    assert expect in one_line_error(r)


def test_resume_end_to_end_names_the_corrupt_checkpoint(run_copy):
    ckpt = sorted((run_copy / "checkpoints").iterdir())[-1]
    (ckpt / "state.pt").write_bytes(b"PK\x03\x04 not really a zip")
    msg = one_line_error(run_pgolf("train", "--resume", str(run_copy)))
    assert "state.pt" in msg and "corrupt checkpoint" in msg
    shutil.rmtree(ckpt)  # the hint: delete it and resume from the one before


# ---------------------------------------------------------------- a swapped tokenizer at evaluation
@pytest.fixture()
def swapped(small_data, other_tokenizer, tmp_path):
    d = tmp_path / "swapped"
    shutil.copytree(small_data, d)
    shutil.copyfile(other_tokenizer, d / "tokenizer.model")  # another tokenizer; the shards stay
    return d


def test_eval_refuses_a_swapped_tokenizer_end_to_end(exported, swapped):
    r = run_pgolf("eval", str(exported / "a.pgolf"), "--data", str(swapped), "--method", "plain")
    assert "bpb would be wrong" in one_line_error(r)


def test_audit_refuses_a_swapped_tokenizer(exported, swapped, cli):
    r = cli("audit", str(exported / "a.pgolf"), "--data", str(swapped), "--method", "plain")
    assert "bpb would be wrong" in one_line_error(r)


def test_eval_refuses_an_explicit_tokenizer_the_data_was_not_built_with(exported, small_data, other_tokenizer, cli):
    r = cli("eval", str(exported / "a.pgolf"), "--data", str(small_data), "--tokenizer", str(other_tokenizer),
            "--method", "plain")  # fmt: skip
    assert "bpb would be wrong" in one_line_error(r)


def test_run_refuses_a_swapped_tokenizer(swapped, tmp_path, cli):
    r = cli("run", *TINY, "--data", str(swapped), "--out", str(tmp_path / "r"), "--set", "data.verify=off")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr and "bpb would be wrong" in last


@pytest.mark.parametrize("body", ["[" * 200_000 + "]" * 200_000, "[]", '{"model": '])
def test_export_of_a_run_with_a_damaged_config_is_one_line(run_copy, body, cli):
    (run_copy / "config.json").write_text(body)
    assert "config.json" in one_line_error(cli("export", str(run_copy)))
