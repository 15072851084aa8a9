"""`pgolf check` on the folder `pgolf submission` writes from a real (tiny, CPU) run."""

from __future__ import annotations

import shutil

import pytest

from pgolf.cli import main
from pgolf.report.check import run_checks


@pytest.mark.slow
def test_tiny_run_submission_passes_check_but_for_what_a_cpu_run_breaks(tiny_run, builtin_dir, tmp_path, capsys):
    from pgolf.quant.artifact import export_run
    from pgolf.report.submission import write_submission_folder

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # conftest's run stays untouched
    export_run(run, run / "artifact.pgolf", quant="rtn", data=builtin_dir)
    (run / "eval").mkdir()
    args = ["eval", str(run / "artifact.pgolf"), "--data", str(builtin_dir), "--method", "plain"]
    assert main([*args, "--max-tokens", "4096", "--out", str(run / "eval" / "plain.json")]) == 0
    capsys.readouterr()
    out = write_submission_folder([run], tmp_path / "rec", name="tiny", author="a", github_id="a")

    r = run_checks(out)
    assert r["pgolf_folder"]
    status = {(f["check"], f["status"]) for f in r["findings"]}
    fails = [f for f in r["findings"] if f["status"] == "FAIL"]
    # A tiny CPU run scores a 4,096-target slice: the rule it truly breaks. On a loaded machine its
    # training can also run past 600 s (the log says how long it took): then the time rule is broken too.
    slow = r["per_seed"][0]["train_seconds"] > 600.5
    assert sorted(f["check"] for f in fails) == sorted(["compliance"] + (["time"] if slow else []))
    assert any(f["check"] == "compliance" and "only part" in f["message"] for f in fails)
    for check in ("files", "submission", "bytes", "time", "methods"):
        assert (check, "PASS") in status, check
    assert ("seeds", "WARN") in status  # one seed
    assert any(f["check"] == "compliance" and "not 8xH100" in f["message"] for f in r["findings"])
    seed = r["per_seed"][0]
    assert seed["val_tokens"] is not None and seed["train_seconds"] is not None
    assert seed["total_bytes"] is not None and seed["method"].startswith("plain")
    assert any("seed_results" in f["evidence"] for f in r["findings"] if f["check"] == "bytes")
    assert main(["check", str(out)]) == 1
