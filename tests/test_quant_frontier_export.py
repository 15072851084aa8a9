"""`pgolf export --scheme frontier` end to end: calibration accounting, the artifact's model, the CLI, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_quant_support import random_tiny_state, run_cli

import pgolf
from pgolf.data import shards
from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant import artifact, calibrate, frontier_export
from pgolf.quant.artifact import export_run, write_run

SETS = [
    "quant.passthrough_max_numel=8192",  # the tiny model's matrices are small; the record's bound would keep all fp16
    "quant.gptq_calibration_batches=2",
    "quant.calib_batch_tokens=512",
    "quant.codecs=brotli",  # lzma and lrzip are measured in test_quant_pergroup; brotli keeps this quick
]


def _logits(model, seed=0):
    ids = torch.randint(0, 1024, (2, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.compute_logits(model.forward_hidden(ids))


@pytest.fixture(scope="module")
def frontier_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frontier")
    cfg, state = random_tiny_state(["model.mtp_num_heads=1"])
    data = tmp / "data"
    shards.write_split(data, "train", np.arange(20000) % 1000, shard_tokens=5000)
    shards.write_split(data, "val", np.arange(5000) % 1000)
    run = write_run(tmp / "run", cfg, state, data_dir=data)
    return run, cfg, state, data


@pytest.fixture(scope="module")
def exported(frontier_run):
    run, *_ = frontier_run
    opened = []
    real = shards.read_shard

    def spy(p, *a, **k):
        opened.append(p.name)
        return real(p, *a, **k)

    shards.read_shard = spy
    try:
        rep = export_run(run, scheme="frontier", quant_sets=SETS)
    finally:
        shards.read_shard = real
    return rep, opened


def test_frontier_export_report(exported):
    rep, opened = exported
    assert opened and all(n.startswith("fineweb_train_") for n in opened)  # calibration reads training data only
    assert rep["scheme"] == "frontier" and rep["format"] == "pergroup"
    # per layer c_q, attn.proj, mlp.fc, mlp.proj (c_k/c_v have 8,192 values: fp16), plus the bigram and
    # value-embedding tables (1024x64, on the matrix grid); tok_emb int7
    assert rep["counts"]["gptq (int6)"] == 10 and rep["counts"]["gptq (int7)"] == 1
    assert rep["counts"]["lqer"] == 3
    cal = rep["calibration"]
    assert cal["batches"] == 2 and cal["when"] == "at export, after training" and cal["within_budget"] is False
    assert rep["code_bytes"] < rep["code_bytes_plain_bundle"] < rep["code_bytes_raw"]
    assert "pgolf/train/trainer.py" in rep["code_files"] and "pgolf/quant/commands.py" in rep["code_files"]
    assert rep["total_bytes"] == rep["model_bytes"] + rep["code_bytes"]
    for k in ("gptq_s", "lqer_s", "pack_sort_s", "pack_compress_wall_s", "calib_s", "verify_s"):
        assert k in rep["timing"], k
    mtp = [n for n in rep["per_tensor"] if "mtp" in n]
    assert not mtp  # training-only heads never reach the artifact


def test_artifact_gives_the_dequantised_models_logits(frontier_run, exported):
    run, cfg, state, _ = frontier_run
    rep, _ = exported
    model = pgolf.load_artifact(rep["path"])
    assert model.artifact_info["format"] == "pergroup" and model.artifact_info["quantiser"] == "frontier"
    packed, meta, model_cfg, _ = artifact.read_artifact(rep["path"])
    deq = frontier_export.dequantized_state(rep["path"], packed, meta, model_cfg)
    ref = artifact.model_from_state(artifact.eval_model_config(cfg.model), deq).eval()
    assert torch.equal(_logits(model), _logits(ref))
    full = artifact.model_from_state(
        artifact.eval_model_config(cfg.model), {k: v for k, v in state.items() if "mtp" not in k}
    )
    err = (_logits(model) - _logits(full.eval())).abs().max()
    assert 0 < float(err) < 1.0  # quantised, but close


def test_single_stream_compressor(frontier_run, tmp_path):
    run, *_ = frontier_run
    rep = export_run(run, tmp_path / "m.pgolf", scheme="frontier", quant_sets=[*SETS, "quant.compressor=brotli"])
    assert rep["format"] == "pgolf"
    model = pgolf.load_artifact(rep["path"])
    assert model.artifact_info["quantiser"] == "frontier"


def test_trainer_hessians_are_used_and_accounted(frontier_run, tmp_path):
    """calibrate_run inside the budget: the export uses those Hessians and says they were within it."""
    import shutil

    run, cfg, state, data = frontier_run
    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    plain = {k: v for k, v in state.items() if "mtp" not in k}
    model = artifact.model_from_state(artifact.eval_model_config(cfg.model), plain).eval()
    batches = calibrate.record_batches(data, cfg.train.train_seq_len, 4, 2)
    acct = calibrate.calibrate_run(model, run2, batches, loop_seconds=10.0, budget_seconds=600.0)
    assert acct["within_budget"] and acct["batches"] == 2
    rep = export_run(run2, scheme="frontier", quant_sets=SETS)
    assert rep["calibration"]["when"] == "in the trainer, inside its budget"
    assert "calib_s" not in rep["timing"]
    over = calibrate.accounting({"batches": 1, "tokens": 1, "cut_short": False, "seconds": 5.0}, 598.0, 600.0, False)
    assert over["within_budget"] is False and over["loop_plus_calibration_s"] == 603.0


def test_record_sampler_is_the_records_and_reads_only_train(frontier_run):
    _, cfg, _, data = frontier_run
    a = list(calibrate.record_batches(data, 128, 3, 2))
    b = list(calibrate.record_batches(data, 128, 3, 2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # seeded with the rank, as the record
    assert a[0].shape == (3, 128)
    c = list(calibrate.record_batches(data, 128, 3, 2, rank=1, world_size=2))
    assert not torch.equal(a[0], c[0])


def test_cli_frontier_export_json_and_bad_settings(frontier_run, tmp_path):
    run, *_ = frontier_run
    args = ["export", str(run), "--scheme", "frontier", "--out", str(tmp_path / "a.pgrp"), "--json"]
    for s in SETS:
        args += ["--set", s]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["code_files"] and rep["code_scope"].startswith("everything")
    r = run_cli("export", str(run), "--scheme", "frontier", "--set", "model.num_layers=3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "only the [quant] section" in r.stderr
    with pytest.raises(ConfigError, match="quant.lqer_rank"):
        artifact.with_quant_sets(artifact.read_run(run)[0], ["LQER_RANK=-1"])


def test_truncated_or_altered_artifact_is_one_line_at_load(exported, tmp_path):
    rep, _ = exported
    blob = Path(rep["path"]).read_bytes()
    for tag, bad in (("cut", blob[: len(blob) // 2]), ("flip", blob[:-10] + bytes([blob[-10] ^ 0x40]) + blob[-9:])):
        p = tmp_path / f"{tag}.pgrp"
        p.write_bytes(bad)
        with pytest.raises(ArtifactError, match="sha256 mismatch"):
            pgolf.load_artifact(p)
    r = run_cli("eval", str(tmp_path / "cut.pgrp"), "--data", str(tmp_path), "--method", "plain")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_record_artifact_needs_a_preset(tmp_path):
    """A record PGRP file names no model: without the frontier preset, one line says so."""
    src = Path(__file__).parent / "fixtures" / "frontier_record_artifact.pgrp"
    with pytest.raises((ArtifactError, ConfigError), match="preset"):
        pgolf.load_artifact(src, preset="no-such-preset")
