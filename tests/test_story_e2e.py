"""The user story (shared/seed/aws-iam-auth-tutorial.txt), step for step, with real processes: moto's
server as STS, `cedarkey serve`, and the `cedarkey` CLI in subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto import MotoHandle
from tests.support.server import CEDARKEY, ServerProcess, cli, cli_ok, start_server, user_env

STORY_401 = [
    "can't setup cedarkey client: failed to get credentials.",
    "error: Desc: Failed to authenticate token based access.",
    "Status 401 Unauthorized, Error: AuthenticationFailed.",
    "Message: access authentication failed",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: MotoHandle) -> Iterator[tuple[ServerProcess, dict]]:
    data = tmp_path_factory.mktemp("data")
    init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    admin = json.loads(init.stdout)
    proc = start_server(data, "--server-id", "story-server", "--allowed-sts-url", moto.url)
    try:
        yield proc, admin
    finally:
        proc.stop()


def create_iam_auth_method(name: str, sts_url: str, role_name: str | None = None) -> list[str]:
    """The story's ``create-auth-method-aws-iam``: bound to its account, and to ``role_name`` when given."""
    args = [
        "create-auth-method-aws-iam",
        "--name",
        name,
        "--bound-aws-account-id",
        "123456789012",
        "--sts-url",
        sts_url,
    ]
    return [*args, "--bound-role-name", role_name] if role_name else args


def test_the_story(moto: MotoHandle, aws: dict, server: tuple[ServerProcess, dict], tmp_path: Path) -> None:
    sts_url, identities = moto.url, aws
    proc, admin_creds = server
    admin = user_env(tmp_path / "admin")
    out = cli_ok(
        admin,
        "configure",
        "--access-id",
        admin_creds["access_id"],
        "--access-key",
        admin_creds["access_key"],
        "--access-type",
        "access_key",
        "--gateway-url",
        proc.url,
    )
    assert out.strip() == "Profile default successfully configured"

    # The administrator: auth method bound to the account and the role name, role, association, rule.
    created = cli(admin, *create_iam_auth_method("iamAuth1", sts_url, "dev-role"))
    assert created.returncode == 0, created.stderr
    access_id = json.loads(created.stdout)["access-id"]
    assert access_id.startswith("p-")
    # Bound only to an account: allowed, with a least-privilege warning on stderr.
    wide = cli(admin, *create_iam_auth_method("iamAuth2", sts_url))
    assert wide.returncode == 0 and "least privilege" in wide.stderr
    cli_ok(admin, "create-role", "--name", "dev-readers")
    cli_ok(admin, "assoc-role-am", "--role-name", "dev-readers", "--am-name", "iamAuth1")
    cli_ok(
        admin,
        "set-role-rule",
        "--role-name",
        "dev-readers",
        "--path",
        "/dev/*",
        "--capability",
        "read",
        "--capability",
        "list",
    )
    cli_ok(admin, "create-secret", "--name", "/dev/db-password", "--value", "dev-s3cret")
    cli_ok(admin, "create-secret", "--name", "/prod/db-password", "--value", "prod-s3cret")

    # The EC2 machine, whose instance profile role is dev-role.
    home = tmp_path / "machine"
    machine = user_env(home, identities["dev_role"])
    out = cli_ok(
        machine,
        "configure",
        "--profile",
        "default",
        "--access-id",
        access_id,
        "--access-type",
        "aws_iam",
        "--gateway-url",
        proc.url,
    )
    assert out.strip() == "Profile default successfully configured"
    assert cli_ok(machine, "get-secret-value", "--name", "/dev/db-password") == "dev-s3cret\n"
    cache = home / ".tmp_creds" / f"default-{access_id}"
    assert cache.exists() and (cache.stat().st_mode & 0o777) == 0o600

    refused = cli(machine, "get-secret-value", "--name", "/prod/db-password")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "Status 403 Forbidden, Error: PermissionDenied." in refused.stderr
    assert "read" in refused.stderr and "/prod/db-password" in refused.stderr

    listed = json.loads(cli_ok(machine, "list-items"))
    assert [i["item_name"] for i in listed["items"]] == ["/dev/db-password"]
    assert listed["folders"] == ["/dev/"]

    # The machine's IAM role changes; with the cached token it still works until the cache is cleared...
    other = user_env(home, identities["other_role"])
    assert cli_ok(other, "get-secret-value", "--name", "/dev/db-password") == "dev-s3cret\n"
    cache.unlink()
    failed = cli(other, "get-secret-value", "--name", "/dev/db-password")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.splitlines() == STORY_401

    # ... and the role changed back: authenticated again.
    assert cli_ok(machine, "get-secret-value", "--name", "/dev/db-password") == "dev-s3cret\n"

    # A rule change takes effect on the next request, without a restart: deny beats the allow.
    cli_ok(admin, "set-role-rule", "--role-name", "dev-readers", "--path", "/dev/db-*", "--capability", "deny")
    denied = cli(machine, "get-secret-value", "--name", "/dev/db-password")
    assert denied.returncode == 1 and "PermissionDenied" in denied.stderr
    cli_ok(admin, "delete-role-rule", "--role-name", "dev-readers", "--path", "/dev/db-*")
    assert cli_ok(machine, "get-secret-value", "--name", "/dev/db-password") == "dev-s3cret\n"

    # The server's audit log has the real reason of the refused login; the client never saw it.
    audit = (Path(proc.process.args[3]) / "audit.log").read_text()
    failures = [json.loads(line) for line in audit.splitlines() if '"outcome":"failure"' in line]
    assert any(f["reason"] == "binding_mismatch" and "bound-role-name" in f["detail"] for f in failures)
    assert "dev-s3cret" not in audit and admin_creds["access_key"] not in audit


def test_cedarkey_dev_runs_the_story_as_printed(tmp_path: Path) -> None:
    """`cedarkey dev` starts moto and a server and writes the shell files its instructions name."""
    from tests.support.server import free_port

    port = free_port()
    data = tmp_path / "data-dev"
    proc = subprocess.Popen(
        [CEDARKEY, "dev", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert "cedarkey dev is running." in text, text
        sts_url = text.split("STS stand-in", 1)[1].split()[0]

        newcomer_path = "/usr/local/bin:/usr/bin:/bin"
        assert shutil.which("cedarkey", path=newcomer_path) is None  # only the sourced file can provide it

        def terminal(file: str, *args: str) -> subprocess.CompletedProcess[str]:
            """A new terminal: no virtualenv on PATH; ``source FILE`` as printed, then the printed command."""
            env = user_env(tmp_path / "unused")
            del env["CEDARKEY_HOME"]
            env["PATH"] = newcomer_path
            script = 'source "$0" && cedarkey "$@"'
            return subprocess.run(
                ["bash", "-c", script, str(data / file), *args], capture_output=True, text=True, env=env, timeout=60
            )

        def ok_in(file: str, *args: str) -> str:
            result = terminal(file, *args)
            assert result.returncode == 0, (file, args, result.stdout, result.stderr)
            return result.stdout

        created = json.loads(ok_in("admin.sh", *create_iam_auth_method("iamAuth1", sts_url, "dev-role")))
        ok_in("admin.sh", "create-role", "--name", "dev-readers")
        ok_in("admin.sh", "assoc-role-am", "--role-name", "dev-readers", "--am-name", "iamAuth1")
        ok_in("admin.sh", "set-role-rule", "--role-name", "dev-readers", "--path", "/dev/*", "--capability", "read")
        ok_in("admin.sh", "create-secret", "--name", "/dev/db-password", "--value", "s3cr3t")
        ok_in(
            "machine.sh",
            "configure",
            "--access-id",
            created["access-id"],
            "--access-type",
            "aws_iam",
            "--gateway-url",
            f"http://127.0.0.1:{port}",
        )
        assert ok_in("machine.sh", "get-secret-value", "--name", "/dev/db-password") == "s3cr3t\n"
        # A second demo on the same data dir refuses before it touches anything: this one keeps working.
        admin_file = (data / "admin.sh").read_text()
        second = subprocess.run(
            [CEDARKEY, "dev", "--data-dir", str(data), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "in use by the running demo" in second.stderr, second
        assert (data / "admin.sh").read_text() == admin_file
        ok_in("admin.sh", "get-role", "--name", "dev-readers")
        # And one on this demo's port, with a data dir of its own, refuses before making it.
        taken = subprocess.run(
            [CEDARKEY, "dev", "--data-dir", str(tmp_path / "other"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode != 0 and f"port {port} is taken" in taken.stderr, taken
        assert not (tmp_path / "other").exists()
        for cached in (data / "machine-home" / ".tmp_creds").iterdir():
            cached.unlink()
        failed = terminal("machine-other-role.sh", "get-secret-value", "--name", "/dev/db-password")
        assert failed.returncode == 1 and failed.stderr.splitlines() == STORY_401
    finally:
        proc.terminate()
        proc.wait(10)
