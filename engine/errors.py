"""Errors of the access model.

Each carries a machine-readable ``code`` (the HTTP layer maps it to a status) and the ``field`` that was
wrong, so a caller can say exactly which input to fix.
"""

from __future__ import annotations


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
