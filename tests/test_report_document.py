"""Run summaries, report.md and figures on synthetic run directories."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from pgolf.report import TWO_PASS_NOTE, ReportError
from pgolf.report.document import aggregate, build_summary, write_report
from pgolf.report.figures import (
    plot_artifact,
    plot_eval_bpb,
    plot_loss_curves,
    plot_sweep,
    split_final_validation,
)

try:
    from _report_fixtures import make_run
except ImportError:  # tests/ imported as a package
    from tests._report_fixtures import make_run


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk; asserts the PNG signature and chunk order."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.rstrip(b"\0")[-8:-4] == b"IEND", f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"))
    return run, write_report(run)


def test_summary_fields(tmp_path):
    s = build_summary(make_run(tmp_path))
    assert s["seed"] == 1337 and s["preset"] == "record"
    assert set(s["methods"]) == {"plain", "sliding", "slot", "slot-causal", "ttt"}
    assert s["best_score_first"]["method"] == "ttt"
    assert s["best_score_first"]["val_bpb"] == pytest.approx(1.255)
    assert s["slot_two_pass"]["method"] == "slot" and s["slot_two_pass"]["score_first"] is False
    assert s["slot_two_pass"]["val_bpb"] == pytest.approx(0.95)  # lower, yet never the headline
    assert s["artifact_bytes"] == 15_560_000 and s["fits"] is True and s["limit_bytes"] == 16_000_000
    assert s["train"]["steps"] == 200 and s["train"]["train_seconds"] == 100.0
    assert s["train"]["post_ema_val_bpb"] == pytest.approx(1.365)
    assert s["train"]["final_train_loss"] is not None
    assert s["unigram_bpb"] == 1.9
    assert s["missing"] == []


def test_report_links_every_png_and_labels_two_pass(report):
    run, path = report
    assert path == run / "report.md"
    text = path.read_text()
    pngs = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert pngs == ["artifact_bytes.png", "eval_bpb.png", "loss_vs_step.png", "loss_vs_time.png"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [f"figures/{p}" for p in pngs]
    for link in links:
        assert (run / link).is_file()
    for section in (
        "## Headline",
        "## Evaluation",
        "## Training",
        "## Artifact",
        "## Config",
        "## Dataset",
        "## Software & hardware",
    ):
        assert section in text
    # The honest figure is the headline; the two-pass one is labelled on its row.
    head = text.split("## Evaluation")[0]
    assert "Score-first (honest): score-first TTT" in head and "**1.2550**" in head
    slot_row = next(line for line in head.splitlines() if line.startswith("| SLOT (two-pass)"))
    assert TWO_PASS_NOTE in slot_row and "0.9500" in slot_row
    assert "<details>" in text and "`eval.slot_steps`" in text
    assert not list(run.glob(".*.tmp")) and not list((run / "figures").glob(".*"))


def test_figures_are_valid_images(report):
    run, _ = report
    for p in (run / "figures").glob("*.png"):
        w, h = png_size(p)
        assert 600 <= w <= 2000 and 200 <= h <= 1500, (p.name, w, h)
        assert p.stat().st_size > 5_000


def test_partial_run_and_stale_figures(tmp_path):
    run = make_run(tmp_path, skip=("metrics.jsonl", "export.json"))
    (run / "figures").mkdir()
    (run / "figures" / "loss_vs_step.png").write_bytes(b"stale")
    text = write_report(run, extra={"notes": "smoke run", "unigram_bpb": 2.5}).read_text()
    assert not (run / "figures" / "loss_vs_step.png").exists()
    assert "loss_vs_step.png" not in text and "artifact_bytes.png" not in text
    assert "eval_bpb.png" in text and "smoke run" in text and "2.5000" in text
    assert "`metrics.jsonl`" in text and "No export.json" in text


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ReportError, match="nope"):
        build_summary(tmp_path / "nope")
    with pytest.raises(ReportError, match="not a pgolf run"):
        build_summary(tmp_path)
    run = make_run(tmp_path)
    (run / "export.json").write_text("{broken")
    with pytest.raises(ReportError, match="export.json"):
        build_summary(run)


def test_aggregate_seeds(tmp_path):
    runs = [make_run(tmp_path, seed=s, shift=d) for s, d in ((1, 0.0), (2, 0.002), (3, -0.002))]
    agg = aggregate([build_summary(r) for r in runs])
    assert agg["honest"]["method"] == "ttt"
    assert agg["honest"]["val_bpb"]["mean"] == pytest.approx(1.255)
    assert agg["honest"]["val_bpb"]["sample_std"] == pytest.approx(0.002)
    assert agg["methods"]["slot"]["score_first"] is False and "slot" in agg["two_pass"]
    assert [r["seed"] for r in agg["per_seed"]] == [1, 2, 3] and agg["all_fit"]
    assert agg["warnings"] == []


def test_figure_helpers(tmp_path):
    methods = {
        "sliding": {"val_bpb": 1.12, "score_first": True, "title": "sliding"},
        "slot": {"val_bpb": 0.86, "score_first": False, "title": "SLOT"},
    }
    assert png_size(plot_eval_bpb(methods, tmp_path / "b.png", unigram_bpb=2.1))[0] > 600
    over = plot_artifact(16_100_000, 60_000, tmp_path / "a.png")
    assert png_size(over)[0] > 600
    rows = [
        {"slot_steps": s, "lr": lr, "val_bpb": 1.0 - s * lr, "score_first": lr < 0.01}
        for s in (8, 16, 24)
        for lr in (0.008, 0.012)
    ]
    out = plot_sweep(rows, "slot_steps", "lr", tmp_path / "sweep.png")
    assert png_size(out)[0] > 600
    assert plot_sweep([], "x", None, tmp_path / "none.png") is None


def test_whole_split_last_validation_is_drawn_apart(tmp_path):
    capped = [(0, 6.9, 3.7, 16384), (25, 5.0, 2.7, 16384), (50, 4.6, 2.5, 63232)]
    assert split_final_validation(capped) == (capped[:2], capped[2])
    same = [(0, 6.9, 3.7, 63232), (25, 5.0, 2.7, 63232)]
    assert split_final_validation(same) == (same, None)
    assert split_final_validation([(0, 6.9, 3.7, None), (5, 6.0, 3.2, None)])[1] is None  # older runs
    metrics = [{"kind": "train", "step": s, "train_loss": 7.0 - s / 20} for s in range(1, 51)]
    metrics += [{"kind": "val", "step": x, "val_loss": v, "val_bpb": b, "targets": n} for x, v, b, n in capped]
    assert png_size(plot_loss_curves(metrics, tmp_path / "loss.png"))[0] > 600
