"""Every benchmark, one after another (never in parallel: they would measure each other).

    python benchmarks/run_all.py            # what `make bench` runs
    python benchmarks/run_all.py --quick    # smaller evaluation and packing runs

Each script prints its table and writes its JSON to benchmarks/results/; docs/benchmarks.md
says what was measured where.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    quick = ["--quick"] if args.quick else []
    jobs = [
        ["bench_train.py"],
        ["profile_train.py"],
        ["bench_eval.py", *quick],
        ["bench_export.py", *(["--quant", "rtn"] if args.quick else [])],
        ["bench_packing.py", *quick],
    ]
    failed = []
    for job in jobs:
        print(f"\n== {' '.join(job)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / job[0]), *job[1:]]).returncode != 0:
            failed.append(job[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
