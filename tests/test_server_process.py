"""A real ``cedarkey serve`` process: an acknowledged write survives SIGKILL, ``/health`` names the server.

The server runs as a subprocess on a loopback port, initialized by ``cedarkey init`` (which prints the
admin's credentials once); requests go over real sockets with httpx.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import CEDARKEY, ServerProcess, start_server

SERVER_ID = "proc-test-7"


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "data"
    init = subprocess.run(
        [CEDARKEY, "init", "--data-dir", str(directory)], capture_output=True, text=True, check=True, timeout=60
    )
    return directory, json.loads(init.stdout)


@pytest.fixture
def server(data: tuple[Path, dict[str, str]]) -> Iterator[ServerProcess]:
    proc = start_server(data[0], "--server-id", SERVER_ID)
    try:
        yield proc
    finally:
        proc.stop()


class Remote:
    """httpx against a running server, with one keep-alive connection."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def call(self, command: str, token: str | None = None, **body: Any) -> httpx.Response:
        data = {k.replace("_", "-"): v for k, v in body.items()}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(f"/{command}", json=data, headers=headers)

    def ok(self, command: str, token: str | None = None, **body: Any) -> dict[str, Any]:
        response = self.call(command, token, **body)
        assert response.status_code == 200, response.text
        return response.json()

    def login(self, access_id: str, key: str) -> str:
        return self.ok("auth", access_type="access_key", access_id=access_id, access_key=key)["token"]

    def close(self) -> None:
        self.http.close()


def test_health_reports_the_server_id(server: ServerProcess) -> None:
    answer = httpx.get(f"{server.url}/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "server_id": SERVER_ID, "version": "0.1.0"}
    assert answer.headers["content-type"].startswith("application/json")
    assert "server" not in answer.headers  # no server header
    assert f"server id {SERVER_ID}" in httpx.get(f"{server.url}/openapi.json", timeout=5).json()["info"]["description"]


def test_health_reports_the_default_server_id_without_the_flag(data: tuple[Path, dict[str, str]]) -> None:
    proc = start_server(data[0])
    try:
        server_id = httpx.get(f"{proc.url}/health", timeout=5).json()["server_id"]
        assert server_id.startswith("cedarkey-") and server_id != SERVER_ID
    finally:
        proc.stop()


def logged_in(data: tuple[Path, dict[str, str]], server: ServerProcess) -> tuple[Path, Remote, str]:
    """The data dir, a connection to ``server`` and the admin's token on it."""
    directory, admin = data
    remote = Remote(server.url)
    return directory, remote, remote.login(admin["access_id"], admin["access_key"])


@contextmanager
def killed_and_restarted(server: ServerProcess, remote: Remote, directory: Path) -> Iterator[Remote]:
    """SIGKILL at once (no graceful shutdown, no checkpoint), then a new server on the same data dir."""
    server.stop(signal.SIGKILL)
    assert server.process.returncode == -signal.SIGKILL
    remote.close()
    again = start_server(directory, "--server-id", SERVER_ID)
    remote = Remote(again.url)
    try:
        yield remote
    finally:
        remote.close()
        again.stop()


def test_sigkill_right_after_acknowledged_writes_loses_nothing(
    data: tuple[Path, dict[str, str]], server: ServerProcess
) -> None:
    directory, remote, token = logged_in(data, server)
    remote.ok("create-role", token, name="/apps/readers")
    app = remote.ok("create-auth-method", token, name="/apps/app")
    remote.ok("assoc-role-am", token, role_name="/apps/readers", am_name="/apps/app")
    app_token = remote.login(app["access-id"], app["access-key"])
    remote.ok("set-role-rule", token, role_name="/apps/readers", path="/dev/*", capability=["read", "list"])
    for n in range(20):
        remote.ok("create-secret", token, name=f"/dev/s{n}", value=f"value-{n}")
    remote.ok("update-secret-val", token, name="/dev/s0", value="value-0-v2")
    # The last two acknowledged writes, then SIGKILL at once: no graceful shutdown, no checkpoint.
    remote.ok("set-role-rule", token, role_name="/apps/readers", path="/dev/*", capability=["read"])
    remote.ok("create-secret", token, name="/dev/last", value="the-last-value")
    with killed_and_restarted(server, remote, directory) as remote:
        # Tokens issued before the kill work after it.
        assert remote.ok("get-secret-value", token, name="/dev/last")["value"] == "the-last-value"
        assert remote.ok("get-secret-value", token, name="/dev/s0") == {
            "name": "/dev/s0",
            "value": "value-0-v2",
            "version": 2,
        }
        for n in range(1, 20):
            assert remote.ok("get-secret-value", token, name=f"/dev/s{n}")["value"] == f"value-{n}"
        rules = remote.ok("get-role", token, name="/apps/readers")["rules"]
        assert rules == [{"rule-type": "item-rule", "path": "/dev/*", "capabilities": ["read"]}]
        # The replaced rule is in force: read yes, list no.
        assert remote.ok("get-secret-value", app_token, name="/dev/last")["value"] == "the-last-value"
        assert remote.ok("list-items", app_token) == {"items": [], "folders": []}


def test_sigkill_after_a_delete_and_a_revoke_loses_nothing(
    data: tuple[Path, dict[str, str]], server: ServerProcess
) -> None:
    directory, remote, token = logged_in(data, server)
    remote.ok("create-secret", token, name="/dev/gone", value="v")
    remote.ok("create-role", token, name="/r")
    remote.ok("set-role-rule", token, role_name="/r", path="/x/*", capability=["read"])
    doomed = remote.login(data[1]["access_id"], data[1]["access_key"])
    remote.ok("delete-item", token, name="/dev/gone")
    remote.ok("delete-role-rule", token, role_name="/r", path="/x/*")
    remote.ok("revoke-token", doomed)
    with killed_and_restarted(server, remote, directory) as remote:
        assert remote.call("get-secret-value", token, name="/dev/gone").status_code == 404
        assert remote.ok("get-role", token, name="/r")["rules"] == []
        revoked = remote.call("list-items", doomed)
        assert revoked.status_code == 401
        assert revoked.json() == {"error": "AuthenticationFailed", "message": "access authentication failed"}


def test_bound_ips_are_checked_against_the_real_peer_address(
    data: tuple[Path, dict[str, str]], server: ServerProcess
) -> None:
    _, admin = data
    remote = Remote(server.url)
    try:
        token = remote.login(admin["access_id"], admin["access_key"])
        here = remote.ok("create-auth-method", token, name="/loopback", bound_ips=["127.0.0.0/8"])
        there = remote.ok("create-auth-method", token, name="/elsewhere", bound_ips=["10.0.0.0/8"])
        assert remote.login(here["access-id"], here["access-key"]).startswith("t-")
        refused = remote.call(
            "auth", access_type="access_key", access_id=there["access-id"], access_key=there["access-key"]
        )
        assert refused.status_code == 401
        # A client on this host that claims another address is not believed (no proxy was named).
        forged = remote.http.post(
            "/auth",
            json={"access-type": "access_key", "access-id": there["access-id"], "access-key": there["access-key"]},
            headers={"X-Forwarded-For": "10.1.2.3"},
        )
        assert forged.status_code == 401
    finally:
        remote.close()


def test_a_named_proxy_is_believed_about_the_client_address(data: tuple[Path, dict[str, str]]) -> None:
    directory, admin = data
    proxied = start_server(directory, "--server-id", SERVER_ID, "--forwarded-allow-ips", "127.0.0.1")
    remote = Remote(proxied.url)
    try:
        token = remote.login(admin["access_id"], admin["access_key"])
        there = remote.ok("create-auth-method", token, name="/behind-proxy", bound_ips=["10.0.0.0/8"])
        body = {"access-type": "access_key", "access-id": there["access-id"], "access-key": there["access-key"]}
        assert remote.http.post("/auth", json=body).status_code == 401
        answer = remote.http.post("/auth", json=body, headers={"X-Forwarded-For": "10.1.2.3"})
        assert answer.status_code == 200, answer.text
    finally:
        remote.close()
        proxied.stop()
