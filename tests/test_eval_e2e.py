"""End to end with the real pieces: `pgolf train` -> `pgolf export` -> `pgolf eval` / `pgolf audit`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_eval_fixtures import TOKENIZER, corpus

from pgolf.data.shards import write_shard

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SETS = ["model.num_layers=2", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
              "model.bigram_dim=64", "model.ve_dim=64", "model.ve_layers=1", "model.xsa_last_n=2",
              "train.iterations=30", "train.train_batch_tokens=2048", "train.train_seq_len=128",
              "train.val_loss_every=0", "train.checkpoint_every=0", "train.max_wallclock_seconds=0",
              "eval.seq_len=128", "eval.stride=32", "runtime.num_threads=1"]  # fmt: skip


def pgolf(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pgolf", *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_train_export_eval_audit(tmp_path: Path):
    pytest.importorskip("pgolf.quant.artifact", reason="the artifact format is not there yet")
    data = tmp_path / "data"
    data.mkdir()
    train, val = corpus()
    write_shard(data / "fineweb_train_000000.bin", train)
    write_shard(data / "fineweb_val_000000.bin", val[:6001])
    shutil.copy(TOKENIZER, data / "tokenizer.model")
    run = tmp_path / "run"
    sets = [x for s in TRAIN_SETS for x in ("--set", s)]
    pgolf("train", "--preset", "tiny", "--no-env", *sets, "--data", str(data), "--out", str(run), "--quiet")
    art = run / "artifact.pgolf"
    pgolf("export", str(run), "--out", str(art))

    dump = tmp_path / "nll.npy"
    res = json.loads(pgolf("eval", str(art), "--data", str(data), "--method", "sliding", "--max-tokens", "1500",
                           "--dump-nll", str(dump), "--json", "--no-env").stdout)  # fmt: skip
    assert res["tokens"] == 1500 and res["score_first"] is True
    # Every phase from opening the artifact (issue 15): the load's parts are measured, not zero.
    assert res["phases"]["decompress"] > 0 and res["phases"]["dequantise"] > 0 and res["phases"]["scoring"] > 0
    assert res["total_seconds"] == pytest.approx(sum(res["phases"].values())) and res["within_600s"] is True
    # The artifact names its preset (tiny); its eval settings apply, not the training run's --set.
    assert res["params"]["seq_len"] == 256 and res["params"]["stride"] == 64
    nll = np.load(dump)
    assert nll.shape == (1500,) and nll.sum() == pytest.approx(res["val_loss"] * 1500, rel=1e-12)

    audit = pgolf("audit", str(art), "--data", str(data), "--method", "slot", "--tokens", "512", "--json", "--no-env")
    rep = json.loads(audit.stdout)
    assert rep["score_first"] is False and rep["label"] is False and audit.returncode == 0

    bad = pgolf("eval", str(art), "--data", str(data), "--method", "sliding", "--stride", "999", "--no-env",
                check=False)  # fmt: skip
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
