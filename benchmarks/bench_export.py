"""Export time: quantise, compress, write and verify an artifact, by stage, for RTN and GPTQ.

    python benchmarks/bench_export.py                       # record preset, freshly initialised weights
    python benchmarks/bench_export.py --run runs/x          # a trained run's weights
    python benchmarks/bench_export.py --quant rtn           # skip GPTQ

Without --run, the weights are the preset's initialisation: export time depends on the tensor
shapes, not their values (the byte counts do, so they are printed but mean little here).
GPTQ calibrates on the builtin corpus's training split (built into --data if missing).
Prints a table and writes benchmarks/results/export_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_result  # noqa: E402
from bench_train import ensure_data  # noqa: E402

from pgolf.config import load_config  # noqa: E402
from pgolf.quant.artifact import export_run, write_run  # noqa: E402


def fresh_run(run: Path, preset: str, data: Path) -> Path:
    """A run directory holding the preset's initial weights."""
    from pgolf.model.gpt import build_model

    cfg = load_config(preset, [], environ={})
    model = build_model(cfg.model, seed=cfg.train.seed, device="cpu")
    return write_run(run, cfg, model.state_dict(), data_dir=data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="record")
    ap.add_argument("--run", type=Path, help="export this run's weights instead of fresh ones")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "pgolf-bench-builtin"))
    ap.add_argument("--quant", choices=["rtn", "gptq", "both"], default="both")
    ap.add_argument("--calib-seqs", type=int, default=8, help="GPTQ calibration sequences")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out")
    args = ap.parse_args()

    data = ensure_data(Path(args.data))
    quants = ["rtn", "gptq"] if args.quant == "both" else [args.quant]
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or fresh_run(Path(tmp) / "run", args.preset, data)
        for quant in quants:
            rep = export_run(
                run,
                Path(tmp) / f"artifact_{quant}.pgolf",
                quant=quant,
                data=data,
                calib_seqs=args.calib_seqs,
                device=args.device,
            )
            t = rep["timing"]
            results[quant] = {
                "timing": t,
                "model_bytes": rep["model_bytes"],
                "total_bytes": rep["total_bytes"],
                "params": rep["params"],
            }
            rows.append(
                [
                    quant,
                    f"{rep['params']:,}",
                    f"{t.get('calib_s', 0):.1f}",
                    f"{t['quantize_s']:.1f}",
                    f"{t['write_s']:.1f}",
                    f"{t['verify_s']:.1f}",
                    f"{t['total_s']:.1f}",
                    f"{rep['model_bytes']:,}",
                ]
            )
    print(
        table(
            rows, ["quant", "params", "calib s", "quantise s", "compress+write s", "verify s", "total s", "model bytes"]
        )
    )
    source = str(args.run) if args.run else f"{args.preset} preset, initial weights"
    name = f"export_{args.preset if not args.run else 'run'}_{torch.device(args.device).type}"
    payload = {"device": args.device, "weights": source, "calib_seqs": args.calib_seqs, "results": results}
    print(f"wrote {write_result(name, payload, args.out)}")


if __name__ == "__main__":
    main()
