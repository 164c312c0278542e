"""The web console's HTTP side, against the real app (Starlette's TestClient around ``create_app``): its pages
and their headers, the session cookie, the CSRF and cross-site checks, ``/ui/api/<command>`` acting only as
the cookie's caller, and what ``/openapi.json`` says of all that; with the commands the console added
(``list-audit-events``, ``update-auth-method``, the binding warning of ``get-auth-method``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cedarkey.server.commands import COMMANDS
from cedarkey.server.console import ASSETS, COOKIE, CSRF_HEADER
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from starlette.testclient import TestClient

from tests.support.server import Api, running_api

AUTH_FAILED = {"error": "AuthenticationFailed", "message": "access authentication failed"}
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
JSON = {"content-type": "application/json"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


@dataclass
class Console:
    """A browser's side of the console: its own cookie jar, signed in as one caller."""

    client: TestClient
    token: str
    csrf: str
    answer: dict[str, Any]

    def call(self, command: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        data = {k.replace("_", "-"): v for k, v in body.items()}
        return self.client.post(
            f"/ui/api/{command}", content=orjson.dumps(data), headers={CSRF_HEADER: self.csrf, **(headers or {})}
        )

    def ok(self, command: str, **body: Any) -> dict[str, Any]:
        response = self.call(command, **body)
        assert response.status_code == 200, response.text
        return response.json()


def browser(api: Api) -> TestClient:
    """Another client of the same running app, with an empty cookie jar."""
    return TestClient(api.client.app, headers=JSON)


def sign_in_body(access_id: str, key: str) -> bytes:
    return orjson.dumps({"access-type": "access_key", "access-id": access_id, "access-key": key})


def sign_in(api: Api, access_id: str, key: str) -> Console:
    client = browser(api)
    response = client.post("/ui/session", content=sign_in_body(access_id, key))
    assert response.status_code == 200, response.text
    token = client.cookies[COOKIE]
    return Console(client, token, response.json()["csrf"], response.json())


def admin_console(api: Api) -> Console:
    return sign_in(api, api.admin["access_id"], api.admin["access_key"])


@dataclass
class Caller:
    name: str
    access_id: str
    key: str


def reader(api: Api) -> Caller:
    """An access-key auth method whose role may only read items under /x."""
    created = api.ok("create-auth-method", name="/apps/reader")
    api.ok("create-role", name="/apps/reader-role")
    api.ok("assoc-role-am", role_name="/apps/reader-role", am_name="/apps/reader")
    api.ok("set-role-rule", role_name="/apps/reader-role", path="/x/*", capability=["read"])
    return Caller("/apps/reader", created["access-id"], created["access-key"])


def token_of(api: Api, caller: Caller) -> str:
    answer = api.client.post("/auth", content=sign_in_body(caller.access_id, caller.key))
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    return body


def set_cookie(response: httpx.Response) -> Any:
    """The one ``Set-Cookie`` of a response, parsed (a morsel: its attributes by lower-case name)."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers[0])
    return jar[COOKIE]


def role_names(api: Api) -> list[str]:
    return [r["name"] for r in api.ok("list-roles")["roles"]]


# === pages ===============================================================================================


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_the_consoles_addresses_redirect_to_its_page(api: Api, path: str) -> None:
    response = api.client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    assert api.client.get(path).url.path == "/ui/"


@pytest.mark.parametrize("path", ["/ui/", *(f"/ui/{name}" for name in ASSETS)])
def test_pages_are_served_with_their_type_and_the_security_headers(api: Api, path: str) -> None:
    name = path.removeprefix("/ui/") or "index.html"
    response = api.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == ASSETS[name]
    assert response.content == resources.files("cedarkey.server").joinpath("ui", name).read_bytes()
    csp = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value, header
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/console.py", "/ui/..%2Fconsole.py", "/ui/session.js"])
def test_anything_else_under_ui_is_a_json_404(api: Api, path: str) -> None:
    response = api.client.get(path)
    assert_error(response, 404, "NotFound")
    assert b"import" not in response.content


# === the session =========================================================================================


def test_signing_in_sets_an_http_only_strict_cookie_holding_the_token_never_the_key(api: Api) -> None:
    client = browser(api)
    assert client.get("/ui/session").json() == {"signed-in": False}
    key = api.admin["access_key"]
    response = client.post("/ui/session", content=sign_in_body(api.admin["access_id"], key))
    assert response.status_code == 200, response.text
    cookie = set_cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain http here: a Secure cookie would never come back
    token = cookie.value
    assert token.startswith("t-") and token != key
    assert key not in response.headers["set-cookie"]
    # The cookie is a live token of the admin, which the answer never shows.
    assert api.ok("list-roles", token=token) == api.ok("list-roles")
    body = response.json()
    assert set(body) == {"signed-in", "caller", "access-id", "expires-at", "csrf"}
    assert body["signed-in"] is True and body["access-id"] == api.admin["access_id"]
    assert token not in response.text and key not in response.text
    assert abs(int(cookie["max-age"]) - (body["expires-at"] - time.time())) <= 5
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value, header
    # A reloaded page gets the same answer back from the cookie alone.
    assert client.get("/ui/session").json() == body


def test_a_wrong_key_is_the_usual_401_and_sets_no_cookie(api: Api) -> None:
    client = browser(api)
    for body in (
        sign_in_body(api.admin["access_id"], "not-the-key"),
        sign_in_body("p-0000000000000000", api.admin["access_key"]),
        b"{}",
    ):
        response = client.post("/ui/session", content=body)
        assert response.status_code == 401, response.text
        assert response.json() == AUTH_FAILED
        assert "set-cookie" not in response.headers
    assert COOKIE not in client.cookies
    assert client.get("/ui/session").json() == {"signed-in": False}


def test_a_cookie_that_is_no_live_token_is_signed_out(api: Api) -> None:
    client = browser(api)
    client.cookies.set(COOKIE, "t-not-a-token", path="/ui")
    assert client.get("/ui/session").json() == {"signed-in": False}
    client.cookies.set(COOKIE, api.admin["access_key"], path="/ui")
    assert client.get("/ui/session").json() == {"signed-in": False}


def test_signing_out_revokes_the_token_and_clears_the_cookie(api: Api) -> None:
    console = admin_console(api)
    response = console.client.post("/ui/session/end", content=b"{}", headers={CSRF_HEADER: console.csrf})
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": True}
    cleared = set_cookie(response)
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/ui"
    assert COOKIE not in console.client.cookies
    # The token is dead everywhere, not only forgotten by the browser.
    response = api.call("list-roles", token=console.token)
    assert response.status_code == 401 and response.json() == AUTH_FAILED
    assert console.client.get("/ui/session").json() == {"signed-in": False}
    console.client.cookies.set(COOKIE, console.token, path="/ui")
    assert_error(console.call("list-roles"), 401, "AuthenticationFailed")
    assert console.client.get("/ui/session").json() == {"signed-in": False}


def test_signing_out_needs_the_csrf_header(api: Api) -> None:
    console = admin_console(api)
    for headers in ({}, {CSRF_HEADER: "0" * 64}):
        response = console.client.post("/ui/session/end", content=b"{}", headers=headers)
        assert_error(response, 403, "CsrfCheckFailed")
    assert api.ok("list-roles", token=console.token) == api.ok("list-roles")


# === /ui/api/<command> ===================================================================================


def test_a_command_answers_as_it_does_to_the_api_with_the_cookie_and_the_csrf_header(api: Api) -> None:
    console = admin_console(api)
    api.ok("create-role", name="/team/ops")
    response = console.call("list-roles")
    assert response.status_code == 200, response.text
    assert response.json() == api.ok("list-roles")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert console.ok("create-role", name="/team/dev")["name"] == "/team/dev"
    assert "/team/dev" in role_names(api)


def test_without_the_right_csrf_header_nothing_is_done(api: Api) -> None:
    console = admin_console(api)
    other = admin_console(api)  # a live session of the same caller: its value is no good for this cookie
    assert other.csrf != console.csrf
    for headers in ({}, {CSRF_HEADER: ""}, {CSRF_HEADER: "0" * 64}, {CSRF_HEADER: other.csrf}):
        response = console.client.post(
            "/ui/api/create-role", content=orjson.dumps({"name": "/csrf/x"}), headers=headers
        )
        body = assert_error(response, 403, "CsrfCheckFailed")
        assert CSRF_HEADER in body["message"]
    # The right header without the cookie is no better.
    bare = browser(api)
    response = bare.post("/ui/api/list-roles", content=b"{}", headers={CSRF_HEADER: console.csrf})
    assert_error(response, 403, "CsrfCheckFailed")
    assert "/csrf/x" not in role_names(api)


def test_a_token_in_the_body_or_a_bearer_header_is_ignored_the_cookie_is_the_caller(api: Api) -> None:
    caller = reader(api)
    console = sign_in(api, caller.access_id, caller.key)
    assert console.answer["access-id"] == caller.access_id
    admin = api.admin_token
    refused = console.call("create-role", name="/by/body-token", token=admin)
    assert_error(refused, 403, "PermissionDenied")
    refused = console.call("create-role", headers={"authorization": f"Bearer {admin}"}, name="/by/bearer")
    assert_error(refused, 403, "PermissionDenied")
    # A listing is the cookie caller's too: the reader may list no role.
    assert console.ok("list-roles", token=admin) == {"roles": []}
    assert api.ok("list-roles", token=token_of(api, caller)) == {"roles": []}
    assert api.ok("list-roles")["roles"]  # while the admin sees them
    assert not {"/by/body-token", "/by/bearer"} & set(role_names(api))
    # And a garbage body token does not make the call fail: it is not looked at.
    assert console.call("list-roles", token=12).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://testserver", "sec-fetch-site": "cross-site"},
    ],
)
def test_another_sites_request_is_refused_and_changes_nothing(api: Api, headers: dict[str, str]) -> None:
    console = admin_console(api)
    response = console.call("create-role", headers=headers, name="/evil/role")
    assert_error(response, 403, "CrossSiteRequest")
    assert "/evil/role" not in role_names(api)
    # Signing in and out are refused the same way.
    response = browser(api).post(
        "/ui/session", content=sign_in_body(api.admin["access_id"], api.admin["access_key"]), headers=headers
    )
    assert_error(response, 403, "CrossSiteRequest")
    assert "set-cookie" not in response.headers
    response = console.client.post("/ui/session/end", content=b"{}", headers={CSRF_HEADER: console.csrf, **headers})
    assert_error(response, 403, "CrossSiteRequest")
    assert api.ok("list-roles", token=console.token) == api.ok("list-roles")


@pytest.mark.parametrize(
    "headers", [{"origin": "http://testserver"}, {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}]
)
def test_the_consoles_own_origin_is_accepted(api: Api, headers: dict[str, str]) -> None:
    console = admin_console(api)
    assert console.call("create-role", headers=headers, name="/own/role").status_code == 200
    assert "/own/role" in role_names(api)


def test_a_body_that_is_not_json_is_refused_as_the_api_refuses_it(api: Api) -> None:
    console = admin_console(api)
    for content_type, body in (("text/plain", b'{"name": "/form/x"}'), ("application/x-www-form-urlencoded", b"a=b")):
        headers = {"content-type": content_type}
        expected = assert_error(
            api.client.post("/create-role", content=body, headers=headers), 415, "UnsupportedMediaType"
        )
        response = console.client.post(
            "/ui/api/create-role", content=body, headers={**headers, CSRF_HEADER: console.csrf}
        )
        assert assert_error(response, 415, "UnsupportedMediaType") == expected
        # A login, though, is refused as every refused login is: the same 401.
        response = browser(api).post("/ui/session", content=body, headers=headers)
        assert response.status_code == 401 and response.json() == AUTH_FAILED
    assert "/form/x" not in role_names(api)


@pytest.mark.parametrize("command", ["auth", "lookup-sts-url", "nonexistent", "health"])
def test_only_authenticated_commands_are_under_ui_api(api: Api, command: str) -> None:
    console = admin_console(api)
    assert_error(console.call(command), 404, "NotFound")


# === list-audit-events ===================================================================================


def test_an_administrator_lists_every_callers_audit_events_newest_first(api: Api) -> None:
    caller = reader(api)
    api.ok("create-secret", name="/x/a", value="v")
    reader_token = token_of(api, caller)
    assert api.ok("get-secret-value", token=reader_token, name="/x/a")["value"] == "v"
    refused = api.client.post("/auth", content=sign_in_body(caller.access_id, "wrong"))
    assert refused.status_code == 401
    console = admin_console(api)
    events = console.ok("list-audit-events")["events"]
    assert events[0]["event"] == "login" and events[0]["access_id"] == api.admin["access_id"]  # the console's
    assert api.ok("list-audit-events")["events"] == events
    times = [e["time"] for e in events]
    assert times == sorted(times, reverse=True)
    mine = [e for e in events if e.get("access_id") == caller.access_id]
    assert {e["event"] for e in mine} >= {"login", "get-secret-value"}
    failure = next(e for e in mine if e.get("outcome") == "failure")
    assert failure["reason"] == "bad_access_key"  # the real reason, which the 401 hid
    assert any(e["event"] == "create-secret" and e["access_id"] == api.admin["access_id"] for e in events)
    for event in events:
        assert caller.key not in orjson.dumps(event).decode() and reader_token not in orjson.dumps(event).decode()


def test_a_caller_who_may_not_list_everything_sees_only_its_own_events(api: Api) -> None:
    caller = reader(api)
    api.ok("create-secret", name="/x/a", value="v")
    assert api.client.post("/auth", content=sign_in_body(caller.access_id, "wrong")).status_code == 401
    console = sign_in(api, caller.access_id, caller.key)
    assert console.ok("get-secret-value", name="/x/a")["value"] == "v"
    events = console.ok("list-audit-events")["events"]
    assert [e["event"] for e in events] == ["get-secret-value", "login"]
    assert all(e["access_id"] == caller.access_id for e in events)
    assert all(e.get("outcome") != "failure" for e in events)  # a refused login's reason is the admin's to see
    token = token_of(api, caller)
    assert api.ok("list-audit-events", token=token)["events"][1:] == events  # its new login first


def test_list_audit_events_limit_bounds(api: Api) -> None:
    for n in range(3):
        api.ok("create-role", name=f"/r/{n}")
    assert len(api.ok("list-audit-events", limit=1)["events"]) == 1
    assert [e["name"] for e in api.ok("list-audit-events", limit=2)["events"]] == ["/r/2", "/r/1"]
    assert len(api.ok("list-audit-events", limit=1000)["events"]) >= 4
    for limit in (0, -1, 1001):
        body = assert_error(api.call("list-audit-events", limit=limit), 400, "BadRequest")
        assert body["message"].startswith("limit:"), body
    assert_error(api.call("list-audit-events", limit="10"), 400, "BadRequest")


# === update-auth-method, the binding warning =============================================================


def test_update_auth_method_changes_an_access_key_methods_jwt_ttl_and_keeps_the_rest(api: Api) -> None:
    created = api.ok("create-auth-method", name="/apps/short", bound_ips=["10.0.0.0/8"])
    before = api.ok("get-auth-method", name="/apps/short")
    assert before["jwt-ttl"] == 3600
    answer = api.ok("update-auth-method", name="/apps/short", jwt_ttl=120)
    assert answer == {"name": "/apps/short", "access-id": created["access-id"]}
    after = api.ok("get-auth-method", name="/apps/short")
    assert after == {**before, "jwt-ttl": 120}
    # aws_iam's own flags are not update-auth-method's, and the aws_iam command refuses this method.
    assert_error(api.call("update-auth-method", name="/apps/short", bound_role_name=["r"]), 400, "BadRequest")
    assert_error(api.call("update-auth-method-aws-iam", name="/apps/short", jwt_ttl=60), 404, "NotFound")
    assert api.ok("get-auth-method", name="/apps/short") == after


def test_a_token_of_an_updated_method_lives_its_new_jwt_ttl(api: Api) -> None:
    created = api.ok("create-auth-method", name="/apps/short")
    api.ok("update-auth-method", name="/apps/short", jwt_ttl=120)
    answer = api.client.post("/auth", content=sign_in_body(created["access-id"], created["access-key"])).json()
    assert abs(answer["expires-at"] - (time.time() + 120)) <= 5


def test_update_auth_method_of_an_unknown_name_is_a_404(api: Api) -> None:
    body = assert_error(api.call("update-auth-method", name="/nope", jwt_ttl=60), 404, "NotFound")
    assert body["message"].startswith("name:")


def test_get_auth_method_warns_when_only_an_account_is_bound(api: Api) -> None:
    api.ok("create-auth-method-aws-iam", name="/iam/account", bound_aws_account_id=["123456789012"])
    api.ok(
        "create-auth-method-aws-iam",
        name="/iam/role",
        bound_aws_account_id=["123456789012"],
        bound_role_name=["deploy"],
    )
    warned = api.ok("get-auth-method", name="/iam/account")
    assert "only to an AWS account" in warned["warning"]
    assert "warning" not in api.ok("get-auth-method", name="/iam/role")
    assert "warning" not in api.ok("get-auth-method", name="/admin")
    # Binding a role name too ends the warning; update-auth-method (common flags) answers it as long as it holds.
    assert "warning" in api.ok("update-auth-method", name="/iam/account", jwt_ttl=60)
    assert "warning" not in api.ok("update-auth-method-aws-iam", name="/iam/account", bound_role_name=["deploy"])
    assert "warning" not in api.ok("get-auth-method", name="/iam/account")


# === /openapi.json =======================================================================================


def _resolved(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        for part in node["$ref"].removeprefix("#/").split("/"):
            document = document[part]
        node = document
    return node


def assert_documented(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    """``response`` is one the document says ``method path`` answers: its status, its media type, the body's
    schema and every required header."""
    answers = document["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in answers, (method, path, response.status_code, response.text)
    answer = _resolved(document, answers[str(response.status_code)])
    for name, header in answer.get("headers", {}).items():
        header = _resolved(document, header)
        if header.get("required"):
            assert name in response.headers, (path, name)
            Draft202012Validator(header["schema"]).validate(response.headers[name])
    content = answer.get("content")
    if content:
        media = response.headers["content-type"].partition(";")[0]
        assert media in content, (path, media, list(content))
        if media == "application/json":
            Draft202012Validator(content[media]["schema"]).validate(response.json())


def test_openapi_is_valid_and_describes_the_console_from_its_declarations(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    validate_openapi(document)
    paths = document["paths"]
    authenticated = {name for name, cmd in COMMANDS.items() if cmd.authenticated}
    assert {p.removeprefix("/ui/api/") for p in paths if p.startswith("/ui/api/")} == authenticated
    console = {"/", "/ui", "/ui/", "/ui/{asset}", "/ui/session", "/ui/session/end"}
    assert set(paths) == {"/health", "/metrics"} | {f"/{n}" for n in COMMANDS} | console | {
        f"/ui/api/{n}" for n in authenticated
    }
    asset = paths["/ui/{asset}"]["get"]["parameters"][0]
    assert asset["in"] == "path" and asset["schema"]["enum"] == list(ASSETS)
    schemes = document["components"]["securitySchemes"]
    for name in authenticated:
        operation = paths[f"/ui/api/{name}"]["post"]
        (requirement,) = operation["security"]
        assert {(schemes[s]["in"], schemes[s]["name"]) for s in requirement} == {
            ("cookie", COOKIE),
            ("header", CSRF_HEADER),
        }
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        flags = COMMANDS[name].flags
        assert set(schema["properties"]) == {f.name for f in flags} | {"token"}
        assert "ignored" in schema["properties"]["token"]["description"]
        assert set(schema["required"]) == {f.name for f in flags if f.required}
        assert schema["additionalProperties"] is False
        assert {"200", "400", "401", "403", "404", "413", "415"} <= set(operation["responses"])
    sign_in_schema = paths["/ui/session"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    auth_schema = paths["/auth"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert sign_in_schema == auth_schema


def test_every_console_answer_is_one_the_document_describes(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    client = browser(api)
    calls: list[tuple[str, str, httpx.Response]] = []

    def record(method: str, path: str, response: httpx.Response) -> httpx.Response:
        calls.append((method, path, response))
        return response

    for path in ("/", "/ui"):
        record("GET", path, client.get(path, follow_redirects=False))
    record("GET", "/ui/", client.get("/ui/"))
    for name in (*ASSETS, "missing.txt"):
        record("GET", "/ui/{asset}", client.get(f"/ui/{name}"))
    record("GET", "/ui/session", client.get("/ui/session"))
    record("POST", "/ui/session", client.post("/ui/session", content=sign_in_body(api.admin["access_id"], "x")))
    record("POST", "/ui/session", client.post("/ui/session", content=b"{}", headers={"origin": "https://evil.example"}))
    signed_in = record(
        "POST",
        "/ui/session",
        client.post("/ui/session", content=sign_in_body(api.admin["access_id"], api.admin["access_key"])),
    )
    csrf = {CSRF_HEADER: signed_in.json()["csrf"]}
    record("GET", "/ui/session", client.get("/ui/session"))
    record("POST", "/ui/api/list-roles", client.post("/ui/api/list-roles", content=b"{}", headers=csrf))
    record("POST", "/ui/api/list-roles", client.post("/ui/api/list-roles", content=b"{}"))
    record("POST", "/ui/api/list-roles", client.post("/ui/api/list-roles", content=b'{"x": 1}', headers=csrf))
    record("POST", "/ui/api/get-role", client.post("/ui/api/get-role", content=b'{"name": "/no"}', headers=csrf))
    record("POST", "/ui/api/create-role", client.post("/ui/api/create-role", content=b'{"name": "/r"}', headers=csrf))
    record("POST", "/ui/api/create-role", client.post("/ui/api/create-role", content=b'{"name": "/r"}', headers=csrf))
    record(
        "POST",
        "/ui/api/create-role",
        client.post("/ui/api/create-role", content=b"name=x", headers={**csrf, "content-type": "text/plain"}),
    )
    record("POST", "/ui/api/list-audit-events", client.post("/ui/api/list-audit-events", content=b"{}", headers=csrf))
    record("POST", "/ui/session/end", client.post("/ui/session/end", content=b"{}"))
    record("POST", "/ui/session/end", client.post("/ui/session/end", content=b"{}", headers=csrf))
    client.cookies.set(COOKIE, signed_in.cookies[COOKIE], path="/ui")
    record("POST", "/ui/api/list-roles", client.post("/ui/api/list-roles", content=b"{}", headers=csrf))
    statuses = set()
    for method, path, response in calls:
        assert_documented(document, method, path, response)
        statuses.add(response.status_code)
    assert statuses == {200, 303, 400, 401, 403, 404, 409, 415}
