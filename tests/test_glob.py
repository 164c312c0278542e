"""The glob module against brute force: matching, coverage by a set of patterns, and overlap, each exact, and
their witnesses valid paths whenever the patterns are valid rule patterns."""

from __future__ import annotations

import itertools
import re

from cedarkey.engine import ModelError, canonical_path, canonical_pattern
from cedarkey.engine.glob import glob_match, overlap, pattern_covers, uncovered
from hypothesis import assume, given, settings
from hypothesis import strategies as st

PATTERN = st.text(st.sampled_from("ab*"), max_size=3)
#: Every string up to length 7 on {a, b, c}; ``c`` stands for any character the patterns do not use.
STRINGS = ["".join(p) for n in range(8) for p in itertools.product("abc", repeat=n)]


def regex_match(pattern: str, text: str) -> bool:
    """An independent matcher: the pattern as a regular expression."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text, re.DOTALL) is not None


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(st.sampled_from("ab*/"), max_size=6), text=st.text(st.sampled_from("ab/*"), max_size=7))
def test_glob_match_agrees_with_a_regex(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) == regex_match(pattern, text)


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERN, cover=st.lists(PATTERN, max_size=3))
def test_coverage_by_a_set_is_exact(pattern: str, cover: list[str]) -> None:
    """Brute force: the set covers the pattern iff no short string matches the pattern and no member (the
    fresh-character witness is at most 3 characters, so a counterexample is always among them)."""
    brute = all(any(regex_match(m, s) for m in cover) for s in STRINGS if regex_match(pattern, s))
    witness = uncovered(pattern, cover)
    assert (witness is None) == brute
    if witness is not None:
        assert regex_match(pattern, witness) and not any(regex_match(m, witness) for m in cover)
    if len(cover) == 1:
        assert pattern_covers(cover[0], pattern) == brute


@settings(max_examples=400, deadline=None)
@given(a=PATTERN, b=PATTERN)
def test_overlap_is_exact(a: str, b: str) -> None:
    """Brute force over every string up to length 7: longer than any witness of two 3-character patterns."""
    brute = any(regex_match(a, s) and regex_match(b, s) for s in STRINGS)
    witness = overlap(a, b)
    assert (witness is not None) == brute
    if witness is not None:
        assert regex_match(a, witness) and regex_match(b, witness)
    assert (overlap(b, a) is None) == (witness is None)


def _pattern(raw: str) -> str:
    try:
        return canonical_pattern(raw)
    except ModelError:
        assume(False)
        raise


RULE_PATTERN = st.text(st.sampled_from("a./*"), min_size=1, max_size=8).map(_pattern)


@settings(max_examples=400, deadline=None)
@given(pattern=RULE_PATTERN, other=RULE_PATTERN)
def test_witnesses_of_valid_patterns_are_valid_paths(pattern: str, other: str) -> None:
    for witness in (uncovered(pattern, [other]), overlap(pattern, other)):
        if witness is not None:
            assert canonical_path(witness) == witness


def test_examples() -> None:
    assert uncovered("/team/*", ["/*"]) is None
    assert uncovered("/*", ["/team/*"]) == "/#"
    assert uncovered("/team/a/*", ["/team/*", "/other"]) is None
    assert overlap("/team/*", "/team/secret/*") == "/team/secret/#"
    assert overlap("/team/*", "/prod/*") is None
    assert overlap("/a/*/b", "/a/x") is None
