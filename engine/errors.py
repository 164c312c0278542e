"""Errors of the access model.

Each carries a machine-readable ``code`` (the HTTP layer maps it to a status) and the ``field`` that was
wrong, so a caller can say exactly which input to fix.
"""

from __future__ import annotations

#: How many characters of a client's value a message shows.
SHOWN = 100


class ModelError(ValueError):
    """Input that the access model refuses. ``code`` is ``BadRequest`` unless a subclass says otherwise."""

    code = "BadRequest"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class NotFound(ModelError):
    code = "NotFound"


class AlreadyExists(ModelError):
    code = "AlreadyExists"


class VersionConflict(ModelError):
    """The object changed since the caller read it (another writer got there first)."""

    code = "VersionConflict"


def clip(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object, limit: int = SHOWN) -> str:
    """A client's value as a message quotes it: its repr, cut short (a megabyte sent must not come back, nor
    go to a log, a megabyte long)."""
    return clip(repr(value), limit)
