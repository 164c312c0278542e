"""Hostile input for every command of the real app: whatever a client sends, the answer is one of the API's
statuses (never a 500), every error is JSON ``{"error", "message"}``, and the server keeps working.

The bodies are random JSON shaped like each command's flags (right and wrong types, huge strings, unicode
with control characters and NUL, lone surrogates sent both as ``\\uD800`` escapes and as raw bytes), any JSON
value at all, deep nesting, invalid UTF-8 and random bytes. Tokens are the admin's (so that handlers run to
the end and really create, change and delete things), a non-admin's, garbage, or none; in the body or in an
``Authorization: Bearer`` header. Runs in well under 30 seconds.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from cedarkey.server.commands import COMMANDS, Flag
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.server import Api, running_api

ALLOWED = {200, 400, 401, 403, 404, 409, 413}
NAMES = sorted(COMMANDS)

FUZZ = settings(
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    database=None,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One app for the module, with objects for the fuzzed names to hit: a non-admin caller, an aws_iam auth
    method (its STS URL a closed port: a proof never passes the local checks anyway), roles, rules, items."""
    with running_api(tmp_path_factory.mktemp("fuzz"), allowed_sts_urls=("http://127.0.0.1:9/",)) as api:
        user = api.ok("create-auth-method", name="/apps/user")
        api.ok("create-role", name="/apps/role")
        api.ok("assoc-role-am", role_name="/apps/role", am_name="/apps/user")
        api.ok("set-role-rule", role_name="/apps/role", path="/dev/*", capability=["read", "list", "create"])
        iam = api.ok(
            "create-auth-method-aws-iam",
            name="/iam/acct",
            bound_aws_account_id=["123456789012"],
            bound_role_name=["dev-role"],
            sts_url="http://127.0.0.1:9/",
        )
        for name in ("/dev/a", "/dev/b", "/prod/a"):
            api.ok("create-secret", name=name, value="v")
        login = api.client.post(
            "/auth",
            content=orjson.dumps(
                {"access-type": "access_key", "access-id": user["access-id"], "access-key": user["access-key"]}
            ),
        )
        yield {
            "api": api,
            "user_token": login.json()["token"],
            "access_ids": [api.admin["access_id"], user["access-id"], iam["access-id"], "p-0000000000000000"],
            "keys": [api.admin["access_key"], user["access-key"]],
        }


# --- strategies ------------------------------------------------------------------------------------------

# Names that exist or nearly do (never /admin itself: deleting it would only make the rest of the run 401s).
GOOD_PATHS = st.sampled_from(
    ["/dev/a", "dev/b", "/dev/new", "/prod/a", "/apps/role", "/apps/user", "/iam/acct", "/fuzz/x", "/é/ß/\U0001f511"]
)
BAD_PATHS = st.sampled_from(
    ["/", "//", "", "*", "/dev/*", "/a/../b", "/a/./b", "/a/", "/\x00", "/\u202e\u200b", "/\x85", "/" + "a" * 1100]
)
PATHS = st.one_of(GOOD_PATHS, GOOD_PATHS, GOOD_PATHS, BAD_PATHS)
CAPABILITIES = st.one_of(
    st.sampled_from(["read", "create", "update", "delete", "list"]),
    st.sampled_from(["read", "list", "deny", "READ", "", "*", "superuser"]),
)
RULE_TYPES = st.one_of(
    st.sampled_from(["item-rule", "role-rule", "auth-method-rule"]),
    st.sampled_from(["item-rule", "item_rule", "", "rule"]),
)
SURROGATES = st.characters(categories=["Cs"])
TEXT = st.one_of(
    st.text(max_size=30),  # any code point but surrogates: controls, NUL, RTL marks, astral planes...
    st.text(st.one_of(st.characters(), SURROGATES), min_size=1, max_size=10),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["x", "é", "\x00", "/", "*", "\U0001f511", "\\", '"']),
        st.sampled_from([1000, 8193, 70_000, 100_000]),
    ),
    PATHS,
    CAPABILITIES,
    st.sampled_from(["access_key", "aws_iam", "t-" + "A" * 43, "p-0000000000000000", "role_name=dev-*", "x=y"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 59, 60, 3600, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=15,
)
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "path": st.one_of(PATHS, JSON_VALUES),
        "capability": st.one_of(CAPABILITIES, JSON_VALUES),
        "rule-type": st.one_of(RULE_TYPES, JSON_VALUES),
        "extra": JSON_VALUES,
    },
)


TYPED_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\x00", "/"]), st.sampled_from([8192, 8193, 70_000])),
    PATHS,
    PATHS,
    CAPABILITIES,
    st.sampled_from(["access_key", "aws_iam", "123456789012", "role_name=dev-*", "principal_type=access-key"]),
)
TYPED_REQUEST = st.fixed_dictionaries(
    {"path": st.one_of(PATHS, TYPED_TEXT), "capability": CAPABILITIES},
    optional={"rule-type": RULE_TYPES},
)


# A string flag may itself carry JSON (a model, an identity...): hostile JSON documents as strings.
JSON_TEXT = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True)),
    st.dictionaries(
        st.sampled_from(["auth-methods", "roles", "cedar", "name", "rules", "associations", "access_id", "arn"]),
        JSON_VALUES,
        max_size=4,
    ).map(json.dumps),
)


def typed_value(flag: Flag) -> st.SearchStrategy[Any]:
    """The flag's own JSON type, with hostile content: what gets past the edge into the handlers."""
    if flag.kind == "list":
        return st.lists(TYPED_TEXT, max_size=4)
    if flag.kind == "int":
        return st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 59, 60, 3600, 2**53, 2**53 + 1]))
    if flag.kind == "requests":
        return st.one_of(
            st.lists(TYPED_REQUEST, min_size=1, max_size=20),
            st.integers(0, 1002).map(lambda n: [{"path": f"/dev/{i}", "capability": "read"} for i in range(n)]),
        )
    if flag.name == "rule-type":
        return RULE_TYPES
    if flag.name == "capability":
        return CAPABILITIES
    if flag.name in ("name", "path", "role-name", "am-name"):
        return PATHS
    return st.one_of(TYPED_TEXT, TYPED_TEXT, JSON_TEXT)


def flag_value(flag: Flag) -> st.SearchStrategy[Any]:
    """Mostly the right type with hostile content, sometimes anything at all."""
    if flag.kind == "list":
        typed = st.one_of(st.lists(TEXT, max_size=6), st.lists(JSON_VALUES, max_size=3))
    elif flag.kind == "requests":
        typed = st.one_of(st.lists(REQUEST, max_size=20), JSON_VALUES)
    else:
        typed = TEXT
    return st.one_of(typed_value(flag), typed, JSON_VALUES)


def command_body(name: str) -> st.SearchStrategy[dict[str, Any]]:
    flags = COMMANDS[name].flags
    typed = st.fixed_dictionaries(
        {f.name: typed_value(f) for f in flags if f.required},
        optional={f.name: typed_value(f) for f in flags if not f.required},
    )
    hostile = st.fixed_dictionaries(
        {}, optional={**{f.name: flag_value(f) for f in flags}, "unknown-flag": JSON_VALUES}
    )
    return st.one_of(typed, typed, hostile)


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """JSON text of ``value`` with lone surrogates kept: as ``\\ud800`` escapes or as raw (invalid) UTF-8."""
    if draw(st.booleans()):
        return json.dumps(value, ensure_ascii=True).encode("ascii")
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"name":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


# --- sending and checking --------------------------------------------------------------------------------


def send(world: dict[str, Any], command: str, raw: bytes, auth: str) -> httpx.Response:
    """``auth``: where the token goes (``body`` is left to the body itself)."""
    headers: dict[str, str | bytes] = {}
    if auth == "admin-header":
        headers["authorization"] = f"Bearer {world['api'].admin_token}"
    elif auth == "user-header":
        headers["authorization"] = f"Bearer {world['user_token']}"
    elif auth == "garbage-header":
        headers["authorization"] = "Bearer t-\u00ff\u00fe garbage".encode("latin-1")
    return world["api"].client.post(f"/{command}", content=raw, headers=headers)


def check(response: httpx.Response) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = orjson.loads(response.content)
    assert isinstance(body, dict)
    if response.status_code != 200:
        assert set(body) == {"error", "message"}, body
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]


def relogin(world: dict[str, Any]) -> None:
    """Fresh tokens for the admin and the user (when the fuzzing has not deleted the user's auth method)."""
    api: Api = world["api"]
    for who, access_id, key in (
        ("admin", api.admin["access_id"], api.admin["access_key"]),
        ("user", world["access_ids"][1], world["keys"][1]),
    ):
        body = {"access-type": "access_key", "access-id": access_id, "access-key": key}
        answer = api.client.post("/auth", content=orjson.dumps(body))
        if answer.status_code == 200:
            if who == "admin":
                api.admin_token = answer.json()["token"]
            else:
                world["user_token"] = answer.json()["token"]


TOKENS = st.sampled_from(["admin", "user", "garbage", "none", "admin-header", "user-header", "garbage-header"])


def with_token(world: dict[str, Any], body: dict[str, Any], who: str) -> dict[str, Any]:
    if who == "admin":
        return {**body, "token": world["api"].admin_token}
    if who == "user":
        return {**body, "token": world["user_token"]}
    if who == "garbage":
        return {**body, "token": "t-garbage"}
    return body


# --- the fuzzers -----------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=2000)
@given(data=st.data(), command=st.sampled_from(NAMES), who=TOKENS)
def test_flag_shaped_bodies(world: dict[str, Any], data: st.DataObject, command: str, who: str) -> None:
    body = with_token(world, data.draw(command_body(command)), who)
    if command == "auth":
        # Aim logins at real auth methods and keys too, so that some get past the first checks.
        body["access-id"] = data.draw(st.one_of(st.sampled_from(world["access_ids"]), JSON_VALUES))
        body["access-key"] = data.draw(st.one_of(st.sampled_from(world["keys"]), TEXT))
    if command in ("authorize", "explain", "revoke-token") and data.draw(st.booleans()):
        body["subject-token"] = data.draw(st.sampled_from([world["user_token"], world["api"].admin_token, "t-x"]))
    response = send(world, command, data.draw(encoded(body)), who)
    check(response)
    event(f"{command} {response.status_code}")
    if command == "revoke-token" and response.status_code == 200:
        relogin(world)  # it revoked the admin's or the user's own token


@settings(FUZZ, max_examples=400)
@given(command=st.sampled_from(NAMES), value=JSON_VALUES, who=TOKENS, data=st.data())
def test_any_json_value_as_body(world: dict[str, Any], command: str, value: Any, who: str, data: Any) -> None:
    check(send(world, command, data.draw(encoded(value)), who))


@settings(FUZZ, max_examples=200)
@given(
    command=st.sampled_from(NAMES),
    raw=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=60).map(lambda b: b'{"name": "' + b + b'", "value": "v"}'),
        st.sampled_from([b"\xff", b"\xc0\x80", b'{"a":"\xed\xa0\x80"}', b'"\\ud800"', b"\xef\xbb\xbf{}", b"{}{}"]),
    ),
    who=TOKENS,
)
def test_invalid_utf8_and_random_bytes(world: dict[str, Any], command: str, raw: bytes, who: str) -> None:
    check(send(world, command, raw, who))


@settings(FUZZ, max_examples=40)
@given(
    command=st.sampled_from(NAMES),
    depth=st.sampled_from([1, 2, 100, 1023, 1024, 1025, 5000, 50_000]),
    kind=st.sampled_from(["list", "object", "flag"]),
)
def test_deep_nesting(world: dict[str, Any], command: str, depth: int, kind: str) -> None:
    check(send(world, command, nested(depth, kind), "admin-header"))


@settings(FUZZ, max_examples=60)
@given(name=st.text(string.ascii_letters + string.digits + "-_.~ é\x00", min_size=1, max_size=40), who=TOKENS)
def test_unknown_commands(world: dict[str, Any], name: str, who: str) -> None:
    if name in COMMANDS or name.strip(".") == "":
        return  # "." and ".." are dot-segments: the client normalizes them away before the app sees a path
    check(send(world, quote(name, safe=""), b"{}", who))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("command", NAMES)
def test_oversized_bodies(world: dict[str, Any], command: str, chunked: bool) -> None:
    """Every command, both framings (a declared Content-Length, and chunks with none): 413, except ``/auth``,
    where a refused request of any kind is the same 401 as every refused login."""
    limit = world["api"].settings.max_body
    raw = b'{"name": "' + b"x" * limit + b'"}'
    content: Any = iter([raw[i : i + 65536] for i in range(0, len(raw), 65536)]) if chunked else raw
    response = world["api"].client.post(f"/{command}", content=content)
    check(response)
    expected = (401, "AuthenticationFailed") if command == "auth" else (413, "PayloadTooLarge")
    assert (response.status_code, response.json()["error"]) == expected


def test_the_server_still_works_afterwards(world: dict[str, Any]) -> None:
    api: Api = world["api"]
    relogin(world)
    assert api.client.get("/health").json()["status"] == "ok"
    # Fresh objects (the fuzzing may have deleted or changed the fixture's).
    api.ok("create-secret", name="/after/fuzz", value="still here")
    assert api.ok("get-secret-value", name="/after/fuzz")["value"] == "still here"
    created = api.ok("create-auth-method", name="/after/am")
    api.ok("create-role", name="/after/role")
    api.ok("assoc-role-am", role_name="/after/role", am_name="/after/am")
    api.ok("set-role-rule", role_name="/after/role", path="/after/*", capability=["read"])
    body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
    token = api.client.post("/auth", content=orjson.dumps(body)).json()["token"]
    assert api.ok("get-secret-value", token=token, name="/after/fuzz")["value"] == "still here"
    answer = api.ok("authorize", token=token, requests=[{"path": "/elsewhere", "capability": "read"}])
    assert answer["decisions"][0]["decision"] == "deny"
    metrics = api.client.get("/metrics", headers={"authorization": f"Bearer {api.admin_token}"})
    assert metrics.status_code == 200
    assert not any(
        line.startswith("cedarkey_requests_total") and 'status="500"' in line for line in metrics.text.splitlines()
    )


def test_data_dir_is_still_loadable(world: dict[str, Any], tmp_path: Path) -> None:
    """Whatever the fuzzing stored, a restart replays it (nothing in the store the engine refuses)."""
    from cedarkey.server.config import Settings
    from cedarkey.server.main import create_app

    api: Api = world["api"]
    app, admin = create_app(Settings(data_dir=api.settings.data_dir))
    assert admin is None
    assert app.state.service.engine.validate() == []
    app.state.service.store.close()
    app.state.service.audit.close()
