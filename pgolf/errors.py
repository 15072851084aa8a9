"""One error type for everything a user can get wrong.

The CLI turns a `PgolfError` into a single line on stderr and a non-zero exit;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class PgolfError(Exception):
    """A user-facing failure: bad input, impossible config, unreadable file."""

    exit_code = 2


class ConfigError(PgolfError):
    """A config field has an impossible value; the message names the field."""


class DataError(PgolfError):
    """A shard, tokenizer or dataset directory is malformed; the message names the file."""


class ArtifactError(PgolfError):
    """An artifact is truncated, corrupted, of an unknown version or unsafe."""


class NonFiniteLossError(PgolfError):
    """Training produced a NaN/inf loss."""

    exit_code = 3
