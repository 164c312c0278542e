"""The pentest's high findings replayed as it ran them: real `cedarkey serve` processes, the public CLI, moto's
STS, and for the repointed STS URL an attacker's stub STS on loopback that would vouch for anyone."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from cedarkey.client.proof import make_cloud_id

from tests.support.moto import ACCOUNT_ID, MotoHandle
from tests.support.server import ServerProcess, cli, cli_ok, free_port, start_initialized, user_env


@pytest.fixture(scope="module")
def server(moto: MotoHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    data = tmp_path_factory.mktemp("data")
    metrics_port = free_port()
    proc, admin = start_initialized(
        data, "--server-id", "pentest", "--allowed-sts-url", moto.url, "--metrics-address", f"127.0.0.1:{metrics_port}"
    )
    proc.admin = {**admin, "metrics": f"http://127.0.0.1:{metrics_port}"}
    try:
        yield proc, data
    finally:
        proc.stop()


def profile(home: Path, url: str, access_id: str, key: str) -> dict[str, str]:
    env = user_env(home)
    cli_ok(env, "configure", "--access-id", access_id, "--access-type", "access_key", "--access-key", key,
           "--gateway-url", url)  # fmt: skip
    return env


@pytest.fixture(scope="module")
def admin(server: tuple[ServerProcess, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    proc, _ = server
    assert proc.admin is not None
    return profile(tmp_path_factory.mktemp("admin"), proc.url, proc.admin["access_id"], proc.admin["access_key"])


def forbidden(env: dict[str, str], *args: str) -> str:
    result = cli(env, *args)
    assert result.returncode == 1, (args, result.stdout)
    assert "Status 403 Forbidden, Error: PermissionDenied." in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_delegated_admin_cannot_climb_out_of_its_team(
    server: tuple[ServerProcess, Path], admin: dict[str, str], tmp_path: Path
) -> None:
    """The pentest, step by step: each escalation it made is refused, and the real admin keeps every right."""
    proc, _ = server
    cli_ok(admin, "create-secret", "--name", "/prod/db-password", "--value", "prod-secret")
    team_am = json.loads(cli_ok(admin, "create-auth-method", "--name", "/team/admin-am"))
    cli_ok(admin, "create-role", "--name", "/team/admins")
    cli_ok(admin, "create-role", "--name", "/team/ops")
    cli_ok(admin, "assoc-role-am", "--role-name", "/team/admins", "--am-name", "/team/admin-am")
    for rule_type, caps in (("role-rule", ["read", "update"]), ("item-rule", ["read", "create", "list"])):
        cli_ok(admin, "set-role-rule", "--role-name", "/team/admins", "--path", "/team/*", "--rule-type", rule_type,
               *(f"--capability={c}" for c in caps))  # fmt: skip
    team = profile(tmp_path, proc.url, team_am["access-id"], team_am["access-key"])

    forbidden(team, "set-role-rule", "--role-name", "/team/ops", "--path", "/*", "--capability", "read")
    forbidden(team, "set-role-rule", "--role-name", "/team/ops", "--rule-type", "auth-method-rule", "--path", "/*",
              "--capability", "update")  # fmt: skip
    forbidden(team, "assoc-role-am", "--role-name", "/team/ops", "--am-name", "/admin")
    forbidden(team, "assoc-role-am", "--role-name", "/team/admins", "--am-name", "/admin")
    forbidden(team, "get-secret-value", "--name", "/prod/db-password")
    forbidden(team, "delete-auth-method", "--name", "/admin")
    # What it holds, it may hand out.
    cli_ok(team, "set-role-rule", "--role-name", "/team/ops", "--path", "/team/app/*", "--capability", "read")
    # The real admin is untouched: a fresh login reads everything and changes anything.
    fresh = profile(tmp_path / "again", proc.url, *(proc.admin[k] for k in ("access_id", "access_key")))  # type: ignore[index]
    assert cli_ok(fresh, "get-secret-value", "--name", "/prod/db-password").strip() == "prod-secret"
    assert [m["name"] for m in json.loads(cli_ok(fresh, "list-auth-methods"))["auth-methods"]][:1] == ["/admin"]


class StubSts:
    """The attacker's STS: vouches that any request comes from dev-role in the victim's account."""

    ANSWER = f"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<GetCallerIdentityResult><Arn>arn:aws:sts::{ACCOUNT_ID}:assumed-role/dev-role/i-0abc1234def567890</Arn>
<UserId>AROAFAKE:i-0abc1234def567890</UserId><Account>{ACCOUNT_ID}</Account></GetCallerIdentityResult>
</GetCallerIdentityResponse>""".encode()

    def __init__(self) -> None:
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub.requests += 1
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "text/xml")
                self.send_header("content-length", str(len(stub.ANSWER)))
                self.end_headers()
                self.wfile.write(stub.ANSWER)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_update_on_an_auth_method_cannot_repoint_it_at_a_stub_sts(
    server: tuple[ServerProcess, Path], admin: dict[str, str], moto: MotoHandle, tmp_path: Path
) -> None:
    proc, _ = server
    stub = StubSts()
    try:
        made = json.loads(
            cli_ok(
                admin,
                "create-auth-method-aws-iam",
                "--name",
                "/prod-am",
                "--bound-aws-account-id",
                ACCOUNT_ID,
                "--bound-role-name",
                "dev-role",
                "--sts-url",
                moto.url,
            )
        )
        cli_ok(admin, "create-role", "--name", "/prod-readers")
        cli_ok(admin, "assoc-role-am", "--role-name", "/prod-readers", "--am-name", "/prod-am")
        cli_ok(admin, "set-role-rule", "--role-name", "/prod-readers", "--path", "/prod/*", "--capability", "read")
        operator_am = json.loads(cli_ok(admin, "create-auth-method", "--name", "/ops/operator"))
        cli_ok(admin, "create-role", "--name", "/ops/operators")
        cli_ok(admin, "assoc-role-am", "--role-name", "/ops/operators", "--am-name", "/ops/operator")
        cli_ok(admin, "set-role-rule", "--role-name", "/ops/operators", "--path", "/prod-am", "--rule-type",
               "auth-method-rule", "--capability", "read", "--capability", "update")  # fmt: skip
        operator = profile(tmp_path, proc.url, operator_am["access-id"], operator_am["access-key"])

        assert "sts-url" in forbidden(
            operator, "update-auth-method-aws-iam", "--name", "/prod-am", "--sts-url", stub.url
        )
        # Not even the admin can point an auth method outside the allow-list, on update or create.
        for args in (
            ("update-auth-method-aws-iam", "--name", "/prod-am", "--sts-url", stub.url),
            ("create-auth-method-aws-iam", "--name", "/stub-am", "--bound-aws-account-id", ACCOUNT_ID,
             "--sts-url", stub.url),
        ):  # fmt: skip
            result = cli(admin, *args)
            assert result.returncode == 1 and "not an STS URL this server trusts" in result.stderr
        # The attacker's login: a proof signed with made-up keys for the stub. Refused without asking the stub.
        proof = make_cloud_id(stub.url, "pentest", credentials=Credentials("AKIAFAKEFAKEFAKEFAKE", "junk"))
        body = {"access-type": "aws_iam", "access-id": made["access-id"], "cloud-id": proof}
        assert httpx.post(f"{proc.url}/auth", json=body, timeout=30).status_code == 401
        assert stub.requests == 0
    finally:
        stub.server.shutdown()


def test_metrics_are_served_apart_without_a_token_and_never_on_the_main_port_without_one(
    server: tuple[ServerProcess, Path],
) -> None:
    proc, _ = server
    assert proc.admin is not None
    assert httpx.get(f"{proc.url}/metrics").status_code == 401
    scraped = httpx.get(f"{proc.admin['metrics']}/metrics")
    assert scraped.status_code == 200 and "cedarkey_requests_total" in scraped.text
    assert httpx.post(f"{proc.admin['metrics']}/create-role", json={"name": "/x"}).status_code in (404, 405)


def test_the_metrics_listener_stops_with_the_server(moto: MotoHandle, tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_initialized(tmp_path / "d", "--metrics-address", f"127.0.0.1:{port}")
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    proc.stop()
    assert proc.process.returncode in (0, -15)  # stopped by its SIGTERM (uvicorn re-raises it), not killed
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")


@pytest.mark.parametrize(
    ("flag", "value"), [("--metrics-address", "nowhere"), ("--allowed-sts-url", "ftp://sts.example.com/")]
)
def test_serve_refuses_a_bad_setting_with_one_line(flag: str, value: str, tmp_path: Path) -> None:
    result = cli(
        user_env(tmp_path), "serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), flag, value
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("cedarkey serve: ") and len(result.stderr.splitlines()) == 1
