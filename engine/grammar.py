"""The syntax of every value the model accepts, as regular expressions that mean the same in Python's ``re``
and in ECMA-262 (what JSON Schema's ``pattern`` is): the checks of :mod:`.auth_method` and
:mod:`.access_role` compile them, and ``/openapi.json`` publishes them, so the two cannot drift apart.

Paths are the exception: :mod:`.path` checks them by hand (with reasons a regex cannot give), and
:func:`path_pattern` describes the same language; ``tests/test_grammar.py`` proves the two agree.
"""

from __future__ import annotations

import functools
import unicodedata

#: The longest path, in canonical form (:data:`.path.MAX_PATH_LENGTH` says the same).
MAX_PATH = 1024

ACCOUNT = r"[0-9]{12}"
IAM_NAME = r"[A-Za-z0-9_+=,.@-]{1,128}"
AWS_ID = r"[A-Za-z0-9]{1,128}"
ARN = r"arn:[a-z0-9*-]+:[a-z0-9*-]+:[a-z0-9*-]*:[0-9*]*:[A-Za-z0-9_+=,.@/*:-]{1,1900}"
ACCESS_ID = r"p-[a-z0-9]{12,64}"
ASSOC_ID = r"ac-[0-9a-f]{16}"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{IPV4})"
#: RFC 3986's IPv6address, without a zone id.
IPV6 = (
    "(?:"
    + "|".join(
        (
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        )
    )
    + ")"
)
#: An address or a network: ``10.0.0.0/8``, ``10.1.2.3``, ``2001:db8::/32``.
CIDR = rf"(?:{IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)"

# A DNS label as HTTP clients connect to it: no IDNA (xn--) label; a last label that is a number would be an
# IPv4 address to some resolvers and nothing to others.
_LABEL = r"(?![Xx][Nn]--)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_LAST_LABEL = r"(?![Xx][Nn]--)(?![0-9]+\.?(?::|/|$))(?!0[Xx])[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DNS_NAME = rf"(?:{_LABEL}\.)*{_LAST_LABEL}\.?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: An STS endpoint: http(s), a host, an optional port and path of printable ASCII; no query or fragment.
STS_URL = rf"[Hh][Tt][Tt][Pp][Ss]?://(?:{DNS_NAME}|{IPV4}|\[{IPV6}\])(?::{_PORT})?(?:/[!\"$->@-~]*)?"
MAX_STS_URL = 512

#: Free text: no control characters but newlines and tabs.
DESCRIPTION = r"[^\x00-\x08\x0b-\x1f\x7f-\x9f]*"
#: A sub-claim: an identity attribute, ``=``, and a glob of 1 to 256 printable characters.
SUB_CLAIM_PATTERN = r"[^\x00-\x1f\x7f-\x9f]{1,256}"


def anchored(expression: str) -> str:
    """``expression`` matching a whole value: ``$`` alone would let Python's ``re`` accept a final newline."""
    return rf"^(?:{expression})$(?!\n)"


def sub_claim(attributes: tuple[str, ...]) -> str:
    """``attribute=pattern`` for one of ``attributes`` (``-`` or ``_`` between words)."""
    names = "|".join(a.replace("_", "[-_]") for a in attributes)
    return rf"[ \t]*(?:{names})[ \t]*={SUB_CLAIM_PATTERN}"


@functools.cache
def refused_in_names() -> str:
    """A regex character class body: what a name may not hold (controls, characters that show nothing or
    reorder text, noncharacters). Computed from ``unicodedata`` on first use, not at import. Lone surrogates
    are left out: no JSON parser here lets one through, and ECMA-262's Unicode classes cannot name them."""
    ranges: list[tuple[int, int]] = [(0x00, 0x1F), (0x7F, 0x9F), (0xFDD0, 0xFDEF)]
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)) in ("Cf", "Zl", "Zp") or cp & 0xFFFE == 0xFFFE:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    ranges.sort()
    return "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)


def _char(cp: int) -> str:
    # An escape both dialects read for the BMP; above it, the character itself (JSON carries it as UTF-8).
    return chr(cp) if cp > 0xFFFF else f"\\u{cp:04x}"


#: A path's forms: (anchored expression, longest length); a value of any one form is accepted.
Forms = tuple[tuple[str, int], ...]


@functools.cache
def path_forms(*, wildcard: bool) -> Forms:
    """The language of :func:`.path.canonical_path` (``wildcard``: :func:`.path.canonical_pattern`): with its
    leading ``/``, or without it and one character shorter (the canonical form adds it, and counts it)."""
    segments = _segments(wildcard)
    return ((anchored(f"/{segments}"), MAX_PATH), (anchored(segments), MAX_PATH - 1))


@functools.cache
def folder_forms() -> Forms:
    """The language of :func:`.path.canonical_folder`: slashes alone, or a path and any trailing slashes."""
    segments = _segments(False)
    return (
        (anchored(f"/*|/{segments}/*|{segments}/+"), MAX_PATH),
        (anchored(segments), MAX_PATH - 1),
    )


def _segments(wildcard: bool) -> str:
    other = refused_in_names() + "/" + ("" if wildcard else "*")
    char = f"[^{other}]"
    # A segment of any allowed characters but "." and "..".
    segment = rf"(?:[^.{other}]{char}*|\.[^.{other}]{char}*|\.\.{char}+)"
    return rf"{segment}(?:/{segment})*"
