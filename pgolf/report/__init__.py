"""Reports, seed statistics and submission folders.

    seedlog     parse the seed's (PR #1313) console logs, mislabelled lines included
    stats       mean / std, Student-t CDF, Welch's test, the challenge's significance rule
    figures     matplotlib PNGs (loss curves, bpb per method, artifact bytes, sweeps)
    document    build_summary(run_dir) and write_report(run_dir) -> RUN/report.md
    submission  submission.json and the record folder
    commands    `pgolf report` and `pgolf submission`

Kept free of heavy imports: matplotlib is only loaded when a figure is drawn.
"""

from __future__ import annotations

from pgolf.errors import PgolfError

# The challenge's artifact limit: decimal bytes, code + compressed model.
LIMIT_BYTES = 16_000_000

# Shown wherever a two-pass (non-score-first) figure appears next to honest ones.
TWO_PASS_NOTE = "not score-first — not a valid compression score (see docs/evaluation.md)"


class ReportError(PgolfError):
    """A run directory, metrics file or log cannot be read; the message names the file."""


__all__ = ["LIMIT_BYTES", "TWO_PASS_NOTE", "ReportError"]
