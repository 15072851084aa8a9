"""Export a run into an artifact, account for its size, and load any artifact back as a model.

Export (SPEC 7.1): read RUN/config.json + RUN/final_model.safetensors, drop the MTP
heads, quantise (RTN as the seed, or GPTQ), write our container (or the seed's .ptz),
read it back to verify, and report model + code bytes against the 16,000,000-byte limit.

Loading accepts our artifacts (which carry their model config) and the seed's
`final_model.int6.ptz` (which carries none: the caller names the preset, and the
challenge's environment variables override it exactly as in training).
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
from pgolf.quant import container, pergroup, recordfmt, seedfmt
from pgolf.quant.rtn import (
    PASSTHROUGH_MAX_NUMEL,
    Quantized,
    classify,
    dequantize_state_dict,
    quantize_state_dict,
)

LIMIT_BYTES = 16_000_000  # decimal, code + compressed model
DEFAULT_NAMES = {"pgolf": "final_model.int6.pgolf", "seed": "final_model.int6.ptz"}
RUN_CONFIG = "config.json"
RUN_WEIGHTS = "final_model.safetensors"
EXPORT_JSON = "export.json"


# --------------------------------------------------------------------------- run directories
def read_run(run_dir: str | Path) -> tuple[Config, dict[str, Tensor]]:
    """The run's Config and final state dict (live dtypes), or one ArtifactError line."""
    run_dir = Path(run_dir)
    cfg_path, w_path = run_dir / RUN_CONFIG, run_dir / RUN_WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ArtifactError(f"{run_dir}: no {p.name} (not a finished run directory?)")
    try:
        from pgolf.safeio import read_json_file

        cfg = Config.from_dict(read_json_file(cfg_path))  # size and depth bounded before parsing
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as e:
        raise ArtifactError(f"{cfg_path}: unreadable config ({container.one_line(e)})") from None
    except PgolfError as e:
        raise ArtifactError(f"{cfg_path}: {e}") from None
    try:
        from safetensors.torch import load_file

        state = load_file(str(w_path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ArtifactError(f"{w_path}: unreadable weights ({container.one_line(e)[:200]})") from None
    template = skeleton(cfg.model).state_dict()
    for name, ref in template.items():
        t = state.get(name)
        if t is None or tuple(t.shape) != tuple(ref.shape):
            got = "missing" if t is None else f"shape {list(t.shape)}"
            raise ArtifactError(f"{w_path}: {name} is {got}; the run's config needs {list(ref.shape)}")
    extra = sorted(set(state) - set(template))
    if extra:
        raise ArtifactError(f"{w_path}: {len(extra)} tensors the run's config lacks (first: {extra[0]})")
    check_finite(w_path, state)
    return cfg, state


def write_run(
    run_dir: str | Path, cfg: Config, state: Mapping[str, Tensor], data_dir: str | Path | None = None
) -> Path:
    """A run directory `read_run` reads, for weights that `pgolf train` did not write.

    config.json (the config plus the trainer's run facts for one process) and the final
    weights, as they are, unchecked; with `data_dir`, where `run_data_dir` finds the data.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    d = cfg.to_dict()
    d.update(world_size=1, grad_accum_steps=1, params=sum(int(v.numel()) for v in state.values()))
    container.atomic_write(run_dir / RUN_CONFIG, json.dumps(d, indent=1).encode())
    tmp = run_dir / (RUN_WEIGHTS + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(run_dir / RUN_WEIGHTS)
    if data_dir is not None:
        container.atomic_write(run_dir / "data_dir", str(data_dir).encode())
    return run_dir


def with_quant_sets(cfg: Config, sets: list[str]) -> Config:
    """The run's config with `quant.FIELD=VALUE` settings applied (the export's own section only)."""
    from pgolf.config import _assign, resolve_key, validate
    from pgolf.errors import ConfigError

    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected quant.FIELD=VALUE")
        full = resolve_key(key.strip())
        if not full.startswith("quant."):
            raise ConfigError(f"--set {key}: pgolf export changes only the [quant] section (got {full})")
        _assign(cfg, full, value.strip(), source="--set")
    validate(cfg)
    return cfg


def run_data_dir(run_dir: Path, cfg: Config, explicit: str | Path | None) -> Path:
    """--data, else the path the trainer recorded in RUN/data_dir, else the config's data_path."""
    if explicit is not None:
        return Path(explicit)
    recorded = Path(run_dir) / "data_dir"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    return Path(cfg.data.data_path)


# --------------------------------------------------------------------------- models
def eval_model_config(model_cfg: ModelConfig) -> ModelConfig:
    """The evaluation model has no MTP heads (SPEC 7.7)."""
    return dataclasses.replace(model_cfg, mtp_num_heads=0)


def skeleton(model_cfg: ModelConfig):
    """The GPT on the meta device: names, shapes and dtypes without the (slow) initialisation."""
    from pgolf.model.gpt import GPT

    with torch.device("meta"):
        return GPT(model_cfg)


def check_finite(path: object, state: Mapping[str, Tensor]) -> None:
    """Refuse weights holding NaN or inf: their loss is NaN, which no JSON report can carry."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise ArtifactError(f"{path}: {name} holds {n} non-finite weights (NaN/inf); refused")


def model_from_state(model_cfg: ModelConfig, state: Mapping[str, Tensor], device: str | torch.device = "cpu"):
    """A GPT holding exactly `state` (strict), built without spending time on a random init."""
    model = skeleton(model_cfg)
    if any(True for _ in model.buffers()):  # buffers would need their real values: build normally
        from pgolf.model import build_model

        model = build_model(model_cfg, seed=0)
    else:
        model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model.to(device)


# --------------------------------------------------------------------------- quantisation
def quantize_for_export(
    state: Mapping[str, Tensor],
    cfg: Config,
    quant: str = "rtn",
    hessians: Mapping[str, Tensor] | None = None,
    passthrough_max_numel: int = PASSTHROUGH_MAX_NUMEL,
    device: str = "cpu",
) -> Quantized:
    int6_fn = None
    if quant == "gptq":
        from pgolf.quant.gptq import make_int6_fn

        int6_fn = make_int6_fn(dict(hessians or {}), device=device)
    elif quant != "rtn":
        raise ArtifactError(f"unknown quantiser {quant!r} (rtn or gptq)")
    return quantize_state_dict(state, cfg.model.control_patterns, passthrough_max_numel, int6_fn)


def gptq_hessians(
    cfg: Config,
    state: Mapping[str, Tensor],
    calib: str,
    data_dir: Path | None,
    n_seqs: int,
    seq_len: int,
    seed: int,
    device: str,
    passthrough_max_numel: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Tensor], dict]:
    """Hessians of every int6 weight's input over TRAINING tokens or self-generated text."""
    from pgolf.quant.gptq import collect_hessians, generate_calibration_tokens, train_calibration_tokens

    model = model_from_state(cfg.model, state, device).eval()
    patterns = cfg.model.control_patterns
    names = [n for n, t in state.items() if classify(n, t, patterns, passthrough_max_numel) == "int6"]
    if calib == "train":
        if data_dir is None:
            raise ArtifactError("--calib train needs a data directory (--data DIR)")
        tokens = train_calibration_tokens(data_dir, n_seqs, seq_len)
        source = {"calib": "train", "data_dir": str(data_dir)}
    elif calib == "gen":
        log(f"export: sampling {n_seqs} x {seq_len} calibration tokens from the model (temperature 0.8)")
        tokens = generate_calibration_tokens(model, n_seqs, seq_len, seed=seed, device=device)
        source = {"calib": "gen", "temperature": 0.8, "seed": seed}
    else:
        raise ArtifactError(f"unknown calibration source {calib!r} (train or gen)")
    batches = [tokens[i : i + 8] for i in range(0, tokens.size(0), 8)]
    hessians = collect_hessians(model, batches, names)
    return hessians, {**source, "seqs": int(tokens.size(0)), "seq_len": int(tokens.size(1))}


# --------------------------------------------------------------------------- writing
def artifact_header(cfg: Config, q: Quantized, quant: str) -> dict:
    from pgolf import __version__

    return {
        "producer": f"pgolf {__version__}",
        "preset": cfg.preset,
        "model": cfg.to_dict()["model"],
        "quantiser": quant,
        "meta": q.meta,
    }


def write_artifact(
    path: str | Path,
    cfg: Config,
    q: Quantized,
    fmt: str = "pgolf",
    quant: str = "rtn",
    codec: str | None = None,
) -> int:
    if fmt == "pgolf":
        return container.write_container(path, artifact_header(cfg, q, quant), q.packed, codec)
    if fmt == "seed":
        return seedfmt.write_seed_artifact(path, q.packed, q.meta)
    raise ArtifactError(f"unknown artifact format {fmt!r} (pgolf or seed)")


def _summary(report: Mapping[str, dict]) -> dict:
    """Per kind: count, mean and max relative error, and the worst tensor."""
    out: dict[str, dict] = {}
    for name, info in report.items():
        if "rel" not in info:
            continue
        s = out.setdefault(info["kind"], {"count": 0, "mean_rel": 0.0, "max_rel": -1.0, "worst": ""})
        s["count"] += 1
        s["mean_rel"] += info["rel"]
        if info["rel"] > s["max_rel"]:
            s["max_rel"], s["worst"] = info["rel"], name
    for s in out.values():
        s["mean_rel"] /= s["count"]
    return out


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    quant: str = "rtn",
    calib: str = "train",
    data: str | Path | None = None,
    fmt: str = "pgolf",
    codec: str | None = None,
    calib_seqs: int = 64,
    calib_len: int | None = None,
    calib_seed: int = 1337,
    device: str = "cpu",
    bundle: str | Path | None = None,
    passthrough_max_numel: int = PASSTHROUGH_MAX_NUMEL,
    log: Callable[[str], None] = lambda _m: None,
    scheme: str | None = None,
    quant_sets: list[str] | None = None,
) -> dict:
    """Quantise and write a run's artifact; returns (and writes to RUN/export.json) the report.

    `scheme` (default: the run's quant.scheme) "frontier" is the record's export (F5), see
    `pgolf.quant.frontier_export`; the other arguments then only name the output and data.
    """
    from pgolf.quant import codesize

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    cfg, state = read_run(run_dir)
    if quant_sets:
        cfg = with_quant_sets(cfg, quant_sets)
    if (scheme or cfg.quant.scheme) == "frontier":
        from pgolf.quant.frontier_export import export_frontier

        return export_frontier(run_dir, cfg, state, out, data=data, device=device, bundle=bundle, log=log)
    if fmt == "seed" and codec not in (None, "xz"):
        raise ArtifactError("the seed format is always lzma (xz); --codec applies to the pgolf format only")
    out = Path(out) if out is not None else run_dir / DEFAULT_NAMES.get(fmt, "final_model.int6")
    timing = {"read_s": time.perf_counter() - t0}

    hessians, calib_info = None, None
    if quant == "gptq":
        t = time.perf_counter()
        dd = run_data_dir(run_dir, cfg, data) if calib == "train" else None
        hessians, calib_info = gptq_hessians(
            cfg,
            state,
            calib,
            dd,
            calib_seqs,
            calib_len or cfg.train.train_seq_len,
            calib_seed,
            device,
            passthrough_max_numel,
            log,
        )
        timing["calib_s"] = time.perf_counter() - t
    t = time.perf_counter()
    q = quantize_for_export(state, cfg, quant, hessians, passthrough_max_numel, device)
    timing["quantize_s"] = time.perf_counter() - t
    if q.dropped:
        n_params = sum(state[n].numel() for n in q.dropped)
        log(f"export: excluding {len(q.dropped)} MTP tensors ({n_params} params)")

    t = time.perf_counter()
    # A kill between the artifact's rename and the report's must not leave the old report describing the new file.
    export_report_path(run_dir, out).unlink(missing_ok=True)
    model_bytes = write_artifact(out, cfg, q, fmt, quant, codec)
    timing["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _verify(out, q)
    timing["verify_s"] = time.perf_counter() - t

    code_raw = codesize.raw_code_bytes()
    code_bundle = codesize.code_bytes()
    if bundle is not None:
        codesize.write_bundle(bundle)
    total = model_bytes + code_bundle
    timing["total_s"] = time.perf_counter() - t0
    report = {
        "path": str(out),
        "sha256": _file_sha256(out),  # ties the report to the file it describes
        "format": fmt,
        "codec": "xz" if fmt == "seed" else (codec or container.default_codec()),
        "quant": quant,
        "calibration": calib_info,
        "model_bytes": model_bytes,
        "code_bytes": code_bundle,
        "code_bytes_raw": code_raw,
        "code_files": [f.relative_to(codesize.PKG_DIR.parent).as_posix() for f in codesize.code_files()],
        "bundle": str(bundle) if bundle is not None else None,
        "total_bytes": total,
        "limit_bytes": LIMIT_BYTES,
        "fits": total <= LIMIT_BYTES,
        "margin_bytes": LIMIT_BYTES - total,
        "counts": q.counts(),
        "dropped": q.dropped,
        "params": int(sum(t.numel() for n, t in state.items() if n not in q.dropped)),
        "error_summary": _summary(q.report),
        "per_tensor": q.report,
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
    acct = codesize.accounting(run_tokenizer(run_dir, cfg, data))  # minified/plain sizes, scope, tokenizer
    report.update({k: v for k, v in acct.items() if k not in report})
    write_export_report(run_dir, out, report)
    return report


def export_report_path(run_dir: Path, out: str | Path) -> Path:
    """Where an export's JSON report goes: RUN/export.json (what the run's report reads) when the
    artifact is written into the run directory, else `<artifact>.export.json` beside it, so an
    export elsewhere (another quantiser, a test) never replaces the run's own record."""
    out = Path(out)
    if out.resolve().parent == Path(run_dir).resolve():
        return Path(run_dir) / EXPORT_JSON
    return out.with_name(out.name + ".export.json")


def write_export_report(run_dir: Path, out: str | Path, report: dict) -> Path:
    path = export_report_path(run_dir, out)
    report["report_path"] = str(path)
    container.atomic_write(path, (json.dumps(report, indent=1) + "\n").encode())
    return path


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_tokenizer(run_dir: Path, cfg: Config, data: str | Path | None) -> Path | None:
    """The run's tokenizer file, if it can be found (its bytes are reported, not counted)."""
    if cfg.data.tokenizer_path:
        return Path(cfg.data.tokenizer_path)
    p = run_data_dir(run_dir, cfg, data) / "tokenizer.model"
    return p if p.is_file() else None


def _verify(path: Path, q: Quantized) -> None:
    """Read the file back: every stored tensor must come back bit for bit."""
    if container.is_container(_head(path)):
        packed = container.read_container(path)[1]
    else:
        packed = seedfmt.read_seed_artifact(path)[0]
    for name, t in q.packed.items():
        got = packed.get(name)
        if got is None or got.dtype != t.dtype or got.shape != t.shape or not torch.equal(got, t):
            raise ArtifactError(f"{path}: written artifact does not read back identically ({name})")


# --------------------------------------------------------------------------- loading
def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({container.one_line(e.strerror or e)})") from None


def read_artifact(
    path: str | Path, preset: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Tensor], dict, ModelConfig, dict]:
    """(packed tensors, meta, model config, info) from either format, validated.

    A seed file's model comes from `preset` (default "record") with the challenge's
    environment variables applied (`environ`, default os.environ; pass {} to ignore them).
    """
    path = Path(path)
    head = _head(path)
    if container.is_container(head):
        header, packed = container.read_container(path)
        meta = header.get("meta")
        model = header.get("model")
        if not isinstance(meta, dict) or not isinstance(model, dict):
            raise ArtifactError(f"{path}: header lacks the quantisation meta or the model config")
        try:
            cfg = Config.from_dict({"preset": str(header.get("preset", "")), "model": model})
        except PgolfError as e:
            raise ArtifactError(f"{path}: header's model config is invalid ({e})") from None
        info = {
            "format": "pgolf",
            "preset": cfg.preset,
            "quantiser": header.get("quantiser"),
            "producer": header.get("producer"),
        }
        return packed, meta, cfg.model, info
    if pergroup.is_pergroup(head) or recordfmt.is_record_pergroup(head):
        from pgolf.quant.frontier_export import read_frontier

        return read_frontier(path, head, preset, environ)
    if seedfmt.looks_like_seed(head):
        packed, meta = seedfmt.read_seed_artifact(path)
        name = preset or "record"
        cfg = load_config(name, environ=environ)  # the challenge's env names apply, as in training
        return packed, meta, cfg.model, {"format": "seed", "preset": name}
    raise ArtifactError(f"{path}: neither a pgolf artifact nor a seed .ptz (unrecognised first bytes)")


def _check_against(
    path: Path, packed: Mapping[str, Tensor], meta: Mapping, template: Mapping[str, Tensor], preset: str
) -> None:
    missing = [n for n in template if n not in meta]
    extra = [n for n in meta if n not in template]
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise ArtifactError(
            f"{path}: does not match the model of preset '{preset}' ({what}; "
            f"{len(missing)} missing, {len(extra)} unexpected)"
        )
    for name, ref in template.items():
        info = meta[name]
        key = f"{name}.q" if isinstance(info, Mapping) else name
        t = packed.get(key)
        if t is None:
            raise ArtifactError(f"{path}: tensor {key} is missing")
        if tuple(t.shape) != tuple(ref.shape):
            want = list(ref.shape)
            raise ArtifactError(f"{path}: {name} has shape {list(t.shape)}; preset '{preset}' needs {want}")
        if isinstance(info, Mapping):
            s = packed.get(f"{name}.scale")
            rows_ok = s is not None and (s.ndim == 0 or (s.ndim == 1 and s.numel() == ref.shape[0]))
            if not rows_ok:
                raise ArtifactError(f"{path}: {name}.scale is missing or has the wrong shape")


def load_artifact(
    path: str | Path,
    device: str | torch.device = "cpu",
    preset: str | None = None,
    environ: Mapping[str, str] | None = None,
):
    """A `pgolf.model.GPT` in eval mode rebuilt from our artifact or a seed .ptz.

    `preset` and `environ` matter only for seed files (see `read_artifact`); our artifacts
    carry their own model config. `model.artifact_info` says which format and preset.
    """
    import importlib
    import time

    path = Path(path)
    # Timings for the evaluation's phase report (issue 15): the model code's first import (about a
    # second of torch modules in a fresh process), reading the file's bytes, decoding them
    # (decompression and unpacking, the bytes now in the page cache), then the weights.
    ti = time.perf_counter()
    importlib.import_module("pgolf.model.gpt")
    t0 = time.perf_counter()
    try:
        path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({container.one_line(e.strerror or e)})") from None
    t1 = time.perf_counter()
    packed, meta, model_cfg, info = read_artifact(path, preset, environ)
    t2 = time.perf_counter()
    model = _build_loaded(path, packed, meta, model_cfg, info, device)
    model.artifact_info["load_seconds"] = {"imports": t0 - ti, "read": t1 - t0, "decompress": t2 - t1,
                                           "dequantise": time.perf_counter() - t2}  # fmt: skip
    return model


def _build_loaded(path: Path, packed, meta, model_cfg: ModelConfig, info: dict, device):
    if info.get("quantiser") == "frontier":
        from pgolf.quant.frontier_export import load_frontier_model

        return load_frontier_model(path, packed, meta, model_cfg, info, device)
    model_cfg = eval_model_config(model_cfg)
    try:
        template = skeleton(model_cfg).state_dict()
    except PgolfError as e:
        raise ArtifactError(f"{path}: cannot build its model ({e})") from None
    _check_against(path, packed, meta, template, info["preset"])
    state = dequantize_state_dict(packed, meta, template)
    check_finite(path, state)
    model = model_from_state(model_cfg, state, device)
    model.artifact_info = {**info, "path": str(path)}
    return model.eval()
