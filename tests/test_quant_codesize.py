"""Counted code: the file list covers every module loading + evaluation imports; the bundle works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_quant_support import ROOT, TINY_PASSTHROUGH, random_tiny_state

from pgolf.quant import codesize
from pgolf.quant.artifact import write_run

PROBE = """
import importlib, json, pkgutil, sys
import pgolf, pgolf.eval
model = pgolf.load_artifact(sys.argv[1])
for m in pkgutil.iter_modules(pgolf.eval.__path__):
    if m.name != "commands":
        importlib.import_module("pgolf.eval." + m.name)
print(json.dumps(sorted((n, getattr(mod, "__file__", None)) for n, mod in sys.modules.items()
                        if n == "pgolf" or n.startswith("pgolf."))))
"""


def _env(extra_path: str | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = extra_path or str(ROOT)
    return env


def _artifact(tmp_path: Path) -> str:
    from pgolf.quant.artifact import export_run

    cfg, state = random_tiny_state()
    run = write_run(tmp_path / "run", cfg, state)
    return export_run(run, tmp_path / "m.pgolf", passthrough_max_numel=TINY_PASSTHROUGH, codec="xz")["path"]


def test_code_files_cover_loading_and_every_evaluator(tmp_path):
    path = _artifact(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", PROBE, path],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    loaded = {Path(f).resolve() for _n, f in json.loads(r.stdout) if f}
    counted = {p.resolve() for p in codesize.code_files()}
    missing = sorted(str(p.relative_to(ROOT)) for p in loaded - counted)
    assert not missing, f"imported by loading/evaluation but not counted in codesize.py: {missing}"
    assert not any(p.name == "gptq.py" for p in loaded)  # export-only code stays out of the count


def test_raw_and_bundle_sizes():
    files = codesize.code_files()
    assert (codesize.PKG_DIR / "presets" / "record.toml") in files
    names = {p.relative_to(codesize.PKG_DIR).as_posix() for p in files}
    # training, export and the CLI count too: the record folder's train_gpt.py runs `pgolf run`
    assert {"cli.py", "pipeline.py", "train/trainer.py", "quant/commands.py", "quant/gptq.py"} <= names
    assert codesize.raw_code_bytes() == sum(len(p.read_bytes()) for p in files)
    bundle = codesize.build_bundle()
    assert bundle == codesize.build_bundle()  # deterministic
    assert codesize.code_bytes() == len(bundle) < len(codesize.build_bundle(minified=False)) < codesize.raw_code_bytes()
    acct = codesize.accounting()
    assert acct["code_bytes"] == len(bundle) and acct["code_bytes_eval_scope"] < acct["code_bytes_plain_bundle"]


def test_minify_is_safe():
    """Every counted file minifies to a module with the same syntax tree, docstrings aside."""
    import ast

    for p in codesize.code_files():
        if p.suffix != ".py":
            continue
        src = p.read_text()
        out = codesize.minify(src)
        assert out != src, f"{p} was not minified"
        assert ast.dump(ast.parse(out)) == ast.dump(codesize._strip_docstrings(ast.parse(src)))
        assert len(out) < len(src)


def test_record_folder_entry_point_imports_are_counted():
    """The generated train_gpt.py imports nothing from pgolf that the count leaves out (statically)."""
    import ast

    from pgolf.report.submission import _train_gpt

    src = _train_gpt("x", "'tiny'", [], [1])
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    counted = {p.resolve() for p in codesize.code_files()}
    for m in sorted(x for x in mods if x.startswith("pgolf")):
        assert codesize._module_file(m).resolve() in counted, m


def test_bundle_runs_from_an_empty_directory(tmp_path):
    """The bundle alone (no repository on the path) extracts the package and loads an artifact."""
    path = _artifact(tmp_path)
    work = tmp_path / "submission"
    work.mkdir()
    bundle = work / "pgolf_code.py"
    n = codesize.write_bundle(bundle)
    assert n == bundle.stat().st_size == codesize.code_bytes()
    code = (
        f"exec(open({str(bundle)!r}).read(), {{'__file__': {str(bundle)!r}}})\n"
        "import pgolf\n"
        f"m = pgolf.load_artifact({path!r})\n"
        "print(pgolf.__file__, type(m).__name__, m.training)\n"
    )
    env = _env(extra_path="")
    env.pop("PYTHONPATH")
    cmd = [sys.executable, "-c", code]
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    where, cls, training = r.stdout.split()
    assert Path(where).resolve().is_relative_to((work / "pgolf_code").resolve()), where
    assert cls == "GPT" and training == "False"
    assert (work / "pgolf_code" / "pgolf" / "presets" / "record.toml").is_file()


def test_tokenizer_is_reported_not_counted(tmp_path):
    tok = tmp_path / "tokenizer.model"
    tok.write_bytes(b"x" * 1234)
    acct = codesize.accounting(tok)
    assert acct["tokenizer_bytes"] == 1234 and acct["tokenizer_counted"] is False
    assert acct["code_bytes"] == codesize.accounting()["code_bytes"]  # not added to the count
