"""Measure every packing / compression choice for the artifact on the SAME quantised weights.

    python benchmarks/bench_packing.py [--run RUN] [--train-steps N] [--quick] [--scale S] [--out FILE.json]
    python benchmarks/bench_packing.py --frontier shapes|tiny [--run RUN]   # the frontier export (_frontier_packing.py)

Weights: a run directory's final_model.safetensors (`--run`), else a `record`-preset
model (seed 1337) trained for `--train-steps` Adam steps on the builtin corpus
tokenised with the published tokenizer (cached under runs/bench_packing/). The weights
are quantised once (RTN, the seed's export) and each choice below packs the same
tensors; the table gives the compressed bytes, the difference to the seed's format and
the compress/decompress time. Nothing here is used at run time except through
pgolf.quant.container (the chosen layout).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgolf.config import Config, load_config  # noqa: E402
from pgolf.quant import container  # noqa: E402
from pgolf.quant.rtn import Quantized, classify, quantize_state_dict  # noqa: E402

PUBLISHED_TOKENIZER = ROOT.parent / "shared" / "reference" / "tokenizers" / "fineweb_1024_bpe.model"


# --------------------------------------------------------------------------- weights
def train_tokens(vocab: int) -> np.ndarray:
    """The builtin corpus through the published tokenizer, else a fixed random bigram stream."""
    if PUBLISHED_TOKENIZER.is_file():
        from pgolf.data.builtin import builtin_documents, split_documents
        from pgolf.data.tokenizer import encode_documents, load_tokenizer

        sp = load_tokenizer(PUBLISHED_TOKENIZER, vocab)
        train, _ = split_documents(builtin_documents())
        ids = encode_documents(sp, [d.text for d in train])
        return np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
    rng = np.random.default_rng(0)
    nxt = rng.integers(0, vocab, size=(vocab, 4))
    out = np.zeros(2_000_000, dtype=np.int64)
    for i in range(1, len(out)):
        out[i] = nxt[out[i - 1], rng.integers(0, 4)]
    return out


def make_weights(
    steps: int, cache: Path, seq: int = 256, batch: int = 4
) -> tuple[Config, dict[str, torch.Tensor], str]:
    from safetensors.torch import load_file, save_file

    from pgolf.model import build_model

    cfg = load_config("record", environ={})
    desc = f"record preset, seed 1337, {steps} Adam steps (lr 2e-3, {batch}x{seq} tokens/step)"
    desc += " on the builtin corpus"
    if cache.is_file():
        return cfg, load_file(str(cache)), desc
    model = build_model(cfg.model, seed=1337)
    if steps:
        toks = torch.from_numpy(train_tokens(cfg.model.vocab_size))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(0)
        model.train()
        t0 = time.time()
        for step in range(steps):
            starts = torch.randint(0, len(toks) - seq - 1, (batch,), generator=gen).tolist()
            x = torch.stack([toks[s : s + seq + 1] for s in starts])
            loss = model(x[:, :-1], x[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 10 == 0 or step == steps - 1:
                print(f"train step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(cache))
    return cfg, state, desc


# --------------------------------------------------------------------------- layouts
def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def _pack6(q: np.ndarray) -> bytes:
    """Four int6 values (offset to 0..62) in three bytes."""
    u = (q.astype(np.int16).ravel() + 31).astype(np.uint32)
    u = np.concatenate([u, np.zeros((-len(u)) % 4, np.uint32)]).reshape(-1, 4)
    w = u[:, 0] | (u[:, 1] << 6) | (u[:, 2] << 12) | (u[:, 3] << 18)
    return np.stack([w & 255, (w >> 8) & 255, w >> 16], 1).astype(np.uint8).tobytes()


def layout(q: Quantized, grouped: bool = True, planes: bool = True, int6: str = "int8") -> bytes:
    """The tensors' bytes in one stream: state order or grouped by kind; fp16/bf16 as byte planes or not;
    int6 values as int8 (two's complement), offset to 0..62 ('u6'), 6-bit packed ('pack6') or
    column-major ('T')."""
    names = list(q.packed)
    if grouped:
        names = container.data_order(names, q.meta)
    out = []
    for name in names:
        t = q.packed[name]
        base = name[: -len(".q")] if name.endswith(".q") else None
        if base is not None and q.meta[base] == {"type": "int6"} and int6 != "int8":
            a = t.numpy()
            out.append(
                {
                    "u6": lambda a: (a.astype(np.int16) + 31).astype(np.uint8).tobytes(),
                    "pack6": _pack6,
                    "T": lambda a: np.ascontiguousarray(a.T).tobytes(),
                }[int6](a)
            )
            continue
        b = _bytes(t)
        if planes and t.element_size() == 2:
            b = np.frombuffer(b, np.uint8).reshape(-1, 2).T.tobytes()
        out.append(b)
    return b"".join(out)


def seed_stream(q: Quantized) -> bytes:
    from pgolf.quant.seedfmt import seed_meta

    buf = io.BytesIO()
    torch.save({"w": q.packed, "m": seed_meta(q.meta)}, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- compressors
def xz(
    preset: int = 9,
    extreme: bool = True,
    lc: int | None = None,
    lp: int | None = None,
    pb: int | None = None,
    delta: int = 0,
) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    f: dict = {"id": lzma.FILTER_LZMA2, "preset": preset | (lzma.PRESET_EXTREME if extreme else 0)}
    f.update({k: v for k, v in (("lc", lc), ("lp", lp), ("pb", pb)) if v is not None})
    filters = ([{"id": lzma.FILTER_DELTA, "dist": delta}] if delta else []) + [f]
    return (
        lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters),
        lzma.decompress,
    )


def xz_seed() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    return (lambda b: lzma.compress(b, preset=6)), lzma.decompress


def brotli_c(quality: int = 11, lgwin: int = 24):
    import brotli

    return (lambda b: brotli.compress(b, quality=quality, lgwin=lgwin)), brotli.decompress


def zstd_c(level: int = 22):
    import zstandard

    return (lambda b: zstandard.ZstdCompressor(level=level).compress(b)), (
        lambda b: zstandard.ZstdDecompressor().decompress(b)
    )


def order0_bytes(q: Quantized) -> int:
    """Reference only: order-0 entropy of each quantised tensor's values with its own histogram
    (what a static per-tensor entropy coder could reach) + the other tensors' raw bytes."""
    total = 0.0
    for name, t in q.packed.items():
        if name.endswith(".q"):
            v = t.numpy().ravel().astype(np.int16) + 128
            p = np.bincount(v, minlength=256)
            p = p[p > 0] / v.size
            total += float(-(p * np.log2(p)).sum()) * v.size / 8
        else:
            total += t.numel() * t.element_size()
    return int(math.ceil(total))


def measure(label: str, stream: bytes, codec, seed_bytes: int | None, rows: list[dict]) -> dict:
    comp, decomp = codec
    t = time.perf_counter()
    blob = comp(stream)
    tc = time.perf_counter() - t
    t = time.perf_counter()
    back = decomp(blob)
    td = time.perf_counter() - t
    assert back == stream, label
    row = {
        "choice": label,
        "bytes": len(blob),
        "raw_bytes": len(stream),
        "compress_s": round(tc, 1),
        "decompress_s": round(td, 2),
    }
    if seed_bytes is not None:
        row["vs_seed"] = len(blob) - seed_bytes
    rows.append(row)
    print(f"{label:<58} {len(blob):>11,} {row.get('vs_seed', 0):>+10,} {tc:7.1f}s {td:6.2f}s", flush=True)
    return row


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="use RUN/final_model.safetensors instead of training")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_packing" / "weights.safetensors")
    ap.add_argument("--weights-only", action="store_true", help="prepare (and cache) the weights, then stop")
    ap.add_argument("--quick", action="store_true", help="only the seed format and the container as shipped")
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every int6 matrix by this before quantising (to mimic longer-trained weights)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a busy box)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_packing.json")
    ap.add_argument("--frontier", choices=["shapes", "tiny"], help="the frontier export's packings and LQER instead")
    ap.add_argument("--layers", type=int, default=11, help="--frontier shapes: layers (11 = the record)")
    ap.add_argument(
        "--train-minutes", type=float, default=2.5, help="--frontier tiny without --run: frontier-tiny's budget"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.frontier:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import table, write_result
        from _frontier_packing import run as frontier_run

        out = frontier_run(args)
        print(table(out["rows"], ["choice", "bytes / bpb", "seconds"]))
        name = f"bench_packing_frontier_{args.frontier}"
        given = argv if argv is not None else sys.argv[1:]
        payload = {"command": " ".join(["python benchmarks/bench_packing.py", *given]), **out["result"]}
        print(f"wrote {write_result(name, payload, str(args.out.with_name(name + '.json')))}")
        return 0
    if args.run:
        from pgolf.quant.artifact import read_run

        cfg, state = read_run(args.run)
        desc = f"{args.run}/final_model.safetensors"
    else:
        cache = args.cache.with_name(f"{args.cache.stem}_{args.train_steps}{args.cache.suffix}")
        cfg, state, desc = make_weights(args.train_steps, cache)
    if args.weights_only:
        return 0

    if args.scale != 1.0:
        pats = cfg.model.control_patterns
        state = {k: (v * args.scale if classify(k, v, pats) == "int6" else v) for k, v in state.items()}
        desc += f", int6 matrices x{args.scale:g}"
    t = time.perf_counter()
    q = quantize_state_dict(state, cfg.model.control_patterns)
    print(f"weights: {desc}; RTN quantisation {time.perf_counter() - t:.1f} s; {q.counts()}", flush=True)
    print(f"{'choice':<58} {'bytes':>11} {'vs seed':>10} {'compress':>8} {'decomp':>7}")
    rows: list[dict] = []
    seed = measure("seed: torch.save + lzma preset 6 (xz)", seed_stream(q), xz_seed(), None, rows)["bytes"]
    plain = layout(q, grouped=False, planes=False)
    best = layout(q)
    if not args.quick:
        measure("raw, state order, xz preset 6", plain, xz(6, False), seed, rows)
        measure("raw, state order, xz preset 9", plain, xz(9, False), seed, rows)
        measure("raw, state order, xz preset 9e", plain, xz(9), seed, rows)
        measure("grouped by kind, xz 9e", layout(q, planes=False), xz(9), seed, rows)
    if not args.quick:
        measure("grouped + fp16 byte planes, xz 9e", best, xz(9), seed, rows)
        for lc, lp, pb in ((0, 0, 0), (1, 0, 0), (4, 0, 0), (3, 0, 0), (0, 0, 2)):
            measure(
                f"grouped + planes, xz 9e lc={lc} lp={lp} pb={pb}",
                best,
                xz(9, lc=lc, lp=lp, pb=pb),
                seed,
                rows,
            )
        measure("grouped + planes, delta(1) + xz 9e", best, xz(9, delta=1), seed, rows)
        measure("grouped + planes, int6 offset to 0..62, xz 9e", layout(q, int6="u6"), xz(9), seed, rows)
        measure("grouped + planes, int6 column-major, xz 9e", layout(q, int6="T"), xz(9), seed, rows)
        packed6 = layout(q, int6="pack6")
        measure("grouped + planes, int6 packed 4-in-3 bytes, xz 9e", packed6, xz(9), seed, rows)
        if have("zstandard"):
            measure("grouped + planes, zstd level 22", best, zstd_c(22), seed, rows)
        if have("brotli"):
            measure("raw, state order, brotli q11 lgwin24", plain, brotli_c(11), seed, rows)
            measure("grouped, brotli q11 lgwin24", layout(q, planes=False), brotli_c(11), seed, rows)
            measure("grouped + planes, brotli q9 lgwin24", best, brotli_c(9), seed, rows)
            measure(
                "grouped + planes, int6 packed 4-in-3 bytes, brotli q11",
                layout(q, int6="pack6"),
                brotli_c(11),
                seed,
                rows,
            )
        if have("brotli"):
            measure("grouped + planes, brotli q11 lgwin24", best, brotli_c(11), seed, rows)

    # the real container, end to end (header + index + outer header included)
    header = {"preset": cfg.preset, "model": cfg.to_dict()["model"], "quantiser": "rtn", "meta": q.meta}
    for codec in ("xz", "brotli") if have("brotli") else ("xz",):
        t = time.perf_counter()
        n = len(container.container_bytes(header, q.packed, codec))
        tc = time.perf_counter() - t
        rows.append(
            {
                "choice": f"pgolf container, codec {codec} (as shipped)",
                "bytes": n,
                "vs_seed": n - seed,
                "compress_s": round(tc, 1),
            }
        )
        print(f"{rows[-1]['choice']:<58} {n:>11,} {n - seed:>+10,} {tc:7.1f}s", flush=True)
    ref = order0_bytes(q)
    rows.append(
        {
            "choice": "reference: per-tensor order-0 entropy of the values (no coder)",
            "bytes": ref,
            "vs_seed": ref - seed,
        }
    )
    print(f"{rows[-1]['choice']:<58} {ref:>11,} {ref - seed:>+10,}")

    given = argv if argv is not None else sys.argv[1:]
    result = {
        "weights": desc,
        "counts": q.counts(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os_cpus(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": " ".join(["python benchmarks/bench_packing.py", *given]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def os_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


if __name__ == "__main__":
    sys.exit(main())
