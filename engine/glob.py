"""Globs: rule path patterns and sub-claim patterns, where ``*`` matches any run of characters (``/`` too).

Matching is Cedar's ``like``. Two questions about patterns are decided exactly, each with a witness string:

- **coverage**: does a set of patterns match every string one pattern matches? Put a character ``c`` found
  in no pattern in place of each ``*`` of the pattern: some member matches that string if and only if that
  member covers the pattern (its literals hold no ``c``, so each ``c`` falls in one of its stars, and a
  star matches any string, so every other filling matches too). When no member matches, the string itself
  is the witness. For a valid rule pattern it is a valid path: a ``c`` never makes an empty, ``.`` or
  ``..`` segment.
- **overlap**: do two patterns match a common string? When one has no ``*``, that is whether the other
  matches it. When both have one, they overlap if and only if their literal prefixes agree (one is a prefix
  of the other) and their literal suffixes agree: the string ``longer prefix + c + the first pattern's middle
  literals, each followed by c + the second's, each followed by c + longer suffix`` matches both (every
  ``c``-separated run lies in a star of each), and is a valid path when both patterns are valid.

``tests/test_glob.py`` checks both against brute force over every short string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_FRESH = ("#", "§", "\ue000", "\U000f0000")


def glob_match(pattern: str, text: str) -> bool:
    """``text`` matches ``pattern`` as a whole, ``*`` matching any run of characters (Cedar's ``like``)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    first, last = parts[0], parts[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    pos, end = len(first), len(text) - len(last)
    for middle in parts[1:-1]:  # leftmost placement of each literal run is always the best one
        found = text.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


def literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first wildcard: every string it matches starts with this."""
    return pattern.split("*", 1)[0]


def fresh_char(*texts: str) -> str:
    """A printable character, not ``/`` nor ``*``, that occurs in none of ``texts``."""
    for c in _FRESH:
        if all(c not in t for t in texts):
            return c
    used = set().union(*texts)
    return next(chr(cp) for cp in range(0xE001, 0xF8FF) if chr(cp) not in used)


def uncovered(pattern: str, cover: Iterable[str]) -> str | None:
    """A string ``pattern`` matches that no pattern of ``cover`` matches; None when ``cover`` covers it."""
    members = list(cover)
    c = fresh_char(pattern, *members)
    instance = pattern.replace("*", c)
    return None if any(glob_match(m, instance) for m in members) else instance


def pattern_covers(general: str, specific: str) -> bool:
    """Whether ``general`` matches every string that ``specific`` matches."""
    return uncovered(specific, [general]) is None


def overlap(a: str, b: str) -> str | None:
    """A string both patterns match; None when there is none."""
    if "*" not in a:
        return a if glob_match(b, a) else None
    if "*" not in b:
        return b if glob_match(a, b) else None
    a_parts, b_parts = a.split("*"), b.split("*")
    prefix = _longer_agreeing(a_parts[0], b_parts[0], str.startswith)
    suffix = _longer_agreeing(a_parts[-1], b_parts[-1], str.endswith)
    if prefix is None or suffix is None:
        return None
    c = fresh_char(a, b)
    middles = [*a_parts[1:-1], *b_parts[1:-1]]
    return prefix + "".join(c + m for m in middles) + c + suffix


def _longer_agreeing(x: str, y: str, extends: Callable[[str, str], bool]) -> str | None:
    """The longer of two literals when it extends the other (``str.startswith`` or ``str.endswith``)."""
    longer, shorter = (x, y) if len(x) >= len(y) else (y, x)
    return longer if extends(longer, shorter) else None
