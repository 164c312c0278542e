"""Paths of items, roles and auth methods, and the path patterns of role rules.

Canonical form is ``/a/b/c``: a leading slash (added when missing), case-sensitive, in Unicode's composed
form (NFC: ``e\u0301`` and ``\u00e9`` are one name, so a rule on one covers the other), any Unicode but control
characters, lone surrogates, and characters that show nothing or reorder text (format characters such as
U+200B and U+202E, line and paragraph separators, noncharacters); empty segments, ``.`` and ``..`` are
refused. In a rule pattern ``*`` matches any run of characters, ``/`` included, and may appear several times;
in an object path ``*`` is refused, so that a rule can always name an object literally.
"""

from __future__ import annotations

import re
import unicodedata

from . import grammar
from .errors import ModelError

MAX_PATH_LENGTH = grammar.MAX_PATH

# C0, DEL and C1 controls, plus lone surrogates (they cannot be encoded and would break every consumer).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Characters that show nothing, or reorder what is shown: /dev/x and /dev/x\u200b would look the same.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})


def _invisible(text: str) -> str | None:
    """The first invisible, bidirectional-control or noncharacter code point of ``text``, if any."""
    if text.isascii():
        return None
    for c in text:
        cp = ord(c)
        if unicodedata.category(c) in _INVISIBLE_CATEGORIES or 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE:
            return c
    return None


def _canonical(value: object, field: str, *, pattern: bool) -> str:
    if not isinstance(value, str):
        raise ModelError(field, "must be a string")
    if not value:
        raise ModelError(field, "must not be empty")
    if len(value) > MAX_PATH_LENGTH:
        raise ModelError(field, f"longer than {MAX_PATH_LENGTH} characters")
    if _FORBIDDEN.search(value):
        raise ModelError(field, "control characters are not allowed")
    hidden = _invisible(value)
    if hidden is not None:
        raise ModelError(field, f"U+{ord(hidden):04X} is invisible or reorders text: not allowed in names")
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    path = value if value.startswith("/") else "/" + value
    if not pattern and "*" in path:
        raise ModelError(field, "'*' is reserved for rule patterns")
    if len(path) > MAX_PATH_LENGTH:  # the canonical form too: its leading '/' counts
        raise ModelError(field, f"longer than {MAX_PATH_LENGTH} characters")
    # Substring tests, not a walk over the segments: an empty segment is a "//" or a trailing "/", and a "."
    # or ".." segment sits between two slashes once one is appended.
    if "//" in path or path.endswith("/"):
        raise ModelError(field, "empty path segment (a doubled or trailing '/')")
    closed = path + "/"
    for dots in (".", ".."):
        if f"/{dots}/" in closed:
            raise ModelError(field, f"'{dots}' segments are not allowed")
    return path


def canonical_path(value: object, field: str = "path") -> str:
    """The canonical form of an object path (an item, role or auth method name)."""
    return _canonical(value, field, pattern=False)


def canonical_pattern(value: object, field: str = "path") -> str:
    """The canonical form of a rule path pattern, where ``*`` is a wildcard."""
    return _canonical(value, field, pattern=True)


def canonical_folder(value: object, field: str = "path") -> str:
    """A folder to list: ``/dev``, ``/dev/`` and ``dev`` are ``/dev/``; only slashes (or nothing) is every
    folder, answered as ``""``."""
    if not isinstance(value, str):
        raise ModelError(field, "must be a string")
    name = value.rstrip("/")
    return canonical_path(name, field) + "/" if name else ""
