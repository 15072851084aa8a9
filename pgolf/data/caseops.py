"""CaseOps: the frontier record's lossless case transform (`lossless_caps_caseops_v1`, FRONTIER F1.3).

ASCII capitals are replaced by four operator characters so that a tokenizer learns one
piece per lowercase word instead of one per casing:

    TITLE U+E001    next ASCII word is Titlecase (or starts with a capital)
    ALLCAPS U+E002  next ASCII word is all capitals (two letters or more)
    CAPNEXT U+E003  next letter inside a word is a capital
    ESC U+E004      next character is literal (used for the four operators themselves)

Only maximal runs of ASCII letters are looked at; every other character, non-ASCII letters
included, passes through unchanged. `decode(encode(s)) == s` for every string. `decode`
implements the record's state machine exactly, including which non-canonical inputs it
accepts (e.g. `CAPNEXT abc` -> `Abc`) and which it refuses (a `DataError` naming the
character position).

`surface_byte_counts` is the record's per-piece byte rule for the validation sidecar
(FRONTIER F1.4): given the surfaces (raw substrings) of a document's pieces, each piece
counts the original UTF-8 bytes it stands for; operators count 0, an escaped literal
operator 3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pgolf.errors import DataError

TRANSFORM_NAME = "lossless_caps_caseops_v1"
TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
OPERATOR_NAMES = ("TITLE", "ALLCAPS", "CAPNEXT", "ESC")
OPERATOR_BYTES = 3  # each operator is 3 bytes of UTF-8; a literal one in the text counts that

# One match per ASCII letter run or operator character; everything between is copied.
_ENCODE_RE = re.compile(r"[A-Za-z]+|[\ue001-\ue004]")
_OPERATOR_RE = re.compile(r"[\ue001-\ue004]")


class CaseOpsError(DataError):
    """A transformed string that the record's decoder refuses."""


def _encode_match(m: re.Match) -> str:
    w = m.group()
    if w in OPERATORS:
        return ESC + w
    if w.islower():
        return w
    lower = w.lower()
    if len(w) >= 2 and w.isupper():
        return ALLCAPS + lower
    if w[0].isupper() and w[1:].islower():
        return TITLE + lower
    # Mixed case, including a lone capital: TITLE for a capital first letter, then
    # CAPNEXT before every later capital.
    out = [TITLE + lower[0] if w[0].isupper() else lower[0]]
    out.extend(CAPNEXT + lc if c.isupper() else lc for c, lc in zip(w[1:], lower[1:]))
    return "".join(out)


def encode(text: str) -> str:
    """The record's `encode_lossless_caps_v2`."""
    return _ENCODE_RE.sub(_encode_match, text)


def _is_alpha(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def decode(text: str, strict: bool = True) -> str:
    """The record's `decode_lossless_caps_v2`, state for state.

    With `strict=False` a marker that cannot apply (e.g. TITLE before a letter that
    SentencePiece's NFKC composed into a non-ASCII one) is dropped instead of raising:
    for showing decoded token streams, never for round trips.
    """
    out: list[str] = []
    escape = False  # the next character is literal
    mode: str | None = None  # "title" | "allcaps": waiting for a word's first letter
    allcaps = False  # inside an ALLCAPS word
    capnext = False  # the next letter is a capital
    in_word = False

    def fail(pos: int, what: str) -> None:
        if strict:
            raise CaseOpsError(f"caseops: {what} at character {pos}")

    for pos, ch in enumerate(text):
        if escape:
            if mode is not None and not _is_alpha(ch):
                fail(pos, "an escaped non-letter cannot take a pending word capitalisation")
                mode = None
            out.append(ch)
            escape = False
            # A literal keeps the pending word mode and CAPNEXT, as the record's decoder does.
            if _is_alpha(ch):
                in_word = True
            else:
                in_word = allcaps = False
            continue
        if ch == ESC:
            escape = True
            continue
        if ch in (TITLE, ALLCAPS):
            if mode is not None or in_word or capnext:
                fail(pos, f"misplaced {'TITLE' if ch == TITLE else 'ALLCAPS'} marker")
                continue
            mode = "title" if ch == TITLE else "allcaps"
            continue
        if ch == CAPNEXT:
            if capnext:
                fail(pos, "doubled CAPNEXT marker")
            capnext = True
            continue
        if _is_alpha(ch):
            if not in_word:
                out.append(ch.upper() if (mode is not None or capnext) else ch)
                allcaps = mode == "allcaps"
                mode, capnext, in_word = None, False, True
                continue
            if mode is not None:
                fail(pos, "word capitalisation marker inside a word")
                mode = None
            out.append(ch.upper() if (allcaps or capnext) else ch)
            capnext = False
            continue
        if mode is not None or capnext:
            fail(pos, "capitalisation marker not followed by an ASCII letter")
            mode, capnext = None, False
        out.append(ch)
        in_word = allcaps = False
    if escape:
        fail(len(text), "dangling ESC at the end")
    if mode is not None or capnext:
        fail(len(text), "dangling capitalisation marker at the end")
    return "".join(out)


def surface_byte_counts(surfaces: Iterable[str]) -> list[int]:
    """Original UTF-8 bytes of each piece, from the pieces' surfaces (the record's
    `surface_piece_original_byte_counts` for this transform).

    The state machine runs across the pieces of one document: a marker still pending at
    the end, or one the decoder would refuse, raises a `CaseOpsError` naming the piece.
    """
    escape = False
    mode: str | None = None
    capnext = False
    in_word = False
    counts: list[int] = []
    for k, surface in enumerate(surfaces):
        n = 0
        for ch in surface:
            if escape:
                if mode is not None and not _is_alpha(ch):
                    raise CaseOpsError(f"caseops: escaped non-letter after a word marker in piece {k}")
                n += len(ch.encode("utf-8"))
                escape = False
                in_word = _is_alpha(ch)
                continue
            if ch == ESC:
                escape = True
            elif ch in (TITLE, ALLCAPS):
                if mode is not None or in_word or capnext:
                    raise CaseOpsError(f"caseops: misplaced word marker in piece {k}")
                mode = "title" if ch == TITLE else "allcaps"
            elif ch == CAPNEXT:
                if capnext:
                    raise CaseOpsError(f"caseops: doubled CAPNEXT in piece {k}")
                capnext = True
            elif _is_alpha(ch):
                if in_word and mode is not None:
                    raise CaseOpsError(f"caseops: word marker inside a word in piece {k}")
                n += 1
                mode, capnext, in_word = None, False, True
            else:
                if mode is not None or capnext:
                    raise CaseOpsError(f"caseops: marker not followed by an ASCII letter in piece {k}")
                n += len(ch.encode("utf-8"))
                in_word = False
        counts.append(n)
    if escape or mode is not None or capnext:
        raise CaseOpsError("caseops: marker left pending at the end of the document")
    return counts


def fast_surface_byte_counts(surfaces: Sequence[str]) -> list[int]:
    """`surface_byte_counts` for text `encode` produced: the UTF-8 length of each surface
    less 3 bytes for every operator character that acts as an operator (not escaped).

    Equal to the state machine on valid input (tests check it), with one regex pass over
    the operators instead of a Python loop over every character; the builders use it.
    """
    counts = [len(s.encode("utf-8")) for s in surfaces]
    esc_at = -2  # position of the active ESC in the concatenated surfaces
    offset = 0
    for k, s in enumerate(surfaces):
        for m in _OPERATOR_RE.finditer(s):
            p = offset + m.start()
            if p == esc_at + 1:  # the character right after an active ESC is a literal
                esc_at = -2
                continue
            counts[k] -= OPERATOR_BYTES
            esc_at = p if m.group() == ESC else -2
        offset += len(s)
    return counts
