"""`pgolf export` with quant.scheme = "frontier": calibrate, quantise, pack, verify, account (F5).

Calibration: the Hessians the trainer saved inside its budget (RUN/hessians.safetensors,
calibrate.py) when present; otherwise they are collected here from TRAINING tokens with
the record's sampler, and the report says the calibration ran after training, outside the
budget (as the record's does, F8.2). The container is the per-group .pgrp
(quant.compressor = "pergroup") or the single-stream pgolf container ("brotli" / "lzma").
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from pgolf.config import Config, ModelConfig, load_config
from pgolf.errors import ArtifactError, PgolfError
from pgolf.model.record_names import from_record_state_dict
from pgolf.quant import calibrate, container, pergroup, recordfmt
from pgolf.quant.frontier import FrontierQuantized, dequantize_frontier, quantize_frontier

DEFAULT_NAMES = {"pergroup": "final_model.frontier.pgrp", "brotli": "final_model.frontier.pgolf"}
DEFAULT_NAMES["lzma"] = DEFAULT_NAMES["brotli"]


def options(cfg: Config) -> pergroup.Options:
    q = cfg.quant
    return pergroup.Options(
        codecs=q.codecs, row_sort=q.row_sort, lrzip_threads=q.lrzip_threads, workers=q.compress_workers
    )


def calib_batch_seqs(cfg: Config) -> int:
    tokens = cfg.quant.calib_batch_tokens or cfg.train.train_batch_tokens // 8  # one of the record's 8 ranks
    return max(1, tokens // cfg.train.train_seq_len)


def export_header(cfg: Config, fq: FrontierQuantized) -> dict:
    from pgolf import __version__

    return {
        "producer": f"pgolf {__version__}",
        "preset": cfg.preset,
        "model": cfg.to_dict()["model"],
        "quantiser": "frontier",
        "quant": cfg.to_dict()["quant"],
        "meta": fq.meta,
    }


def export_frontier(
    run_dir: Path,
    cfg: Config,
    state: Mapping[str, Tensor],
    out: str | Path | None,
    *,
    data: str | Path | None = None,
    device: str = "cpu",
    bundle: str | Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict:
    from pgolf.quant import codesize
    from pgolf.quant.artifact import (
        LIMIT_BYTES,
        eval_model_config,
        export_report_path,
        model_from_state,
        run_data_dir,
        write_export_report,
    )

    t0 = time.perf_counter()
    q = cfg.quant
    out = Path(out) if out is not None else run_dir / DEFAULT_NAMES[q.compressor]
    state = {k: v for k, v in state.items() if "mtp_heads" not in k}  # training-only heads (SPEC 7.7)
    timing: dict[str, float] = {}

    saved = calibrate.load_run_hessians(run_dir)
    if saved is not None:
        hessians, act_rms, acct = saved
        log(f"export: using the trainer's Hessians ({acct.get('batches')} batches, {acct.get('when')})")
    elif q.gptq_calibration_batches > 0:
        t = time.perf_counter()
        dd = run_data_dir(run_dir, cfg, data)
        model = model_from_state(eval_model_config(cfg.model), state, device).eval()
        batches = calibrate.record_batches(
            dd, cfg.train.train_seq_len, calib_batch_seqs(cfg), q.gptq_calibration_batches
        )
        dtype = torch.float64 if q.hessian_dtype == "float64" else torch.float32
        hessians, act_rms, info = calibrate.collect_hessians(model, batches, dtype=dtype)
        loop_s = _loop_seconds(run_dir)
        acct = calibrate.accounting(info, loop_s, cfg.train.max_wallclock_seconds, at_export=True)
        timing["calib_s"] = time.perf_counter() - t
        log(f"export: calibrated on {info['tokens']} training tokens in {info['seconds']:.1f}s (after training)")
        del model
    else:
        hessians, act_rms, acct = {}, {}, {"batches": 0, "when": "none: plain SDClip rounding", "within_budget": True}

    flat = from_record_state_dict(state)  # a record's banked state dict, or pgolf's names as they are
    fq = quantize_frontier(flat, hessians, q, act_rms=act_rms, device=device, log=log)
    timing.update(fq.timing)
    header = export_header(cfg, fq)
    t = time.perf_counter()
    if q.compressor == "pergroup":
        blob, pack = pergroup.build(header, fq.result, options(cfg))
        fmt = "pergroup"
    else:
        codec = "xz" if q.compressor == "lzma" else "brotli"
        blob, pack = container.container_bytes(header, fq.result, codec), {"codec": codec}
        fmt = "pgolf"
    export_report_path(run_dir, out).unlink(missing_ok=True)  # never a report describing another file (issue 11)
    container.atomic_write(out, blob)
    timing["pack_s"] = time.perf_counter() - t
    for k, v in pack.get("timing", {}).items():
        timing[f"pack_{k}"] = v
    t = time.perf_counter()
    _verify(out, fq, flat)
    timing["verify_s"] = time.perf_counter() - t

    from pgolf.quant.artifact import run_tokenizer

    code = codesize.accounting(run_tokenizer(run_dir, cfg, data))
    if bundle is not None:
        codesize.write_bundle(bundle)
    total = len(blob) + code["code_bytes"]
    timing["total_s"] = time.perf_counter() - t0
    report = {
        "path": str(out),
        "format": fmt,
        "scheme": "frontier",
        "quant": "frontier",
        "codec": pack.get("codec", "per group"),
        "quant_config": dataclasses.asdict(q),
        "calibration": acct,
        "model_bytes": len(blob),
        **code,
        "bundle": str(bundle) if bundle is not None else None,
        "total_bytes": total,
        "limit_bytes": LIMIT_BYTES,
        "fits": total <= LIMIT_BYTES,
        "margin_bytes": LIMIT_BYTES - total,
        "counts": fq.counts(),
        "dropped": [],
        "params": int(sum(t.numel() for t in state.values())),
        "packing": {k: v for k, v in pack.items() if k != "timing"},
        "per_tensor": fq.report,
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
    write_export_report(run_dir, out, report)
    return report


def _loop_seconds(run_dir: Path) -> float | None:
    """The training loop's seconds, from the trainer's summary if it wrote one."""
    for name in ("train_summary.json", "summary.json"):
        p = run_dir / name
        if p.is_file():
            try:
                d = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            for key in ("train_time_s", "train_seconds", "elapsed_s"):
                if isinstance(d.get(key), (int, float)):
                    return float(d[key])
    return None


def _verify(path: Path, fq: FrontierQuantized, flat: Mapping[str, Tensor]) -> None:
    """Read the file back: every stored tensor bit for bit, and the meta."""
    head = path.read_bytes()[:16]
    if pergroup.is_pergroup(head):
        header, packed = pergroup.read(path)
    else:
        header, packed = container.read_container(path)
    if header.get("meta") != fq.meta or set(packed) != set(fq.result):
        raise ArtifactError(f"{path}: written artifact does not read back identically (meta or names)")
    for name, t in fq.result.items():
        got = packed[name]
        if got.dtype != t.dtype or got.shape != t.shape or not torch.equal(got, t):
            raise ArtifactError(f"{path}: written artifact does not read back identically ({name})")
    dequantize_frontier(packed, fq.meta, flat, str(path))


# --------------------------------------------------------------------------- reading
def read_frontier(
    path: Path, head: bytes, preset: str | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, Tensor], dict, ModelConfig, dict]:
    """(packed, meta, model config, info) of a .pgrp (ours) or a record PGRP artifact."""
    if pergroup.is_pergroup(head):
        header, packed = pergroup.read(path)
        meta, model = header.get("meta"), header.get("model")
        if not isinstance(meta, dict) or not isinstance(model, dict):
            raise ArtifactError(f"{path}: header lacks the quantisation meta or the model config")
        try:
            cfg = Config.from_dict({"preset": str(header.get("preset", "")), "model": model})
        except PgolfError as e:
            raise ArtifactError(f"{path}: header's model config is invalid ({e})") from None
        info = {"format": "pergroup", "preset": cfg.preset, "quantiser": "frontier", "producer": header.get("producer")}
        return packed, meta, cfg.model, info
    name = preset or "frontier"
    try:  # before decompressing anything: a record file names no model
        cfg = load_config(name, environ=environ)
    except PgolfError as e:
        raise ArtifactError(f"{path}: a record artifact needs its model's preset ({e})") from None
    packed, meta = recordfmt.read(path)
    return packed, meta, cfg.model, {"format": "record-pergroup", "preset": name, "quantiser": "frontier"}


def dequantized_state(
    path: Path, packed: Mapping[str, Tensor], meta: Mapping, model_cfg: ModelConfig
) -> dict[str, Tensor]:
    """The model's state dict from a frontier artifact's entries (the record's export names are pgolf's)."""
    from pgolf.quant.artifact import eval_model_config, skeleton

    try:
        template = skeleton(eval_model_config(model_cfg)).state_dict()
    except PgolfError as e:
        raise ArtifactError(f"{path}: cannot build its model ({e})") from None
    return dequantize_frontier(packed, meta, template, str(path))


def load_frontier_model(path: Path, packed, meta, model_cfg: ModelConfig, info: dict, device):
    from pgolf.quant.artifact import check_finite, eval_model_config, model_from_state

    state = dequantized_state(path, packed, meta, model_cfg)
    check_finite(path, state)
    model = model_from_state(eval_model_config(model_cfg), state, device)
    model.artifact_info = {**info, "path": str(path)}
    return model.eval()
