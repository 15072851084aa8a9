"""`pgolf data {builtin,text,fineweb,stats,verify}`: build, inspect or verify a token dataset directory."""

from __future__ import annotations

import argparse

from pgolf.cliutil import log, print_json

DATA_HELP = """Every build writes DIR/fineweb_{train,val}_NNNNNN.bin (the challenge's shard format),
DIR/tokenizer.model and DIR/manifest.json, atomically (an existing DIR is replaced only
with --force). See docs/data.md."""


def _positive(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="build or inspect a token dataset",
        description=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    p = sub.add_parser("builtin", help="the offline default corpus (Python docs and docstrings)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--vocab-size", type=_positive, default=1024)
    p.add_argument("--force", action="store_true", help="replace an existing DIR")
    p.add_argument("--threads", type=_positive, default=2, help="tokenizer threads (output does not depend on it)")
    _transform_args(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_builtin)

    p = sub.add_parser("text", help="a dataset from local .txt / .jsonl files")
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help=".txt file (one document), .jsonl (one document per line), or a directory",
    )
    p.add_argument("--out", required=True, metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tokenizer", metavar="MODEL", help="encode with this SentencePiece model (no training)")
    g.add_argument("--vocab-size", type=_positive, help="train a tokenizer of this size (default 1024)")
    p.add_argument("--val-docs", type=_positive, help="the first N documents are validation (default 5%%, >= 1)")
    p.add_argument("--field", default="text", help="JSON field holding the text in .jsonl files")
    p.add_argument("--shard-tokens", type=_positive, default=100_000_000, help="tokens per shard")
    p.add_argument("--force", action="store_true", help="replace an existing DIR")
    p.add_argument("--threads", type=_positive, default=2)
    _transform_args(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_text)

    p = sub.add_parser("fineweb", help="download the challenge's published FineWeb shards")
    p.add_argument(
        "--variant",
        default="sp1024",
        help="sp1024 (official), sp4096, sp8192, sp8192-caseops (community exports; see docs/data.md) or sp<VOCAB>",
    )
    p.add_argument(
        "--train-shards",
        type=_positive,
        required=True,
        metavar="N",
        help="first N training shards (100M tokens each; the record runs saw 80)",
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--repo-id", default=None, help="Hugging Face dataset repo (default: the variant's)")
    p.add_argument("--remote-root", default=None, help="folder of the export inside the repo (default datasets)")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    p.add_argument("--endpoint", default=None, help="hub endpoint (default: huggingface_hub's, HF_ENDPOINT)")
    p.add_argument("--cache-dir", default=None, help="download cache (default: huggingface_hub's, HF_HOME)")
    p.add_argument("--force", action="store_true", help="replace an existing DIR")
    p.add_argument("--force-download", action="store_true", help="fetch files again even if cached")
    p.add_argument(
        "--max-leaked", type=int, default=0, metavar="N", help="verify: validation documents allowed in train"
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_fineweb)

    p = sub.add_parser("stats", help="validate a dataset directory and print its statistics")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--tokenizer", metavar="MODEL", help="tokenizer (default DIR/tokenizer.model)")
    p.add_argument("--vocab-size", type=_positive, help="expected vocabulary size")
    p.add_argument("--seq-len", type=_positive, default=2048, help="report usable val targets at this length")
    p.add_argument("--verify", action="store_true", help="also check every file's sha256 against the manifest")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "verify",
        help="check bytes, leaks, shards and manifest; non-zero exit on any failure",
        description=VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--tokenizer", metavar="MODEL", help="tokenizer (default: found next to DIR)")
    p.add_argument(
        "--source",
        nargs="+",
        metavar="PATH",
        help="the original documents (.jsonl/.txt/dir; the first val_docs are validation) for the exact sidecar check",
    )
    p.add_argument("--field", default="text", help="JSON field holding the text in .jsonl sources")
    p.add_argument("--max-leaked", type=int, default=0, metavar="N", help="validation documents allowed in train")
    p.add_argument("--check", action="append", choices=("shards", "bytes", "leak"), help="run only these checks")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_verify)


VERIFY_HELP = """Verdicts, one line each (exit 1 if any fails):
  shards  headers, sizes, ids < vocab, sidecar alignment, manifest hashes and counts
  bytes   per validation document: the bytes the scorer counts vs the bytes of the text
  leak    validation documents (hash of their normalised text) found in the training split
See docs/data.md, "Verifying a dataset"."""


def _transform_args(p) -> None:
    p.add_argument("--caseops", action="store_true", help="CaseOps transform + operators reserved + raw byte sidecar")
    p.add_argument(
        "--sidecar",
        choices=("raw", "normalized"),
        help="also write the validation byte sidecar: raw (original bytes, the record's rule) or normalized "
        "(the byte tables per token); CaseOps always writes raw",
    )


def _summary(manifest: dict, out: str, as_json: bool) -> int:
    if as_json:
        print_json(manifest)
    else:
        c = manifest["counts"]
        print(
            f"{out}: {manifest['kind']} dataset, vocab {manifest['vocab_size']}, "
            f"{c['train_tokens']:,} train / {c['val_tokens']:,} val tokens, {c['val_bytes']:,} val bytes"
        )
    return 0


def cmd_builtin(args: argparse.Namespace) -> int:
    from pgolf.data.builtin import build_builtin

    m = build_builtin(
        args.out,
        args.vocab_size,
        force=args.force,
        num_threads=args.threads,
        caseops=args.caseops,
        sidecar=args.sidecar,
        log=log,
    )
    return _summary(m, args.out, args.json)


def cmd_text(args: argparse.Namespace) -> int:
    from pgolf.data.text import build_text

    m = build_text(
        args.input,
        args.out,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        val_docs=args.val_docs,
        field=args.field,
        force=args.force,
        shard_tokens=args.shard_tokens,
        num_threads=args.threads,
        caseops=args.caseops,
        sidecar=args.sidecar,
        log=log,
    )
    return _summary(m, args.out, args.json)


def cmd_fineweb(args: argparse.Namespace) -> int:
    from pgolf.data import fineweb

    m = fineweb.fetch_fineweb(
        args.out,
        args.variant,
        args.train_shards,
        repo_id=args.repo_id,
        remote_root=fineweb.DEFAULT_REMOTE_ROOT if args.remote_root is None else args.remote_root,
        revision=args.revision or fineweb.DEFAULT_REVISION,
        endpoint=args.endpoint,
        cache_dir=args.cache_dir,
        force=args.force,
        force_download=args.force_download,
        max_leaked=args.max_leaked,
        log=log,
    )
    return _summary(m, args.out, args.json)


def cmd_stats(args: argparse.Namespace) -> int:
    from pgolf.data.stats import dataset_stats, format_stats

    s = dataset_stats(
        args.dir, tokenizer=args.tokenizer, vocab_size=args.vocab_size, seq_len=args.seq_len, verify=args.verify
    )
    if args.json:
        print_json(s)
    else:
        print(format_stats(s))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pgolf.data.verify import CHECKS, format_report, source_documents, verify_dataset

    texts = source_documents(args.dir, args.source, args.field) if args.source else None
    rep = verify_dataset(
        args.dir,
        args.tokenizer,
        val_texts=texts,
        max_leaked=args.max_leaked,
        checks=args.check or CHECKS,
        log=log,
    )
    if args.json:
        print_json(rep)
    else:
        print(format_report(rep))
    return 0 if rep["ok"] else 1
