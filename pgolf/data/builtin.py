"""The built-in corpus: human-written English that every Python installation carries.

Sources, read offline and never imported (importing stdlib modules can have side
effects, and we want the text, not the objects):

- `pydoc_data/topics.py`: the language reference topics behind `help()`, one
  document per topic, in sorted topic order;
- the docstrings of the standard library's `.py` files, parsed with `ast`: one
  document per module (its module, class and function docstrings in source order,
  joined by blank lines), in sorted path order. Test packages (`test`, `tests`,
  `idle_test`) and `site-packages` are skipped.

The text differs between Python versions, so the manifest's source fingerprint
records the version and a SHA-256 of the exact documents.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
import sysconfig
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pgolf.errors import DataError

SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
# 1 in VAL_MODULUS documents (by a hash of its name) is validation: about 8%.
VAL_MODULUS = 12
VAL_SALT = "pgolf-builtin-val"


class Document(NamedTuple):
    name: str
    text: str


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _topics_documents(root: Path) -> list[Document]:
    path = root / "pydoc_data" / "topics.py"
    if not path.is_file():
        return []
    tree = ast.parse(path.read_bytes(), filename=str(path))
    topics: dict[str, str] | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
    if not isinstance(topics, dict):
        raise DataError(f"{path}: no `topics` dictionary found")
    docs = []
    for name in sorted(topics):
        text = str(topics[name]).strip()
        if text:
            docs.append(Document(f"topic:{name}", text))
    return docs


def _docstrings(tree: ast.AST) -> list[str]:
    """Module, class and function docstrings in source order (depth first)."""
    out = []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, kinds):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                out.append(doc.strip())
        # Definitions only occur in statement lists (bodies, else/finally blocks, handlers,
        # match cases), so expressions are never walked: that is most of a tree's nodes.
        children = []
        for field in ("body", "handlers", "orelse", "finalbody", "cases"):  # source order
            value = getattr(node, field, None)
            if isinstance(value, list):
                children.extend(c for c in value if isinstance(c, ast.AST))
        stack.extend(reversed(children))
    return out


def _module_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def builtin_documents(root: str | Path | None = None) -> list[Document]:
    """All built-in documents in their fixed order (topics, then modules); exact duplicates dropped."""
    root = Path(root) if root is not None else stdlib_dir()
    if not root.is_dir():
        raise DataError(f"{root}: standard library directory not found")
    return list(_documents(str(root)))


@functools.lru_cache(maxsize=2)
def _documents(root_str: str) -> tuple[Document, ...]:
    # Parsing ~700 files takes seconds; the installed stdlib does not change within a process.
    root = Path(root_str)
    docs = _topics_documents(root)
    for path in _module_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():  # e.g. invalid escape sequences in old modules
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue  # e.g. deliberately broken files; the fingerprint records what was used
        parts = _docstrings(tree)
        if parts:
            docs.append(Document(f"module:{rel}", "\n\n".join(parts)))
    seen: set[str] = set()
    unique = []
    for d in docs:
        if d.text not in seen:  # identical texts could otherwise land in both splits
            seen.add(d.text)
            unique.append(d)
    if not unique:
        raise DataError(f"{root}: no documents found for the built-in corpus")
    return tuple(unique)


def is_val(name: str) -> bool:
    digest = hashlib.sha256(f"{VAL_SALT}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % VAL_MODULUS == 0


def split_documents(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(train, val), each in corpus order; val is fixed by a hash of the document name."""
    train = [d for d in docs if not is_val(d.name)]
    val = [d for d in docs if is_val(d.name)]
    return train, val


def source_description() -> dict:
    return {
        "description": f"pgolf builtin corpus from Python {platform.python_version()}",
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sources": "pydoc_data.topics texts + standard-library docstrings (ast, tests and site-packages excluded)",
    }


def build_builtin(
    out: str | Path,
    vocab_size: int = 1024,
    *,
    force: bool = False,
    root: str | Path | None = None,
    num_threads: int = 2,
    caseops: bool = False,
    sidecar: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write the built-in dataset to `out`; returns its manifest.

    `caseops` and `sidecar` as for `pgolf.data.text.write_document_dataset`.
    """
    from pgolf.data.manifest import check_target
    from pgolf.data.text import write_document_dataset

    check_target(out, force)  # refuse before the few seconds of parsing
    root = Path(root) if root is not None else stdlib_dir()
    docs = builtin_documents(root)
    train, val = split_documents(docs)
    if log:
        py = platform.python_version()
        log(f"builtin: {len(docs)} documents from Python {py} ({len(train)} train, {len(val)} val)")
    return write_document_dataset(
        out,
        kind="builtin",
        train_docs=lambda: (d.text for d in train),
        val_docs=lambda: (d.text for d in val),
        vocab_size=vocab_size,
        source={**source_description(), "val_names_sha256": _names_sha256(val)},
        force=force,
        num_threads=num_threads,
        caseops=caseops,
        sidecar=sidecar,
        log=log,
    )


def _names_sha256(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode("utf-8") + b"\n")
    return h.hexdigest()
