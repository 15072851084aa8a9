"""ttt-lora and ttt-phased under torchrun (2 CPU processes, Gloo) give the one-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _ttt_fixtures import caseops_stream, sidecar, ttt_config, ttt_model

from pgolf.eval import evaluate

METHODS = ("ttt-lora", "ttt-phased")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from pgolf import dist
    from pgolf.config import Config, RuntimeConfig
    from pgolf.data.sidecar import SidecarBytes
    from pgolf.eval import evaluate
    from pgolf.model.gpt import build_model

    saved = torch.load(sys.argv[1], weights_only=False)
    cfg = Config.from_dict(saved["config"])
    info = dist.init(RuntimeConfig(device="cpu"))
    model = build_model(cfg.model)
    model.load_state_dict(saved["state"])
    model.eval()
    out = {}
    for method in saved["methods"]:
        stats = {}
        res, nll = evaluate(model, method, saved["tokens"], SidecarBytes(saved["counts"], 512, caseops=True), cfg,
                            "cpu", record=True, stats=stats)
        out[method] = {**res.to_dict(), "nll": nll.tolist(), "stats": stats}
    if info.rank == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(out, f)
    dist.shutdown()
    """
)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path):
    cfg = ttt_config()
    model = ttt_model()
    tokens, counts = caseops_stream()
    torch.save({"config": cfg.to_dict(), "state": model.state_dict(), "tokens": tokens, "counts": counts,
                "methods": METHODS}, tmp_path / "model.pt")  # fmt: skip
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "model.pt"),
           str(tmp_path / "out.json")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in METHODS:
            stats: dict = {}
            one, nll = evaluate(model, method, tokens, sidecar(counts), cfg, "cpu", record=True, stats=stats)
            got = two[method]
            assert got["world_size"] == 2 and one.world_size == 1
            assert got["tokens"] == one.tokens == len(tokens) - 1 and got["bytes"] == one.bytes, method
            assert abs(got["val_bpb"] - one.val_bpb) < 1e-6, (method, got["val_bpb"], one.val_bpb)
            np.testing.assert_allclose(np.array(got["nll"]), nll, atol=1e-4, err_msg=method)
            # Each rank ran part of the batches (dealt, not stolen), all ranks took every SGD step.
            assert got["stats"]["lora_steps"] < stats["lora_steps"]
            if method == "ttt-phased":
                assert [p["sgd_steps"] for p in got["stats"]["phases"]] == [p["sgd_steps"] for p in stats["phases"]]
    finally:
        torch.set_num_threads(threads)
