"""No input makes the CLI print a traceback: wrong gateway URLs, servers that are not cedarkey (or lie), dead
ports and bad flags each end in a short message on stderr and a non-zero exit, never an exception.

The CLI runs in this process (``cedarkey.client.cli.main``), so an exception it lets through fails the test
with its own traceback; its last-resort handler ("unexpected error") counts as a failure too."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from cedarkey.client.cli import main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import CEDARKEY, ServerProcess, free_port, start_initialized, user_env

#: What the stand-in server answers under each first path segment (the gateway URL picks one).
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "html": (404, "text/html", b"<!DOCTYPE html><html><body><h1>Not Found</h1></body></html>"),
    "nosid": (200, "application/json", b'{"status": "ok"}'),
    "list": (200, "application/json", b"[1, 2, 3]"),
    "bytes": (200, "application/octet-stream", b"\xff\xfe\x00garbage"),
    "lies": (200, "application/json", b'{"server_id": "s1", "token": 7, "expires-at": "soon", "sts-url": null}'),
    "escape": (401, "application/json", orjson.dumps({"error": "\x1b[2J" * 50, "message": "\x1b]0;pwned\x07" * 99})),
    "bigerror": (500, "application/json", orjson.dumps({"error": "E" * 100_000, "message": "m" * 1_000_000})),
    "empty": (200, "application/json", b""),
}


class _Liar(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        mode = self.path.strip("/").split("/", 1)[0]
        if mode == "close":
            self.close_connection = True
            self.connection.shutdown(2)  # no answer at all
            return
        if mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, kind, body = ANSWERS.get(mode, ANSWERS["html"])
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def liar() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    server, admin = start_initialized(tmp_path_factory.mktemp("real") / "data")
    yield server, admin
    server.stop()


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's refusals
            code = exc.code if isinstance(exc.code, int) else 1
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
    return code, out.getvalue(), err.getvalue()


def assert_clear_failure(code: int, err: str) -> None:
    assert code != 0
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert err.strip(), "a failure says why"
    assert len(err) < 4000 and "\x1b" not in err and "\x07" not in err, err[:300]  # short, and inert


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user of their own: the profile under ``tmp_path``, no AWS credentials but what the test gives."""
    for name, value in user_env(tmp_path / "home").items():
        if name.startswith(("CEDARKEY_", "AWS_")):
            monkeypatch.setenv(name, value)
    for name in os.environ:
        if name.startswith("AWS_") and name not in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            if name != "AWS_EC2_METADATA_DISABLED":
                monkeypatch.delenv(name)
    return tmp_path / "home"


COMMANDS = [
    ["list-items"],
    ["get-secret-value", "--name", "/a/b"],
    ["create-secret", "--name", "/a/b", "--value", "v"],
    ["authorize", "--path", "/a", "--capability", "read"],
    ["auth"],
    ["describe-item", "--name", "/x"],
]


def gateways(liar: str, real: str, dead: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([f"{liar}/{mode}" for mode in [*ANSWERS, "close", "redirect"]]),
        st.sampled_from(
            [dead, f"{real}/api/v2", f"{real}/ui", "http://a..b:1", "http://[::1]:1", "https://127.0.0.1:1"]
        ),
        st.builds(lambda port: f"http://127.0.0.1:{port}", st.integers(1, 65535)),
        st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: "http://" + s),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_wrong_gateway_is_one_clear_message(
    data: st.DataObject, home: Path, liar: str, real: tuple[ServerProcess, dict[str, str]]
) -> None:
    server, admin = real
    gateway = data.draw(gateways(liar, server.url, f"http://127.0.0.1:{free_port()}"))
    access_type = data.draw(st.sampled_from(["access_key", "aws_iam"]))
    pin = data.draw(st.sampled_from([[], ["--server-id", "s1"]]))
    configure = ["configure", "--access-id", admin["access_id"], "--access-type", access_type]
    configure += ["--access-key", admin["access_key"], "--gateway-url", gateway, *pin]
    code, _, err = run(configure)
    if code != 0:
        assert_clear_failure(code, err)
        return
    code, _, err = run(data.draw(st.sampled_from(COMMANDS)))
    assert_clear_failure(code, err)


def flag_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(["-", "", "--", "[1", "[1]", '[{"path": 1}]', "nan", "-1", "99999999999999999999", "\x00"]),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(COMMANDS),
    extra=st.lists(
        st.sampled_from(
            [
                "--name",
                "--value",
                "--requests",
                "--path",
                "--capability",
                "--rule-type",
                "--profile",
                "--value-file",
                "--allow-empty",
                "--bogus",
                "-x",
                "--jwt-ttl",
                "--version",
            ]
        ),
        max_size=4,
    ),
    values=st.lists(flag_values(), max_size=4),
)
def test_bad_flags_against_a_real_server_are_one_clear_message(
    home: Path, real: tuple[ServerProcess, dict[str, str]], command: list[str], extra: list[str], values: list[str]
) -> None:
    server, admin = real
    code, _, err = run(
        [
            "configure",
            "--access-id",
            admin["access_id"],
            "--access-type",
            "access_key",
            "--access-key",
            admin["access_key"],
            "--gateway-url",
            server.url,
        ]
    )
    assert code == 0, err
    argv = [*command]
    for n, flag in enumerate(extra):
        argv += [flag, values[n]] if n < len(values) else [flag]
    code, _, err = run(argv)
    if code != 0:
        assert "Traceback" not in err and "unexpected error" not in err, err
        assert err.strip()


def test_the_installed_command_shows_no_traceback_either(tmp_path: Path, liar: str) -> None:
    env = user_env(tmp_path / "home")
    for gateway in (f"{liar}/html", f"{liar}/lies", f"http://127.0.0.1:{free_port()}"):
        done = subprocess.run(
            [
                CEDARKEY,
                "configure",
                "--access-id",
                "p-x",
                "--access-type",
                "access_key",
                "--access-key",
                "k",
                "--gateway-url",
                gateway,
                "--server-id",
                "s1",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        listed = subprocess.run([CEDARKEY, "list-items"], capture_output=True, text=True, env=env, timeout=30)
        assert listed.returncode == 1 and "Traceback" not in listed.stderr and listed.stderr.count("\n") <= 4


def test_a_server_that_is_not_cedarkey_is_named_as_such(home: Path, liar: str) -> None:
    code, _, err = run(
        [
            "configure",
            "--access-id",
            "p-x",
            "--access-type",
            "access_key",
            "--access-key",
            "k",
            "--gateway-url",
            f"{liar}/html",
        ]
    )
    assert code == 1 and "is this a cedarkey server?" in err and "<html" not in err.lower()
    run(
        [
            "configure",
            "--access-id",
            "p-x",
            "--access-type",
            "access_key",
            "--access-key",
            "k",
            "--gateway-url",
            f"{liar}/lies",
            "--server-id",
            "s1",
        ]
    )
    code, _, err = run(["list-items"])
    assert code == 1 and "answered without a 'token'" in err


@pytest.mark.parametrize("local", ["dev", "serve", "init", "configure", "policy", "auth"])
def test_a_name_spelled_like_a_local_command_is_only_a_name(
    home: Path, real: tuple[ServerProcess, dict[str, str]], local: str
) -> None:
    """The subcommand and a ``--name`` flag once shared argparse's dest: ``create-role --name dev`` ran dev."""
    server, admin = real
    configure = ["configure", "--access-id", admin["access_id"], "--access-type", "access_key"]
    assert run([*configure, "--access-key", admin["access_key"], "--gateway-url", server.url])[0] == 0
    code, out, err = run(["create-role", "--name", f"/{local}"])
    assert code == 0 and orjson.loads(out) == {"name": f"/{local}"}, err
    code, out, _ = run(["get-role", "--name", local])
    assert code == 0 and orjson.loads(out)["name"] == f"/{local}"
