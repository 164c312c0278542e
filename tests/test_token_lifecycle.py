"""Token lifecycle (Vault's token renew and max TTL; Akeyless's jwt-ttl): ``max-ttl`` per auth method,
``renew-token`` (own or a subject's), ``lookup-token``, and the client renewing a cached token near its end
or logging in again when the server will not renew it. In process, then the CLI against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cedarkey.engine import ModelError
from cedarkey.engine.auth_method import AuthMethod

from tests.support.server import Api, cli_ok, running_api, start_initialized, user_env
from tests.test_server_api import limited, reopened, token_of


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def login(api: Api, method: dict[str, str]) -> str:
    return token_of(api.client, method["access-id"], method["access-key"])


def test_max_ttl_defaults_to_eight_jwt_ttls_within_thirty_days() -> None:
    am = AuthMethod("/a", "p-aaaaaaaaaaaaaaaa", "access_key", jwt_ttl=600)
    assert am.token_max_ttl() == 4800
    assert am.renewed_expiry(issued_at=1000.0, now=1100.0) == 1700.0  # a jwt-ttl from now
    assert am.renewed_expiry(issued_at=1000.0, now=5500.0) == 5800.0  # never past issue + max TTL
    long = AuthMethod("/b", "p-bbbbbbbbbbbbbbbb", "access_key", jwt_ttl=10 * 24 * 3600)
    assert long.token_max_ttl() == 30 * 24 * 3600
    assert AuthMethod("/c", "p-cccccccccccccccc", "access_key", jwt_ttl=60, max_ttl=90).token_max_ttl() == 90
    short = AuthMethod("/d", "p-dddddddddddddddd", "access_key", jwt_ttl=600, max_ttl=300)
    assert short.renewed_expiry(issued_at=1000.0, now=1000.0) == 1300.0  # below jwt-ttl: cut short
    with pytest.raises(ModelError, match="max-ttl"):
        AuthMethod("/e", "p-eeeeeeeeeeeeeeee", "access_key", max_ttl=31 * 24 * 3600)


def test_renew_extends_a_live_token_up_to_its_max_ttl(api: Api) -> None:
    method = api.ok("create-auth-method", name="/svc", jwt_ttl=60, max_ttl=600)
    assert api.ok("get-auth-method", name="/svc")["max-ttl"] == 600
    token = login(api, method)
    before = api.ok("lookup-token", token)["expires-at"]
    time.sleep(1.1)  # whole seconds: the renewed expiry is a later one
    renewed = api.ok("renew-token", token)
    assert renewed["renewed"] is True and renewed["expires-at"] > before
    assert api.ok("lookup-token", token)["expires-at"] == renewed["expires-at"]
    # At its max TTL already (max-ttl = jwt-ttl): answered as it is, never shortened.
    capped = api.ok("create-auth-method", name="/capped", jwt_ttl=60, max_ttl=60)
    short = login(api, capped)
    expiry = api.ok("lookup-token", short)["expires-at"]
    assert api.ok("renew-token", short) == {"expires-at": expiry, "renewed": False}
    # A max TTL below jwt-ttl cuts the login's token short.
    cut = login(api, api.ok("create-auth-method", name="/cut", jwt_ttl=600, max_ttl=120))
    assert api.ok("lookup-token", cut)["expires-at"] <= time.time() + 121
    refused = api.call("create-auth-method", name="/bad", max_ttl=31 * 24 * 3600)
    assert refused.status_code == 400 and "max-ttl" in refused.json()["message"]


def test_renewal_lasts_across_a_restart(tmp_path: Path) -> None:
    with running_api(tmp_path / "data") as api:
        token = login(api, api.ok("create-auth-method", name="/svc", jwt_ttl=60, max_ttl=600))
        time.sleep(1.1)
        renewed = api.ok("renew-token", token)["expires-at"]
    with reopened(tmp_path / "data") as client:
        looked = client.post("/lookup-token", content=orjson.dumps({"token": token}))
        assert looked.status_code == 200 and looked.json()["expires-at"] == renewed


def test_a_subjects_token_is_renewed_with_revoke_tokens_permission(api: Api) -> None:
    caller = limited(api)
    other = login(api, api.ok("create-auth-method", name="/other", jwt_ttl=60, max_ttl=600))
    refused = api.call("renew-token", caller.token, subject_token=other)
    assert refused.status_code == 403 and refused.json()["error"] == "PermissionDenied"
    time.sleep(1.1)
    assert api.ok("renew-token", subject_token=other)["renewed"] is True  # the admin may
    api.ok("revoke-token", subject_token=other)
    gone = api.call("renew-token", subject_token=other)
    assert gone.status_code == 404 and gone.json()["error"] == "NotFound"
    api.ok("revoke-token", caller.token)
    own = api.call("renew-token", caller.token)  # a revoked token cannot renew itself
    assert own.status_code == 401 and own.json()["error"] == "AuthenticationFailed"
    events = [e for e in api.ok("list-audit-events")["events"] if e["event"] == "renew-token"]
    assert events and all(other not in json.dumps(e) for e in events)


def test_the_cli_renews_a_cached_token_near_its_end_and_logs_in_when_refused(tmp_path: Path) -> None:
    server, admin = start_initialized(tmp_path / "data")
    try:
        env = user_env(tmp_path / "home")
        cli_ok(env, "configure", "--profile", "adm", "--access-id", admin["access_id"], "--access-type",
               "access_key", "--access-key", admin["access_key"], "--gateway-url", server.url)  # fmt: skip
        for name, max_ttl in (("/job", "600"), ("/capped", "60")):
            method = json.loads(cli_ok(env, "create-auth-method", "--profile", "adm", "--name", name,
                                       "--jwt-ttl", "60", "--max-ttl", max_ttl))  # fmt: skip
            cli_ok(env, "configure", "--profile", name[1:], "--access-id", method["access-id"], "--access-type",
                   "access_key", "--access-key", method["access-key"], "--gateway-url", server.url)  # fmt: skip

        def cache(profile: str) -> tuple[Path, dict[str, object]]:
            path = next((tmp_path / "home" / ".tmp_creds").glob(f"{profile}-*"))
            return path, json.loads(path.read_text())

        def near_its_end(profile: str) -> dict[str, object]:
            """Says the cached token was obtained long ago: a third of its lifetime or less is left."""
            path, data = cache(profile)
            data["obtained_at"] = time.time() - 600
            path.write_text(json.dumps(data))
            return data

        cli_ok(env, "list-items", "--profile", "job")
        fresh = cache("job")[1]
        looked = json.loads(cli_ok(env, "lookup-token", "--profile", "job"))
        assert looked["auth-method"] == "/job" and looked["expires-at"] == int(fresh["expires_at"])
        assert json.loads(cli_ok(env, "renew-token", "--profile", "job"))["expires-at"] >= looked["expires-at"]
        cli_ok(env, "list-items", "--profile", "job")
        assert cache("job")[1] == fresh  # far from its end: used as it is
        time.sleep(1.1)
        old = near_its_end("job")
        cli_ok(env, "list-items", "--profile", "job")
        renewed = cache("job")[1]
        assert renewed["token"] == old["token"] and renewed["expires_at"] > old["expires_at"]
        assert renewed["obtained_at"] > time.time() - 60
        # At its max TTL the server does not renew it: a new login, before it ends.
        cli_ok(env, "list-items", "--profile", "capped")
        capped = near_its_end("capped")
        cli_ok(env, "list-items", "--profile", "capped")
        assert cache("capped")[1]["token"] != capped["token"]
        # Revoked elsewhere: renewal refused, a new login.
        revoked = near_its_end("job")
        cli_ok(env, "revoke-token", "--profile", "adm", "--subject-token", str(revoked["token"]))
        cli_ok(env, "list-items", "--profile", "job")
        assert cache("job")[1]["token"] != revoked["token"]
    finally:
        server.stop()
