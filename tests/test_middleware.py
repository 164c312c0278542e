"""The ASGI middleware protecting a small Starlette service, against a real cedarkey server: 401/403 answered
by the middleware, decisions cached, a rule change seen within a second, a lost watch never trusted. Also the
``watch`` long poll it follows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cedarkey.client import Client
from cedarkey.client.middleware import CedarkeyAuthz, Protected
from cedarkey.client.profile import Profile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support.server import ServerProcess, start_initialized


@dataclass
class World:
    server: ServerProcess
    admin: str  # the admin's token
    caller: str  # a token with read on /reports/*
    service: TestClient
    authz: CedarkeyAuthz


def post(server: ServerProcess, command: str, token: str | None, **body: Any) -> httpx.Response:
    data = {k.replace("_", "-"): v for k, v in body.items()}
    if token is not None:
        data["token"] = token
    return httpx.post(f"{server.url}/{command}", json=data, timeout=40)


def ok(server: ServerProcess, command: str, token: str | None, **body: Any) -> dict[str, Any]:
    answer = post(server, command, token, **body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def protect(scope: dict[str, Any]) -> Protected | None:
    path = scope["path"]
    return Protected(path, "read") if path.startswith("/reports/") else None


async def report(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"report {request.path_params.get('name', 'open')}")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("CEDARKEY_HOME", str(tmp_path / "home"))
    server, admin_keys = start_initialized(tmp_path / "data")
    try:
        login = {"access-type": "access_key"}
        admin = ok(server, "auth", None, access_id=admin_keys["access_id"], access_key=admin_keys["access_key"],
                   **login)["token"]  # fmt: skip
        svc = ok(server, "create-auth-method", admin, name="/svc/reports")
        app = ok(server, "create-auth-method", admin, name="/apps/reader")
        ok(server, "create-role", admin, name="/readers")
        ok(server, "assoc-role-am", admin, role_name="/readers", am_name="/apps/reader")
        ok(server, "set-role-rule", admin, role_name="/readers", path="/reports/*", capability=["read"])
        caller = ok(server, "auth", None, access_id=app["access-id"], access_key=app["access-key"], **login)["token"]
        watcher = Client(server.url, Profile("svc", svc["access-id"], "access_key", server.url, svc["access-key"]))
        service = Starlette(routes=[Route("/reports/{name}", report), Route("/open", report)])
        authz = CedarkeyAuthz(service, watcher=watcher, protect=protect)
        assert authz.wait_until_watching()
        with TestClient(authz) as client:
            yield World(server, admin, caller, client, authz)
        authz.stop()
    finally:
        server.stop()


def get(world: World, path: str, token: str | None) -> httpx.Response:
    return world.service.get(path, headers={"authorization": f"Bearer {token}"} if token else {})


def test_the_middleware_answers_401_and_403_itself_and_caches(world: World) -> None:
    assert get(world, "/reports/q3", world.caller).text == "report q3"
    asked = world.authz.stats.asked
    assert get(world, "/reports/q3", world.caller).status_code == 200
    assert world.authz.stats.asked == asked and world.authz.stats.hits >= 1  # the second one from the cache
    refused = get(world, "/reports/q3", None)
    assert refused.status_code == 401 and refused.json()["error"] == "AuthenticationFailed"
    assert get(world, "/reports/q3", "t-" + "x" * 43).status_code == 401
    ok(world.server, "create-role", world.admin, name="/empty")
    other = ok(world.server, "create-auth-method", world.admin, name="/apps/nobody")
    nobody = ok(world.server, "auth", None, access_type="access_key", access_id=other["access-id"],
                access_key=other["access-key"])["token"]  # fmt: skip
    denied = get(world, "/reports/q3", nobody)
    assert denied.status_code == 403 and denied.json()["error"] == "PermissionDenied"
    assert get(world, "/open", None).status_code == 200  # not protected


def test_a_rule_change_reaches_the_service_within_a_second(world: World) -> None:
    assert get(world, "/reports/q3", world.caller).status_code == 200
    assert get(world, "/reports/q3", world.caller).status_code == 200  # cached now
    ok(world.server, "set-role-rule", world.admin, role_name="/readers", path="/reports/q3", capability=["deny"])
    start = time.monotonic()
    while get(world, "/reports/q3", world.caller).status_code != 403:
        assert time.monotonic() - start < 1.0, "the deny did not reach the service within a second"
        time.sleep(0.01)
    assert get(world, "/reports/q4", world.caller).status_code == 200


def test_a_revoked_token_is_refused_by_the_service_within_a_second(world: World) -> None:
    assert get(world, "/reports/q3", world.caller).status_code == 200
    assert get(world, "/reports/q3", world.caller).status_code == 200  # cached now, for max_age (10 s)
    ok(world.server, "revoke-token", world.caller)
    start = time.monotonic()
    while (answer := get(world, "/reports/q3", world.caller)).status_code != 401:
        assert time.monotonic() - start < 1.0, "the revoked token was still served from the cache"
        time.sleep(0.01)
    assert answer.json()["error"] == "AuthenticationFailed"


def test_a_lost_watch_drops_the_cache_and_nothing_is_trusted(world: World) -> None:
    assert get(world, "/reports/q3", world.caller).status_code == 200
    assert get(world, "/reports/q3", world.caller).status_code == 200
    world.server.stop()
    start = time.monotonic()
    while get(world, "/reports/q3", world.caller).status_code != 503:
        assert time.monotonic() - start < 2.0, "a decision was still served from the cache"
        time.sleep(0.01)


def test_watch_waits_for_a_change_and_answers_it(world: World) -> None:
    first = ok(world.server, "watch", world.admin)
    assert first["changed"] is True and ok(world.server, "watch", world.admin, version=first["version"], wait=0) == {
        "version": first["version"],
        "changed": False,
    }
    answers: list[dict[str, Any]] = []
    waiting = threading.Thread(
        target=lambda: answers.append(ok(world.server, "watch", world.admin, version=first["version"], wait=20))
    )
    waiting.start()
    time.sleep(0.2)
    assert not answers  # still waiting: nothing changed
    ok(world.server, "create-role", world.admin, name="/new")
    waiting.join(5)
    assert answers and answers[0]["changed"] is True and answers[0]["version"] != first["version"]
    assert post(world.server, "watch", None).status_code == 401
