"""Peak memory and seconds to refusal for the crafted hostile artifacts (issue 11, item 5).

    .venv/bin/python benchmarks/bench_hostile.py            # a markdown table on stdout
    .venv/bin/python benchmarks/bench_hostile.py --json

Each case runs in a fresh interpreter: pgolf and torch are imported first (their memory is
the baseline), then the clock starts and `pgolf.load_artifact` reads the crafted file.
Peak RSS is the child's `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the refusal;
"added" is that peak minus the peak right before the read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "hostile"))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {hostile!r})
import pgolf.quant.frontier_export  # noqa: F401 - imports outside the measurement
from pgolf.errors import PgolfError
from pgolf.quant.artifact import load_artifact
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    load_artifact({path!r})
    verdict = "ACCEPTED"
except PgolfError as e:
    verdict = str(e)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_kb": peak, "before_kb": before, "verdict": verdict}}))
"""


def measure(label: str, data: bytes) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "crafted.pgolf"
        path.write_bytes(data)
        code = CHILD.format(hostile=str(REPO / "tests" / "hostile"), path=str(path))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"{label}: the child failed:\n{r.stderr[-2000:]}")
        rec = json.loads(r.stdout.strip().splitlines()[-1])
    verdict = rec["verdict"].replace(str(path), "FILE")
    return {
        "case": label,
        "file_bytes": len(data),
        "seconds": round(rec["seconds"], 3),
        "peak_rss_mb": round(rec["peak_kb"] / 1024),
        "added_rss_mb": round((rec["peak_kb"] - rec["before_kb"]) / 1024),
        "refused": not verdict.startswith("ACCEPTED"),
        "message": verdict,
    }


def main() -> int:
    import _crafted

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(label, build()) for label, build in _crafted.CASES.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| crafted file | bytes | refused | seconds to refusal | peak RSS MB | added MB | message |")
    print("|---|---:|:---:|---:|---:|---:|---|")
    for r in rows:
        msg = r["message"].replace("|", "\\|")
        msg = msg if len(msg) <= 110 else msg[:107] + "..."
        print(
            f"| {r['case']} | {r['file_bytes']:,} | {'yes' if r['refused'] else 'NO'} | {r['seconds']:.3f} | "
            f"{r['peak_rss_mb']} | {r['added_rss_mb']} | {msg} |"
        )
    return 0 if all(r["refused"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
