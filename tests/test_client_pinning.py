"""The client signs login proofs only for the server id pinned in its profile, never for the id a server
announces; its profile and token files are private and never written through a symlink.

Real processes: moto's server as STS, `cedarkey serve` as "prod" and as "staging", the CLI as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cedarkey.client.profile import Profile
from cedarkey.client.sdk import ApiError, Client, LoginError

from tests.support.moto import ACCOUNT_ID, DEV_ROLE, MotoHandle
from tests.support.server import (
    ServerProcess,
    audit_events,
    cli,
    cli_ok,
    free_port,
    start_initialized,
    user_env,
)

SECRET = "pr0d-s3cret"
Completed = subprocess.CompletedProcess[str]


@dataclass
class Deployment:
    proc: ServerProcess
    data_dir: Path
    admin: dict[str, str]

    @property
    def url(self) -> str:
        return self.proc.url


@dataclass
class Prod(Deployment):
    access_id: str  # of the aws_iam auth method bound to dev-role


@pytest.fixture(scope="module")
def prod(moto: MotoHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prod]:
    """Server "prod": an aws_iam auth method for dev-role (STS: moto) whose role reads /dev/*."""
    data = tmp_path_factory.mktemp("prod")
    proc, admin = start_initialized(data, "--server-id", "prod", "--allowed-sts-url", moto.url)
    try:
        env = user_env(tmp_path_factory.mktemp("prod-admin"))
        key = ("--access-type", "access_key", "--access-key", admin["access_key"])
        configured(configure(env, "default", admin["access_id"], proc.url, *key), "default")
        created = cli_ok(
            env,
            "create-auth-method-aws-iam",
            "--name",
            "iamAuth1",
            "--bound-aws-account-id",
            ACCOUNT_ID,
            "--bound-role-name",
            DEV_ROLE,
            "--sts-url",
            moto.url,
        )
        cli_ok(env, "create-role", "--name", "dev-readers")
        cli_ok(env, "assoc-role-am", "--role-name", "dev-readers", "--am-name", "iamAuth1")
        cli_ok(env, "set-role-rule", "--role-name", "dev-readers", "--path", "/dev/*", "--capability", "read")
        cli_ok(env, "create-secret", "--name", "/dev/db-password", "--value", SECRET)
        yield Prod(proc, data, admin, json.loads(created)["access-id"])
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Server "staging": another cedarkey the workload could be pointed at."""
    data = tmp_path_factory.mktemp("staging")
    proc, admin = start_initialized(data, "--server-id", "staging")
    try:
        yield Deployment(proc, data, admin)
    finally:
        proc.stop()


def configure(env: dict[str, str], profile: str, access_id: str, url: str, *extra: str) -> Completed:
    """``cedarkey configure`` (aws_iam unless ``extra`` says otherwise); the completed process."""
    extra = extra if "--access-type" in extra else ("--access-type", "aws_iam", *extra)
    return cli(env, "configure", "--profile", profile, "--access-id", access_id, "--gateway-url", url, *extra)


def configured(result: Completed, profile: str) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout == f"Profile {profile} successfully configured\n"


def stored(home: Path, profile: str) -> dict[str, Any]:
    return json.loads((home / "profiles" / f"{profile}.json").read_text())


def one_error_line(result: Completed) -> str:
    assert result.returncode == 1 and result.stdout == "", (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- 1. the relay ---------------------------------------------------------------------------------------


def test_a_profile_pinned_to_prod_never_signs_a_proof_for_staging(
    prod: Prod, staging: Deployment, aws: dict[str, Any], tmp_path: Path
) -> None:
    home = tmp_path / "workload"
    env = user_env(home, aws["dev_role"])
    tofu = configure(env, "default", prod.access_id, prod.url)
    configured(tofu, "default")
    assert "'prod'" in tofu.stderr
    assert cli_ok(env, "get-secret-value", "--name", "/dev/db-password") == SECRET + "\n"

    # The workload is sent to the wrong gateway: its profile still pins prod.
    relayed = configure(env, "relayed", prod.access_id, staging.url, "--server-id", "prod")
    configured(relayed, "relayed")
    assert "warning" in relayed.stderr and "'staging'" in relayed.stderr and "'prod'" in relayed.stderr
    refused = cli(env, "get-secret-value", "--profile", "relayed", "--name", "/dev/db-password")
    line = one_error_line(refused)
    assert "'staging'" in line and "'prod'" in line and "refusing to sign" in line

    # Staging got no /auth request (it audits every one, even one it cannot parse).
    assert audit_events(staging.data_dir, "login") == []

    # The SDK refuses the same way.
    client = Client(staging.url, Profile("relayed", prod.access_id, "aws_iam", staging.url, server_id="prod"))
    with pytest.raises(LoginError, match=r"announces server id 'staging'.*pinned to 'prod'"):
        client.login()
    client.close()

    # Pinned explicitly, the profile logs in to prod and reads the secret.
    pinned = configure(env, "pinned", prod.access_id, prod.url, "--server-id", "prod")
    configured(pinned, "pinned")
    assert pinned.stderr == ""
    assert cli_ok(env, "get-secret-value", "--profile", "pinned", "--name", "/dev/db-password") == SECRET + "\n"
    assert audit_events(staging.data_dir, "login") == []


# --- 2. configure pins the id ---------------------------------------------------------------------------


def test_configure_pins_the_server_id_it_read_on_first_use_or_was_given(prod: Prod, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    tofu = configure(env, "tofu", prod.access_id, prod.url)
    configured(tofu, "tofu")
    assert tofu.stderr == (
        f"cedarkey: signing login proofs for server id 'prod' (read from {prod.url}/health on first use;"
        " pin it with --server-id)\n"
    )
    assert stored(tmp_path, "tofu")["server_id"] == "prod"

    given = configure(env, "given", prod.access_id, prod.url, "--server-id", "prod")
    configured(given, "given")
    assert given.stderr == ""
    assert stored(tmp_path, "given")["server_id"] == "prod"

    other = configure(env, "other", prod.access_id, prod.url, "--server-id", "prod-eu")
    configured(other, "other")
    assert "'prod'" in other.stderr and "'prod-eu'" in other.stderr
    assert stored(tmp_path, "other")["server_id"] == "prod-eu"

    key = configure(env, "key", prod.admin["access_id"], prod.url, "--access-type", "access_key", "--access-key", "k")
    configured(key, "key")
    assert stored(tmp_path, "key")["server_id"] == "prod"


def test_configure_refuses_a_server_id_no_proof_can_carry(tmp_path: Path) -> None:
    result = configure(user_env(tmp_path), "bad", "p-x", f"http://127.0.0.1:{free_port()}", "--server-id", " prod")
    assert "--server-id ' prod'" in one_error_line(result)
    assert not (tmp_path / "profiles" / "bad.json").exists()


# --- 3. a profile from before pinning -------------------------------------------------------------------


def test_an_aws_iam_profile_without_a_server_id_refuses_to_log_in(
    prod: Prod, aws: dict[str, Any], tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir(parents=True)
    old = {"access_id": prod.access_id, "access_type": "aws_iam", "gateway_url": prod.url}
    old_key = {"access_id": prod.admin["access_id"], "access_type": "access_key", "gateway_url": prod.url}
    old_key["access_key"] = prod.admin["access_key"]
    for name, fields in (("old", old), ("old-key", old_key)):
        (profiles / f"{name}.json").write_text(json.dumps({"name": name, **fields, "sts_url": None}))
    env = user_env(tmp_path, aws["dev_role"])
    logins = len(audit_events(prod.data_dir, "login"))

    line = one_error_line(cli(env, "get-secret-value", "--profile", "old", "--name", "/dev/db-password"))
    assert "pins no server id" in line
    assert f"cedarkey configure --profile old --access-id {prod.access_id} --access-type aws_iam" in line
    assert "--server-id ID" in line
    assert len(audit_events(prod.data_dir, "login")) == logins

    # An old access_key profile still loads and logs in (the id is enforced for aws_iam proofs only).
    assert "roles" in json.loads(cli_ok(env, "list-roles", "--profile", "old-key"))


# --- 4. plain http --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://10.1.2.3:8200", True),
        ("http://127.0.0.1:1", False),
        ("http://127.8.9.10:1", False),
        ("http://localhost:1", False),
        ("http://[::1]:1", False),
        ("https://cedarkey.invalid:8200", False),
    ],
)
def test_configure_warns_about_plain_http_to_a_host_that_is_not_loopback(
    url: str, warned: bool, tmp_path: Path
) -> None:
    result = configure(user_env(tmp_path), "default", "p-x", url, "--server-id", "prod")
    configured(result, "default")
    assert ("plain http://" in result.stderr) is warned, result.stderr
    assert stored(tmp_path, "default")["server_id"] == "prod"


# --- 5. a URL that is not cedarkey ----------------------------------------------------------------------


@contextmanager
def foreign_server(status: int, body: bytes) -> Iterator[str]:
    """A plain HTTP server answering every GET with ``status`` and ``body``; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


FOREIGN = [
    pytest.param(404, b"<html>Not Found</html>", id="404"),
    pytest.param(200, b"<html>hello</html>", id="not-json"),
    pytest.param(200, b"[1, 2]", id="not-an-object"),
    pytest.param(200, b'{"status": "ok"}', id="no-server-id"),
    pytest.param(200, b'{"server_id": 7}', id="server-id-not-a-string"),
    pytest.param(500, b'{"server_id": "prod"}', id="500"),
]


@pytest.mark.parametrize(("status", "body"), FOREIGN)
def test_configure_refuses_a_server_that_is_not_cedarkey(status: int, body: bytes, tmp_path: Path) -> None:
    with foreign_server(status, body) as url:
        line = one_error_line(configure(user_env(tmp_path), "default", "p-x", url))
    assert line.startswith(f"cedarkey: cannot read the server id from {url}/health: ") and "--server-id" in line
    assert not (tmp_path / "profiles" / "default.json").exists()


def test_configure_refuses_a_url_nothing_listens_on(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(configure(user_env(tmp_path), "default", "p-x", url))
    assert line.startswith(f"cedarkey: cannot read the server id from {url}/health: cannot reach")
    assert not (tmp_path / "profiles" / "default.json").exists()


def test_configure_refuses_an_announced_server_id_no_proof_can_carry(tmp_path: Path) -> None:
    with foreign_server(200, b'{"server_id": " prod"}') as url:
        line = one_error_line(configure(user_env(tmp_path), "default", "p-x", url))
    assert "server id ' prod'" in line


@pytest.mark.parametrize(("status", "body"), FOREIGN)
def test_sdk_health_raises_api_error_for_a_server_that_is_not_cedarkey(status: int, body: bytes) -> None:
    with foreign_server(status, body) as url:
        client = Client(url)
        with pytest.raises(ApiError) as raised:
            client.health()
        client.close()
    assert raised.value.status == status and raised.value.code == "NotCedarkey"


# --- 6. private files -----------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def admin_configure(prod: Prod, env: dict[str, str]) -> None:
    key = ("--access-type", "access_key", "--access-key", prod.admin["access_key"])
    configured(configure(env, "default", prod.admin["access_id"], prod.url, *key), "default")


@pytest.mark.parametrize("existing", [False, True], ids=["new-home", "home-made-0755"])
def test_home_and_its_directories_are_0700_and_files_0600(prod: Prod, existing: bool, tmp_path: Path) -> None:
    home = tmp_path / "home"
    if existing:
        home.mkdir()
        home.chmod(0o755)
    env = user_env(home)
    admin_configure(prod, env)
    cli_ok(env, "auth")
    cache = home / ".tmp_creds" / f"default-{prod.admin['access_id']}"
    assert [mode(d) for d in (home, home / "profiles", home / ".tmp_creds")] == [0o700] * 3
    assert [mode(f) for f in (home / "profiles" / "default.json", cache)] == [0o600] * 2


def plant(link: Path, target: Path, content: str) -> None:
    """A symlink at ``link`` to ``target``, a file with ``content`` outside the cedarkey home."""
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.write_text(content)
    link.symlink_to(target)


def test_a_symlink_at_the_profile_path_or_its_temp_name_is_not_written_through(prod: Prod, tmp_path: Path) -> None:
    home = tmp_path / "home"
    final, tmp = home / "profiles" / "default.json", home / "profiles" / "default.json.tmp"
    plant(final, tmp_path / "victim-final", "untouched\n")
    plant(tmp, tmp_path / "victim-tmp", "untouched\n")
    admin_configure(prod, user_env(home))
    assert (tmp_path / "victim-final").read_text() == "untouched\n"
    assert (tmp_path / "victim-tmp").read_text() == "untouched\n"
    assert not final.is_symlink() and mode(final) == 0o600
    assert json.loads(final.read_text())["access_id"] == prod.admin["access_id"]
    assert set(os.listdir(final.parent)) == {final.name, tmp.name}  # no temp file left behind


def test_a_symlinked_profile_is_refused(prod: Prod, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = user_env(home)
    admin_configure(prod, env)
    plant(home / "profiles" / "evil.json", tmp_path / "evil.json", (home / "profiles" / "default.json").read_text())
    line = one_error_line(cli(env, "list-roles", "--profile", "evil"))
    assert "evil.json" in line and "symlink" in line


def test_a_symlink_at_the_token_cache_is_neither_read_nor_written_through(prod: Prod, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = user_env(home)
    admin_configure(prod, env)
    first = json.loads(cli_ok(env, "auth"))["token"]
    # The cache is moved out of the home and linked back: a live token the client must not pick up.
    cache = home / ".tmp_creds" / f"default-{prod.admin['access_id']}"
    outside = cache.rename(tmp_path / "victim-cache")
    cache.symlink_to(outside)
    planted = outside.read_text()
    plant(cache.with_name(cache.name + ".tmp"), tmp_path / "victim-tmp", "untouched\n")
    assert "roles" in json.loads(cli_ok(env, "list-roles"))
    assert not cache.is_symlink() and mode(cache) == 0o600
    assert json.loads(cache.read_text())["token"] not in ("", first)
    assert outside.read_text() == planted
    assert (tmp_path / "victim-tmp").read_text() == "untouched\n"
    assert set(os.listdir(cache.parent)) == {cache.name, cache.name + ".tmp"}  # no temp file left behind
