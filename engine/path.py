"""Paths of items, roles and auth methods, and the path patterns of role rules.

Canonical form is ``/a/b/c``: a leading slash (added when missing), case-sensitive, any Unicode but control
characters and lone surrogates; empty segments, ``.`` and ``..`` are refused. In a rule pattern ``*`` matches
any run of characters, ``/`` included, and may appear several times; in an object path ``*`` is refused, so
that a rule can always name an object literally.
"""

from __future__ import annotations

import re

from .errors import ModelError

MAX_PATH_LENGTH = 1024

# C0, DEL and C1 controls, plus lone surrogates (they cannot be encoded and would break every consumer).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _canonical(value: object, field: str, *, pattern: bool) -> str:
    if not isinstance(value, str):
        raise ModelError(field, "must be a string")
    if not value:
        raise ModelError(field, "must not be empty")
    if len(value) > MAX_PATH_LENGTH:
        raise ModelError(field, f"longer than {MAX_PATH_LENGTH} characters")
    if _FORBIDDEN.search(value):
        raise ModelError(field, "control characters are not allowed")
    path = value if value.startswith("/") else "/" + value
    if not pattern and "*" in path:
        raise ModelError(field, "'*' is reserved for rule patterns")
    if len(path) > MAX_PATH_LENGTH:
        raise ModelError(field, f"longer than {MAX_PATH_LENGTH} characters")
    for segment in path[1:].split("/"):
        if segment == "":
            raise ModelError(field, "empty path segment (a doubled or trailing '/')")
        if segment in (".", ".."):
            raise ModelError(field, f"'{segment}' segments are not allowed")
    return path


def canonical_path(value: object, field: str = "path") -> str:
    """The canonical form of an object path (an item, role or auth method name)."""
    return _canonical(value, field, pattern=False)


def canonical_pattern(value: object, field: str = "path") -> str:
    """The canonical form of a rule path pattern, where ``*`` is a wildcard."""
    return _canonical(value, field, pattern=True)
