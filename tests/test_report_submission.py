"""submission.json fields and the record folder."""

from __future__ import annotations

import ast
import json

import pytest

from pgolf.report import ReportError
from pgolf.report.submission import submission_json, write_submission_folder

try:
    from _report_fixtures import make_run
except ImportError:  # tests/ imported as a package
    from tests._report_fixtures import make_run

SHIFTS = {1337: 0.001, 42: -0.002, 2024: 0.0}


@pytest.fixture()
def runs(tmp_path):
    return [make_run(tmp_path / "runs", seed=s, shift=d) for s, d in SHIFTS.items()]


def test_submission_json_fields(runs):
    sub = submission_json(runs, name="Test", author="Ann", github_id="ann", blurb="b", date="2026-05-01")
    for key in (
        "author",
        "github_id",
        "name",
        "blurb",
        "date",
        "track",
        "val_loss",
        "val_bpb",
        "bytes_total",
        "bytes_code",
        "seeds",
        "seed_results",
        "val_bpb_std",
        "hardware",
        "pytorch_version",
    ):
        assert key in sub, key
    assert sub["track"] == "10min_16mb" and sub["date"] == "2026-05-01"
    assert sub["seeds"] == [1337, 42, 2024]
    # The honest figure: best score-first method (ttt, base 1.255), same method for every seed.
    assert sub["eval_method"]["name"] == "ttt" and sub["eval_method"]["score_first"] is True
    assert sub["val_bpb"] == pytest.approx(1.255 + sum(SHIFTS.values()) / 3, abs=1e-8)
    assert sub["seed_results"]["42"]["val_bpb"] == pytest.approx(1.253)
    assert sub["seed_results"]["1337"]["steps"] == 200
    assert sub["val_bpb_std"] == pytest.approx(0.0015275, abs=1e-6)
    assert sub["bytes_total"] == 15_560_000 and sub["bytes_code"] == 60_000
    assert sub["pytorch_version"] == "2.13.0+cpu"
    # The two-pass figure sits apart, labelled.
    tp = sub["two_pass_slot"]
    assert tp["score_first"] is False and tp["val_bpb"] < sub["val_bpb"] and "not score-first" in tp["note"]
    comp = sub["compliance"]
    assert comp["score_first"] is True and comp["reported_method"] == "ttt"
    assert all(comp["issue_1017"].values()) and comp["two_pass_figures_excluded"] == ["slot"]
    assert comp["artifact_under_limit"] is True and comp["timed_on_8xH100"] is False
    json.dumps(sub)  # JSON-ready


def test_no_score_first_method_is_refused(tmp_path):
    run = make_run(tmp_path, methods={"slot": False})
    with pytest.raises(ReportError, match="score-first"):
        submission_json([run], name="x", author="a", github_id="a")


def test_folder_contents(runs, tmp_path):
    out = write_submission_folder(runs, tmp_path / "rec", name="Rec", author="Ann", github_id="ann")
    names = {p.name for p in out.iterdir()}
    assert {
        "README.md",
        "submission.json",
        "train_gpt.py",
        "requirements.txt",
        "pgolf",
        "train_seed1337.log",
        "train_seed42.log",
        "train_seed2024.log",
    } <= names
    assert (out / "train_seed42.log").read_text() == (runs[1] / "train.log").read_text()
    assert (out / "pgolf" / "__init__.py").is_file() and (out / "pgolf" / "report" / "submission.py").is_file()
    assert not list(out.rglob("__pycache__"))
    assert "torch" in (out / "requirements.txt").read_text()
    readme = (out / "README.md").read_text()
    for part in ("## Results", "## Compliance", "Strict causality", "Score before update", "## Run", "not score-first"):
        assert part in readme
    assert json.loads((out / "submission.json").read_text())["name"] == "Rec"
    # train_gpt.py: valid Python carrying the recorded preset and overrides (seed left out).
    src = (out / "train_gpt.py").read_text()
    consts = {
        n.targets[0].id: n.value
        for n in ast.parse(src).body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    assert ast.literal_eval(consts["PRESET"]) == "record"
    assert ast.literal_eval(consts["OVERRIDES"]) == ["eval.slot_steps=16"]
    assert ast.literal_eval(consts["SEEDS"]) == [1337, 42, 2024]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rec")]


def test_folder_refuses_overwrite_without_force(runs, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReportError, match="not empty"):
        write_submission_folder(runs, out, name="R", author="a", github_id="a")
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ReportError, match="not a submission folder"):  # --force replaces submissions only
        write_submission_folder(runs, out, name="R", author="a", github_id="a", force=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    write_submission_folder(runs, out, name="R", author="a", github_id="a")
    (out / "extra.txt").write_text("old")
    write_submission_folder(runs, out, name="R", author="a", github_id="a", force=True)
    assert not (out / "extra.txt").exists() and (out / "submission.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    write_submission_folder(runs, empty, name="R", author="a", github_id="a")
    assert (empty / "README.md").is_file()


def test_missing_log_names_the_file(runs, tmp_path):
    (runs[0] / "train.log").unlink()
    with pytest.raises(ReportError, match="train.log"):
        write_submission_folder(runs, tmp_path / "rec", name="R", author="a", github_id="a")
    assert not (tmp_path / "rec").exists()
