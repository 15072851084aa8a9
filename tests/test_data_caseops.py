"""CaseOps: pgolf's transform and sidecar rule against values the record's own code computed."""

from __future__ import annotations

import json
import lzma
import os
import random
from pathlib import Path

import pytest

from pgolf.data import caseops
from pgolf.data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE, decode, encode
from pgolf.data.sidecar import piece_surfaces, raw_counts
from pgolf.data.tokenizer import caseops_operator_ids, load_tokenizer
from pgolf.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"
RECORD = json.loads((FIXTURES / "caseops_record.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def small_sp(tmp_path_factory):
    p = tmp_path_factory.mktemp("co") / "caseops_512.model"
    p.write_bytes(lzma.decompress((FIXTURES / "caseops_512.model.xz").read_bytes()))
    return p, load_tokenizer(p)


@pytest.mark.parametrize("case", RECORD["cases"], ids=lambda c: repr(c["text"])[:30])
def test_encode_equals_the_record_and_round_trips(case):
    assert encode(case["text"]) == case["encoded"]
    assert decode(case["encoded"]) == case["text"] == case["decoded"]


@pytest.mark.parametrize("item", RECORD["decode"], ids=lambda d: repr(d["input"]))
def test_decode_accepts_and_refuses_what_the_record_does(item):
    if item["error"] is None:
        assert decode(item["input"]) == item["output"]
    else:
        with pytest.raises(DataError, match=r"caseops: .* at character \d+"):
            decode(item["input"])
    # The sidecar's state machine, one character per piece.
    if item["char_counts"] is None:
        with pytest.raises(DataError):
            caseops.surface_byte_counts(list(item["input"]))
    else:
        assert caseops.surface_byte_counts(list(item["input"])) == item["char_counts"]


def test_sidecar_equals_what_the_record_writes(small_sp):
    path, sp = small_sp
    assert caseops_operator_ids(sp, path) == {"TITLE": 4, "ALLCAPS": 5, "CAPNEXT": 6, "ESC": 7}
    for case in RECORD["cases"]:
        exp = case["small"]
        [(ids, surfaces)] = piece_surfaces(sp, [encode(case["text"])])
        assert [1, *ids] == exp["ids"], case["text"]
        assert surfaces == exp["surfaces"], case["text"]  # offset mapping == the record's proto surfaces
        assert [0, *raw_counts(surfaces, caseops=True)] == exp["bytes"], case["text"]
        assert [0, *caseops.surface_byte_counts(surfaces)] == exp["bytes"]


def test_decode_errors_name_the_position():
    with pytest.raises(DataError, match="at character 3"):
        decode(f"a {TITLE}{TITLE}c")
    assert decode(f"{TITLE}á", strict=False) == "á"  # display mode drops a marker that cannot apply


# Adversarial alphabet: ASCII letters of both cases, the operators and U+E000, non-ASCII
# letters (with case), combining marks, CJK, emoji (astral), whitespace and digits.
ALPHABET = (
    list("aAbBzZqQ") + list(caseops.OPERATORS) + ["\ue000", "é", "É", "ß", "ǅ", "\u0301", "中", "😀", "🎉"]
    + [" ", "\n", "\t", "0", "9", "'", "_", "-"]
)  # fmt: skip


def random_strings(n: int, seed: int, max_len: int = 40):
    rng = random.Random(seed)
    for _ in range(n):
        yield "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def test_round_trip_on_random_and_adversarial_text():
    for s in random_strings(20000, seed=1):
        assert decode(encode(s)) == s
    long = "".join(random_strings(1, seed=2, max_len=200_000))
    assert decode(encode(long)) == long
    assert encode("") == decode("") == ""
    # Every operator sequence as text: escaped, so it survives.
    for a in caseops.OPERATORS:
        for b in caseops.OPERATORS:
            assert decode(encode(a + b + "X" + a)) == a + b + "X" + a


def test_encoded_text_is_canonical():
    """No ASCII capital survives; every literal operator is escaped."""
    for s in random_strings(3000, seed=3):
        e = encode(s)
        assert not any("A" <= ch <= "Z" for ch in e)
        i = 0
        while i < len(e):
            if e[i] == ESC:
                assert e[i + 1] in caseops.OPERATORS
                i += 2
                continue
            if e[i] in (TITLE, ALLCAPS, CAPNEXT):
                assert e[i + 1].isascii() and e[i + 1].isalpha()
            i += 1


def test_fast_byte_counts_equal_the_state_machine():
    rng = random.Random(4)
    for s in random_strings(3000, seed=5):
        e = encode(s)
        cuts = sorted(rng.sample(range(len(e) + 1), k=min(len(e) + 1, rng.randint(0, 6))))
        bounds = [0, *cuts, len(e)]
        pieces = [e[a:b] for a, b in zip(bounds, bounds[1:])]
        assert caseops.fast_surface_byte_counts(pieces) == caseops.surface_byte_counts(pieces)
        assert sum(caseops.surface_byte_counts(pieces)) == len(s.encode("utf-8"))


RECORD_TOKENIZER = os.environ.get("PGOLF_CASEOPS_TOKENIZER")


@pytest.mark.skipif(
    not RECORD_TOKENIZER,
    reason="set PGOLF_CASEOPS_TOKENIZER to the record's fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
)
def test_record_tokenizer_gives_the_record_ids_and_bytes():
    sp = load_tokenizer(RECORD_TOKENIZER, 8192)
    assert caseops_operator_ids(sp, RECORD_TOKENIZER) == {"TITLE": 4, "ALLCAPS": 5, "CAPNEXT": 6, "ESC": 7}
    assert sp.piece_to_id("\u2581") == 8133
    # FRONTIER F1.3 / appendix check values.
    checks = {
        "The NASA Launch": ([4, 320, 8133, 5, 5566, 8136, 8133, 4, 1632, 1709], [0, 3, 1, 0, 3, 1, 1, 0, 2, 4]),
        "x\ue001y\ue004z\ue000": ([8161, 7, 4, 8151, 7, 7, 8167, 246, 136, 136], [1, 0, 3, 1, 0, 3, 1, 0, 0, 3]),
        "ABC123DEF": ([5, 373, 8145, 8160, 8162, 8170, 5, 5065], None),
    }
    for text, (ids, counts) in checks.items():
        [(got, surfaces)] = piece_surfaces(sp, [encode(text)])
        assert got == ids
        if counts is not None:
            assert raw_counts(surfaces, caseops=True) == counts
    for case in RECORD["cases"]:
        [(got, surfaces)] = piece_surfaces(sp, [encode(case["text"])])
        assert [1, *got] == case["record"]["ids"]
        assert [0, *raw_counts(surfaces, caseops=True)] == case["record"]["bytes"]
