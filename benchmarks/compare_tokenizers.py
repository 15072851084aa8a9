"""sp1024 vs sp8192 vs sp8192-CaseOps: the `tiny` preset at an equal CPU budget on the builtin corpus.

    .venv/bin/python benchmarks/compare_tokenizers.py                  # 3 minutes of training each
    .venv/bin/python benchmarks/compare_tokenizers.py --minutes 0.2    # a quick check that it runs

Builds three datasets from the same documents (each tokenizer trained on the builtin train
split): sp1024 and sp8192 with a `raw` byte sidecar, sp8192 with CaseOps (whose sidecar is
always raw). A raw sidecar counts the original bytes of the text, whatever the tokenizer, so
the three bpb figures share one denominator (docs/data.md, "Byte sidecar"); for the two plain
datasets the bpb the challenge's byte tables give (normalised bytes) is reported beside it.
Each model trains for the same wall-clock budget and is scored on the whole validation split
(post-EMA, plain evaluation, as the trainer's last validation). Writes OUT/compare.json and
OUT/compare.md. Numbers depend on the host: measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = (
    ("sp1024", 1024, False),
    ("sp8192", 8192, False),
    ("sp8192-caseops", 8192, True),
)


def build(out: Path, vocab: int, caseops: bool) -> None:
    from pgolf.data.builtin import build_builtin

    if (out / "manifest.json").is_file():
        return
    build_builtin(out, vocab, caseops=caseops, sidecar="raw", log=lambda m: print(m, file=sys.stderr))


def run_one(name: str, data: Path, vocab: int, minutes: float, out: Path, extra: list[str]) -> dict:
    from pgolf.config import load_config
    from pgolf.data.bpb import build_byte_tables, stream_bytes
    from pgolf.data.tokenizer import load_tokenizer
    from pgolf.eval.common import prepare_stream
    from pgolf.train.trainer import Trainer

    sets = [
        f"model.vocab_size={vocab}",
        f"train.max_wallclock_seconds={minutes * 60.0}",
        "train.checkpoint_every=0",
        *extra,
    ]
    cfg = load_config("tiny", sets, environ={})
    t0 = time.perf_counter()
    trainer = Trainer(cfg, data, out / "runs" / time.strftime("%Y%m%d-%H%M%S") / name, show_progress=False)
    res = trainer.run()
    wall = time.perf_counter() - t0
    stream = prepare_stream(trainer.val_full, cfg.eval_seq_len)
    n = len(stream) - 1
    raw_bytes = trainer.tables.total(n)  # the raw sidecar: original bytes of the scored targets
    row = {
        "variant": name,
        "vocab_size": vocab,
        "params": res["params"],
        "steps": res["steps"],
        "train_seconds": round(res["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "val_targets": n,
        "val_bytes_raw": raw_bytes,
        "tokens_per_byte": n / raw_bytes,
        "val_bpb": res["post_ema_val_bpb"],
        "val_loss": res["post_ema_val_loss"],
        "tokenizer_bytes": (data / "tokenizer.model").stat().st_size,
    }
    if not trainer.tables.caseops:
        sp = load_tokenizer(data / "tokenizer.model")
        table_bytes = stream_bytes(stream, build_byte_tables(sp, vocab))
        row["val_bytes_tables"] = table_bytes
        row["val_bpb_tables"] = res["post_ema_val_bpb"] * raw_bytes / table_bytes  # same loss, other bytes
    return row


def render(rows: list[dict], minutes: float) -> str:
    lines = [
        f"| variant | params | steps in {minutes:g} min | val bpb (raw bytes) | val bpb (byte tables) | "
        "tokens/byte | tokenizer bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tables = f"{r['val_bpb_tables']:.4f}" if "val_bpb_tables" in r else "n/a (CaseOps)"
        lines.append(
            f"| {r['variant']} | {r['params']:,} | {r['steps']} | {r['val_bpb']:.4f} | {tables} | "
            f"{r['tokens_per_byte']:.4f} | {r['tokenizer_bytes']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="training wall-clock budget per variant")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare_tokenizers")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, vocab, caseops in VARIANTS:
        data = args.out / "data" / name
        build(data, vocab, caseops)
        rows.append(run_one(name, data, vocab, args.minutes, args.out, args.sets))
        print(json.dumps(rows[-1]), file=sys.stderr)
    import platform

    from pgolf.data.builtin import source_description

    body = {"minutes": args.minutes, "python": platform.python_version(), "corpus": source_description(), "rows": rows}
    (args.out / "compare.json").write_text(json.dumps(body, indent=2) + "\n")
    table = render(rows, args.minutes)
    (args.out / "compare.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
