"""`pgolf export`: quantise + compress a run into an artifact and account for its size."""

from __future__ import annotations

import argparse
import sys

from pgolf.cliutil import log, print_json

USAGE = """\
examples:
  pgolf export runs/r1                                # RTN (the seed's export), our format
  pgolf export runs/r1 --out model.pgolf --json       # one JSON object on stdout
  pgolf export runs/r1 --quant gptq --calib train     # GPTQ calibrated on the train split
  pgolf export runs/r1 --quant gptq --calib gen       # ... or on text the model samples itself
  pgolf export runs/r1 --format seed                  # the seed's final_model.int6.ptz
  pgolf export runs/r1 --bundle submission_code.py    # also write the counted code bundle
  pgolf export runs/r1 --scheme frontier              # GPTQ+SDClip, int7 embedding, LQER, per-group (F5)
  pgolf export runs/r1 --scheme frontier --set quant.compressor=brotli --set LQER_TOP_K=5

exit status: 0 fits the 16,000,000-byte limit; 1 written but over the limit; 2 error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="quantise + compress a run into an artifact",
        description=__doc__,
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory (config.json + final_model.safetensors)")
    p.add_argument("--out", metavar="FILE", help="artifact (default RUN/final_model.int6.pgolf or .ptz)")
    p.add_argument(
        "--quant",
        choices=("rtn", "gptq"),
        default="rtn",
        help="rtn: the seed's round-to-nearest with percentile search (default); gptq: full-Hessian GPTQ",
    )
    p.add_argument(
        "--calib",
        choices=("train", "gen"),
        default="train",
        help="GPTQ calibration: train-split tokens, or text the model samples itself (never validation)",
    )
    p.add_argument("--data", metavar="DIR", help="data directory for --calib train (default: the run's)")
    p.add_argument("--calib-seqs", type=int, default=64, metavar="N", help="calibration sequences (64)")
    p.add_argument(
        "--calib-len",
        type=int,
        default=None,
        metavar="T",
        help="calibration sequence length (default: the run's train_seq_len)",
    )
    p.add_argument("--calib-seed", type=int, default=1337, metavar="S", help="sampling seed for --calib gen")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("pgolf", "seed"),
        default="pgolf",
        help="pgolf: our pickle-free container (default); seed: the seed's lzma torch.save .ptz",
    )
    p.add_argument(
        "--codec",
        choices=("brotli", "xz"),
        default=None,
        help="payload compressor of the pgolf format (default: brotli if installed, else xz)",
    )
    p.add_argument("--bundle", metavar="FILE", help="also write the code bundle that code_bytes counts")
    p.add_argument(
        "--scheme",
        choices=("seed", "frontier"),
        default=None,
        help="seed: the seed's export (--quant rtn|gptq); frontier: the frontier record's (default: quant.scheme)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="quant.FIELD=VALUE",
        help="change a [quant] setting for this export (repeatable; the record's names such as LQER_TOP_K work)",
    )
    p.add_argument("--device", default="cpu", help="device for GPTQ calibration (cpu, cuda, cuda:N)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from pgolf.errors import ConfigError

    if args.calib_seqs < 1:
        raise ConfigError(f"--calib-seqs must be >= 1, got {args.calib_seqs}")
    if args.calib_len is not None and args.calib_len < 2:
        raise ConfigError(f"--calib-len must be >= 2, got {args.calib_len}")


def run(args: argparse.Namespace) -> int:
    from pgolf.quant.artifact import export_run

    _check(args)
    report = export_run(
        args.run,
        args.out,
        quant=args.quant,
        calib=args.calib,
        data=args.data,
        fmt=args.fmt,
        codec=args.codec,
        calib_seqs=args.calib_seqs,
        calib_len=args.calib_len,
        calib_seed=args.calib_seed,
        device=args.device,
        bundle=args.bundle,
        log=log,
        scheme=args.scheme,
        quant_sets=args.sets,
    )
    if args.json:
        print_json(report)
    elif report.get("scheme") == "frontier":
        _print_frontier(report)
        _print_total(report)
    else:
        c = report["counts"]
        how = f"{report['format']}, {report['codec']}, quant {report['quant']}"
        print(f"artifact      {report['path']} ({how})")
        print(
            f"tensors       {c['int6']} int6 + {c['int8']} int8 + "
            f"{c['passthrough'] + c['passthrough_ctrl']} fp16 "
            f"passthrough ({len(report['dropped'])} MTP dropped)"
        )
        for kind, s in report["error_summary"].items():
            print(f"error {kind:<17} mean rel {s['mean_rel']:.4g}, max rel {s['max_rel']:.4g} ({s['worst']})")
        print(f"model bytes   {report['model_bytes']:,}")
        print(f"code bytes    {report['code_bytes']:,} (bundle; raw source {report['code_bytes_raw']:,})")
        if "tokenizer_bytes" in report:
            print(f"tokenizer     {report['tokenizer_bytes']:,} (not counted)")
        print(
            f"total         {report['total_bytes']:,} of {report['limit_bytes']:,} "
            f"({'fits' if report['fits'] else 'OVER'}, margin {report['margin_bytes']:,})"
        )
    if not report["fits"]:
        over = -report["margin_bytes"]
        print(
            f"pgolf: error: artifact + code is {over:,} bytes over the {report['limit_bytes']:,}-byte limit "
            f"({report['total_bytes']:,} bytes; written to {report['path']})",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_frontier(report: dict) -> None:
    c = report["counts"]
    print(f"artifact      {report['path']} ({report['format']}, scheme frontier)")
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(c.items()) if v)
    print(f"tensors       {kinds}")
    cal = report["calibration"] or {}
    when, ok = cal.get("when", ""), cal.get("within_budget")
    print(f"calibration   {cal.get('batches', 0)} batches, {when}; within the training budget: {ok}")
    for name, s in (report.get("packing", {}).get("streams") or {}).items():
        print(f"  {name:<20} {s['codec']:<6} {s['raw']:>11,} -> {s['bytes']:>10,}")


def _print_total(report: dict) -> None:
    print(f"model bytes   {report['model_bytes']:,}")
    print(
        f"code bytes    {report['code_bytes']:,} (minified bundle; plain bundle {report['code_bytes_plain_bundle']:,}, "
        f"raw source {report['code_bytes_raw']:,}, {len(report['code_files'])} files)"
    )
    if "tokenizer_bytes" in report:
        print(f"tokenizer     {report['tokenizer_bytes']:,} (not counted)")
    print(
        f"total         {report['total_bytes']:,} of {report['limit_bytes']:,} "
        f"({'fits' if report['fits'] else 'OVER'}, margin {report['margin_bytes']:,})"
    )
