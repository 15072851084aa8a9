"""bench_packing.py --frontier: the frontier export's packings on the SAME quantised weights, and LQER's worth.

    python benchmarks/bench_packing.py --frontier shapes [--layers 11]   # the record's shapes, synthetic weights
    python benchmarks/bench_packing.py --frontier tiny [--train-steps 300]  # a trained `tiny` model, real data

Weights are quantised once (GPTQ + SDClip, int7 tok_emb, int8 gates, LQER), then packed as:
the single-stream pgolf container (brotli; xz), the per-group container with and without the
row sort, without and with lrzip, and the record's own layout (lrzip groups + pickle remainder).
For `tiny` (a real model; matrices above 4,096 values quantised) it also scores held-out bpb for
the unquantised model, the seed's RTN export, SDClip rounding, GPTQ and GPTQ + LQER.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_TOKENIZER = ROOT.parent / "shared" / "reference" / "tokenizers" / "fineweb_1024_bpe.model"
TINY_PASSTHROUGH = 4096


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


def _tiny(steps: int, cache: Path):
    """(cfg, state, train tokens, held-out tokens, byte tables) of a `tiny` model trained with Adam."""
    from safetensors.torch import load_file, save_file

    from pgolf.config import load_config
    from pgolf.data.bpb import build_byte_tables
    from pgolf.data.builtin import builtin_documents, split_documents
    from pgolf.data.tokenizer import encode_documents, load_tokenizer
    from pgolf.model import build_model

    cfg = load_config("tiny", environ={})
    sp = load_tokenizer(PUBLISHED_TOKENIZER, cfg.model.vocab_size)
    train, held = split_documents(builtin_documents())
    enc = [np.concatenate([np.asarray(x, dtype=np.int64) for x in encode_documents(sp, [d.text for d in docs])])
           for docs in (train, held)]  # fmt: skip
    tables = build_byte_tables(sp, cfg.model.vocab_size)
    if cache.is_file():
        return cfg, load_file(str(cache)), enc[0], enc[1], tables
    model = build_model(cfg.model, seed=1337)
    toks = torch.from_numpy(enc[0])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    seq, batch = 256, 16
    model.train()
    for step in range(steps):
        for gr in opt.param_groups:
            gr["lr"] = 2e-3 * min(1.0, (steps - step) / (0.3 * steps))
        starts = torch.randint(0, len(toks) - seq - 1, (batch,), generator=gen).tolist()
        x = torch.stack([toks[s : s + seq + 1] for s in starts])
        loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(cache))
    return cfg, state, enc[0], enc[1], tables


def _bpb(cfg, state, held: np.ndarray, tables, seq: int = 256, max_targets: int = 65536) -> float:
    from pgolf.data.bpb import bpb, target_bytes
    from pgolf.quant.artifact import model_from_state

    model = model_from_state(cfg.model, state).eval()
    n = min(len(held) - 1, max_targets) // seq * seq
    x = torch.from_numpy(held[: n + 1])
    inputs, targets = x[:-1].view(-1, seq), x[1:].view(-1, seq)
    loss = 0.0
    with torch.no_grad():
        for i in range(0, inputs.size(0), 16):
            logits = model.compute_logits(model.forward_hidden(inputs[i : i + 16])).float()
            loss += float(
                torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[i : i + 16].flatten(), reduction="sum")
            )
    return bpb(loss, targets.numel(), int(target_bytes(targets, inputs, tables).sum()))[1]


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
        from pgolf.quant.artifact import model_from_state
        from pgolf.quant.calibrate import collect_hessians

        cfg, state, train, held, tables = _tiny(args.train_steps, ROOT / "runs" / "bench_packing" / "tiny.safetensors")
        model = model_from_state(cfg.model, state).eval()
        gen = np.random.default_rng(0)
        starts = gen.integers(0, len(train) - 257, 64)
        batches = [
            torch.from_numpy(np.stack([train[s : s + 256] for s in starts[i : i + 16]])) for i in range(0, 64, 16)
        ]
        hs, _, _ = collect_hessians(model, batches)
        qcfg = QuantConfig(scheme="frontier", passthrough_max_numel=TINY_PASSTHROUGH)
        res["weights"] = (
            f"tiny preset, {args.train_steps} Adam steps on the builtin corpus; 64 x 256 calibration tokens"
        )

    t = time.perf_counter()
    fq = quantize_frontier(state, hs, qcfg)
    res["quantise_s"] = time.perf_counter() - t
    no_lqer = quantize_frontier(state, hs, dataclasses.replace(qcfg, lqer_enabled=False))
    rows = []
    res["packings"] = {}
    for label, n, dt in _packings(fq, lrzip):
        res["packings"][label] = {"bytes": n, "seconds": dt}
        rows.append([label, f"{n:,}", f"{dt:.1f}"])
    from pgolf.quant import pergroup

    best = pergroup.Options(codecs=codecs.available())
    with_l = len(pergroup.build({"meta": fq.meta}, fq.result, best)[0])
    without = len(pergroup.build({"meta": no_lqer.meta}, no_lqer.result, best)[0])
    raw = sum(t.numel() * t.element_size() for n, t in fq.result.items() if ".lq" in n)
    res["lqer"] = {"bytes_with": with_l, "bytes_without": without, "cost_bytes": with_l - without, "raw_bytes": raw}
    rows.append(["LQER: artifact with - without (raw factor bytes)", f"{with_l - without:,} ({raw:,})", ""])

    if args.frontier == "tiny":
        from pgolf.quant.frontier import dequantize_frontier
        from pgolf.quant.rtn import dequantize_state_dict, quantize_state_dict

        template = state
        rtn = quantize_state_dict(state, cfg.model.control_patterns, TINY_PASSTHROUGH)
        sd_rtn = quantize_frontier(state, {}, dataclasses.replace(qcfg, lqer_enabled=False))
        scores = {
            "unquantised": _bpb(cfg, state, held, tables),
            "seed RTN (int6/int8, percentile search)": _bpb(
                cfg, dequantize_state_dict(rtn.packed, rtn.meta, template), held, tables
            ),
        }
        for label, q in (("SDClip rounding (H = I)", sd_rtn), ("GPTQ + SDClip", no_lqer), ("GPTQ + SDClip + LQER", fq)):
            assert isinstance(q, FrontierQuantized)
            scores[label] = _bpb(cfg, dequantize_frontier(q.result, q.meta, template), held, tables)
        res["heldout_bpb"] = scores
        for k, v in scores.items():
            rows.append([f"held-out bpb: {k}", f"{v:.4f}", ""])
    return {"rows": rows, "result": res}
