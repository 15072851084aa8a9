"""Evaluation cost: SLOT's optimisation loop (scored-only vs whole-window) and every method's throughput.

Part 1, the SLOT loop alone, at the seed's geometry (window 2048, stride 96, 24 AdamW
steps) with the record model's head (512 -> 1024, soft-cap 30): both implementations
optimise the same per-window delta/bias on the same hidden states; only the loop
(`slot.fit`) is timed. Windows are full windows after the first (96 scored positions each).

Part 2, whole evaluations of one model on one stream at the same geometry: sliding,
SLOT (scored and full), causal SLOT and TTT; seconds, tokens/s, and SLOT's time as a
multiple of sliding's. By default the model is the `tiny` preset's architecture
(random weights: cost does not depend on what the weights are), because the record
model's hidden-state pass at 2048 tokens is too slow for a CPU run of reasonable length.

Part 3 (`--part documents`), per-document LoRA TTT at the record's geometry scaled down for
a CPU: the `frontier-tiny` architecture (random weights), a stream of BOS-led documents with
lengths drawn log-normally (mean about a quarter of the record's 957 tokens, as the window
is a quarter of its 2048), chunk 48, stride 64, rank scaled with the width. It times sliding,
ttt-lora batched (documents per batch `--doc-batch`) and one document at a time (batch 1;
the two must give the same bpb), and ttt-phased with its per-phase times.

On CPU everything is fp32 (the seed computes sliding logits in bf16 under CUDA autocast).

    python benchmarks/bench_eval.py [--quick] [--part all|slot|methods|documents] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.config import load_config  # noqa: E402
from pgolf.data.bpb import ByteTables  # noqa: E402
from pgolf.eval import evaluate  # noqa: E402
from pgolf.eval.sliding import make_batch  # noqa: E402
from pgolf.eval.slot import Head, fit, slot_problem  # noqa: E402
from pgolf.eval.windows import Window  # noqa: E402
from pgolf.model.gpt import build_model  # noqa: E402
from pgolf.model.layers import rms_norm  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict:
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        env["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def uniform_tables(vocab: int) -> ByteTables:
    """Two bytes per token (timing only: bpb values of part 2 are not meaningful)."""
    return ByteTables(
        torch.full((vocab,), 2, dtype=torch.int16), torch.zeros(vocab, dtype=torch.bool),
        torch.zeros(vocab, dtype=torch.bool), (),
    )  # fmt: skip


# --------------------------------------------------------------------------- part 1
def bench_loop(windows: int, seq_len: int, stride: int, steps: int, device: torch.device, repeat: int) -> dict:
    cfg = load_config("record", environ={})
    model = build_model(cfg.model, seed=0).to(device).eval()
    head = Head(model)
    d, V = cfg.model.model_dim, cfg.model.vocab_size
    gen = torch.Generator().manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, V, size=stride * windows + seq_len + 1).astype(np.uint16)
    # Windows 1..W of a long stream: full length, 96 scored positions each (what 99.99% of windows are).
    group = [Window(stride * (i + 1), seq_len, seq_len - stride, seq_len) for i in range(windows)]
    b = make_batch(tokens, group, device)
    h = rms_norm(torch.randn(windows, seq_len, d, generator=gen)).to(device)
    out = {"windows": windows, "seq_len": seq_len, "stride": stride, "steps": steps, "model_dim": d, "vocab": V}
    for impl in ("scored", "full"):  # warm-up, untimed
        params, loss_fn, _ = slot_problem(head, b, h, impl)
        fit(params, loss_fn, 2, 0.012, 0.001, "seed")
    for impl in ("scored", "full"):
        times = []
        for _ in range(repeat):
            params, loss_fn, final_fn = slot_problem(head, b, h, impl)
            sync(device)
            t0 = time.perf_counter()
            fit(params, loss_fn, steps, 0.012, 0.001, "seed")
            sync(device)
            times.append(time.perf_counter() - t0)
        with torch.no_grad():
            out[f"{impl}_final_nll_mean"] = float(final_fn().mean())
        out[f"{impl}_loop_s"] = min(times)
        out[f"{impl}_loop_s_per_window"] = min(times) / windows
    out["loop_speedup"] = out["full_loop_s"] / out["scored_loop_s"]
    out["same_result"] = abs(out["scored_final_nll_mean"] - out["full_final_nll_mean"]) < 1e-5
    return out


# --------------------------------------------------------------------------- part 2
def _eval_seconds(model, method, tokens, tables, preset, sets, device, n_targets) -> float:
    c = load_config(preset, sets=sets, environ={})
    res, _ = evaluate(model, method, tokens, tables, c, device, max_tokens=n_targets)
    return res.seconds


def bench_methods(preset: str, windows: int, seq_len: int, stride: int, device: torch.device, ttt_chunk: int) -> dict:
    n_targets = seq_len + (windows - 1) * stride  # exactly `windows` windows
    base = [f"eval.seq_len={seq_len}", f"eval.stride={stride}", "eval.batch_seqs=32", "eval.slot_batch_seqs=32",
            f"eval.ttt_chunk_tokens={ttt_chunk}", "runtime.device=" + device.type]  # fmt: skip
    cfg = load_config(preset, sets=base, environ={})
    model = build_model(cfg.model, seed=0).to(device).eval()
    V = cfg.model.vocab_size
    tokens = np.random.default_rng(1).integers(0, V, size=n_targets + 1).astype(np.uint16)
    tables = uniform_tables(V)
    for method in ("sliding", "slot", "ttt"):  # warm-up: first-call costs (allocator, kernels) untimed
        _eval_seconds(model, method, tokens, tables, preset, base, device, seq_len + stride)
    runs = [
        ("sliding", []),
        ("slot", ["eval.slot_impl=scored"]),
        ("slot", ["eval.slot_impl=full"]),
        ("slot-causal", []),
        ("slot-causal", ["eval.causal_context=256"]),
        ("ttt", []),
    ]
    rows = []
    for method, sets in runs:
        sec = _eval_seconds(model, method, tokens, tables, preset, [*base, *sets], device, n_targets)
        label = method + (f" ({', '.join(s.split('.', 1)[1] for s in sets)})" if sets else "")
        rows.append({"run": label, "method": method, "seconds": sec, "tokens": n_targets,
                     "tokens_per_s": n_targets / sec, "score_first": method != "slot"})  # fmt: skip
        print(f"  {label:<36} {sec:8.2f} s  {n_targets / sec:10.1f} tok/s", flush=True)
    sliding = rows[0]["seconds"]
    for r in rows:
        r["x_sliding"] = r["seconds"] / sliding
    # Steady state: the first window scores all its positions (2048 SLOT rows instead of 96),
    # which weighs heavily in a short bench stream and not at all in a 646k-window split. The
    # marginal cost per window, from a second, shorter stream, leaves it (and warm-up) out.
    short = max(2, windows // 4)
    n_short = seq_len + (short - 1) * stride
    marginal = {}
    for (method, sets), row in zip(runs[:3], rows[:3]):
        sec = _eval_seconds(model, method, tokens, tables, preset, [*base, *sets], device, n_short)
        marginal[row["run"]] = (row["seconds"] - sec) / (windows - short)
    steady = {k: {"s_per_window": v, "x_sliding": v / marginal["sliding"]} for k, v in marginal.items()}
    for k, v in steady.items():
        print(f"  steady state {k:<28} {v['s_per_window']:8.3f} s/window  {v['x_sliding']:5.2f} x sliding")
    m = cfg.model
    return {
        "preset": preset,
        "model": f"{m.num_layers}x{m.model_dim}, vocab {V}",
        "windows": windows,
        "targets": n_targets,
        "seq_len": seq_len,
        "stride": stride,
        "slot_steps": cfg.eval.slot_steps,
        "causal_steps": cfg.eval.causal_steps,
        "ttt": {"chunk_tokens": ttt_chunk, "epochs": cfg.eval.ttt_epochs},
        "rows": rows,
        "steady_state": {"short_windows": short, **steady},
    }


# --------------------------------------------------------------------------- part 3
def document_stream(n_docs: int, mean_len: int, vocab: int, seed: int = 2) -> np.ndarray:
    """BOS-led documents of log-normal lengths (sigma 1, clipped to [8, 8 mean]); ids avoid BOS."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_len) - 0.5, 1.0, size=n_docs), 8, 8 * mean_len).astype(int)
    parts = [np.concatenate(([1], rng.integers(2, vocab, size=n))) for n in lengths]
    return np.concatenate([*parts, [1]]).astype(np.uint16)


def bench_documents(n_docs: int, mean_len: int, seq_len: int, doc_batch: int, rank: int, device, dim: int = 0) -> dict:
    narrow = [f"model.model_dim={dim}", "model.num_heads=4", "model.num_kv_heads=2"] if dim else []
    base = [*narrow, f"eval.seq_len={seq_len}", "eval.stride=64", "eval.batch_seqs=32", f"eval.ttt_lora_rank={rank}",
            "eval.ttt_chunk=48", "eval.ttt_context=0", f"eval.ttt_prefix_docs={n_docs // 2}", "eval.ttt_phases=3",
            f"eval.global_ttt_chunk_tokens={8 * seq_len}", "eval.global_ttt_batch_seqs=8",
            "runtime.device=" + device.type, "runtime.compile=off"]  # fmt: skip
    cfg = load_config("frontier-tiny", sets=base, environ={})
    model = build_model(cfg.model, seed=0).to(device).eval()
    V = cfg.model.vocab_size
    tokens = document_stream(n_docs, mean_len, V)
    tables = uniform_tables(V)
    warm = document_stream(4, 64, V, seed=3)
    for method in ("sliding", "ttt-lora"):  # first-call costs untimed
        evaluate(model, method, warm, tables, cfg, device)
    runs = [("sliding", []), ("ttt-lora", [f"eval.ttt_doc_batch={doc_batch}"]), ("ttt-lora", ["eval.ttt_doc_batch=1"]),
            ("ttt-phased", [f"eval.ttt_doc_batch={doc_batch}"])]  # fmt: skip
    rows = []
    for method, sets in runs:
        c = load_config("frontier-tiny", sets=[*base, *sets], environ={})
        stats: dict = {}
        res, _ = evaluate(model, method, tokens, tables, c, device, stats=stats if method != "sliding" else None)
        row = {"run": method + (f" (batch {c.eval.ttt_doc_batch})" if method != "sliding" else ""),
               "seconds": res.seconds, "tokens": res.tokens, "val_bpb": res.val_bpb, **stats}  # fmt: skip
        rows.append(row)
        print(f"  {row['run']:<28} {res.seconds:8.2f} s  bpb {res.val_bpb:.8f}", flush=True)
    sliding = rows[0]["seconds"]
    for r in rows:
        r["x_sliding"] = r["seconds"] / sliding
    m = cfg.model
    return {
        "preset": "frontier-tiny",
        "model": f"{m.num_layers}x{m.model_dim}, vocab {V}, {m.num_loops} loops",
        "documents": n_docs,
        "targets": len(tokens) - 1,
        "mean_doc_len": float((len(tokens) - 1) / n_docs),
        "seq_len": seq_len,
        "chunk": 48,
        "stride": 64,
        "rank": rank,
        "doc_batch": doc_batch,
        "rows": rows,
        "batching_speedup": rows[2]["seconds"] / rows[1]["seconds"],
        "batching_bpb_difference": abs(rows[2]["val_bpb"] - rows[1]["val_bpb"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/bench_eval.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--stride", type=int, default=96)
    ap.add_argument("--loop-windows", type=int, default=8, help="windows in the timed SLOT loop")
    ap.add_argument("--eval-windows", type=int, default=32, help="windows in each whole evaluation")
    ap.add_argument("--preset", default="tiny", help="model architecture for part 2")
    ap.add_argument("--ttt-chunk", type=int, default=1024, help="TTT chunk (small, so the short stream trains)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer windows (a smoke run)")
    ap.add_argument("--part", default="all", choices=("all", "slot", "methods", "documents"))
    ap.add_argument("--docs", type=int, default=96, help="part 3: documents in the stream")
    ap.add_argument("--doc-len", type=int, default=240, help="part 3: mean document length")
    ap.add_argument("--doc-seq-len", type=int, default=512, help="part 3: window (the record's 2048 / 4)")
    ap.add_argument("--doc-batch", type=int, default=32, help="part 3: documents per batch")
    ap.add_argument("--rank", type=int, default=32, help="part 3: LoRA rank (the record's 80 of 512, scaled)")
    ap.add_argument("--doc-dim", type=int, default=0, help="part 3: model width (0 = frontier-tiny's 192)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.loop_windows, args.eval_windows, args.repeat = 2, 8, 2
        args.docs, args.doc_len, args.doc_seq_len, args.doc_batch = 12, 60, 128, 4
    device = torch.device(args.device)
    result = {"environment": environment(device)}
    print(f"environment: {json.dumps(result['environment'])}")

    if args.part in ("all", "documents"):
        print(f"\nPer-document LoRA TTT: frontier-tiny, {args.docs} documents (mean {args.doc_len}), "
              f"window {args.doc_seq_len}, chunk 48, stride 64, rank {args.rank}")  # fmt: skip
        docs = bench_documents(args.docs, args.doc_len, args.doc_seq_len, args.doc_batch, args.rank, device,
                               args.doc_dim)  # fmt: skip
        result["documents"] = docs
        print(f"  batching speed-up {docs['batching_speedup']:.1f} x, bpb difference "
              f"{docs['batching_bpb_difference']:.2e}")  # fmt: skip
        for p in docs["rows"][3].get("phases", []):
            print(f"  phase {p['phase']}: {p['docs_trained']} documents, {p['sgd_steps']} SGD steps, "
                  f"{p['seconds']:.2f} s")  # fmt: skip
    if args.part in ("all", "slot"):
        slot_part(args, device, result)
    if args.part in ("all", "methods"):
        methods_part(args, device, result)
    return _write(result, args.out)


def slot_part(args, device, result: dict) -> None:
    print(f"\nSLOT loop alone: record head, {args.loop_windows} windows of {args.seq_len}, stride {args.stride}, "
          "24 steps")  # fmt: skip
    loop = bench_loop(args.loop_windows, args.seq_len, args.stride, 24, device, args.repeat)
    result["slot_loop"] = loop
    print(f"  whole-window loop (seed)   {loop['full_loop_s']:8.2f} s  ({loop['full_loop_s_per_window']:.3f} s/window)")
    print(f"  scored-only loop (ours)    {loop['scored_loop_s']:8.2f} s  "
          f"({loop['scored_loop_s_per_window']:.3f} s/window)")  # fmt: skip
    print(f"  speed-up                   {loop['loop_speedup']:8.1f} x   same result: {loop['same_result']}")


def methods_part(args, device, result: dict) -> None:
    print(f"\nWhole evaluations: {args.preset} architecture, {args.eval_windows} windows of {args.seq_len}, "
          f"stride {args.stride}")  # fmt: skip
    methods = bench_methods(args.preset, args.eval_windows, args.seq_len, args.stride, device, args.ttt_chunk)
    result["methods"] = methods
    print("\n| run | seconds | tokens/s | x sliding |\n|---|---:|---:|---:|")
    for r in methods["rows"]:
        print(f"| {r['run']} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} | {r['x_sliding']:.2f} |")


def _write(result: dict, path: str) -> int:
    if hasattr(os, "getloadavg"):
        result["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
