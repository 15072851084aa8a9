"""What each frontier component is worth at CPU scale: `frontier-tiny` against `tiny`, and
`frontier-tiny` with one component switched off at a time, several seeds each, equal budget.

    python benchmarks/ablate.py --minutes 3                       # the whole grid (~27 runs)
    python benchmarks/ablate.py --minutes 0.3 --seeds 1337,42 --variants full,no-recurrence   # a quick check

Every run is `pgolf train` on the builtin corpus with the same wall-clock budget (runs go one
after another, never in parallel: they would measure each other). The score is the post-EMA
validation bpb on the whole validation split (what `pgolf train` reports at the end). For
every variant: mean and sample std over the seeds, and the one-sided Welch p-value that the
full `frontier-tiny` is better than it (pgolf.report.stats.welch_t_test, in bpb). Writes
OUT/ablation.json and OUT/ablation.md; runs already finished in OUT are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import preset_data  # noqa: E402

from pgolf.report.stats import describe, welch_t_test  # noqa: E402
from pgolf.sysinfo import system_info  # noqa: E402

# name -> (preset, --set overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "tiny": ("tiny", []),
    "full": ("frontier-tiny", []),
    "no-recurrence": ("frontier-tiny", ["model.num_loops=0"]),
    "no-lanes": ("frontier-tiny", ["model.parallel_start_layer=0"]),
    "no-skip-gates": ("frontier-tiny", ["model.skip_gates_enabled=false"]),
    "no-sparse-attn-gate": ("frontier-tiny", ["model.sparse_attn_gate_enabled=false"]),
    "no-smear-gate": ("frontier-tiny", ["model.smear_gate_enabled=false"]),
    "no-polar-express": ("frontier-tiny", ["optim.muon_ns_coeffs=seed"]),
    "no-muon-eq-r": ("frontier-tiny", ["optim.muon_row_normalize=false"]),
}
NOISE_P = 0.05  # above this a difference is reported as within noise


def run_one(out: Path, preset: str, sets: list[str], seed: int, minutes: float, data: Path, extra: list[str]) -> dict:
    """One training run (or the result of an earlier one in the same place)."""
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "pgolf", "train", "--preset", preset, "--no-env", "--data", str(data),
           "--out", str(out), "--force", "--quiet", "--json", "--minutes", str(minutes),
           "--set", f"train.seed={seed}"]  # fmt: skip
    for s in [*sets, *extra]:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{out}: pgolf train failed ({proc.stderr.strip().splitlines()[-1:]})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(seed=seed, preset=preset, sets=sets, wall_s=time.perf_counter() - t0)
    done.write_text(json.dumps(res, indent=1) + "\n")
    return res


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    full = [r["post_ema_val_bpb"] for r in results.get("full", [])]
    out = {}
    for name, runs in results.items():
        bpb = [r["post_ema_val_bpb"] for r in runs]
        row = {"bpb": describe(bpb), "steps": describe([r["steps"] for r in runs])}
        if name != "full" and len(full) >= 2 and len(bpb) >= 2:
            test = welch_t_test(full, bpb, alternative="less")  # H1: the full frontier-tiny has lower bpb
            other = welch_t_test(bpb, full, alternative="less")  # H1: this variant has lower bpb
            row.update(delta_vs_full=row["bpb"]["mean"] - describe(full)["mean"], p_full_better=test.p)
            row["p_variant_better"] = other.p
            row["within_noise"] = not (test.p < NOISE_P or other.p < NOISE_P)
            row["reading"] = (
                "full is better"
                if test.p < NOISE_P
                else "the variant is better"
                if other.p < NOISE_P
                else "within noise"
            )
        out[name] = row
    return out


def markdown(summary: dict[str, dict], minutes: float, seeds: list[int]) -> str:
    lines = [
        f"Budget {minutes:g} min per run, seeds {', '.join(map(str, seeds))}; post-EMA val bpb on the whole split;",
        f"one-sided Welch p-values either way (below {NOISE_P} is a difference).",
        "",
        "| variant | bpb mean ± std | steps | Δ vs full | p (full better) | p (variant better) | reading |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in summary.items():
        b, s = row["bpb"], row["steps"]
        std = f"{b['sample_std']:.4f}" if b["sample_std"] is not None else "–"
        delta = f"{row['delta_vs_full']:+.4f}" if "delta_vs_full" in row else "–"
        p = f"{row['p_full_better']:.3g}" if "p_full_better" in row else "–"
        q = f"{row['p_variant_better']:.3g}" if "p_variant_better" in row else "–"
        lines.append(
            f"| {name} | {b['mean']:.4f} ± {std} | {s['mean']:.0f} | {delta} | {p} | {q} | {row.get('reading', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget of every run")
    ap.add_argument("--seeds", default="1337,42,2024")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--data", help="one dataset for every run (default: each preset's own builtin dataset)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for every run")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    from pgolf.config import load_config

    # Each preset trains and is scored on its own dataset (tiny: sp1024; frontier-tiny: SP8192-CaseOps),
    # both with a raw byte sidecar, so every bpb has the same denominator: the split's UTF-8 bytes.
    data = {p: preset_data(load_config(p, environ={}), args.data) for p in {VARIANTS[n][0] for n in names}}
    out = Path(args.out)
    results: dict[str, list[dict]] = {}
    for name in names:
        preset, sets = VARIANTS[name]
        for seed in seeds:
            print(f"{name} seed {seed} ...", file=sys.stderr, flush=True)
            res = run_one(out / name / f"seed{seed}", preset, sets, seed, args.minutes, data[preset], args.sets)
            results.setdefault(name, []).append(res)
    summary = summarise(results)
    payload = {
        "minutes": args.minutes,
        "data": {p: str(d) for p, d in data.items()},
        "seeds": seeds,
        "extra_sets": args.sets,
        "system": system_info("cpu"),
        "variants": {n: {"preset": VARIANTS[n][0], "sets": VARIANTS[n][1]} for n in names},
        "summary": summary,
        "runs": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = markdown(summary, args.minutes, seeds)
    (out / "ablation.md").write_text(md)
    print(md)
    print(f"wrote {out / 'ablation.json'} and {out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
