"""Two CPU processes under torchrun (Gloo) give the one-process result for every method."""

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
from test_eval_fixtures import save_model, small_config, tables, trained_model, val_tokens

from pgolf.eval import METHODS, evaluate

N = 1000
# Settings that make every method do real work on a short stream: several batches per rank
# for the window methods, several TTT chunks with training, minibatches split across ranks.
SETS = ["eval.batch_seqs=4", "eval.slot_batch_seqs=4", "eval.slot_steps=4", "eval.causal_steps=4",
        "eval.ttt_chunk_tokens=256", "eval.ttt_batch_seqs=3", "eval.ttt_lr=0.05",
        "eval.ttt_lora_rank=4", "eval.global_ttt_chunk_tokens=256"]  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from pgolf import dist
    from pgolf.config import Config, RuntimeConfig
    from pgolf.model.gpt import build_model
    from pgolf.eval import evaluate, METHODS
    from pgolf.data.bpb import ByteTables

    saved = torch.load(sys.argv[1], weights_only=False)
    cfg = Config.from_dict(saved["config"])
    info = dist.init(RuntimeConfig(device="cpu"))
    model = build_model(cfg.model, seed=0)
    model.load_state_dict(saved["state"])
    model.eval()
    tables = ByteTables(*saved["tables"])
    out = {}
    for method in METHODS:
        res, nll = evaluate(model, method, saved["tokens"], tables, cfg, "cpu", max_tokens=saved["n"], record=True)
        out[method] = {**res.to_dict(), "nll": nll.tolist()}
    cfg.eval.ngram_tilt = "on"  # the tilt as a layer on TTT (chunks split across ranks)
    res, nll = evaluate(model, "ttt", saved["tokens"], tables, cfg, "cpu", max_tokens=saved["n"], record=True)
    out["ttt+ngram"] = {**res.to_dict(), "nll": nll.tolist()}
    if info.rank == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(out, f)
    dist.shutdown()
    """
)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path):
    cfg = small_config(*SETS)
    save_model(tmp_path / "unused.pt")  # make sure the shared model is trained (and cached)
    _, model = trained_model()
    t = tables()
    torch.save(
        {"config": cfg.to_dict(), "state": model.state_dict(), "n": N, "tokens": val_tokens(N + 10),
         "tables": (t.base_bytes, t.has_leading_space, t.is_boundary, t.unk_ids)},
        tmp_path / "model.pt",
    )  # fmt: skip
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
        tilted = small_config(*SETS, "eval.ngram_tilt=on")
        for method in [*METHODS, "ttt+ngram"]:
            c, m = (tilted, "ttt") if method == "ttt+ngram" else (cfg, method)
            one, nll = evaluate(model, m, val_tokens(N + 10), t, c, "cpu", max_tokens=N, record=True)
            got = two[method]
            assert got["world_size"] == 2 and one.world_size == 1
            assert got["tokens"] == one.tokens == N and got["bytes"] == one.bytes, method
            assert abs(got["val_bpb"] - one.val_bpb) < 1e-6, (method, got["val_bpb"], one.val_bpb)
            assert got["params"].get("ngram_hinted") == one.params.get("ngram_hinted"), method
            np.testing.assert_allclose(np.array(got["nll"]), nll, atol=1e-4, err_msg=method)
    finally:
        torch.set_num_threads(threads)
