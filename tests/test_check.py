"""`pgolf check` on record folders built from committed log excerpts (tests/fixtures/logs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pgolf.cli import main
from pgolf.report.check import run_checks
from pgolf.report.seedlog import parse_seed_log
from pgolf.report.stats import challenge_significance

FIX = Path(__file__).resolve().parent / "fixtures" / "logs"
FRONTIER_LOG = FIX / "april_phased_pr1855_seed42.log"


def _placeholders(folder: Path) -> None:
    # The record's own README.md and train_gpt.py are not copied into pgolf's tests; check only asks that
    # they exist, so a placeholder stands in.
    (folder / "README.md").write_text("# placeholder README for the test\n")
    (folder / "train_gpt.py").write_text("# placeholder\n")


def _by(result: dict, check: str, status: str | None = None) -> list[str]:
    return [f["message"] for f in result["findings"] if f["check"] == check and status in (None, f["status"])]


@pytest.fixture
def seed_folder(tmp_path) -> Path:
    d = tmp_path / "2026-04-03_SLOT24_LR012_Stride96"
    shutil.copytree(FIX / "seed_pr1313", d)
    _placeholders(d)
    return d


def test_seed_folder_flags_slot_and_passes_sizes(seed_folder):
    r = run_checks(seed_folder)
    assert not r["ok"]
    sizes = _by(r, "bytes")
    assert len(sizes) == 3 and all(m.startswith("seed ") for m in sizes)
    assert all(f["status"] == "PASS" for f in r["findings"] if f["check"] == "bytes")
    assert "15,827,704 bytes" in " ".join(sizes)
    slot = _by(r, "methods", "WARN")
    assert len(slot) == 3 and all("SLOT" in m and "not score-first" in m for m in slot)
    claim = _by(r, "submission", "FAIL")
    # the folder claims the SLOT mean (0.8637) and per-seed SLOT figures: not score-first
    assert any("mean_val_bpb 0.8637 is the slot figure" in m and "1.12294183" in m for m in claim)
    assert sum("seed_results val_bpb" in m and "not score-first" in m for m in claim) == 3
    assert all(f["status"] == "PASS" for f in r["findings"] if f["check"] in ("time", "val_tokens", "seeds"))


def _planted(tmp_path: Path) -> Path:
    """Two seeds from the frontier's log: one artifact over the limit, one 601 s run, one wrong val count."""
    d = tmp_path / "planted"
    d.mkdir()
    text = FRONTIER_LOG.read_text()
    over = text.replace(
        "Total submission size quantized+pergroup: 15897259 bytes",
        "Total submission size quantized+pergroup: 16000001 bytes",
    )
    assert over != text
    (d / "train_seed42.log").write_text(over)
    slow = text.replace("  seed: 42", "  seed: 7").replace("train_time: 599592ms", "train_time: 601000ms")
    slow = slow.replace("val_tokens: 47851520", "val_tokens: 47800000")
    assert slow.count("601000ms") == 1 and "47800000" in slow
    (d / "train_seed7.log").write_text(slow)
    _placeholders(d)
    lg42, lg7 = parse_seed_log(d / "train_seed42.log"), parse_seed_log(d / "train_seed7.log")
    bpb = (lg42.headline.val_bpb + lg7.headline.val_bpb) / 2
    sub = {"name": "planted", "github_id": "x", "author": "x", "blurb": "", "date": "2026-05-01", "val_bpb": bpb}
    sub |= {"val_loss": 2.3, "bytes_total": 16000001, "bytes_code": 31999}
    (d / "submission.json").write_text(json.dumps(sub))
    return d


def test_planted_folder_names_each_problem(tmp_path, capsys):
    d = _planted(tmp_path)
    r = run_checks(d)
    assert not r["ok"]
    fails = {f["check"]: f for f in r["findings"] if f["status"] == "FAIL"}
    assert set(fails) == {"bytes", "time", "val_tokens"}
    assert "seed 42: artifact 16,000,001 bytes > 16,000,000" in _by(r, "bytes", "FAIL")[0]
    assert _by(r, "time", "FAIL") == ["seed 7: training 601.0 s > 600 s"]
    assert _by(r, "val_tokens", "FAIL") == [
        "seed 7: 47,800,000 validation targets, the official sp8192-caseops split has 47,851,520"
    ]
    assert any("2 seed(s) [7, 42]" in m for m in _by(r, "seeds", "WARN"))
    assert _by(r, "submission", "FAIL") == []  # val_bpb is the two logs' mean
    # the CLI: one line per finding, exit status 1
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("FAIL") for line in out) == 3 and "3 rule(s) broken" in out[-1]
    assert main(["check", str(d), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failures"] == 3


def test_caseops_leak_shards_and_missing_files(tmp_path):
    d = tmp_path / "leak"
    d.mkdir()
    text = FRONTIER_LOG.read_text().replace("train_shards: 80", "train_shards: 1499")
    (d / "train_seed42.log").write_text(text)
    r = run_checks(d)
    assert any("1,499 training shards" in m for m in _by(r, "val_tokens", "FAIL"))
    missing = _by(r, "files", "FAIL")
    assert {m.split()[0] for m in missing} == {"README.md", "train_gpt.py", "submission.json"}


def test_significance_both_rules(tmp_path):
    d = _planted(tmp_path)
    losses = [parse_seed_log(p).headline.val_loss for p in sorted(d.glob("*.log"))]
    ref = max(losses) + 0.004  # better by < 0.005 nats on average: progression yes, README rule no
    r = run_checks(d, against=str(ref))
    sig = _by(r, "significance")
    expect = challenge_significance(losses, ref)
    prog = challenge_significance(losses, ref, margin=0.0, alpha=0.25)
    assert not expect.passes and prog.passes
    assert any(m.startswith("README rule") and "not met" in m and f"{expect.p:.3g}" in m for m in sig)
    assert any(m.startswith("progression rule") and ": met" in m and f"{prog.p:.3g}" in m for m in sig)
    # against a folder: the reference's own score-first figures
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for log in d.glob("*.log"):
        shutil.copy(log, ref_dir / log.name)
    r = run_checks(d, against=str(ref_dir))
    assert any("2 seed(s) of ref" in m for m in _by(r, "significance", "INFO"))
    assert not any("not comparable" in m for m in _by(r, "significance", "WARN"))
    other = FRONTIER_LOG.read_text().replace("val_tokens: 47851520", "val_tokens: 40540160")
    (ref_dir / "train_seed42.log").write_text(other)
    (ref_dir / "train_seed7.log").unlink()
    r = run_checks(d, against=str(ref_dir))
    assert any("not comparable" in m for m in _by(r, "significance", "WARN"))
    with pytest.raises(Exception, match="neither a number"):
        run_checks(d, against=str(tmp_path / "nowhere"))


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith("not a folder")
    d = tmp_path / "bad"
    d.mkdir()
    (d / "submission.json").write_text("[1, 2")
    r = run_checks(d)
    assert any("submission.json: not readable JSON" in m for m in _by(r, "files", "FAIL"))
    assert any("no training log" in m for m in _by(r, "files", "FAIL"))
