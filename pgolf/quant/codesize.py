"""Which source files a submission needs, and how many bytes they count.

The counted code is what loading an artifact and running every evaluator (as library
functions) imports: the package root, config + preset, errors, dist, the model, the
artifact reader (not the exporter's GPTQ), the data modules evaluation reads, and
every evaluator module. CLI glue (`*/commands.py`, cli.py, cliutil.py) is not counted.
tests/test_quant_codesize.py imports all of it in a fresh interpreter and checks that
every pgolf module it loads is listed here.

`code_bytes()` is the size of the self-extracting bundle (`build_bundle`): the files
as JSON, LZMA-compressed, base85-encoded inside a short Python script that writes
them back out and puts them on sys.path. `raw_code_bytes()` is the plain UTF-8 sum.
"""

from __future__ import annotations

import base64
import json
import lzma
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


def code_files() -> list[Path]:
    """The counted files, in a fixed order (existing ones only)."""
    files = [PKG_DIR / rel for rel in CORE]
    for pattern in GLOBS:
        files.extend(sorted(p for p in PKG_DIR.glob(pattern) if p.name not in NOT_COUNTED))
    seen, out = set(), []
    for p in files:
        if p.is_file() and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def raw_code_bytes(files: list[Path] | None = None) -> int:
    """UTF-8 bytes of the files as they are (what the seed counts for its single script)."""
    return sum(len(p.read_bytes()) for p in (files if files is not None else code_files()))


def build_bundle(files: list[Path] | None = None) -> bytes:
    """A deterministic self-extracting Python script holding the files.

    Run as `python bundle.py MODULE ARGS...` it extracts the files (beside itself, or to
    $PGOLF_CODE_DIR), puts them first on sys.path and runs MODULE; exec'd or imported it
    only extracts, after which `import pgolf` loads the bundled copy.
    """
    files = files if files is not None else code_files()
    root = PKG_DIR.parent
    sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}
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
