"""Secret values off the command line: ``--value -`` reads standard input, ``--value-file`` a file, both exactly
as they are; neither shows in the process list; an empty value needs ``--allow-empty``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import CEDARKEY, cli, cli_ok, start_initialized, user_env


@pytest.fixture(scope="module")
def admin_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("secret-input")
    server, admin = start_initialized(root / "data")
    env = user_env(root / "home")
    cli_ok(
        env,
        "configure",
        "--access-id",
        admin["access_id"],
        "--access-type",
        "access_key",
        "--access-key",
        admin["access_key"],
        "--gateway-url",
        server.url,
    )
    yield env
    server.stop()


def value_of(env: dict[str, str], name: str) -> str:
    """The stored value, read as bytes (text mode would turn a CR LF into LF); the CLI adds one newline."""
    done = subprocess.run([CEDARKEY, "get-secret-value", "--name", name], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()[:-1]


def test_standard_input_is_the_value_exactly(admin_env: dict[str, str]) -> None:
    sent = "line one\r\nline two\n\n  é \t"
    done = subprocess.run(
        [CEDARKEY, "create-secret", "--name", "/in/stdin", "--value", "-"],
        input=sent.encode(),
        capture_output=True,
        env=admin_env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert value_of(admin_env, "/in/stdin") == sent
    done = subprocess.run(
        [CEDARKEY, "update-secret-val", "--name", "/in/stdin", "--value", "-"],
        input="v2",
        capture_output=True,
        text=True,
        env=admin_env,
        timeout=60,
    )
    assert done.returncode == 0 and value_of(admin_env, "/in/stdin") == "v2"


def test_a_file_is_the_value_exactly(admin_env: dict[str, str], tmp_path: Path) -> None:
    pem = "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n"
    (tmp_path / "key.pem").write_bytes(pem.encode())
    cli_ok(admin_env, "create-secret", "--name", "/in/file", "--value-file", str(tmp_path / "key.pem"))
    assert value_of(admin_env, "/in/file") == pem


def test_the_value_is_not_in_the_process_list(admin_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [CEDARKEY, "create-secret", "--name", "/in/hidden", "--value", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=admin_env,
    )
    try:
        time.sleep(0.3)  # running, waiting for its input
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"/in/hidden" in cmdline and b"never-on-the-command-line" not in cmdline
        _, err = proc.communicate("never-on-the-command-line", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert value_of(admin_env, "/in/hidden") == "never-on-the-command-line"


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--value", ""], None, "--value is empty"),
        (["--value", "-"], "", "--value is empty"),
        (["--value-file", "/nonexistent/x"], None, "--value-file /nonexistent/x: No such file or directory"),
        (["--value", "-"], "a" * (64 * 1024 + 1), "longer than 65536 characters"),
    ],
)
def test_an_unusable_value_is_refused_before_anything_is_sent(
    admin_env: dict[str, str], args: list[str], stdin: str | None, says: str
) -> None:
    done = subprocess.run(
        [CEDARKEY, "create-secret", "--name", "/in/refused", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=admin_env,
        timeout=60,
    )
    assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr
    assert cli(admin_env, "describe-item", "--name", "/in/refused").returncode == 1  # nothing written


def test_not_utf8_and_both_sources_are_refused(admin_env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [CEDARKEY, "create-secret", "--name", "/in/bytes", "--value", "-"],
        input=b"\xff\xfe",
        capture_output=True,
        env=admin_env,
        timeout=60,
    )
    assert done.returncode == 1 and b"not UTF-8 text" in done.stderr
    both = cli(admin_env, "create-secret", "--name", "/in/both", "--value", "x", "--value-file", "f")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_an_empty_value_with_allow_empty_is_stored(admin_env: dict[str, str]) -> None:
    cli_ok(admin_env, "create-secret", "--name", "/in/empty", "--value", "", "--allow-empty")
    assert value_of(admin_env, "/in/empty") == ""
