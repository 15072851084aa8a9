"""The table of `pgolf report --from-logs` over every record folder of the challenge's main branch.

Needs the challenge's repository (a git directory; no network): every folder under
records/ at REF is copied into a temporary directory (text files only), its logs are
parsed with pgolf's parser, and the headline is compared with the folder's README and
submission.json. Prints a markdown table (docs/report.md holds its output).

    python benchmarks/records_table.py [--git /work/.mirror/openai+parameter-golf/repo] [--ref HEAD]
        [--extra refs/pull/1313/head:records/track_10min_16mb/2026-04-03_SLOT24_LR012_Stride96]
        [--check]   also run `pgolf check` on each folder and give its FAIL count
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from pgolf.report.check import readme_mentions, run_checks
from pgolf.report.seedlog import aggregate_logs, dedupe_logs, parse_logs

MIRROR = "/work/.mirror/openai+parameter-golf/repo"
SKIP_SUFFIXES = (".png", ".model", ".vocab", ".cpp", ".bin", ".pt", ".ptz")


def git(gitdir: str, *args: str) -> bytes:
    return subprocess.run(["git", "-C", gitdir, *args], check=True, capture_output=True).stdout


def extract(gitdir: str, ref: str, folder: str, dest: Path) -> Path:
    """Copy the text files of `folder` at `ref` into dest/<folder name>; return that path."""
    out = dest / Path(folder).name
    listing = git(gitdir, "ls-tree", "-r", "-z", "-l", ref, "--", folder + "/").split(b"\0")
    for entry in filter(None, listing):
        meta, path = entry.decode().split("\t", 1)
        _mode, kind, sha, size = meta.split()
        if kind != "blob" or path.endswith(SKIP_SUFFIXES) or int(size) > 3_000_000:
            continue
        target = out / Path(path).relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(git(gitdir, "cat-file", "blob", sha))
    out.mkdir(parents=True, exist_ok=True)
    return out


def record_folders(gitdir: str, ref: str) -> list[str]:
    tracks = git(gitdir, "ls-tree", "--name-only", ref, "records/").decode().split()
    out = []
    for t in tracks:
        listing = git(gitdir, "ls-tree", "-z", ref, t + "/").split(b"\0")
        for entry in filter(None, listing):
            meta, path = entry.decode().split("\t", 1)
            if meta.split()[1] == "tree":
                out.append(path)
    return out


def row(folder: Path, track: str, with_check: bool) -> dict:
    logs, errors = parse_logs([folder])
    logs, _ = dedupe_logs(logs)
    sub = {}
    for cand in [folder / "submission.json", *sorted(folder.glob("submission*.json"))]:
        if cand.is_file():
            try:
                sub = json.loads(cand.read_text())
            except ValueError:
                sub = {}
            break
    readme = (folder / "README.md").read_text(errors="replace") if (folder / "README.md").is_file() else ""
    r = {
        "record": folder.name,
        "track": track,
        "logs": len(logs),
        "unreadable": len(errors),
        "seeds": sorted({lg.seed for lg in logs if lg.seed is not None}),
        "method": None,
        "mean": None,
        "submission": sub.get("val_bpb", sub.get("mean_val_bpb")),
        "readme": None,
        "fails": None,
    }
    if logs:
        agg = aggregate_logs(logs)
        h = agg["honest"]
        if h:
            r["method"], r["mean"] = h["method"], h["val_bpb"]["mean"]
            r["readme"] = readme_mentions(readme, r["mean"]) if readme else None
    if with_check:
        r["fails"] = run_checks(folder)["failures"]
    return r


def markdown(rows: list[dict], with_check: bool) -> str:
    head = ["record", "track", "logs", "seeds", "headline method", "mean bpb", "submission.json", "README"]
    if with_check:
        head.append("check FAILs")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mean = "—" if r["mean"] is None else f"{r['mean']:.5f}"
        sub = r["submission"]
        sub_ok = ""
        if isinstance(sub, (int, float)) and r["mean"] is not None:
            sub_ok = " =" if abs(sub - r["mean"]) <= 5e-5 else " ≠"
        if r["mean"] is None:
            readme = "—"
        else:
            readme = "yes" if r["readme"] else "no"
        logs = str(r["logs"]) + (f" (+{r['unreadable']} not logs)" if r["unreadable"] else "")
        cells = [
            r["record"],
            r["track"].removeprefix("track_"),
            logs,
            ", ".join(map(str, r["seeds"])) or "—",
            r["method"] or "—",
            mean,
            f"{sub}{sub_ok}" if sub is not None else "—",
            readme,
        ]
        if with_check:
            cells.append(str(r["fails"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--git", default=MIRROR)
    ap.add_argument("--ref", default="HEAD")
    ap.add_argument("--extra", action="append", default=[], metavar="REF:FOLDER")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(args.ref, f) for f in record_folders(args.git, args.ref)]
        jobs += [tuple(x.split(":", 1)) for x in args.extra]
        for i, (ref, folder) in enumerate(jobs):
            d = extract(args.git, ref, folder, Path(tmp) / str(i))
            track = Path(folder).parent.name + ("" if ref == args.ref else f" ({ref})")
            rows.append(row(d, track, args.check))
    print(markdown(rows, args.check))
    n = [r for r in rows if r["mean"] is not None]
    print()
    print(
        f"{len(rows)} folders; {len(n)} with a score-first headline; README mentions the headline mean in "
        f"{sum(1 for r in n if r['readme'])}; submission.json equals it in "
        f"{sum(1 for r in n if isinstance(r['submission'], (int, float)) and abs(r['submission'] - r['mean']) <= 5e-5)}"
    )


if __name__ == "__main__":
    main()
