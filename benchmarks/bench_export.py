"""Export time: quantise, compress, write and verify an artifact, by stage, for RTN and GPTQ.

    python benchmarks/bench_export.py                       # record preset, freshly initialised weights
    python benchmarks/bench_export.py --run runs/x          # a trained run's weights
    python benchmarks/bench_export.py --quant rtn           # skip GPTQ
    python benchmarks/bench_export.py --scheme frontier     # the frontier export by stage, frontier shapes
    python benchmarks/bench_export.py --scheme frontier --layers 1 --calib-tokens 2048   # a quick check

Without --run, the weights are the preset's initialisation: export time depends on the tensor
shapes, not their values (the byte counts do, so they are printed but mean little here).
GPTQ calibrates on the training split of the preset's own builtin corpus (built into --data if missing).
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
from bench_train import preset_data  # noqa: E402

from pgolf.config import load_config  # noqa: E402
from pgolf.quant.artifact import export_run, write_run  # noqa: E402


def fresh_run(run: Path, cfg, data: Path) -> Path:
    """A run directory holding the preset's initial weights."""
    from pgolf.model.gpt import build_model

    model = build_model(cfg.model, seed=cfg.train.seed, device="cpu")
    return write_run(run, cfg, model.state_dict(), data_dir=data)


def frontier_stages(args) -> None:
    """The frontier export by stage on the record's shapes (synthetic weights, benchmarks/_frontier.py)."""
    import os
    import time

    from _frontier import FRONTIER, frontier_state, hessians

    from pgolf.config import QuantConfig
    from pgolf.quant import codecs, pergroup, simsort
    from pgolf.quant.frontier import quantize_frontier

    shapes = dict(FRONTIER, layers=args.layers)
    state = frontier_state(shapes=shapes)
    rows, res = [], {"shapes": shapes, "params": sum(t.numel() for t in state.values())}

    # Calibration's arithmetic: XᵀX accumulation for every Hessian input (the forward is not included:
    # no frontier model here). The record accumulates 1,572,864 tokens per rank into 67 Hessians.
    dev = torch.device(args.device)
    inputs = {512: 3 * args.layers + 1, 2048: args.layers}  # distinct inputs: attn (q,k,v share), proj, fc; tok_emb
    t0 = time.perf_counter()
    for cols, n in inputs.items():
        x = torch.randn(args.calib_tokens, cols, device=dev)
        for _ in range(n):
            h = torch.zeros(cols, cols, device=dev, dtype=torch.float64)
            h.addmm_(x.T.double(), x.double())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    res["hessian_accumulate_s"] = time.perf_counter() - t0
    rows.append(["Hessian accumulation (fp64)", f"{args.calib_tokens:,} tokens", f"{res['hessian_accumulate_s']:.2f}"])

    hs = hessians(state, tokens=2048)
    q = QuantConfig(scheme="frontier", lqer_enabled=True)
    t0 = time.perf_counter()
    fq = quantize_frontier(state, hs, q, device=args.device)
    res["gptq_s"], res["lqer_s"] = fq.timing["gptq_s"], fq.timing["lqer_s"]
    rows.append(["GPTQ + SDClip (all matrices)", f"{fq.counts()}", f"{res['gptq_s']:.2f}"])
    rows.append(["LQER (top 3, rank 4)", "", f"{res['lqer_s']:.2f}"])

    t0 = time.perf_counter()
    simsort.l1_chain(fq.result["tok_emb.weight.q"].numpy())
    res["sort_tok_emb_s"] = time.perf_counter() - t0
    rows.append(["L1 row chain, tok_emb", "8192 x 512", f"{res['sort_tok_emb_s']:.2f}"])

    cands = codecs.available()
    for workers in (1, os.cpu_count() or 1):
        blob, rep = pergroup.build({"meta": fq.meta}, fq.result, pergroup.Options(codecs=cands, workers=workers))
        tm = rep["timing"]
        res[f"pack_workers_{workers}"] = {"bytes": len(blob), **tm, "sizes": rep["codec_sizes"]}
        for c in cands:
            rows.append([f"compress, {c} (sum over groups)", f"workers {workers}", f"{tm.get(c + '_s', 0):.2f}"])
        rows.append(["sort (all sorted groups, wall)", f"workers {workers}", f"{tm['sort_s']:.2f}"])
        rows.append(
            ["compress, all codecs (wall)", f"workers {workers}, {len(blob):,} B", f"{tm['compress_wall_s']:.2f}"]
        )
    same = res["pack_workers_1"]["bytes"] == res[f"pack_workers_{os.cpu_count() or 1}"]["bytes"]
    res["parallel_bytes_identical"] = same
    print(table(rows, ["stage", "size", "seconds"]))
    print(f"parallel and serial outputs identical in size: {same} (tests/test_quant_pergroup.py checks the bytes)")
    name = f"export_frontier_{args.layers}layers_{dev.type}"
    print(f"wrote {write_result(name, {'device': args.device, 'results': res}, args.out)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="record")
    ap.add_argument("--run", type=Path, help="export this run's weights instead of fresh ones")
    ap.add_argument("--data", help="dataset (default: the preset's builtin corpus in the temp directory, built once)")
    ap.add_argument("--quant", choices=["rtn", "gptq", "both"], default="both")
    ap.add_argument("--calib-seqs", type=int, default=8, help="GPTQ calibration sequences")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out")
    ap.add_argument("--scheme", choices=["seed", "frontier"], default="seed")
    ap.add_argument("--layers", type=int, default=11, help="frontier: layers of the synthetic model (11 = the record)")
    ap.add_argument("--calib-tokens", type=int, default=98_304, help="frontier: tokens per Hessian accumulation")
    args = ap.parse_args()
    if args.scheme == "frontier":
        frontier_stages(args)
        return

    cfg = load_config(args.preset, [], environ={})
    data = preset_data(cfg, args.data or Path(tempfile.gettempdir()) / f"pgolf-bench-builtin-{args.preset}")
    quants = ["rtn", "gptq"] if args.quant == "both" else [args.quant]
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or fresh_run(Path(tmp) / "run", cfg, data)
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
