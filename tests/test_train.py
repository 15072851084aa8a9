"""Optimiser, schedule and the training loop (resume, distributed equivalence, failure modes)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import clean_env, pgolf_cmd, torchrun_cmd
from safetensors.torch import load_file

from pgolf.config import load_config
from pgolf.model import build_model
from pgolf.train.muon import NS_COEFFS, Muon, aspect_scale, newton_schulz5
from pgolf.train.optim import group_sizes, route_parameters
from pgolf.train.schedule import ema_update, lr_multiplier, muon_momentum


# ---------------------------------------------------------------- pure functions
def test_warmdown_multiplier_wallclock():
    # 100 steps in 10 s (100 ms/step), warmdown 30 steps = 3 s of a 12 s cap: 2 s left -> 2/3
    assert lr_multiplier(100, 10_000.0, 20000, 30, 12.0) == pytest.approx(2000 / 3000)
    assert lr_multiplier(100, 8_000.0, 20000, 30, 12.0) == 1.0  # 4 s left > 2.4 s warmdown
    assert lr_multiplier(100, 13_000.0, 20000, 30, 12.0) == 0.0  # past the cap
    assert lr_multiplier(0, 0.0, 20000, 3500, 600.0) == 1.0
    # seed numbers: t = 91.4 ms/step, D = 319.9 s; multiplier 1 until ~280 s
    assert lr_multiplier(3000, 3000 * 91.4, 20000, 3500, 600.0) == 1.0
    assert lr_multiplier(4000, 4000 * 91.4, 20000, 3500, 600.0) == pytest.approx((600 - 365.6) / 319.9, rel=1e-6)


def test_warmdown_multiplier_step_based():
    assert lr_multiplier(69, 0, 100, 30, 0) == 1.0
    assert lr_multiplier(70, 0, 100, 30, 0) == pytest.approx(1.0)
    assert lr_multiplier(85, 0, 100, 30, 0) == pytest.approx(0.5)
    assert lr_multiplier(10, 0, 100, 0, 600) == 1.0


def test_muon_momentum_warmup():
    assert muon_momentum(0, 0.92, 0.99, 1500) == pytest.approx(0.92)
    assert muon_momentum(750, 0.92, 0.99, 1500) == pytest.approx(0.955)
    assert muon_momentum(5000, 0.92, 0.99, 1500) == pytest.approx(0.99)


def test_ema_update_formula():
    ema = {"a": torch.tensor([1.0, 2.0])}
    ema_update(ema, {"a": torch.tensor([3.0, -2.0], dtype=torch.bfloat16)}, 0.997)
    assert torch.allclose(ema["a"], 0.997 * torch.tensor([1.0, 2.0]) + 0.003 * torch.tensor([3.0, -2.0]))
    assert ema["a"].dtype == torch.float32


def test_newton_schulz_matches_direct_iteration_and_orthogonalises():
    torch.manual_seed(0)
    g = torch.randn(96, 64, dtype=torch.float64)
    a, b, c = NS_COEFFS
    x = (g / (g.norm() + 1e-7)).T  # tall: iterate on the transpose
    for _ in range(5):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    want = x.T
    got = newton_schulz5(g.float(), steps=5, dtype=torch.float32).double()
    assert torch.allclose(got, want, atol=1e-4)
    sv = torch.linalg.svdvals(got)
    assert sv.min() > 0.5 and sv.max() < 1.3  # the quintic's fixed band around 1
    bf = newton_schulz5(g.float(), steps=5).double()  # the seed's bf16 path
    assert (bf - want).abs().max() < 0.05


def test_muon_update_is_orthogonalised_momentum_with_decay():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 32))
    p0 = p.detach().clone()
    g = torch.randn(64, 32)
    p.grad = g.clone()
    opt = Muon([p], lr=0.1, momentum=0.9, backend_steps=5, weight_decay=0.04, dtype=torch.float32)
    opt.step()
    buf = g  # first step: m = g; nesterov: g + mu*m
    u = newton_schulz5(g + 0.9 * buf, steps=5, dtype=torch.float32) * aspect_scale(64, 32)
    assert torch.allclose(p.detach(), p0 * (1 - 0.1 * 0.04) - 0.1 * u, atol=1e-6)
    assert aspect_scale(1536, 512) == pytest.approx(math.sqrt(3))


def test_record_optimiser_routing_matches_seed():
    model = build_model(load_config("record", environ={}).model, seed=0)
    assert group_sizes(model) == {"embed": 786_432, "head": 0, "matrix": 26_050_560, "scalar": 25_702}
    g = route_parameters(model)
    assert len(g.matrix) == 68
    assert g.matrix[-2] is model.bigram.proj.weight and g.matrix[-1] is model.ve_shared.proj.weight


# ---------------------------------------------------------------- the loop
def micro_sets(**over) -> list[str]:
    sets = {
        "model.num_layers": 2,
        "model.model_dim": 64,
        "model.num_heads": 2,
        "model.num_kv_heads": 1,
        "model.ve_layers": "1",
        "model.xsa_last_n": 2,
        "model.bigram_dim": 64,
        "model.ve_dim": 64,
        "train.train_seq_len": 64,
        "train.train_batch_tokens": 1024,
        "train.max_wallclock_seconds": 0,
        "train.iterations": 12,
        "train.warmdown_iters": 4,
        "train.val_loss_every": 6,
        "train.val_max_tokens": 2048,
        "train.val_batch_size": 2048,
        "train.train_log_every": 1,
        "train.checkpoint_every": 4,
        "train.late_qat_threshold": 0.5,
        "eval.seq_len": 64,
        "eval.stride": 32,
        "train.warmup_steps": 0,
    }
    sets.update(over)
    return [f"{k}={v}" for k, v in sets.items()]


def train_cli(out, data, *sets, extra=(), env=None, **kw):
    args = ["train", "--preset", "tiny", "--no-env", "--data", str(data), "--out", str(out), "--quiet", *extra]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(pgolf_cmd(*args), capture_output=True, text=True, env=env or clean_env(), **kw)


def metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_learns_well_below_unigram(tiny_run, builtin_dir):
    from pgolf.data.stats import dataset_stats

    unigram = dataset_stats(builtin_dir)["unigram_bpb"]
    final = [m for m in metrics(tiny_run) if m["kind"] == "final"][0]
    train = [m for m in metrics(tiny_run) if m["kind"] == "train"]
    assert train[0]["train_loss"] > 6.5  # ~ln(1024) at init
    assert final["post_ema_val_bpb"] < unigram - 0.5, (final, unigram)
    log = (tiny_run / "train.log").read_text()
    assert "model_params:" in log and "DIAGNOSTIC post_ema" in log
    assert (tiny_run / "final_model.safetensors").is_file()


def test_last_and_post_ema_validation_use_the_whole_split(tiny_run, builtin_dir):
    """Periodic validation is capped at 16,384 targets; the final figures must not be."""
    from pgolf.data.bpb import build_byte_tables
    from pgolf.data.loader import load_val_tokens
    from pgolf.data.tokenizer import find_tokenizer, load_tokenizer
    from pgolf.eval.common import prepare_stream
    from pgolf.eval.plain import evaluate_plain
    from pgolf.quant.artifact import model_from_state

    cfg = load_config("tiny", [], environ={})
    whole = prepare_stream(load_val_tokens(builtin_dir, 1024), cfg.eval_seq_len)
    assert len(whole) - 1 > 16384
    log = (tiny_run / "train.log").read_text()
    assert f"tokens:{len(whole) - 1} periodic_val_tokens:16384" in log
    final = [m for m in metrics(tiny_run) if m["kind"] == "final"][0]
    model = model_from_state(cfg.model, load_file(str(tiny_run / "final_model.safetensors"))).eval()
    tables = build_byte_tables(load_tokenizer(find_tokenizer(builtin_dir, None), 1024), 1024)
    totals = evaluate_plain(model, whole, tables, cfg.eval_seq_len, 16, torch.device("cpu"))
    assert totals.val_bpb == pytest.approx(final["post_ema_val_bpb"], abs=1e-6)


@pytest.mark.slow
def test_resume_after_kill_gives_identical_weights(builtin_dir, tmp_path):
    sets = micro_sets(**{"train.iterations": 40, "train.checkpoint_every": 10})
    ref = tmp_path / "ref"
    r = train_cli(ref, builtin_dir, *sets)
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    args = ["train", "--preset", "tiny", "--no-env", "--data", str(builtin_dir), "--out", str(killed), "--quiet"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.Popen(pgolf_cmd(*args), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_0000020").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final_model.safetensors").exists()
    r = subprocess.run(
        pgolf_cmd("train", "--resume", str(killed), "--quiet", "--no-env"),
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(ref / "final_model.safetensors")), load_file(str(killed / "final_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [m["step"] for m in metrics(killed) if m["kind"] == "train"]
    assert steps == list(range(1, 41))  # the resumed run reads as one run

    def vals(run):
        return [(m["step"], m["val_loss"], m["val_bpb"]) for m in metrics(run) if m["kind"] == "val"]

    assert vals(ref) == vals(killed)


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_accumulation_steps(builtin_dir, tmp_path):
    sets = micro_sets(**{"train.checkpoint_every": 0, "train.iterations": 8})
    one = tmp_path / "one"
    r = train_cli(one, builtin_dir, *sets, "train.grad_accum_steps=2")
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two"
    args = ["train", "--preset", "tiny", "--no-env", "--data", str(builtin_dir), "--out", str(two), "--quiet"]
    for s in [*sets, "train.grad_accum_steps=1"]:
        args += ["--set", s]
    r = subprocess.run(torchrun_cmd(2, *args), capture_output=True, text=True, env=clean_env(OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["grad_accum_steps"] == 1
    l1 = [m["train_loss"] for m in metrics(one) if m["kind"] == "train"]
    l2 = [m["train_loss"] for m in metrics(two) if m["kind"] == "train"]
    assert len(l1) == len(l2) == 8
    np.testing.assert_allclose(l1, l2, rtol=0, atol=2e-4)
    v1 = [m["val_loss"] for m in metrics(one) if m["kind"] == "val"]
    v2 = [m["val_loss"] for m in metrics(two) if m["kind"] == "val"]
    np.testing.assert_allclose(v1, v2, rtol=0, atol=2e-4)


def test_non_finite_loss_stops_with_one_line_and_keeps_checkpoint(builtin_dir, tmp_path):
    out = tmp_path / "nan"
    r = train_cli(
        out,
        builtin_dir,
        *micro_sets(**{"optim.scalar_lr": 1e20, "optim.grad_clip_norm": 0, "train.checkpoint_every": 1}),
    )
    assert r.returncode == 3, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pgolf: error: non-finite training loss at step")
    assert not (out / "final_model.safetensors").exists()
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert ckpts, "the last good checkpoint must be kept"
    state = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


def test_dry_run_json_reports_params():
    r = subprocess.run(
        pgolf_cmd("train", "--preset", "record", "--no-env", "--dry-run", "--json"),
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == 26_862_694
    r = subprocess.run(
        pgolf_cmd("train", "--preset", "record", "--dry-run", "--json"),
        capture_output=True,
        text=True,
        env=clean_env(NUM_HEADS="7"),
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model.num_heads" in r.stderr


def test_existing_run_is_not_overwritten(builtin_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = train_cli(out, builtin_dir, *micro_sets())
    assert r.returncode == 2 and "exists" in r.stderr
    assert (out / "keep.txt").read_text() == "precious"
