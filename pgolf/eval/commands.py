"""`pgolf eval` and `pgolf audit`: score an artifact, or test whether a method is score-first.

pgolf eval ARTIFACT --data DIR --method {plain,sliding,slot,slot-causal,ttt} [--json]
pgolf audit ARTIFACT --data DIR --method M [--tokens N] [--positions K] [--json]

Both run in one process or under torchrun (every rank loads the data; only rank 0 prints).
`slot` is the seed's two-pass SLOT: its number is not a valid compression score and is
labelled `score_first: false`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from pgolf.cliutil import add_config_args, log, print_json
from pgolf.config import Config, load_config, resolve_key, validate
from pgolf.errors import ArtifactError, ConfigError, DataError, PgolfError
from pgolf.eval.common import SCORE_FIRST

METHOD_CHOICES = tuple(SCORE_FIRST)

# CLI flag -> config key; applied after --set, so a flag wins over --set.
FLAG_KEYS = {
    "seq_len": "eval.seq_len",
    "stride": "eval.stride",
    "batch_seqs": "eval.batch_seqs",
    "slot_steps": "eval.slot_steps",
    "slot_lr": "eval.slot_lr",
    "slot_lr_min": "eval.slot_lr_min",
    "slot_impl": "eval.slot_impl",
    "slot_schedule": "eval.slot_schedule",
    "slot_batch_seqs": "eval.slot_batch_seqs",
    "causal_steps": "eval.causal_steps",
    "causal_lr": "eval.causal_lr",
    "causal_lr_min": "eval.causal_lr_min",
    "causal_context": "eval.causal_context",
    "ttt_lr": "eval.ttt_lr",
    "ttt_epochs": "eval.ttt_epochs",
    "ttt_chunk_tokens": "eval.ttt_chunk_tokens",
    "ttt_momentum": "eval.ttt_momentum",
    "device": "runtime.device",
    "ngram_expert": "eval.ngram_expert",
    "ngram_order": "eval.ngram_order",
}


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positions(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected target indices like 30,200, got {text!r}") from None


def _common(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="a pgolf artifact (or the seed's .ptz with --preset)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory with fineweb_val_*.bin shards")
    p.add_argument("--method", required=method_required, choices=METHOD_CHOICES, help="evaluation method")
    add_config_args(p, default_preset=None)
    p.add_argument("--tokenizer", metavar="MODEL", help="SentencePiece model (default: DIR/tokenizer.model)")
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: the config's runtime.device)")
    p.add_argument("--seq-len", type=_positive, help="window / sequence length (eval.seq_len)")
    p.add_argument("--stride", type=_positive, help="sliding stride (eval.stride)")
    p.add_argument("--batch-seqs", type=_positive, help="windows per batch (eval.batch_seqs)")
    g = p.add_argument_group("SLOT (two-pass, not score-first) and causal SLOT")
    g.add_argument("--slot-steps", type=int)
    g.add_argument("--slot-lr", type=float)
    g.add_argument("--slot-lr-min", type=float)
    g.add_argument("--slot-impl", choices=("scored", "full"))
    g.add_argument("--slot-schedule", choices=("seed", "exact"))
    g.add_argument("--slot-batch-seqs", type=_positive)
    g.add_argument("--causal-steps", type=int)
    g.add_argument("--causal-lr", type=float)
    g.add_argument("--causal-lr-min", type=float)
    g.add_argument("--causal-context", type=int, help="fit on the last K context positions (0 = all)")
    g = p.add_argument_group("score-first TTT")
    g.add_argument("--ttt-lr", type=float)
    g.add_argument("--ttt-epochs", type=int)
    g.add_argument("--ttt-chunk-tokens", type=_positive)
    g.add_argument("--ttt-momentum", type=float)
    g = p.add_argument_group("causal n-gram tilt (--method ngram-tilt, or --set eval.ngram_tilt=on on any method)")
    g.add_argument("--ngram-expert", choices=("1514", "2135"), help="eval.ngram_expert")
    g.add_argument("--ngram-order", choices=("score", "stream"), help="eval.ngram_order (stream: NOT score-first)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")


def register(sub) -> None:
    p = sub.add_parser("eval", help="score an artifact on the validation split", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(p)
    p.add_argument("--max-tokens", type=_positive, metavar="N", help="score exactly the first N targets")
    p.add_argument("--dump-nll", metavar="FILE", help="float64 .npy of every scored target's NLL (nats), stream order")
    p.set_defaults(func=cmd_eval)

    a = sub.add_parser("audit", help="measure whether an evaluation method is score-first", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(a, method_required=False)
    a.add_argument("--all", action="store_true", help="audit every method pgolf has (a table of C1-C4)")
    a.add_argument("--tokens", type=_positive, metavar="N", help="audit the first N targets (default 2 x seq_len)")
    a.add_argument("--positions", type=_positive, default=3, metavar="K", help="targets to replace (default 3)")
    a.add_argument("--tolerance", type=float, default=1e-6, help="largest NLL change (nats) still counted as none")
    a.add_argument(
        "--at", type=_positions, metavar="P[,P...]", help="C1: replace these targets (default: evenly spread)"
    )
    a.add_argument(
        "--full-settings",
        action="store_true",
        help="use the method's full settings (default: fewer SLOT steps, 1 TTT epoch, small chunks)",
    )
    a.set_defaults(func=cmd_audit)


# --------------------------------------------------------------------------- config
def _apply(cfg: Config, items: list[tuple[str, object]], source: str) -> None:
    from pgolf.config import _assign  # the config module's own coercion and override bookkeeping

    for key, value in items:
        _assign(cfg, resolve_key(key), value, source=source)


def resolve_config(args: argparse.Namespace, artifact_preset: str | None = None) -> Config:
    """--preset, else the preset the artifact was trained with, else "record"; then the
    challenge's env names, --set, and the dedicated flags (which win)."""
    environ = {} if args.no_env else None
    preset = args.preset or artifact_preset or "record"
    try:
        cfg = load_config(preset, args.sets, environ=environ)
    except ConfigError:
        if args.preset or preset == "record":
            raise
        # A custom preset file the artifact names but this machine lacks: its eval settings are unknown.
        log(f"pgolf: preset '{preset}' of the artifact is not available here; using 'record' eval settings")
        cfg = load_config("record", args.sets, environ=environ)
    flags = [(key, getattr(args, flag, None)) for flag, key in FLAG_KEYS.items()]
    _apply(cfg, [(key, v) for key, v in flags if v is not None], "flag")
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- shared set-up
def _setup(args: argparse.Namespace):
    """(cfg, model, val tokens, byte tables, DistInfo) — identical on every rank."""
    import pgolf
    from pgolf import dist
    from pgolf.data.bpb import load_byte_source
    from pgolf.data.loader import load_val_tokens

    path = Path(args.artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact not found")
    if not Path(args.data).is_dir():
        raise DataError(f"{args.data}: data directory not found")
    model = pgolf.load_artifact(path, device="cpu", preset=args.preset)
    info = getattr(model, "artifact_info", None) or {}
    cfg = resolve_config(args, info.get("preset") if info.get("format") != "seed" else None)
    # The artifact fixes the architecture; the config supplies the evaluation settings.
    cfg.model = model.config
    validate(cfg)
    dinfo = dist.init(cfg.runtime)
    import time

    t0 = time.perf_counter()
    model = model.to(dinfo.device).eval()
    if dinfo.device.type == "cuda":
        import torch

        torch.cuda.synchronize(dinfo.device)
    if isinstance(getattr(model, "artifact_info", None), dict) and "load_seconds" in model.artifact_info:
        model.artifact_info["load_seconds"]["to_device"] = time.perf_counter() - t0
    if hasattr(model, "set_attention_backend"):
        model.set_attention_backend(cfg.runtime.attention)
    vocab = int(model.config.vocab_size)
    # The val byte sidecar when the dataset has one (CaseOps), else the tokenizer's byte tables.
    tables = load_byte_source(args.data, args.tokenizer, vocab, source=cfg.data.byte_source, caseops=cfg.data.caseops)
    tokens = load_val_tokens(args.data, vocab_size=vocab)
    if len(tokens) < 2:
        raise DataError(f"{args.data}: the validation split has {len(tokens)} tokens (needs at least 2 to score)")
    from pgolf.data.tokenizer import find_tokenizer
    from pgolf.safeio import check_data_inputs_on_main

    # A swapped tokenizer of the same vocabulary scores a wrong bpb silently: check it against the manifest.
    check_data_inputs_on_main(args.data, find_tokenizer(args.data, args.tokenizer), vocab, dinfo.is_main)
    return cfg, model, tokens, tables, dinfo


def _write_atomic(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: str | Path, obj: dict) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")

    _write_atomic(path, write)


def _write_npy(path: str | Path, arr: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(arr, dtype=np.float64))

    _write_atomic(path, write)


# --------------------------------------------------------------------------- commands
def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.eval.api import evaluate

    cfg, model, tokens, tables, info = _setup(args)
    try:
        result, nll = evaluate(model, args.method, tokens, tables, cfg, info.device, max_tokens=args.max_tokens,
                               record=bool(args.dump_nll), progress=True)  # fmt: skip
        if not (math.isfinite(result.val_loss) and math.isfinite(result.val_bpb)):
            raise PgolfError(f"{args.artifact}: evaluation gave val_loss {result.val_loss} (non-finite); no result")
        out = {**result.to_dict(), "artifact": str(args.artifact), "data": str(args.data)}
        if info.is_main:
            if args.dump_nll:
                _write_npy(args.dump_nll, nll)
                out["dump_nll"] = str(args.dump_nll)
            if args.out:
                _write_json(args.out, out)
            if args.json:
                print_json(out)
            else:
                flag = "score-first" if result.score_first else "NOT score-first (two-pass)"
                print(f"{result.method} val_loss:{result.val_loss:.8f} val_bpb:{result.val_bpb:.8f} "
                      f"tokens:{result.tokens} bytes:{result.bytes} time:{result.seconds:.1f}s {flag}")  # fmt: skip
                phases = " ".join(f"{k}:{v:.2f}s" for k, v in result.phases.items() if v)
                verdict = "within" if result.within_600s else "OVER"
                print(f"phases {phases} total:{result.total_seconds:.1f}s ({verdict} the 600 s budget)")
        dist.barrier()
    finally:
        dist.shutdown()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.eval.audit import CONDITIONS, audit, table_row

    if not args.all and not args.method:
        raise ConfigError("pgolf audit needs --method M or --all")
    methods = list(METHOD_CHOICES) if args.all else [args.method]
    cfg, model, tokens, tables, info = _setup(args)
    try:
        reps, skipped = [], []
        for m in methods:
            try:
                rep = audit(model, m, tokens, tables, cfg, info.device, n_targets=args.tokens,
                            positions=args.positions, tolerance=args.tolerance, small=not args.full_settings,
                            at=args.at)  # fmt: skip
            except PgolfError as e:
                if not args.all:
                    raise
                skipped.append({"method": m, "skipped": str(e)})  # e.g. a document method on data without BOS
                continue
            rep["artifact"] = str(args.artifact)
            reps.append(rep)
        out = reps[0] if not args.all else {"artifact": str(args.artifact), "methods": reps, "skipped": skipped}
        if info.is_main:
            if args.out:
                _write_json(args.out, out)
            if args.json:
                print_json(out)
            else:
                print(f"{'method':<14} {'label':<16} " + "  ".join(CONDITIONS) + " (measured)")
                for rep in reps:
                    print(table_row(rep) + (" -- CAUGHT" if rep["caught"] else ""))
                for s in skipped:
                    print(f"{s['method']:<14} not run: {s['skipped']}")
            for rep in reps:
                if rep["caught"]:
                    log(f"pgolf audit: method '{rep['method']}' is labelled score-first but fails "
                        f"{', '.join(rep['failed'])}")  # fmt: skip
        dist.barrier()
    finally:
        dist.shutdown()
    return 1 if any(r["caught"] for r in reps) else 0
