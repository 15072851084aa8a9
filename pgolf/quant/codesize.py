"""Which source files a submission counts, and how many bytes they are.

The challenge counts the code that trains *and* evaluates. The record folder's
train_gpt.py (report/submission.py) runs `pgolf run`: the CLI, data, training, export,
evaluation and report. So the count is every pgolf module reachable from the entry point
`pgolf.cli` by an import statement anywhere in a module (function-level imports included)
or named as a module string (the CLI's lazily imported command modules), every package
__init__ on the way, and the preset files. tests/test_pipeline.py runs `pgolf run` with
-X importtime and checks that every pgolf module it imports is counted.

Sizes: `raw` is the plain UTF-8 sum; `minified` strips docstrings and comments (the
source is parsed with `ast` and written back with `ast.unparse`, one space per indentation
level; a file whose re-parse
does not give the same tree, docstrings aside, is kept as it is); `code_bytes` is the
self-extracting bundle of the minified files (JSON, LZMA, base85, a short loader), the
smallest honest form, as the records' brotli + base85 wrapper. The plain bundle is
reported beside it. The tokenizer file is reported, not counted (the rules do not count
it; an open question asks whether they should).

The earlier, smaller scope (loading + evaluation only, `eval_scope_files`) is kept for
the comparison in docs/artifact.md.
"""

from __future__ import annotations

import ast
import base64
import json
import lzma
import re
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1]  # .../pgolf
CORE = (
    "__init__.py", "config.py", "errors.py", "dist.py", "presets/record.toml",
    "quant/__init__.py", "quant/rtn.py", "quant/container.py", "quant/seedfmt.py", "quant/artifact.py",
    "quant/codesize.py",
    "data/__init__.py", "data/bpb.py", "data/shards.py", "data/loader.py", "data/tokenizer.py", "data/documents.py",
)  # fmt: skip
GLOBS = ("model/*.py", "eval/*.py")
NOT_COUNTED = ("commands.py",)

BUNDLE_TEMPLATE = """\
import base64,json,lzma,os,sys
D=os.environ.get("PGOLF_CODE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)),"pgolf_code")
for p,s in json.loads(lzma.decompress(base64.b85decode("{blob}"))).items():
 f=os.path.join(D,p);os.makedirs(os.path.dirname(f),exist_ok=True);open(f,"w",encoding="utf-8").write(s)
sys.path.insert(0,D)
if __name__=="__main__"and len(sys.argv)>1:
 import runpy;sys.argv=sys.argv[1:];runpy.run_module(sys.argv[0],run_name="__main__")
"""


def eval_scope_files() -> list[Path]:
    """The files of the old, too small count (loading + evaluation), in a fixed order."""
    files = [PKG_DIR / rel for rel in CORE]
    for pattern in GLOBS:
        files.extend(sorted(p for p in PKG_DIR.glob(pattern) if p.name not in NOT_COUNTED))
    seen, out = set(), []
    for p in files:
        if p.is_file() and p not in seen:
            seen.add(p)
            out.append(p)
    return out


ENTRY = ("pgolf.cli", "pgolf.__main__")
MODULE_STRING = re.compile(r"pgolf(\.[A-Za-z_]\w*)+|pgolf")


def _module_file(mod: str) -> Path | None:
    rel = Path(*mod.split("."))
    for cand in (PKG_DIR.parent / rel.with_suffix(".py"), PKG_DIR.parent / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, mod: str) -> set[str]:
    """pgolf modules a file names: import statements anywhere, relative ones resolved, and module strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pgolf.x import y` may name a module y
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value):
            out.add(node.value)
    return {m for m in out if m == "pgolf" or m.startswith("pgolf.")}


def code_files() -> list[Path]:
    """The counted files: the import closure of the entry point, package __init__s, and the presets."""
    seen: dict[str, Path] = {}
    todo = list(ENTRY)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        f = _module_file(mod)
        if f is None:
            continue
        seen[mod] = f
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
        todo.extend(_imports(f, mod))
    files = sorted(set(seen.values())) + sorted(PKG_DIR.glob("presets/*.toml"))
    return files


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def minify(source: str) -> str:
    """Docstrings and comments removed (ast round trip); the source itself if the round trip is not exact."""
    try:
        tree = _strip_docstrings(ast.parse(source))
        # ast.unparse writes every string literal on one line, so leading spaces are indentation only:
        # one space per level instead of four
        out = re.sub(r"(?m)^((?:    )+)", lambda m: " " * (len(m.group(1)) // 4), ast.unparse(tree))
        if ast.dump(ast.parse(out)) != ast.dump(tree):
            return source
    except (SyntaxError, ValueError, RecursionError):
        return source
    return out + "\n"


def _source(p: Path, minified: bool) -> str:
    text = p.read_text(encoding="utf-8")
    return minify(text) if minified and p.suffix == ".py" else text


def raw_code_bytes(files: list[Path] | None = None) -> int:
    """UTF-8 bytes of the files as they are (what the seed counts for its single script)."""
    return sum(len(p.read_bytes()) for p in (files if files is not None else code_files()))


def minified_code_bytes(files: list[Path] | None = None) -> int:
    return sum(len(_source(p, True).encode()) for p in (files if files is not None else code_files()))


def build_bundle(files: list[Path] | None = None, minified: bool = True) -> bytes:
    """A deterministic self-extracting Python script holding the files.

    Run as `python bundle.py MODULE ARGS...` it extracts the files (beside itself, or to
    $PGOLF_CODE_DIR), puts them first on sys.path and runs MODULE; exec'd or imported it
    only extracts, after which `import pgolf` loads the bundled copy.
    """
    files = files if files is not None else code_files()
    root = PKG_DIR.parent
    sources = {p.relative_to(root).as_posix(): _source(p, minified) for p in files}
    payload = json.dumps(sources, sort_keys=True, separators=(",", ":")).encode()
    blob = base64.b85encode(lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)).decode("ascii")
    return BUNDLE_TEMPLATE.format(blob=blob).encode("utf-8")


def code_bytes() -> int:
    """Counted code bytes: the size of the bundle (see module docstring)."""
    return len(build_bundle())


def write_bundle(path: str | Path) -> int:
    from pgolf.quant.container import atomic_write

    data = build_bundle()
    atomic_write(Path(path), data)
    return len(data)


_CACHE: dict[tuple, dict] = {}


def accounting(tokenizer: str | Path | None = None) -> dict:
    """What `pgolf export --json` says about the counted code (and the tokenizer, reported apart).
    Cached per process on the files' names, sizes and modification times."""
    files = code_files()
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _accounting(files)
    out = dict(_CACHE[key])
    if tokenizer is not None and Path(tokenizer).is_file():
        out["tokenizer_bytes"] = Path(tokenizer).stat().st_size
        out["tokenizer_counted"] = False
    return out


def _accounting(files: list[Path]) -> dict:
    root = PKG_DIR.parent
    out = {
        "code_bytes": len(build_bundle(files)),
        "code_bytes_raw": raw_code_bytes(files),
        "code_bytes_minified": minified_code_bytes(files),
        "code_bytes_plain_bundle": len(build_bundle(files, minified=False)),
        "code_files": [p.relative_to(root).as_posix() for p in files],
        "code_scope": "everything `pgolf run` (the record folder's train_gpt.py) imports",
        "code_bytes_eval_scope": len(build_bundle(eval_scope_files(), minified=False)),
    }
    return out
