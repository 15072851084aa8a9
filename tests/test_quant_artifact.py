"""Export and loading end to end: both formats give the same model, the CLI contract, the size limit,
the quantisation round trip on a briefly trained model, and the record preset's size."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from test_quant_support import (
    TINY_ENV,
    TINY_PASSTHROUGH,
    heldout_bpb,
    random_tiny_state,
    run_cli,
    trained_tiny,
    write_data_dir,
)

import pgolf
from pgolf.data import shards
from pgolf.errors import ArtifactError
from pgolf.model import build_model
from pgolf.quant import artifact
from pgolf.quant.artifact import LIMIT_BYTES, export_run, load_artifact, quantize_for_export, write_run
from pgolf.quant.rtn import dequantize_state_dict


def _logits(model, seed=0):
    ids = torch.randint(0, 1024, (2, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.compute_logits(model.forward_hidden(ids))


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory):
    cfg, state = random_tiny_state(["model.mtp_num_heads=1"])
    return write_run(tmp_path_factory.mktemp("run"), cfg, state), cfg, state


def test_seed_format_and_ours_give_the_same_model(exported_tiny, tmp_path, monkeypatch):
    run, cfg, state = exported_tiny
    ours = export_run(run, tmp_path / "m.pgolf", passthrough_max_numel=TINY_PASSTHROUGH)
    seed = export_run(run, tmp_path / "m.ptz", fmt="seed", passthrough_max_numel=TINY_PASSTHROUGH)
    want = {"passthrough": 19, "passthrough_ctrl": 0, "int6": 8, "int8": 3}
    assert ours["counts"] == seed["counts"] == want
    assert ours["dropped"] == ["mtp_heads.0.weight"]
    a = pgolf.load_artifact(ours["path"])
    for k, v in TINY_ENV.items():  # seed files carry no config: preset + the challenge's env names
        monkeypatch.setenv(k, v)
    b = pgolf.load_artifact(seed["path"], preset="record")
    assert not a.training and not b.training and a.config.mtp_num_heads == 0
    assert a.artifact_info["format"] == "pgolf" and b.artifact_info["format"] == "seed"
    assert torch.equal(_logits(a), _logits(b))
    # and both are exactly the dequantised state
    q = quantize_for_export(state, cfg, passthrough_max_numel=TINY_PASSTHROUGH)
    want = dequantize_state_dict(q.packed, q.meta, a.state_dict())
    for k, t in a.state_dict().items():
        assert torch.equal(t, want[k]), k


def test_seed_file_needs_the_right_preset(exported_tiny, tmp_path, monkeypatch):
    run, _cfg, _state = exported_tiny
    path = export_run(run, tmp_path / "m.ptz", fmt="seed")["path"]
    for k, v in TINY_ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ArtifactError, match="does not match the model of preset 'record'") as e:
        load_artifact(path, preset="record", environ={})  # environment ignored: the full record model
    assert "\n" not in str(e.value) and path in str(e.value)
    assert load_artifact(path, preset="record", environ=dict(TINY_ENV)).config.num_layers == 2


def test_written_seed_file_is_the_seeds_layout(exported_tiny, tmp_path):
    import io
    import lzma

    run, _cfg, _state = exported_tiny
    path = export_run(run, tmp_path / "m.ptz", fmt="seed", passthrough_max_numel=TINY_PASSTHROUGH)["path"]
    with open(path, "rb") as f:
        obj = torch.load(io.BytesIO(lzma.decompress(f.read())), weights_only=True)
    assert set(obj) == {"w", "m"}
    assert obj["m"]["blocks.0.mlp.fc.weight"] == {"type": "int6"}
    assert obj["m"]["tok_emb.weight"] == {"type": "int8"} and obj["m"]["smear.gate"] == "passthrough"
    assert obj["w"]["blocks.0.mlp.fc.weight.q"].dtype == torch.int8
    assert obj["w"]["blocks.0.mlp.fc.weight.scale"].dtype == torch.float16
    assert obj["w"]["smear.gate"].dtype == torch.float16


def test_cli_export_json_and_export_json_file(exported_tiny, tmp_path):
    run, _cfg, _state = exported_tiny
    out = tmp_path / "cli.pgolf"
    before = (run / "export.json").read_bytes() if (run / "export.json").is_file() else None
    r = run_cli("export", str(run), "--out", str(out), "--json", "--codec", "xz")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for key in (
        "model_bytes",
        "code_bytes",
        "total_bytes",
        "limit_bytes",
        "fits",
        "quant",
        "path",
        "per_tensor",
        "timing",
        "code_bytes_raw",
        "counts",
    ):
        assert key in report, key
    assert report["limit_bytes"] == 16_000_000 and report["fits"] is True and report["quant"] == "rtn"
    assert report["model_bytes"] == out.stat().st_size
    assert report["total_bytes"] == report["model_bytes"] + report["code_bytes"]
    # an export elsewhere reports beside its artifact and leaves the run's export.json as it was
    assert json.loads((tmp_path / "cli.pgolf.export.json").read_text()) == report
    assert ((run / "export.json").read_bytes() if (run / "export.json").is_file() else None) == before
    emb = report["per_tensor"]["tok_emb.weight"]
    assert emb["kind"] == "int8" and emb["rel"] > 0


def test_over_the_limit_is_written_but_exits_1(exported_tiny, tmp_path, monkeypatch, capsys):
    from pgolf.quant import commands

    run, _cfg, _state = exported_tiny
    monkeypatch.setattr(artifact, "LIMIT_BYTES", 1000)
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["export", str(run), "--out", str(tmp_path / "big.pgolf"), "--codec", "xz"])
    rc = args.func(args)
    err = capsys.readouterr().err
    assert rc == 1
    assert (tmp_path / "big.pgolf").is_file()
    last = err.strip().splitlines()[-1]
    assert "over the 1,000-byte limit" in last and last.startswith("pgolf: error: ")
    assert json.loads((tmp_path / "big.pgolf.export.json").read_text())["fits"] is False


def test_bad_run_directories_are_one_line(exported_tiny, tmp_path):
    import shutil

    run, cfg, state = exported_tiny
    cases = {}
    d = tmp_path / "no_weights"
    d.mkdir()
    shutil.copy(run / "config.json", d / "config.json")
    cases[d] = "no final_model.safetensors"
    d = tmp_path / "garbage_weights"
    d.mkdir()
    shutil.copy(run / "config.json", d / "config.json")
    (d / "final_model.safetensors").write_bytes(b"not safetensors")
    cases[d] = "unreadable weights"
    d = tmp_path / "bad_config"
    d.mkdir()
    shutil.copy(run / "final_model.safetensors", d / "final_model.safetensors")
    (d / "config.json").write_text(json.dumps({"model": {"num_heads": 3}}))
    cases[d] = "num_heads"
    d = write_run(tmp_path / "missing_tensor", cfg, {k: v for k, v in state.items() if k != "smear.gate"})
    cases[d] = "smear.gate is missing"
    for d, expect in cases.items():
        with pytest.raises(ArtifactError) as e:
            export_run(d)
        assert expect in str(e.value) and "\n" not in str(e.value) and str(d) in str(e.value), str(e.value)
        assert not (d / "final_model.int6.pgolf").exists() and not (d / "export.json").exists()


def test_gptq_export_never_opens_validation_shards(tmp_path, monkeypatch):
    cfg, state = random_tiny_state()
    data = tmp_path / "data"
    shards.write_split(data, "train", np.arange(5000) % 1000, shard_tokens=2000)
    shards.write_split(data, "val", np.arange(5000) % 1000)
    run = write_run(tmp_path / "run", cfg, state, data_dir=data)
    opened = []
    real = shards.read_shard
    monkeypatch.setattr(shards, "read_shard", lambda p, *a, **k: (opened.append(p.name), real(p, *a, **k))[1])
    rep = export_run(run, quant="gptq", calib_seqs=4, calib_len=64, passthrough_max_numel=TINY_PASSTHROUGH)
    assert rep["calibration"]["calib"] == "train" and rep["calibration"]["seqs"] == 4
    assert opened and all(n.startswith("fineweb_train_") for n in opened)
    assert all(info.get("method") == "gptq" for info in rep["per_tensor"].values() if info["kind"] == "int6")


# --------------------------------------------------------------------------- slow end-to-end
@pytest.mark.slow
def test_round_trip_bpb_on_a_trained_model(tmp_path):
    """RTN within 0.03 bpb of the unquantised model; GPTQ (train calibration) no worse than RTN."""
    cfg, state = trained_tiny()
    run = write_run(tmp_path / "run", cfg, state, data_dir=write_data_dir(tmp_path / "data"))
    ref = build_model(cfg.model, seed=0)
    ref.load_state_dict(state)
    base = heldout_bpb(ref)
    rtn = export_run(run, tmp_path / "rtn.pgolf", passthrough_max_numel=TINY_PASSTHROUGH)
    gptq = export_run(
        run,
        tmp_path / "gptq.pgolf",
        quant="gptq",
        calib_seqs=32,
        calib_len=128,
        passthrough_max_numel=TINY_PASSTHROUGH,
    )
    bpb_rtn = heldout_bpb(load_artifact(rtn["path"]))
    bpb_gptq = heldout_bpb(load_artifact(gptq["path"]))
    print(f"held-out bpb: unquantised {base:.4f}, rtn {bpb_rtn:.4f}, gptq {bpb_gptq:.4f}")
    assert rtn["counts"]["int6"] == 8 and rtn["counts"]["int8"] == 3
    assert abs(bpb_rtn - base) < 0.03
    assert bpb_gptq <= bpb_rtn
    int6 = [i for i in gptq["per_tensor"].values() if i["kind"] == "int6"]
    worse = [i for i in int6 if i["out_err"] > i["rtn_out_err"]]
    assert not worse


@pytest.mark.slow
def test_record_preset_export_fits(tmp_path):
    """The record preset's weights (seed init: see docs/artifact.md for trained-weight numbers) + code fit."""
    from pgolf.config import load_config

    cfg = load_config("record", environ={})
    state = build_model(cfg.model, seed=1337).state_dict()
    run = write_run(tmp_path / "run", cfg, state)
    rep = export_run(run)
    model, code, total = rep["model_bytes"], rep["code_bytes"], rep["total_bytes"]
    print(f"record preset at init: model {model:,} + code {code:,} = {total:,}")
    assert rep["counts"] == {"passthrough": 62, "passthrough_ctrl": 0, "int6": 66, "int8": 3}
    assert rep["fits"] and rep["total_bytes"] <= LIMIT_BYTES


@pytest.mark.slow
def test_export_of_a_real_trainer_run(tiny_run, builtin_dir, tmp_path):
    """A run directory written by pgolf's trainer (conftest's `tiny` run, copied so it stays untouched)."""
    import shutil

    from pgolf.data.shards import list_shards, read_shard

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "final_model.safetensors"):
        shutil.copy(tiny_run / name, run / name)
    rep = export_run(run, quant="gptq", data=builtin_dir, calib_seqs=8, calib_len=256)
    # tiny: 12 MLP matrices int6; the 1024x64 bigram and VE tables have exactly 65,536 elements: fp16
    assert rep["fits"] and rep["counts"]["int6"] == 12 and rep["counts"]["int8"] == 1
    cfg, state = artifact.read_run(run)
    ref = artifact.model_from_state(cfg.model, state).eval()
    got = load_artifact(rep["path"])
    val = read_shard(list_shards(builtin_dir, "val")[0])
    toks = torch.from_numpy(np.asarray(val[: 4 * 256 + 1], dtype=np.int64))
    x, y = toks[:-1].view(4, 256), toks[1:].view(4, 256)
    with torch.no_grad():
        losses = [float(m(x, y)) for m in (ref, got)]
    assert abs(losses[1] - losses[0]) < 0.03, losses


def test_loading_records_its_phase_seconds(exported_tiny, tmp_path):
    """The evaluation's phase report starts at opening the artifact (issue 15)."""
    run, _cfg, _state = exported_tiny
    model = pgolf.load_artifact(export_run(run, tmp_path / "t.pgolf", passthrough_max_numel=TINY_PASSTHROUGH)["path"])
    secs = model.artifact_info["load_seconds"]
    assert set(secs) == {"imports", "read", "decompress", "dequantise"} and all(v >= 0 for v in secs.values())
    assert secs["decompress"] > 0 and secs["dequantise"] > 0
