"""The frontier optimiser and schedule (PR #1855, FRONTIER F3), against the record's own code
(tests/fixtures/frontier_model.*) and F3.5's numbers; the trainer with the frontier options."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clean_env, pgolf_cmd, torchrun_cmd
from safetensors.torch import load_file

from pgolf.config import load_config
from pgolf.errors import ConfigError
from pgolf.train.muon import POLAR_EXPRESS, Muon, newton_schulz, polar_express, row_normalize
from pgolf.train.schedule import Schedule

FIX = Path(__file__).parent / "fixtures"
META = json.loads((FIX / "frontier_model.json").read_text())


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIX / "frontier_model.safetensors"))


# ---------------------------------------------------------------- Newton-Schulz and Muon
def test_polar_express_equals_the_records_function(fx):
    for tag in ("wide", "tall"):  # the tall one is iterated on its transpose, as the record does
        got = polar_express(fx[f"ns.{tag}.in"], steps=5, dtype=torch.bfloat16)
        assert torch.equal(got, fx[f"ns.{tag}.out"]), tag  # bit for bit in bf16
    bank = fx["ns.bank.in"]
    got = torch.stack([polar_express(bank[i], steps=5, dtype=torch.bfloat16) for i in range(3)])
    assert torch.equal(got, fx["ns.bank.out"])  # the record's batched bank = pgolf's per matrix
    assert torch.equal(polar_express(fx["ns.wide.in"], steps=3, dtype=torch.bfloat16), fx["ns.wide.out3"])


def test_the_config_knows_the_coefficient_tables():
    from pgolf.config import NS_TUPLES
    from pgolf.train.muon import NS_TABLES

    assert {k: len(v) for k, v in NS_TABLES.items()} == NS_TUPLES


def test_polar_express_scalar_map_and_singular_values():
    s = torch.linspace(1e-3, 1, 20001, dtype=torch.float64)
    for a, b, c in POLAR_EXPRESS:
        s = a * s + b * s**3 + c * s**5
    assert s.min().item() == pytest.approx(0.85887, abs=1e-5) and s.max().item() == pytest.approx(1.14113, abs=1e-5)
    g = torch.randn(512, 2048, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(newton_schulz(g, POLAR_EXPRESS, dtype=torch.float64))
    assert sv.min().item() >= 0.8588 and sv.max().item() <= 1.1412  # F3.3's check


def test_muon_eq_r_and_two_muon_steps_equal_the_records(fx):
    u = torch.randn(6, 10, dtype=torch.bfloat16)
    assert torch.allclose(row_normalize(u).float().norm(dim=-1), torch.ones(6), atol=1e-2)
    assert torch.equal(row_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))  # the 1e-7 floor

    def run(row_norm: bool) -> torch.Tensor:
        ps = [torch.nn.Parameter(fx["muon.p0"][i].clone()) for i in range(3)]  # the bank's matrices
        m = META["muon"]
        opt = Muon(ps, lr=m["lr"], momentum=m["momentum"], backend_steps=5, weight_decay=m["weight_decay"],
                   orthogonalize=polar_express, dtype=torch.bfloat16, row_normalize=row_norm,
                   momentum_dtype=torch.bfloat16)  # fmt: skip
        for step in range(2):
            for i, p in enumerate(ps):
                p.grad = fx[f"muon.g{step}"][i].clone()
            opt.step()
        return torch.stack([p.detach() for p in ps])

    want, p0 = fx["muon.p2"], fx["muon.p0"]
    update = (want - p0).abs().max().item()
    # within bf16 rounding of the update: the record scales it by sqrt(32/12) in fp32, pgolf in bf16
    assert (run(True) - want).abs().max().item() < 2**-7 * update
    assert (run(False) - want).abs().max().item() > 0.05 * update  # MuonEq-R matters


# ---------------------------------------------------------------- the schedule (F3.5)
def test_schedule_over_a_simulated_600_second_budget_matches_F3_5():
    sch = Schedule(load_config("frontier", environ={}))
    assert sch.cap_ms == 599_500.0  # 600 s less GPTQ_RESERVE_SECONDS 0.5
    c = sch.cap_ms
    assert sch.lr_mult(0, 0.15 * c) == 1.0 and sch.lr_mult(0, 0.1499 * c) == 1.0
    assert sch.lr_mult(0, 0.5 * c) == pytest.approx(0.588235, abs=1e-6)
    assert sch.lr_mult(0, 0.9 * c) == pytest.approx(0.117647, abs=1e-6)
    assert sch.lr_mult(0, 0.915 * c) == pytest.approx(0.1) and sch.lr_mult(0, 0.99 * c) == 0.1  # MIN_LR floor
    assert [sch.momentum(s) for s in (0, 750, 1500, 4000)] == pytest.approx([0.92, 0.945, 0.97, 0.97])
    # Walk the budget as the trainer does, at F2.6's ~96 ms per step before the switch and ~141 ms after.
    elapsed, step, switch = 0.0, 0, None
    while elapsed < c:
        if switch is None and sch.looping(step, elapsed):
            switch = step
        elapsed += 141.0 if switch is not None else 96.35
        step += 1
    assert switch == 2178  # seed 42's log: layer_loop:enabled step:2178 (LOG42:161)
    assert 4900 < step < 4990  # 4,945 steps in the log
    steps_cfg = load_config("frontier", ["train.max_wallclock_seconds=0", "train.iterations=1000"], environ={})
    assert Schedule(steps_cfg).fraction(350, 1e9) == 0.35  # uncapped: step-based


def test_seed_schedule_is_unchanged_by_the_new_fields():
    sch = Schedule(load_config("record", environ={}))
    assert sch.cap_ms == 600_000.0 and sch.lr_mult(4000, 4000 * 91.4) == pytest.approx((600 - 365.6) / 319.9)
    assert not sch.looping(10**6, 10**9)


def test_frontier_optimiser_groups_and_weight_decay():
    from pgolf.model import build_model
    from pgolf.train.optim import build_optimizers

    cfg = load_config("frontier-tiny", environ={})
    model = build_model(cfg.model, seed=0)
    opts = build_optimizers(model, cfg.optim, torch.device("cpu"))
    emb, muon, scalar = opts[0], opts[1], opts[2]
    assert emb.param_groups[0]["weight_decay"] == 0.085 and emb.param_groups[0]["betas"] == (0.9, 0.99)
    assert scalar.param_groups[0]["weight_decay"] == 0.02 and muon.param_groups[0]["weight_decay"] == 0.095
    assert muon.param_groups[0]["row_normalize"] and muon.orthogonalize is polar_express
    assert muon.momentum_dtype == torch.bfloat16
    seed = build_optimizers(build_model(load_config("tiny", environ={}).model, seed=0), load_config("tiny").optim,
                            torch.device("cpu"))  # fmt: skip
    assert seed[0].param_groups[0]["weight_decay"] == 0.04 and "row_normalize" not in seed[2].param_groups[0]


# ---------------------------------------------------------------- the trainer
def micro(**over) -> list[str]:
    sets = {
        "model.num_layers": 4, "model.model_dim": 64, "model.num_heads": 2, "model.num_kv_heads": 1,
        "model.xsa_last_n": 4, "model.num_loops": 1, "model.loop_start": 1, "model.loop_end": 1,
        "model.parallel_start_layer": 3, "model.enable_looping_at": 0.5, "model.doc_max_len": 64,
        "train.train_seq_len": 64, "train.train_batch_tokens": 1024, "train.max_wallclock_seconds": 0,
        "train.iterations": 16, "train.val_loss_every": 8, "train.val_max_tokens": 2048,
        "train.val_batch_size": 2048, "train.train_log_every": 1, "train.checkpoint_every": 4,
        "train.warmup_steps": 2, "eval.seq_len": 64, "eval.stride": 32,
        # the tests' builtin dataset is SP1024 without CaseOps (the preset's own data is SP8192 CaseOps)
        "model.vocab_size": 1024, "data.caseops": "auto", "train.loader": "stream",
    }  # fmt: skip
    sets.update(over)
    return [f"{k}={v}" for k, v in sets.items()]


def train(out: Path, data: Path, *sets: str, nproc: int = 1) -> subprocess.CompletedProcess:
    args = ["train", "--preset", "frontier-tiny", "--no-env", "--data", str(data), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    cmd = pgolf_cmd(*args) if nproc == 1 else torchrun_cmd(nproc, *args)
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(OMP_NUM_THREADS="1"))


def events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_frontier_training_switches_the_loops_on_and_resumes_exactly(builtin_dir, tmp_path):
    ref = tmp_path / "ref"
    r = train(ref, builtin_dir, *micro(**{"optim.muon_momentum_leak": "true"}))
    assert r.returncode == 0, r.stderr[-3000:]
    log = (ref / "train.log").read_text()
    assert "loop_warmup_step:2/2" in log and "muon momentum kept" in log
    ev = [e for e in events(ref) if e.get("event") == "layer_loop"]
    assert [e["step"] for e in ev] == [8]  # frac = step / iterations >= 0.5, measured before the step
    losses = [e["train_loss"] for e in events(ref) if e["kind"] == "train"]
    assert len(losses) == 16 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    # A run killed after the switch (its step-16 checkpoint and final weights gone) resumes to the same weights.
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    shutil.rmtree(cut / "checkpoints" / "step_0000016")
    (cut / "final_model.safetensors").unlink()
    r = subprocess.run(pgolf_cmd("train", "--resume", str(cut), "--quiet", "--no-env"), capture_output=True,
                       text=True, env=clean_env(OMP_NUM_THREADS="1"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(ref / "final_model.safetensors")), load_file(str(cut / "final_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "resume:from step_0000012" in (cut / "train.log").read_text()


@pytest.mark.slow
def test_global_clipping_is_world_size_free_and_per_rank_clipping_is_not(builtin_dir, tmp_path):
    """F4.2: the record clips each rank's own gradient before averaging; pgolf clips the average."""
    sets = micro(**{"train.iterations": 3, "train.checkpoint_every": 0, "train.val_loss_every": 0,
                    "train.warmup_steps": 0, "optim.grad_clip_norm": 0.05})  # fmt: skip
    runs = {}
    for name, scope, nproc, accum in (("one", "global", 1, 2), ("global", "global", 2, 1), ("rank", "rank", 2, 1)):
        out = tmp_path / name
        sets_ = [*sets, f"optim.grad_clip_scope={scope}", f"train.grad_accum_steps={accum}"]
        r = train(out, builtin_dir, *sets_, nproc=nproc)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = [e["train_loss"] for e in events(out) if e["kind"] == "train"]
    np.testing.assert_allclose(runs["one"], runs["global"], rtol=0, atol=2e-4)
    assert runs["one"][0] == pytest.approx(runs["rank"][0], abs=2e-4)  # the same first batch and weights
    assert abs(runs["rank"][-1] - runs["global"][-1]) > 1e-3  # then the clipped updates differ
    with pytest.raises(ConfigError, match="grad_clip_scope"):
        load_config("frontier", ["optim.grad_clip_scope=local"], environ={})


DIST_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from pgolf import dist
    from pgolf.config import Config, RuntimeConfig
    from pgolf.eval import evaluate
    from pgolf.model.gpt import build_model
    from pgolf.data.bpb import ByteTables

    saved = torch.load(sys.argv[1], weights_only=False)
    cfg = Config.from_dict(saved["config"])
    info = dist.init(RuntimeConfig(device="cpu"))
    model = build_model(cfg.model, seed=0)
    model.load_state_dict(saved["state"])
    model.eval()
    tables = ByteTables(*saved["tables"])
    out = {}
    for name in ("tokens", "perturbed"):
        for method in ("plain", "sliding"):
            res, nll = evaluate(model, method, saved[name], tables, cfg, "cpu", max_tokens=saved["n"], record=True)
            out[f"{name}/{method}"] = {"world_size": res.world_size, "nll": nll.tolist()}
    if info.rank == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(out, f)
    dist.shutdown()
    """
)


@pytest.mark.slow
def test_no_information_crosses_a_bos_under_torchrun(tmp_path):
    from test_eval_fixtures import tables, val_tokens

    from pgolf.eval import evaluate
    from pgolf.model import build_model

    cfg = load_config("frontier-tiny", [*micro(), "eval.batch_seqs=4"], environ={})
    model = build_model(cfg.model, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) / p.size(-1) ** 0.5)
    n = 600
    tokens = val_tokens(n + 10).copy()
    tokens[[150, 400]] = 1  # cut the (long) validation text into documents
    lo, hi = 151, 400  # the second document's tokens after its BOS
    perturbed = tokens.copy()
    perturbed[lo:hi] = (perturbed[lo:hi].astype(np.int64) * 7 + 3) % 1022 + 2
    t = tables()
    torch.save({"config": cfg.to_dict(), "state": model.state_dict(), "n": n, "tokens": tokens,
                "perturbed": perturbed, "tables": (t.base_bytes, t.has_leading_space, t.is_boundary, t.unk_ids)},
               tmp_path / "model.pt")  # fmt: skip
    script = tmp_path / "run_eval.py"
    script.write_text(DIST_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "model.pt"),
           str(tmp_path / "out.json")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    # target i is tokens[i+1], predicted at position i: positions lo-1 .. hi-1 see the changed document
    outside = np.ones(n, dtype=bool)
    outside[lo - 1 : hi] = False
    for method in ("plain", "sliding"):
        a, b = np.array(two[f"tokens/{method}"]["nll"]), np.array(two[f"perturbed/{method}"]["nll"])
        assert two[f"tokens/{method}"]["world_size"] == 2
        assert np.array_equal(a[outside], b[outside]), method  # exactly: 0.0 difference
        assert np.abs(a[~outside] - b[~outside]).max() > 1e-3
        one = evaluate(model, method, tokens, t, cfg, "cpu", max_tokens=n, record=True)[1]
        np.testing.assert_allclose(a, one, atol=1e-4, err_msg=method)


def test_dry_run_prints_the_records_count_and_tables_and_reads_its_env_names():
    r = subprocess.run(pgolf_cmd("train", "--preset", "frontier", "--no-env", "--dry-run", "--json"),
                       capture_output=True, text=True, env=clean_env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 35_945_671 and len(out["banked"]) == 66 and len(out["tensors"]) == 128
    assert sum(t["params"] for t in out["tensors"]) == sum(t["params"] for t in out["banked"]) == 35_945_671
    qo = next(t for t in out["banked"] if t["name"] == "qo_bank")
    assert qo["shape"] == [22, 512, 512] and qo["group"] == "matrix"
    # the record's environment names: without recurrence the skip rows drop from 8 to 5
    r = subprocess.run(pgolf_cmd("train", "--preset", "frontier", "--dry-run", "--json"),
                       capture_output=True, text=True, env=clean_env(NUM_LOOPS="0"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 35_945_671 - 2 * 3 * 512
