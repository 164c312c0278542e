"""A command's JSON body as the server reads it: a key named twice in one object is refused, whatever the
spacing, the nesting or the strings around it (orjson alone would keep the last one silently)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from cedarkey.server.app import read_json
from cedarkey.server.errors import ApiError
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

KEYS = ["a", "b", "path", 'x":', "\u00e9"]  # few keys, so that objects often name one twice
SPACES = st.sampled_from(["", " ", "\n", "\t ", "  "])


def read(body: bytes) -> dict[str, Any]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    return asyncio.run(read_json(Request(scope, receive), 1 << 20))


def names_a_key_twice(body: bytes) -> bool:
    """The reference: the standard library's parser, shown every object's pairs."""
    twice = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal twice
        twice = twice or len({k for k, _ in items}) != len(items)
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)
    return twice


@st.composite
def texts(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text of a value; objects may name a key twice, and the spacing is drawn."""
    leaves = st.one_of(
        st.integers(-5, 5).map(str),
        st.sampled_from(['"\\":"', '"say \\"x\\": y"', '"plain"', '"\\u00e9"']),
        st.text(max_size=4).map(lambda s: orjson.dumps(s).decode()),
    )
    kind = draw(st.sampled_from(["leaf", "object", "list"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return draw(leaves)
    before, after = draw(SPACES), draw(SPACES)
    if kind == "list":
        items = draw(st.lists(texts(depth + 1), max_size=3))
        return "[" + before + ",".join(items) + after + "]"
    members = draw(st.lists(st.tuples(st.sampled_from(KEYS), texts(depth + 1)), max_size=4))
    return "{" + ",".join(f"{before}{orjson.dumps(k).decode()}{after}:{v}" for k, v in members) + "}"


@settings(max_examples=400, deadline=None)
@given(texts(depth=1).filter(lambda t: t.startswith("{")), st.booleans())
def test_a_key_named_twice_is_refused_however_the_body_is_written(text: str, compact: bool) -> None:
    body = orjson.dumps(orjson.loads(text)) if compact and not names_a_key_twice(text.encode()) else text.encode()
    if names_a_key_twice(body):
        with pytest.raises(ApiError, match="a key appears twice"):
            read(body)
    else:
        assert read(body) == orjson.loads(body)


def test_a_compact_body_naming_a_key_twice_is_refused() -> None:
    """What orjson writes back for it has the key once: the bytes differ, so the full check runs."""
    for body in (b'{"name":"/a","name":"/b"}', b'{"requests":[{"path":"/a","path":"/b","capability":"read"}]}'):
        with pytest.raises(ApiError, match="a key appears twice"):
            read(body)


def test_a_body_nested_deeper_than_orjson_writes_is_read() -> None:
    body = b'{"a":' + b"[" * 600 + b"]" * 600 + b"}"
    assert read(body)["a"] == orjson.loads(body)["a"]
