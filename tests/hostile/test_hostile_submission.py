"""`pgolf submission` and `pgolf data text` (issue 11, items 1, 2, 6 and 8)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _data_fixtures import REPO_ROOT, run_pgolf, topics_texts
from _hostile import one_line_error
from _report_fixtures import make_run

HOSTILE_NAMES = [
    '"""; open("PWNED", "w").write("x"); """',
    "'''; open('PWNED', 'w').write('x'); '''",
    '\\"""\nimport os; os.system("touch PWNED")\n"""',
    "name\n__import__('os').system('touch PWNED')",
    "{name}{preset}}}{{",
    "\\x00 \\N{BULLET} \x00 é \u2028 end",
]


@pytest.fixture()
def runs(tmp_path):
    runs = [make_run(tmp_path / "runs", seed=s, shift=d) for s, d in ((1337, 0.0), (42, 0.002))]
    for r in runs:  # logs and configs holding this machine's absolute paths, as real ones do
        with open(r / "train.log", "a") as f:
            f.write(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={tmp_path}/data/tokenizer.model\n")
            f.write(f"val_loader:shards pattern={tmp_path}/data/fineweb_val_*.bin tokens:1000\n")
    return runs


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_never_runs_when_the_script_does(runs, tmp_path, name):
    from pgolf.report.submission import write_submission_folder

    out = write_submission_folder(runs, tmp_path / "sub", name=name, author="a", github_id="a")
    script = out / "train_gpt.py"
    tree = ast.parse(script.read_text())  # still valid Python
    names = [n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "NAME"]
    assert names and ast.literal_eval(names[0]) == name
    assert ast.get_docstring(tree).startswith("Reproduce the record named in NAME")
    if HOSTILE_NAMES.index(name) >= 3:
        return  # the literal is proven above; running the script costs an interpreter start
    # Run it: `pgolf run --help` exits at once; anything the name injected would have run first.
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, str(script), "--help"], cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (work / "PWNED").exists() and not (out / "PWNED").exists()


def test_a_name_that_is_not_utf8_is_one_line(runs, tmp_path):
    from pgolf.errors import PgolfError
    from pgolf.report.submission import write_submission_folder

    with pytest.raises(PgolfError, match="--name .*not valid UTF-8"):
        write_submission_folder(runs, tmp_path / "sub", name="bad \udcff", author="a", github_id="a")
    assert not (tmp_path / "sub").exists()


def test_a_submission_names_no_path_of_the_machine(runs, tmp_path):
    from pgolf.report.submission import write_submission_folder

    out = write_submission_folder(runs, tmp_path / "sub", name="ok", author="a", github_id="a")
    roots = {str(tmp_path), str(Path.home()), os.getcwd(), str(REPO_ROOT)}
    for p in out.rglob("*"):
        if p.is_file():
            text = p.read_text(errors="replace")
            for root in roots:
                assert root not in text, (p.relative_to(out), root)
    assert "tokenizer_path=.../tokenizer.model" in (out / "train_seed1337.log").read_text()


def test_submission_force_refuses_a_folder_that_is_not_a_submission(runs, tmp_path, cli):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.md").write_text("mine")
    r = cli("submission", *map(str, runs), "--out", str(keep), "--force", "--author", "a", "--github-id", "a")
    assert "not a submission folder" in one_line_error(r)
    assert (keep / "notes.md").read_text() == "mine"


def test_submission_force_never_replaces_its_own_runs(runs, tmp_path):
    parent = runs[0].parent
    (parent / "submission.json").write_text("{}")  # even when it looks like a submission
    r = run_pgolf("submission", *map(str, runs), "--out", str(parent), "--force", "--author", "a", "--github-id", "a")
    assert "overlap" in one_line_error(r)
    assert all((r_ / "train.log").is_file() for r_ in runs)


# ---------------------------------------------------------------- data text
@pytest.fixture()
def docs(tmp_path) -> Path:
    src = tmp_path / "in" / "docs.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in topics_texts(60)))
    return src


def test_data_text_force_never_deletes_its_input(docs, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copyfile(docs, proj / "docs.jsonl")
    (proj / "manifest.json").write_text("{}")
    args = ["--input", str(proj / "docs.jsonl"), "--out", str(proj), "--vocab-size", "512", "--force"]
    r = run_pgolf("data", "text", *args)
    assert "contains the input" in one_line_error(r)
    assert (proj / "docs.jsonl").read_bytes() == docs.read_bytes()


def test_data_text_force_refuses_a_directory_that_is_not_a_dataset(docs, tmp_path, cli):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    r = cli("data", "text", "--input", str(docs), "--out", str(notes), "--vocab-size", "512", "--force")
    assert "not a pgolf dataset" in one_line_error(r)
    assert (notes / "a.txt").read_text() == "mine"


def test_data_text_manifest_is_the_same_from_anywhere(docs, tmp_path, cli):
    """Absolute or relative input paths, any working directory: byte-identical manifests."""
    a = cli("data", "text", "--input", str(docs.resolve()), "--out", str(tmp_path / "a"), "--vocab-size", "512")
    assert a.returncode == 0, a.stderr
    cwd = os.getcwd()
    try:
        os.chdir(docs.parent)
        b = cli("data", "text", "--input", docs.name, "--out", str(tmp_path / "b"), "--vocab-size", "512")
    finally:
        os.chdir(cwd)
    assert b.returncode == 0, b.stderr
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    ma.pop("created_by", None)
    mb.pop("created_by", None)
    assert ma == mb and str(tmp_path) not in json.dumps(ma)
