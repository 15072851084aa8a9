"""The audit table of docs/evaluation.md: every method (and the tests' planted illegal ones) on C1-C4.

    .venv/bin/python benchmarks/audit_table.py [--tokens 768] [--out benchmarks/results/audit_table.json]

Uses the evaluation tests' small trained model and validation text (tests/test_eval_fixtures.py,
cached after its first training) and the planted methods of tests/_planted_methods.py; the
planted ones and the reversed-segment rows run on a stream that repeats itself every 384
tokens, so that the n-gram statistics have something to find. The document methods run on the
per-document TTT tests' toy frontier model and a CaseOps stream of FRONTIER F7.4.7's shape (a
short document A early, a long document B last that repeats A's text; tests/test_eval_audit.py),
with C1 replacing target 30 (inside A) and target 1000. Prints a markdown table and the
n-gram hint cost per target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _planted_methods import planted  # noqa: E402
from _ttt_fixtures import sidecar, ttt_config, ttt_model  # noqa: E402
from test_eval_audit import ab_stream  # noqa: E402
from test_eval_fixtures import small_config, tables, trained_model, val_tokens  # noqa: E402

from pgolf.eval.audit import audit  # noqa: E402
from pgolf.eval.ngram import expert, stream_hints  # noqa: E402

TILT35 = ["eval.ngram_tilt=on", "eval.ngram_expert=2135"]
ROWS = [  # (method, settings, data): "text" the test text, "tiled" it repeated, "ab" F7.4.7's documents
    ("plain", [], "text"),
    ("sliding", [], "text"),
    ("slot", [], "text"),
    ("slot-causal", [], "text"),
    ("ttt", [], "text"),
    ("ngram-tilt", [], "text"),
    ("ngram-tilt", ["eval.ngram_expert=2135"], "text"),
    ("ngram-tilt", ["eval.ngram_order=stream"], "text"),
    ("ttt", ["eval.ngram_tilt=on"], "text"),
    ("ttt-lora", [], "ab"),
    ("ttt-phased", [], "ab"),
    ("ttt-phased", TILT35, "ab"),
    ("ttt-phased", [*TILT35, "eval.ngram_order=stream"], "ab"),
    ("planted-pre-ttt", [], "tiled"),
    ("planted-hashed-cache", [], "tiled"),
    ("planted-two-pass", [], "tiled"),
    ("reversed-segments", TILT35, "tiled"),
    ("reversed-segments", [*TILT35, "eval.ngram_order=stream"], "tiled"),
]


def cell(ok: bool, text: str) -> str:
    return f"{'pass' if ok else '**FAIL**'} ({text})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=768)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit_table.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = trained_model()[1]
    tiled = np.tile(val_tokens(384)[:384], 3)
    reps = []
    print("| method | settings | label | C1 causal | C2 normalised | C3 score before update | C4 single pass |")
    print("|---|---|---|---|---|---|---|")
    with planted():
        ab, ab_counts = ab_stream()
        for method, sets, data in ROWS:
            t0 = time.perf_counter()
            if data == "ab":  # the document methods' toy frontier model; C1 at a target of A and one of the middle
                rep = audit(ttt_model(), method, ab, sidecar(ab_counts), ttt_config(*sets), "cpu",
                            n_targets=len(ab) - 1, at=[30, 1000])  # fmt: skip
            else:
                toks = tiled if data == "tiled" else val_tokens()
                rep = audit(model, method, toks, tables(), small_config(*sets), "cpu", n_targets=args.tokens)
            rep["seconds"] = time.perf_counter() - t0
            rep["sets"] = sets
            reps.append(rep)
            c = rep["conditions"]
            row = [
                cell(c["C1"]["pass"], f"max Δ {c['C1']['max_change']:.2g} nats"),
                cell(c["C2"]["pass"], f"max \\|Σp−1\\| {c['C2']['max_sum_error']:.1e}, {c['C2']['checked']} pts"),
                cell(c["C3"]["pass"], f"{c['C3']['violations']} of {c['C3']['update_steps']} steps"),
                cell(c["C4"]["pass"], f"{c['C4']['once']}/{c['C4']['targets']} once, {c['C4']['more']} more"),
            ]
            label = "score-first" if rep["label"] else "not score-first"
            settings = " ".join(s.replace("eval.", "") for s in sets) or "-"
            print(f"| `{method}` | {settings} | {label} | " + " | ".join(row) + " |")
    # n-gram hint cost on the text, one core
    s = np.asarray(val_tokens(20000), dtype=np.int64)
    cost = {}
    for ex in ("1514", "2135"):
        t0 = time.perf_counter()
        _, b = stream_hints(s, expert(ex))
        dt = time.perf_counter() - t0
        cost[ex] = {"us_per_target": dt / (len(s) - 1) * 1e6, "hinted_fraction": float((b > 0).mean())}
    print()
    for ex, v in cost.items():
        print(f"n-gram hints {ex}: {v['us_per_target']:.1f} us/target, {100 * v['hinted_fraction']:.2f}% hinted "
              f"(20,000 targets of the test text)")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": reps, "ngram_cost": cost}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
