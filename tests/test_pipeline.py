"""`pgolf run` end to end (shortened), and `pgolf sweep` on its artifact."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import clean_env, pgolf_cmd

SHORT = [
    "train.iterations=12",
    "train.max_wallclock_seconds=0",
    "train.warmdown_iters=4",
    "train.val_loss_every=6",
    "train.checkpoint_every=0",
]


@pytest.fixture(scope="module")
def main_run(builtin_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("main") / "run"
    args = [
        "run",
        "--no-env",
        "--preset",
        "tiny",
        "--methods",
        "plain,sliding,slot,slot-causal,ttt",
        "--data",
        str(builtin_dir),
        "--eval-tokens",
        "2048",
        "--out",
        str(out),
        "--json",
        "--quiet",
    ]
    for s in SHORT:
        args += ["--set", s]
    # -X importtime (as an environment variable) lists every module `pgolf run` imports, for the code count
    r = subprocess.run(pgolf_cmd(*args), capture_output=True, text=True, env=clean_env(PYTHONPROFILEIMPORTTIME="1"))
    assert r.returncode == 0, "\n".join(x for x in r.stderr.splitlines() if not x.startswith("import time:"))[-3000:]
    (out.parent / "importtime.txt").write_text(r.stderr)
    return out, json.loads(r.stdout)


@pytest.mark.slow
def test_run_evaluates_every_method_and_reports(main_run):
    out, summary = main_run
    methods = summary["methods"]
    assert set(methods) == {"plain", "sliding", "slot", "slot-causal", "ttt"}
    for name, m in methods.items():
        assert m["val_bpb"] > 0 and m["seconds"] > 0
        assert m["score_first"] is (name != "slot")
    assert summary["fits"] is True and summary["artifact_bytes"] < 16_000_000
    assert summary["best_score_first"]["method"] != "slot"
    for f in ("report.md", "summary.json", "submission.json", "export.json", "artifact.pgolf", "train.log"):
        assert (out / f).is_file(), f
    report = (out / "report.md").read_text()
    for png in ("eval_bpb.png", "loss_vs_step.png", "artifact_bytes.png"):
        assert (out / "figures" / png).stat().st_size > 5000
        assert f"figures/{png}" in report
    assert "not score-first" in report
    sub = json.loads((out / "submission.json").read_text())
    best = summary["best_score_first"]
    assert sub["val_bpb"] == pytest.approx(methods[best["method"]]["val_bpb"])
    assert sub["two_pass_slot"]["score_first"] is False
    assert sub["two_pass_slot"]["val_bpb"] == pytest.approx(methods["slot"]["val_bpb"])


@pytest.mark.slow
def test_sweep_marks_best_score_first(main_run, builtin_dir, tmp_path):
    out, _ = main_run
    r = subprocess.run(
        pgolf_cmd(
            "sweep",
            str(out / "artifact.pgolf"),
            "--data",
            str(builtin_dir),
            "--no-env",
            "--preset",
            "tiny",
            "--grid",
            "slot_steps=2,4",
            "--method",
            "slot",
            "--method",
            "sliding",
            "--max-tokens",
            "1024",
            "--out",
            str(tmp_path / "sw"),
            "--json",
        ),
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    rows = res["rows"]
    assert [(x["method"], x["slot_steps"]) for x in rows] == [("slot", 2), ("slot", 4), ("sliding", None)]
    assert res["best_score_first"]["method"] == "sliding"
    slot = {x["slot_steps"]: x["val_bpb"] for x in rows if x["method"] == "slot"}
    assert slot[4] < slot[2]  # more steps fit the scored tokens better: the two-pass leak grows
    assert "★" in (tmp_path / "sw" / "sweep.md").read_text()
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 5000


def test_run_refuses_a_non_empty_out_and_bad_seeds(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("keep")
    r = subprocess.run(
        pgolf_cmd("run", "--no-env", "--out", str(out), "--data", str(tmp_path)),
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 2 and "not empty" in r.stderr and (out / "x").read_text() == "keep"
    r = subprocess.run(pgolf_cmd("run", "--no-env", "--seeds", "1,x"), capture_output=True, text=True, env=clean_env())
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--seeds" in r.stderr


@pytest.mark.slow
def test_run_imports_only_counted_code(main_run):
    """Every pgolf module `pgolf run` (what the record folder's train_gpt.py runs) imports is in code_bytes."""
    from pgolf.quant import codesize

    out, _ = main_run
    lines = (out.parent / "importtime.txt").read_text().splitlines()
    mods = {x.rsplit("|", 1)[1].strip() for x in lines if x.startswith("import time:") and "|" in x}
    pgolf_mods = sorted(m for m in mods if m == "pgolf" or m.startswith("pgolf."))
    assert "pgolf.train.trainer" in pgolf_mods and "pgolf.quant.artifact" in pgolf_mods
    counted = {p.resolve() for p in codesize.code_files()}
    missing = [
        m for m in pgolf_mods if codesize._module_file(m) is None or codesize._module_file(m).resolve() not in counted
    ]
    assert not missing, f"imported by `pgolf run` but not counted: {missing}"


@pytest.mark.slow
def test_a_capped_run_with_a_forced_tiny_budget_is_flagged_not_representative(builtin_dir, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--no-env", "--preset", "tiny", "--data", str(builtin_dir), "--out", str(out), "--methods", "plain",
            "--eval-tokens", "512", "--no-audit", "--no-submission", "--quiet"]  # fmt: skip
    for s in ("train.max_wallclock_seconds=0.5", "train.expected_steps=5000", "train.val_loss_every=0",
              "train.checkpoint_every=0"):  # fmt: skip
        args += ["--set", s]
    r = subprocess.run(pgolf_cmd(*args), capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "summary.json").read_text())["representative"]
    assert rep["representative"] is False and rep["suggestion"] == "--iterations 5000"
    steps = json.loads((out / "summary.json").read_text())["train"]["steps"]
    assert f"{steps} training steps in its 0.5 s cap" in rep["line"] and "about 5000" in rep["line"]
    assert rep["line"] in (out / "report.md").read_text()
    assert rep["line"] in r.stdout  # the console says it too
    # a step-capped run is not judged by the clock (it may still be flagged for its bpb alone)
    out2 = tmp_path / "run2"
    args2 = [a if a != str(out) else str(out2) for a in args] + ["--iterations", "2"]
    r = subprocess.run(pgolf_cmd(*args2), capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    rep2 = json.loads((out2 / "summary.json").read_text())["representative"]
    assert not any("cap" in x for x in rep2["reasons"])


@pytest.mark.slow
def test_main_job_compares_the_frontier_stack_with_the_seeds(tmp_path):
    """`pgolf run` with no preset: both builtin datasets built where the presets say, both stacks
    trained, exported (the frontier one with the frontier scheme), evaluated, audited, compared."""
    args = ["run", "--no-env", "--out", "out", "--iterations", "2", "--eval-tokens", "512", "--methods",
            "plain,sliding", "--json", "--quiet", "--set", "train.val_loss_every=0", "--set",
            "train.checkpoint_every=0", "--set", "val_max_tokens=2048"]  # fmt: skip
    r = subprocess.run(pgolf_cmd(*args), capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    out = tmp_path / "out"
    assert set(res["stacks"]) == {"frontier-tiny", "tiny"}
    ft, ti = res["stacks"]["frontier-tiny"], res["stacks"]["tiny"]
    assert ft["vocab_size"] == 8192 and ti["vocab_size"] == 1024 and ft["scheme"] == "frontier"
    assert (tmp_path / "data" / "builtin-sp8192-caseops" / "fineweb_val_bytes_000000.bin").is_file()
    # one denominator: both count the original UTF-8 bytes of the same validation text
    assert ft["byte_source"] == ti["byte_source"] == "sidecar:raw"
    assert ft["val_bytes"] == ti["val_bytes"]
    assert res["headline"]["val_bpb"] == min(ft["headline"]["val_bpb"], ti["headline"]["val_bpb"])
    for st in (ft, ti):
        assert st["model_bytes"] + st["code_bytes"] == st["total_bytes"] and st["tokenizer_bytes"] > 0
        assert {"train (incl. validation, EMA)", "export", "eval plain", "eval sliding"} <= set(st["phases"])
        assert st["audit"]["method"] in ("plain", "sliding")
    report = (out / "report.md").read_text()
    assert "frontier-tiny" in report and "Artifact bytes by part" in report and "figures/compare_bpb.png" in report
    assert (out / "figures" / "compare_bpb.png").stat().st_size > 5000
    assert (out / "submission" / "train_gpt.py").is_file() and res["submission"]
    # pgolf check ran on it: the one rule broken is the partial evaluation this short test asked for
    assert res["check"]["available"] and res["check"]["failures"] == 1
    assert "only part of the validation split" in res["check"]["line"]


def test_run_methods_choices_are_the_evaluators_methods():
    from pgolf.config import RUN_METHOD_NAMES
    from pgolf.eval.api import METHODS

    assert set(RUN_METHOD_NAMES) == set(METHODS)
