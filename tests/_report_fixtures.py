"""Tiny synthetic run directories in the layout `pgolf run` writes (for the report tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

REFERENCE_LOGS = Path("/work/shared/reference/pr1313_logs")

# Score-first flags as the eval module records them.
METHODS = {"plain": True, "sliding": True, "slot": False, "slot-causal": True, "ttt": True}
BASE_BPB = {"plain": 1.30, "sliding": 1.27, "slot": 0.95, "slot-causal": 1.26, "ttt": 1.255}
BPB_PER_NAT = 1.0 / (math.log(2) * 2.43)  # ~2.43 bytes per token


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def make_run(
    root: Path,
    seed: int = 1337,
    name: str | None = None,
    shift: float = 0.0,
    methods: dict[str, bool] | None = None,
    steps: int = 200,
    model_bytes: int = 15_500_000,
    code_bytes: int = 60_000,
    preset: str = "record",
    overrides: dict | None = None,
    skip: tuple[str, ...] = (),
) -> Path:
    """Write RUN/ with config, metrics, log, export, eval/*, dataset, system.

    `shift` moves every bpb (and loss) by that many bpb, to make seeds differ;
    `skip` names files to leave out (e.g. "metrics.jsonl").
    """
    run = Path(root) / (name or f"run_seed{seed}")
    run.mkdir(parents=True, exist_ok=True)
    methods = dict(METHODS if methods is None else methods)
    overrides = (
        {"train.seed": {"value": seed, "source": "--set"}, "eval.slot_steps": {"value": 16, "source": "--set"}}
        if overrides is None
        else overrides
    )
    files: dict[str, object] = {}
    files["config.json"] = {
        "preset": preset,
        "model": {"vocab_size": 1024, "num_layers": 2, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2},
        "train": {"seed": seed, "iterations": steps, "train_seq_len": 128, "max_wallclock_seconds": 600.0},
        "optim": {"matrix_lr": 0.025},
        "eval": {"stride": 64, "slot_steps": 16},
        "data": {"data_path": "data/x"},
        "runtime": {"device": "cpu"},
        "overrides": overrides,
        "world_size": 1,
        "grad_accum_steps": 8,
        "params": 123456,
    }
    lines = []
    for s in range(0, steps + 1, 10):
        if s > 0:
            loss = 2.2 + 5.0 * math.exp(-s / 25) + 0.03 * math.sin(s) + shift / BPB_PER_NAT
            lines.append(
                {
                    "kind": "train",
                    "step": s,
                    "train_loss": loss,
                    "lr_mult": 1.0 - s / (2 * steps),
                    "tokens_per_s": 5000.0,
                    "elapsed_s": 0.5 * s,
                }
            )
        if s % 50 == 0:
            vl = 2.25 + 4.7 * math.exp(-s / 30) + shift / BPB_PER_NAT
            lines.append({"kind": "val", "step": s, "val_loss": vl, "val_bpb": vl * BPB_PER_NAT, "elapsed_s": 0.5 * s})
    lines.insert(
        len(lines) - 4,
        {"kind": "event", "step": int(steps * 0.8), "event": "late_qat", "scale": 0.15, "elapsed_s": 0.4 * steps},
    )
    lines.append({"kind": "event", "step": steps, "event": "stop_wallclock", "elapsed_s": 0.5 * steps})
    lines.append(
        {
            "kind": "final",
            "step": steps,
            "train_seconds": 0.5 * steps,
            "post_ema_val_loss": 2.3 + shift / BPB_PER_NAT,
            "post_ema_val_bpb": 1.365 + shift,
        }
    )
    files["metrics.jsonl"] = "\n".join(json.dumps(r) for r in lines) + "\n"
    files["train.log"] = (
        f"seed:{seed}\nmodel_params:123456\nworld_size:1 grad_accum_steps:8\n"
        f"step:{steps}/{steps} val_loss:2.3000 val_bpb:1.3650 train_time:{steps * 500}ms "
        "step_avg:500.00ms\n"
    )
    files["export.json"] = {
        "path": str(run / "model.ptz"),
        "quant": "rtn",
        "model_bytes": model_bytes,
        "code_bytes": code_bytes,
        "total_bytes": model_bytes + code_bytes,
        "limit_bytes": 16_000_000,
        "fits": model_bytes + code_bytes <= 16_000_000,
        "code_files": ["pgolf/model/gpt.py"],
        "per_tensor": [{"name": "tok_emb.weight", "kind": "int8", "bytes": 600_000}],
    }
    for m, sf in methods.items():
        bpb = BASE_BPB.get(m, 1.28) + shift
        files[f"eval/{m}.json"] = {
            "method": m,
            "val_loss": bpb / BPB_PER_NAT,
            "val_bpb": bpb,
            "tokens": 100_000,
            "bytes": 243_000,
            "seconds": 12.5,
            "score_first": sf,
            "world_size": 1,
            "device": "cpu",
            "params": {"stride": 64} if m == "sliding" else {},
            "max_tokens": None,
        }
    files["dataset.json"] = {  # the shape of pgolf.data.manifest.new_manifest
        "format_version": 1,
        "kind": "builtin",
        "vocab_size": 1024,
        "counts": {"train_tokens": 1_000_000, "val_tokens": 100_000, "val_docs": 50, "val_bytes": 243_000},
        "tokenizer": {"file": "tokenizer.model", "sha256": "cd" * 32},
        "source_fingerprint": {"sha256": "ab" * 32, "docs": 500},
        "files": {"train_000000.bin": "ef" * 32, "val_000000.bin": "01" * 32},
        "created_by": "pgolf 0.1.0",
        "unigram_bpb": 1.9,
    }
    files["system.json"] = {
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "platform": "Linux-x86_64",
        "cpu": "x86_64",
        "cpu_count": 2,
        "device": "cpu",
        "gpu": None,
        "pgolf": "0.1.0",
        "git_commit": None,
    }
    for rel, obj in files.items():
        if rel in skip:
            continue
        p = run / rel
        if isinstance(obj, str):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(obj)
        else:
            _dump(p, obj)
    return run
