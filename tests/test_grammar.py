"""The published grammar (:mod:`cedarkey.engine.grammar`, what ``/openapi.json`` says) and the model's checks
accept exactly the same values: whatever the regex matches is accepted, whatever it refuses is refused."""

from __future__ import annotations

import contextlib
import re
import unicodedata

import pytest
from cedarkey.engine import ModelError, canonical_path, canonical_pattern, grammar, parse_sub_claims
from cedarkey.engine.auth_method import AuthMethod, canonical_sts_url
from cedarkey.engine.identity import CLAIM_ATTRIBUTES
from cedarkey.engine.path import canonical_folder
from hypothesis import example, given, settings
from hypothesis import strategies as st


def accepted(check, value: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        check(value)
    except ModelError:
        return False
    return True


def of_a_form(forms: grammar.Forms, value: str) -> bool:
    """As a JSON Schema validator reads ``anyOf`` of the forms (Python's ``re.search``, ``maxLength``)."""
    return any(re.search(pattern, value) is not None and len(value) <= longest for pattern, longest in forms)


def matches(expression: str, value: str) -> bool:
    """As JSON Schema's validators (Python's ``re.search`` of the anchored pattern) read it."""
    return re.search(grammar.anchored(expression), value) is not None


# Characters that exercise every rule: separators, wildcards, dots, controls, invisible and combining ones.
_TRICKY = "/*.a-_ \t\n\x00\x7f\x85\u200b\u202e\u2028\ufeff\uffff\ufdd0\U000e0020\U0001fffe e\u0301\u00e9\u0958~"
path_text = st.text(alphabet=st.sampled_from(_TRICKY) | st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=600, deadline=None)
@given(path_text)
@example("/a/./b")
@example("a/..")
@example("/...")
@example("/a\n")
@example("//a")
@example("/a/")
@example("*")
def test_a_path_matches_the_grammar_exactly_when_the_model_accepts_it(value: str) -> None:
    for wildcard, check in ((False, canonical_path), (True, canonical_pattern)):
        published = of_a_form(grammar.path_forms(wildcard=wildcard), value)
        assert published == accepted(check, value), (wildcard, ascii(value))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(grammar.path_forms(wildcard=True)).flatmap(lambda f: st.from_regex(f[0], fullmatch=True)))
def test_every_path_the_grammar_generates_is_accepted(value: str) -> None:
    assert accepted(canonical_pattern, value)
    assert accepted(canonical_path, value) == ("*" not in value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("/" + "a" * 1023, True), ("a" * 1023, True), ("/" + "a" * 1024, False), ("a" * 1024, False)],
)
def test_the_length_limit_is_on_the_canonical_form(value: str, ok: bool) -> None:
    assert accepted(canonical_path, value) == ok == of_a_form(grammar.path_forms(wildcard=False), value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("a" * 1023, True), ("a" * 1022 + "//", True), ("a" * 1023 + "/", True), ("a" * 1024, False), ("/" * 1025, False)],
)
def test_a_folders_length_is_its_value_s_and_its_canonical_forms(value: str, ok: bool) -> None:
    # The flag's maxLength bounds the value as sent; canonical_folder, the folder it names.
    assert (len(value) <= 1024 and accepted(canonical_folder, value)) == ok == of_a_form(grammar.folder_forms(), value)


def test_composed_and_decomposed_names_are_one_name() -> None:
    assert canonical_path("/n/e\u0301/k") == canonical_path("/n/\u00e9/k") == "/n/\u00e9/k"
    assert canonical_pattern("/n/e\u0301/*") == "/n/\u00e9/*"


def test_the_refused_characters_are_every_invisible_one_and_no_visible_one() -> None:
    refused = re.compile(f"[{grammar.refused_in_names()}]")
    for cp in (*range(0x20), 0x7F, 0x85, 0x200B, 0x202E, 0x2028, 0x2029, 0xFEFF, 0xFFFF, 0xFDD0, 0x1FFFE, 0xE0020):
        assert refused.match(chr(cp)), hex(cp)
    for c in "a/.*-_~ é\u00e9\u4e2d\U0001f600":
        assert not refused.match(c), ascii(c)
    categories = {unicodedata.category(chr(cp)) for cp in range(0x110000) if 0xD800 > cp or cp > 0xDFFF}
    assert {"Cf", "Zl", "Zp"} <= categories  # the table this class was made from has them


sts_text = st.text(alphabet=st.sampled_from("htps:/[]0123456789abcfx.-_:@?#%Z \u00e9"), max_size=30)


@settings(max_examples=600, deadline=None)
@given(st.builds(lambda a, b: a + b, st.sampled_from(["http://", "https://", "HTTPS://", "ftp://", ""]), sts_text))
@example("http://127.0.0.1:5000/")
@example("http://1.2.3.4./")
@example("http://1.2.3.999/")
@example("http://127.1/")
@example("http://0x7f.1/")
@example("http://[::1]:0/")
@example("http://[fe80::1%25eth0]/")
@example("https://xn--bcher-kva.example/")
@example("https://sts.amazonaws.com")
@example("http://host:/")
@example("http://host:080/")
@example("http://a.0x1/")
@example("http://user@host/")
def test_an_sts_url_matches_the_grammar_exactly_when_the_model_accepts_it(value: str) -> None:
    assert matches(grammar.STS_URL, value) == accepted(canonical_sts_url, value), ascii(value)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(grammar.anchored(grammar.STS_URL), fullmatch=True).filter(lambda s: len(s) <= 512))
def test_every_sts_url_the_grammar_generates_is_accepted(value: str) -> None:
    assert accepted(canonical_sts_url, value), ascii(value)


def test_sts_urls_are_answered_in_canonical_form() -> None:
    assert canonical_sts_url("https://STS.Amazonaws.com") == "https://sts.amazonaws.com/"
    assert canonical_sts_url("http://[::1]:4566/x") == "http://[::1]:4566/x"


def bound_ips(value: str) -> AuthMethod:
    return AuthMethod("/k", "p-aaaaaaaaaaaa", "access_key", bound_ips=(value,))


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789abcdef.:/%"), max_size=24))
@example("10.0.0.0/8")
@example("10.0.0.0/255.0.0.0")
@example("10.0.0.1/08")
@example("010.0.0.1")
@example("::/0")
@example("::ffff:1.2.3.4/128")
@example("fe80::1%eth0")
def test_a_cidr_matches_the_grammar_exactly_when_the_model_accepts_it(value: str) -> None:
    assert matches(grammar.CIDR, value) == accepted(bound_ips, value), ascii(value)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(grammar.anchored(grammar.CIDR), fullmatch=True))
def test_every_cidr_the_grammar_generates_is_accepted(value: str) -> None:
    assert accepted(bound_ips, value), ascii(value)


SUB_CLAIM = grammar.sub_claim(CLAIM_ATTRIBUTES)


@settings(max_examples=400, deadline=None)
@given(
    st.builds(
        lambda k, rest: k + rest,
        st.sampled_from([*CLAIM_ATTRIBUTES, "role-name", " role_name\t", "\nrole_name", "nope", ""]),
        st.text(alphabet=st.sampled_from("=*a-\x00\u200b "), max_size=6),
    )
)
def test_a_sub_claim_matches_the_grammar_exactly_when_the_model_accepts_it(value: str) -> None:
    assert matches(SUB_CLAIM, value) == accepted(lambda v: parse_sub_claims([v]), value), ascii(value)


@pytest.mark.parametrize("count", [32, 33])
def test_sub_claims_and_bindings_are_counted_as_given(count: int) -> None:
    claims = ["role_name=dev"] * count
    assert accepted(lambda _: parse_sub_claims(claims), "") == (count <= 32)
    ips = ("10.0.0.1",) * (count + 68)
    with pytest.raises(ModelError) if count + 68 > 100 else contextlib.nullcontext():
        AuthMethod("/k", "p-aaaaaaaaaaaa", "access_key", bound_ips=ips)


@settings(max_examples=400, deadline=None)
@given(path_text)
@example("")
@example("///")
@example("/dev//")
@example("dev/*")
def test_a_folder_matches_the_grammar_exactly_when_the_model_accepts_it(value: str) -> None:
    assert of_a_form(grammar.folder_forms(), value) == accepted(canonical_folder, value), ascii(value)


def test_folders_are_answered_with_one_trailing_slash() -> None:
    assert canonical_folder("dev") == canonical_folder("/dev//") == "/dev/"
    assert canonical_folder("/") == canonical_folder("") == ""
