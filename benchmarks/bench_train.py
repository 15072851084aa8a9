"""Training throughput: tokens/s, model FLOP/s against this machine's measured matmul peak, peak memory.

    python benchmarks/bench_train.py                       # tiny preset on the CPU
    python benchmarks/bench_train.py --preset frontier-tiny  # loops off and on, and the whole-run mean
    python benchmarks/bench_train.py --preset record --accum 8 --steps 10   # one GPU, the seed's batch

Runs the real training step (pgolf.train.trainer.Trainer.train_step) on the preset's own builtin
dataset (built if missing; --data for another). Prints a table and writes
benchmarks/results/train_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import matmul_peak, sync, table, write_result  # noqa: E402

from pgolf.config import load_config  # noqa: E402
from pgolf.model.flops import training_flops_per_token  # noqa: E402


def preset_data(cfg, data: str | Path | None) -> Path:
    """The preset's own builtin dataset (its vocabulary, CaseOps and byte sidecar: frontier-tiny's
    is SP8192-CaseOps) at `--data` or, without it, at the preset's path; built if missing as
    `pgolf run` builds it."""
    from pgolf.pipeline import build_preset_builtin, has_dataset

    path = Path(data) if data else Path(cfg.data.data_path)
    if not has_dataset(path):
        build_preset_builtin(path, cfg)
    return path


def add_step_args(ap: argparse.ArgumentParser, steps: int) -> None:
    """The options every training-step benchmark takes."""
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--data", help="dataset directory (default: the preset's own builtin dataset, built if missing)")
    ap.add_argument("--steps", type=int, default=steps, help="measured steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    ap.add_argument("--accum", type=int, default=0, help="gradient accumulation steps (0 = preset)")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out")


@contextlib.contextmanager
def step_trainer(args: argparse.Namespace):
    """(config, Trainer) ready to call `train_step`, in a throw-away run directory."""
    sets = list(args.sets) + ["train.warmup_steps=0", "train.checkpoint_every=0"]
    if args.accum:
        sets.append(f"train.grad_accum_steps={args.accum}")
    cfg = load_config(args.preset, sets, environ={})
    from pgolf.train.trainer import Trainer

    data = preset_data(cfg, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, data, Path(tmp) / "run", show_progress=False)
        tr.state.ema = {k: v.detach().float().clone() for k, v in tr.model.state_dict().items()}
        tr.fwd.train()
        try:
            yield cfg, tr
        finally:
            tr.files.close()


def measure(cfg, tr, args, looping: bool) -> dict:
    """Time `args.steps` real training steps (after `args.warmup` untimed ones) in one loop state."""
    dev = tr.device
    tr.model.set_looping(looping)
    t_warm = time.perf_counter()
    for _ in range(args.warmup):  # with compile on, this is where compilation happens
        tr.train_step(1.0)
    sync(dev)
    warmup_s = time.perf_counter() - t_warm
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        tr.train_step(1.0)
    sync(dev)
    dt = (time.perf_counter() - t0) / args.steps
    tokens = cfg.train.train_batch_tokens
    fpt = training_flops_per_token(cfg.model, cfg.train.train_seq_len, looping=looping)
    mem = (
        torch.cuda.max_memory_allocated(dev)
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "looping": looping,
        "warmup_s": warmup_s,
        "step_ms": dt * 1000,
        "tokens_per_s": tokens / dt,
        "flops_per_token": fpt,
        "achieved_flops": fpt * tokens / dt,
        "peak_memory_bytes": mem,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(ap, steps=10)
    ap.add_argument(
        "--loops", choices=("both", "off", "on"), default="both", help="depth recurrence states to time (if any)"
    )
    args = ap.parse_args()

    with step_trainer(args) as (cfg, tr):
        dev = tr.device
        states = [False, True] if args.loops == "both" else [args.loops == "on"]
        if cfg.model.num_loops == 0:
            states = [False]
        runs = [measure(cfg, tr, args, looping) for looping in states]
        compiled, attention, accum = tr.compiled, tr.attention, tr.accum
    peak = matmul_peak(dev)
    for r in runs:
        r["utilisation"] = r["achieved_flops"] / peak["flops"]
    # A whole run spends the fraction enable_looping_at of its time with the loops off, the rest on.
    if len(runs) == 2:
        f = cfg.model.enable_looping_at
        whole = {k: f * runs[0][k] + (1 - f) * runs[1][k] for k in ("tokens_per_s", "achieved_flops")}
        whole["utilisation"] = whole["achieved_flops"] / peak["flops"]
        whole["step_ms"] = 1000 * cfg.train.train_batch_tokens / whole["tokens_per_s"]
    else:
        whole = {k: runs[0][k] for k in ("tokens_per_s", "achieved_flops", "utilisation", "step_ms")}
    tokens = cfg.train.train_batch_tokens
    result = {
        "device": str(dev),
        "preset": args.preset,
        "overrides": args.sets,
        "compiled": compiled,
        "attention": attention,
        "grad_accum_steps": accum,
        "tokens_per_step": tokens,
        "warmup_steps": args.warmup,
        "seq_len": cfg.train.train_seq_len,
        # the loops-off figures at the top level (what a model without recurrence always runs)
        **{k: runs[0][k] for k in ("warmup_s", "step_ms", "tokens_per_s", "flops_per_token", "achieved_flops")},
        "matmul_peak": peak,
        "utilisation": runs[0]["utilisation"],
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
        "runs": runs,
        "whole_run": whole,
    }
    rows = [
        [
            args.preset,
            ("on" if r["looping"] else "off") if cfg.model.num_loops else "-",
            str(dev),
            f"{r['step_ms']:.1f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['flops_per_token'] / 1e6:.2f}",
            f"{r['achieved_flops'] / 1e9:.1f}",
            f"{peak['flops'] / 1e9:.1f} ({peak['dtype']})",
            f"{100 * r['utilisation']:.1f}%",
            f"{r['peak_memory_bytes'] / 2**20:,.0f}",
            f"{r['warmup_s']:.1f}",
            "yes" if compiled else "no",
        ]
        for r in runs
    ]
    header = ["preset", "loops", "device", "step ms", "tokens/s", "MFLOP/token", "GFLOP/s", "matmul peak GFLOP/s",
              "of peak", "peak MiB", "warm-up s", "compiled"]  # fmt: skip
    print(table(rows, header))
    if len(runs) == 2:
        print(
            f"whole run (loops on from {cfg.model.enable_looping_at:.0%} of the budget): "
            f"{whole['tokens_per_s']:,.0f} tokens/s, {100 * whole['utilisation']:.1f}% of peak"
        )
    name = f"train_{args.preset}_{dev.type}"
    print(f"wrote {write_result(name, result, args.out)}")


if __name__ == "__main__":
    main()
