"""``cedarkey init``: safe to run twice, and ``--reset-admin`` as the way back from a lost admin key, run where
the store and its master key are (a real server process beside it, on the same data dir)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.server import CEDARKEY, audit_events, start_initialized, start_server


def init(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CEDARKEY, "init", *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def login(url: str, access_id: str, key: str) -> httpx.Response:
    body = {"access-type": "access_key", "access-id": access_id, "access-key": key}
    return httpx.post(f"{url}/auth", json=body, timeout=10)


def test_init_twice_changes_nothing_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = init("--data-dir", str(data))
    assert first.returncode == 0 and json.loads(first.stdout)["access_key"]
    assert f"initialized {data / 'cedarkey.db'}" in first.stderr
    db = (data / "cedarkey.db").read_bytes()
    again = init("--data-dir", str(data))
    assert again.returncode == 0 and again.stdout == ""
    assert f"{data / 'cedarkey.db'} is already initialized" in again.stderr
    assert "not shown again" in again.stderr and "--reset-admin" in again.stderr
    assert (data / "cedarkey.db").read_bytes() == db


def test_reset_admin_replaces_the_key_and_ends_its_tokens_on_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, old = start_initialized(data)
    try:
        token = login(server.url, old["access_id"], old["access_key"]).json()["token"]
        made = httpx.post(f"{server.url}/create-auth-method", json={"name": "/ci", "token": token}, timeout=10).json()
        other = login(server.url, made["access-id"], made["access-key"]).json()["token"]
        reset = init("--reset-admin", "--data-dir", str(data))
        assert reset.returncode == 0, reset.stderr
        new = json.loads(reset.stdout)
        assert new["access_id"] == old["access_id"] and new["access_key"] != old["access_key"]
        assert "1 live token(s)" in reset.stderr
        assert login(server.url, old["access_id"], old["access_key"]).status_code == 401  # at once: read per login
        deadline = time.monotonic() + 2  # the server follows the store's change feed
        while httpx.post(f"{server.url}/list-roles", json={"token": token}, timeout=10).status_code != 401:
            assert time.monotonic() < deadline, "the old admin token still works"
            time.sleep(0.05)
        fresh = login(server.url, new["access_id"], new["access_key"]).json()["token"]
        assert httpx.post(f"{server.url}/list-roles", json={"token": fresh}, timeout=10).status_code == 200
        assert httpx.post(f"{server.url}/list-items", json={"token": other}, timeout=10).status_code == 200  # not ended
    finally:
        server.stop()
    [event] = audit_events(data, "reset-admin")
    assert event["access_id"] == old["access_id"] and event["name"] == "/admin"
    assert "@" in event["caller"] and isinstance(event["audit_id"], int)
    text = (data / "audit.log").read_text()
    for secret in (old["access_key"], new["access_key"], token):
        assert secret not in text


def test_reset_admin_refuses_where_there_is_no_store(tmp_path: Path) -> None:
    refused = init("--reset-admin", "--data-dir", str(tmp_path / "none"))
    assert refused.returncode == 1 and refused.stdout == ""
    assert "holds no store" in refused.stderr and refused.stderr.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_reset_admin_refuses_without_the_stores_master_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = json.loads(init("--data-dir", str(data)).stdout)
    wrong = {"CEDARKEY_MASTER_KEY": base64.b64encode(b"k" * 32).decode()}
    refused = init("--reset-admin", "--data-dir", str(data), env=wrong)
    assert refused.returncode == 1 and refused.stdout == "" and "master key" in refused.stderr
    assert "Traceback" not in refused.stderr
    (data / "master.key").rename(data / "elsewhere.key")
    assert init("--reset-admin", "--data-dir", str(data)).returncode == 1
    assert not (data / "master.key").exists()  # no new key made for an initialized store
    (data / "elsewhere.key").rename(data / "master.key")
    server = start_server(data)
    try:
        assert login(server.url, first["access_id"], first["access_key"]).status_code == 200  # nothing changed
    finally:
        server.stop()
