"""bench_packing.py --frontier: the frontier export's packings on the SAME quantised weights, and LQER's worth.

    python benchmarks/bench_packing.py --frontier shapes [--layers 11]   # the record's shapes, synthetic weights
    python benchmarks/bench_packing.py --frontier tiny [--run RUN]         # a trained `frontier-tiny`, real data

Weights are quantised once (GPTQ + SDClip, int7 tok_emb, int8 gates, LQER), then packed as:
the single-stream pgolf container (brotli; xz), the per-group container with and without the
row sort, without and with lrzip, and the record's own layout (lrzip groups + pickle remainder).
For `tiny` the weights are a trained `frontier-tiny` run: RUN (a finished `pgolf train --preset
frontier-tiny`, e.g. `make run`'s OUT/frontier-tiny or an ablation run), else one trained here for
`--train-minutes` (cached under runs/bench_packing/). Its Hessians are the ones the trainer
collected inside its budget (RUN/hessians.safetensors), its quantisation settings the run's own
(matrices above 4,096 values quantised), and it scores the validation split of the run's own
dataset, in bits per original UTF-8 byte (its byte sidecar), with `plain` evaluation: the
unquantised model, the seed's RTN export, SDClip rounding (H = I), GPTQ + SDClip and
GPTQ + SDClip + LQER, with the per-group artifact's bytes of each frontier variant.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packings(fq, lrzip: bool) -> list[tuple[str, int, float]]:
    from pgolf.quant import codecs, container, pergroup, recordfmt

    out = []

    def timed(label, fn):
        t = time.perf_counter()
        n = len(fn())
        out.append((label, n, time.perf_counter() - t))

    header = {"meta": fq.meta}
    timed("single stream, brotli (pgolf container)", lambda: container.container_bytes(header, fq.result, "brotli"))
    timed("single stream, xz (pgolf container)", lambda: container.container_bytes(header, fq.result, "xz"))
    base = ("brotli", "lzma")
    for sort in (False, True):
        tag = "row sort" if sort else "no sort"
        opts = pergroup.Options(codecs=base, row_sort=sort)
        timed(f"per group, brotli/lzma, {tag}", lambda o=opts: pergroup.build(header, fq.result, o)[0])
        if lrzip:
            opts = pergroup.Options(codecs=("lrzip", *base), row_sort=sort)
            timed(f"per group, +lrzip, {tag}", lambda o=opts: pergroup.build(header, fq.result, o)[0])
    if lrzip and codecs.lrzip_program():
        timed("record's layout (lrzip groups, pickle remainder)", lambda: recordfmt.record_bytes(fq.result, fq.meta))
    return out


def _trained_run(args) -> Path:
    """RUN, else a frontier-tiny run trained here once (cached)."""
    import subprocess
    import sys

    if args.run:
        return Path(args.run)
    run = ROOT / "runs" / "bench_packing" / "frontier-tiny"
    if (run / "final_model.safetensors").is_file():
        return run
    from bench_train import preset_data

    from pgolf.config import load_config

    data = preset_data(load_config("frontier-tiny", environ={}), None)
    cmd = [sys.executable, "-m", "pgolf", "train", "--preset", "frontier-tiny", "--no-env", "--data", str(data),
           "--out", str(run), "--force", "--quiet", "--minutes", str(args.train_minutes)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return run


def _final_step(run_dir: Path) -> int | None:
    """The step of the run's `final` metrics record (metrics.jsonl), if any."""
    from pgolf.report.document import read_metrics

    records, _ = read_metrics(run_dir / "metrics.jsonl")
    return next((r.get("step") for r in reversed(records) if r.get("kind") == "final"), None)


def _score(cfg, state, tokens, tables) -> float:
    """Held-out bpb of a state dict: pgolf's `plain` evaluation of the whole validation split."""
    from pgolf.eval.api import evaluate
    from pgolf.quant.artifact import eval_model_config, model_from_state

    model = model_from_state(eval_model_config(cfg.model), state).eval()
    result, _ = evaluate(model, "plain", tokens, tables, cfg, "cpu", autocast="off")
    return float(result.val_bpb)


def run(args) -> dict:
    import dataclasses

    from _frontier import FRONTIER, frontier_state, hessians

    from pgolf.config import QuantConfig
    from pgolf.quant import codecs
    from pgolf.quant.frontier import FrontierQuantized, quantize_frontier

    res: dict = {"mode": args.frontier}
    lrzip = codecs.lrzip_program() is not None
    res["lrzip"] = codecs.lrzip_version()
    if args.frontier == "shapes":
        state = frontier_state(shapes=dict(FRONTIER, layers=args.layers))
        hs, qcfg = hessians(state), QuantConfig(scheme="frontier")
        res["weights"] = f"record shapes, {args.layers} layers, synthetic trained-like values (benchmarks/_frontier.py)"
    else:
        from pgolf.data.bpb import load_byte_source
        from pgolf.data.loader import load_val_tokens
        from pgolf.model.record_names import from_record_state_dict
        from pgolf.quant.artifact import read_run, run_data_dir
        from pgolf.quant.calibrate import load_run_hessians

        run_dir = _trained_run(args)
        cfg, state = read_run(run_dir)
        state = from_record_state_dict({k: v for k, v in state.items() if "mtp_heads" not in k})
        saved = load_run_hessians(run_dir)
        if saved is None:
            raise SystemExit(f"{run_dir}: no hessians.safetensors (train it with quant.scheme=frontier)")
        hs, act_rms, acct = saved
        qcfg = cfg.quant
        data = run_data_dir(run_dir, cfg, None)
        vocab = cfg.model.vocab_size
        tables = load_byte_source(data, None, vocab, source=cfg.data.byte_source, caseops=cfg.data.caseops)
        tokens = load_val_tokens(data, vocab_size=vocab)
        steps = _final_step(run_dir)
        res["weights"] = (
            f"{run_dir}: preset {cfg.preset}, {steps if steps is not None else '?'} steps, Hessians from "
            f"{acct.get('batches')} training batches ({acct.get('when')}); scored on {data}"
        )
        res["run"] = str(run_dir)

    act = act_rms if args.frontier == "tiny" else None
    t = time.perf_counter()
    fq = quantize_frontier(state, hs, qcfg, act_rms=act)
    res["quantise_s"] = time.perf_counter() - t
    no_lqer = quantize_frontier(state, hs, dataclasses.replace(qcfg, lqer_enabled=False), act_rms=act)
    rows = []
    res["packings"] = {}
    for label, n, dt in _packings(fq, lrzip):
        res["packings"][label] = {"bytes": n, "seconds": dt}
        rows.append([label, f"{n:,}", f"{dt:.1f}"])
    from pgolf.quant import pergroup

    if args.frontier == "tiny":  # the run's own per-group settings: what `pgolf export` writes for it
        from pgolf.quant.frontier_export import options

        best = options(cfg)
    else:
        best = pergroup.Options(codecs=codecs.available())
    res["lqer_codecs"] = list(best.codecs)
    with_l = len(pergroup.build({"meta": fq.meta}, fq.result, best)[0])
    without = len(pergroup.build({"meta": no_lqer.meta}, no_lqer.result, best)[0])
    raw = sum(t.numel() * t.element_size() for n, t in fq.result.items() if ".lq" in n)
    res["lqer"] = {"bytes_with": with_l, "bytes_without": without, "cost_bytes": with_l - without, "raw_bytes": raw}
    rows.append(["LQER: artifact with - without (raw factor bytes)", f"{with_l - without:,} ({raw:,})", ""])

    if args.frontier == "tiny":
        from pgolf.quant.artifact import eval_model_config, skeleton
        from pgolf.quant.frontier import dequantize_frontier
        from pgolf.quant.rtn import dequantize_state_dict, quantize_state_dict

        template = skeleton(eval_model_config(cfg.model)).state_dict()
        rtn = quantize_state_dict(state, cfg.model.control_patterns, qcfg.passthrough_max_numel)
        sd_rtn = quantize_frontier(state, {}, dataclasses.replace(qcfg, lqer_enabled=False))
        scores = {
            "unquantised": _score(cfg, state, tokens, tables),
            "seed RTN (int6/int8, percentile search)": _score(
                cfg, dequantize_state_dict(rtn.packed, rtn.meta, template), tokens, tables
            ),
        }
        sizes = {}
        for label, q in (("SDClip rounding (H = I)", sd_rtn), ("GPTQ + SDClip", no_lqer), ("GPTQ + SDClip + LQER", fq)):
            assert isinstance(q, FrontierQuantized)
            scores[label] = _score(cfg, dequantize_frontier(q.result, q.meta, template), tokens, tables)
            sizes[label] = len(pergroup.build({"meta": q.meta}, q.result, best)[0])
        res["heldout_bpb"] = scores
        res["artifact_bytes"] = sizes
        res["lqer"]["bpb_gain"] = scores["GPTQ + SDClip"] - scores["GPTQ + SDClip + LQER"]
        res["gptq_bpb_gain_over_sdclip_rounding"] = scores["SDClip rounding (H = I)"] - scores["GPTQ + SDClip"]
        for k, v in scores.items():
            extra = f"{sizes[k]:,} B" if k in sizes else ""
            rows.append([f"held-out bpb: {k}", f"{v:.4f}", extra])
    return {"rows": rows, "result": res}
