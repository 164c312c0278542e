"""Helpers to run the real app: in-process with Starlette's TestClient, or as a `cedarkey serve` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from cedarkey.dev.health import wait_healthy
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
CEDARKEY = str(Path(sys.executable).with_name("cedarkey"))


@dataclass
class Api:
    """A TestClient around a real app, logged in as admin."""

    client: TestClient
    admin_token: str
    admin: dict[str, str]
    settings: Settings

    def call(self, command: str, token: str | None = None, **body: Any) -> httpx.Response:
        data = {k.replace("_", "-"): v for k, v in body.items()}
        data["token"] = token if token is not None else self.admin_token
        return self.client.post(f"/{command}", content=orjson.dumps(data))

    def ok(self, command: str, token: str | None = None, **body: Any) -> dict[str, Any]:
        response = self.call(command, token, **body)
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def service(self) -> Any:
        return self.client.app.state.service  # type: ignore[attr-defined]


@contextmanager
def running_api(data_dir: Path, **settings: Any) -> Iterator[Api]:
    cfg = Settings(data_dir=data_dir, **settings)
    app, admin = create_app(cfg)
    assert admin is not None
    with TestClient(app, headers={"content-type": "application/json"}) as client:
        answer = client.post(
            "/auth",
            content=orjson.dumps(
                {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
            ),
        )
        assert answer.status_code == 200, answer.text
        yield Api(client, answer.json()["token"], admin, cfg)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``cedarkey ARGS`` as a user runs it, with ``env`` as its whole environment."""
    return subprocess.run([CEDARKEY, *args], capture_output=True, text=True, env=env, timeout=60)


def cli_ok(env: dict[str, str], *args: str) -> str:
    """:func:`cli` that must succeed; its standard output."""
    result = cli(env, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def user_env(home: Path, creds: dict[str, Any] | None = None) -> dict[str, str]:
    """A user's whole environment for :func:`cli`: ``CEDARKEY_HOME=home``, no AWS settings but ``creds``
    (``{access_key_id, secret_access_key, session_token}`` as the ``aws`` fixture gives them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        CEDARKEY_HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    if creds:
        env.update(AWS_ACCESS_KEY_ID=creds["access_key_id"], AWS_SECRET_ACCESS_KEY=creds["secret_access_key"])
        if creds.get("session_token"):
            env["AWS_SESSION_TOKEN"] = creds["session_token"]
    return env


def audit_events(data_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events of the server's audit log ``DATA_DIR/audit.log`` (only those named ``event`` if given)."""
    path = data_dir / "audit.log"
    lines = path.read_text().splitlines() if path.exists() else []
    events = [orjson.loads(line) for line in lines]
    return [e for e in events if event is None or e["event"] == event]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    port: int
    process: subprocess.Popen[str]
    admin: dict[str, str] | None

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, port: int = 0, log: Path | None = None
) -> ServerProcess:
    """`cedarkey serve` in a subprocess, once it answers /health. Its output goes to a pipe, or to ``log``
    for a server that will log more than a pipe holds (a full pipe would stop it mid-request)."""
    port = port or free_port()
    cmd = [CEDARKEY, "serve", "--data-dir", str(data_dir), "--port", str(port), *extra]
    out = log.open("w") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    if log is not None:
        out.close()  # type: ignore[union-attr]  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: None if proc.poll() is None else (proc.stdout.read() if proc.stdout else ""))
    except RuntimeError:
        proc.kill()
        raise
    return ServerProcess(url, port, proc, None)


def start_initialized(data_dir: Path, *extra: str, log: Path | None = None) -> tuple[ServerProcess, dict[str, str]]:
    """``cedarkey init`` then :func:`start_server`; the server and the admin's ``access_id``/``access_key``."""
    init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data_dir)], capture_output=True, text=True, check=True)
    return start_server(data_dir, *extra, log=log), orjson.loads(init.stdout)
