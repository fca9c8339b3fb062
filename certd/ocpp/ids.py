"""Charge point identities from request paths (pure).

The id is the last path segment of `/ocpp/{id}` or `/{id}`. It is percent-
decoded once (`DE%2ABMW%2A0123` is `DE*BMW*0123`) and must then consist of
OCPP 2.0.1 identifierString characters (a-z A-Z 0-9 * - _ = : + | @ .), at most
48 of them. Anything else -- a slash, a space, a second `%`-level, control
characters (a trailing newline too: the whole string must match) -- is refused,
so ids are safe in logs and SQL. Not as file names on their own: `.` and `..`
are valid ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

MAX_ID_LENGTH = 48
_ID = re.compile(r"[A-Za-z0-9*\-_=:+|@.]{1,48}")
# Characters that may appear raw in the path segment (before decoding).
# Both are used with fullmatch: `$` would also match before a trailing newline.
_RAW_SEGMENT = re.compile(r"[A-Za-z0-9*\-_=:+|@.%]+")


class InvalidChargerId(ValueError):
    """The path does not carry an acceptable charge point id (message is safe to show)."""


@dataclass(frozen=True)
class PathPattern:
    """`/ocpp/{id}` split into its fixed prefix; `{id}` is always the last segment."""

    pattern: str

    @property
    def prefix(self) -> str:
        return self.pattern[: -len("{id}")]

    def match(self, path: str) -> str | None:
        """The raw (still encoded) id segment, or None when the path is not this pattern's."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith(self.prefix):
            return None
        rest = path[len(self.prefix):]
        if not rest or "/" in rest:
            return None
        return rest


def is_valid_id(charger_id: str) -> bool:
    return _ID.fullmatch(charger_id) is not None


def validate_id(charger_id: str) -> str:
    """The id itself, or InvalidChargerId (used by the CLI for ids typed by a person)."""
    if not is_valid_id(charger_id):
        raise InvalidChargerId(
            f"{charger_id[:60]!r} is not a valid charge point id: 1-{MAX_ID_LENGTH} characters "
            "from a-z A-Z 0-9 * - _ = : + | @ ."
        )
    return charger_id


def decode_segment(raw: str) -> str:
    """Percent-decode one path segment once and validate the result."""
    if _RAW_SEGMENT.fullmatch(raw) is None:
        raise InvalidChargerId("charge point id holds characters outside the allowed set")
    try:
        decoded = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidChargerId("charge point id is not valid UTF-8 after percent-decoding") from None
    if not is_valid_id(decoded):
        raise InvalidChargerId(
            f"charge point id must be 1-{MAX_ID_LENGTH} characters from a-z A-Z 0-9 * - _ = : + | @ ."
        )
    return decoded


def charger_id_from_path(path: str, patterns: Sequence[PathPattern]) -> str | None:
    """The decoded id for the first matching pattern; None if no pattern matches the path.

    Raises InvalidChargerId when a pattern matches but the id is not acceptable.
    """
    for pattern in patterns:
        raw = pattern.match(path)
        if raw is not None:
            return decode_segment(raw)
    return None
