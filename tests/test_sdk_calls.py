"""The SDK's typed calls: written from the command registry (the file in the package is what the generator
writes today), and working against a real server, refusals raising ApiError with the API's code."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cedarkey.client import ApiError, Client
from cedarkey.client.commands import Commands
from cedarkey.client.profile import Profile
from cedarkey.server import sdk_calls
from cedarkey.server.commands import COMMANDS

from tests.support.server import start_initialized

COMMANDS_FILE = Path(__file__).resolve().parent.parent / "client" / "commands.py"


def test_the_typed_calls_are_what_the_registry_writes() -> None:
    assert COMMANDS_FILE.read_text() == sdk_calls.source(), (
        "run: python -m cedarkey.server.sdk_calls > client/commands.py"
    )


def test_every_command_has_a_call_taking_its_flags() -> None:
    for cmd in COMMANDS.values():
        method = getattr(Commands, cmd.name.replace("-", "_"))
        params = inspect.signature(method).parameters
        assert [p.replace("_", "-") for p in params if p != "self"] == [
            *(f.name for f in cmd.flags if f.required),
            *(f.name for f in cmd.flags if not f.required),
        ]
        assert all(params[f.name.replace("-", "_")].default is None for f in cmd.flags if not f.required)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("CEDARKEY_HOME", str(tmp_path / "home"))
    server, admin = start_initialized(tmp_path / "data")
    profile = Profile("sdk", admin["access_id"], "access_key", server.url, admin["access_key"])
    c = Client(server.url, profile)
    try:
        yield c
    finally:
        c.close()
        server.stop()


def test_typed_calls_against_a_server(client: Client) -> None:
    assert client.create_secret("/sdk/db", "one") == {"name": "/sdk/db", "version": 1}
    client.update_secret_val("/sdk/db", "two", keep_prev_version="true")
    assert client.get_secret_value("/sdk/db")["value"] == "two"
    assert client.get_secret_value("/sdk/db", version=1)["value"] == "one"
    decisions = client.authorize([{"path": "/sdk/db", "capability": "read"}])["decisions"]
    assert [d["decision"] for d in decisions] == ["allow"]
    made = client.create_auth_method("/sdk/app")
    identity = json.dumps({"auth_method": "/sdk/app"})
    assert client.can(identity, "/sdk/db", "read")["decision"] == "deny"
    with pytest.raises(ApiError) as no_sts:  # an access-key method has no STS URL; the call needs no token
        client.lookup_sts_url(made["access-id"])
    assert no_sts.value.status == 404
    assert client.lookup_token()["roles"] == ["/admin"]


def test_a_refusal_raises_with_the_apis_code(client: Client) -> None:
    with pytest.raises(ApiError) as missing:
        client.get_secret_value("/sdk/none")
    assert (missing.value.status, missing.value.code) == (404, "NotFound")
    client.create_secret("/sdk/x", "a")
    with pytest.raises(ApiError) as stale:
        client.update_secret_val("/sdk/x", "b", cas=7)
    assert (stale.value.status, stale.value.code) == (409, "VersionConflict")
    with pytest.raises(ApiError) as bad:
        client.create_secret("/sdk/y", "v", max_versions=0)
    assert (bad.value.status, bad.value.code) == (400, "BadRequest")
