"""`pgolf` command line: one sub-command per pipeline stage.

pgolf data {builtin,text,fineweb,stats}   build or inspect a token dataset
pgolf train                               train a model (torchrun for several processes)
pgolf export                              quantise + compress a run into an artifact
pgolf eval / pgolf audit                  score an artifact; test whether a method is score-first
pgolf run                                 the main job: data -> train -> export -> eval -> report
pgolf report / sweep / submission         aggregate seeds, sweep eval settings, write a record folder
pgolf check                               a record folder (anyone's) against the challenge's rules
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from pgolf import __version__
from pgolf.errors import PgolfError

# Each module exposes register(subparsers); imported lazily so `pgolf --help` stays quick.
COMMAND_MODULES = (
    "pgolf.data.commands",
    "pgolf.train.commands",
    "pgolf.quant.commands",
    "pgolf.eval.commands",
    "pgolf.report.commands",
    "pgolf.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgolf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full or read-only disk anywhere: one line, not a traceback (issue 11)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        print(f"pgolf: error: {e.filename or 'write'}: {e.strerror}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
