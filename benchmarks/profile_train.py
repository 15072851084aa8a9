"""Where a training step's time goes: torch.profiler over real steps, ops ranked by self time.

    python benchmarks/profile_train.py                      # tiny preset, this machine's CPU
    python benchmarks/profile_train.py --threads 1          # compare thread settings
    python benchmarks/profile_train.py --preset frontier-tiny --loops off   # before the loop switch
    python benchmarks/profile_train.py --preset record --accum 8 --steps 2   # on a GPU

Runs pgolf.train.trainer.Trainer.train_step (the step `pgolf train` runs) on the builtin
corpus, profiles `--steps` steps after `--warmup` untimed ones, prints the top operators by
self time with their share of the step, and the share spent in matrix multiplies (the part
that can approach the matmul peak) against everything else. Writes
benchmarks/results/profile_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import sync, table, write_result  # noqa: E402
from bench_train import add_step_args, step_trainer  # noqa: E402

# aten ops that are dense matrix products (what the FLOP count of pgolf.model.flops covers).
MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::matmul",
    "aten::linear",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_flash_attention_forward",
    "aten::_flash_attention_backward",
    "aten::_scaled_dot_product_cudnn_attention",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_args(ap, steps=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--loops", choices=("off", "on"), default="on", help="depth recurrence state (if the model has it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with step_trainer(args) as (_cfg, tr):
        dev = tr.device
        tr.model.set_looping(args.loops == "on")
        for _ in range(args.warmup):
            tr.train_step(1.0)
        sync(dev)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                tr.train_step(1.0)
            sync(dev)
        wall = (time.perf_counter() - t0) / args.steps

    use_cuda = dev.type == "cuda"
    events = prof.key_averages()

    def self_us(e) -> float:
        return float(e.self_device_time_total if use_cuda else e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)
    matmul = sum(self_us(e) for e in events if e.key in MATMUL_OPS)
    rows = [
        {
            "op": e.key,
            "calls_per_step": e.count / args.steps,
            "self_ms_per_step": self_us(e) / 1e3 / args.steps,
            "share": self_us(e) / total,
        }
        for e in ranked[: args.top]
    ]
    print(
        table(
            [
                [r["op"], f"{r['calls_per_step']:.0f}", f"{r['self_ms_per_step']:.1f}", f"{100 * r['share']:.1f}%"]
                for r in rows
            ],
            ["op", "calls/step", "self ms/step", "share"],
        )
    )
    print(
        f"step {wall * 1000:.1f} ms under the profiler; matrix products {100 * matmul / total:.1f}% of self time, "
        f"everything else {100 * (1 - matmul / total):.1f}%; threads {torch.get_num_threads()}"
    )
    result = {
        "device": str(dev),
        "preset": args.preset,
        "overrides": args.sets,
        "steps": args.steps,
        "step_ms_profiled": wall * 1000,
        "matmul_share": matmul / total,
        "top": rows,
    }
    name = f"profile_{args.preset}_{dev.type}" + (f"_t{args.threads}" if args.threads else "")
    print(f"wrote {write_result(name, result, args.out)}")


if __name__ == "__main__":
    main()
