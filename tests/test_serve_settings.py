"""Where ``cedarkey serve`` takes its settings from (flags, ``CEDARKEY_*`` variables, a TOML file), and what an
operator sees of a running server: HTTPS with its own certificate, the start and stop lines, the access log."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from cedarkey.client import serve_cli
from cedarkey.client.cli import main
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import CEDARKEY, free_port


def argv(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    return serve_cli.serve_argv(serve_cli.serve_parser(), args, env or {})


def parsed(args: list[str], env: dict[str, str] | None = None) -> object:
    return serve_cli.serve_parser().parse_args(argv(args, env))


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('max-connections = 10\nrequest-timeout = 3.5\nlog-level = "debug"\nport = 9000\n')
    ns = parsed(["--config", str(config)])
    assert (ns.max_connections, ns.request_timeout, ns.log_level, ns.port) == (10, 3.5, "debug", 9000)
    env = {"CEDARKEY_MAX_CONNECTIONS": "20", "CEDARKEY_LOG_LEVEL": "warning"}
    ns = parsed(["--config", str(config)], env)
    assert (ns.max_connections, ns.log_level, ns.port) == (20, "warning", 9000)
    ns = parsed(["--config", str(config), "--max-connections", "30"], env)
    assert (ns.max_connections, ns.log_level) == (30, "warning")
    assert parsed([]).max_connections == 1000  # nothing set: the default


def test_switches_and_lists_from_each_place(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('access-log = true\nallowed-sts-url = ["https://a.example", "https://b.example"]\n')
    ns = parsed(["--config", str(config)])
    assert ns.access_log is True and ns.allowed_sts_url == ["https://a.example", "https://b.example"]
    # A repeatable flag given replaces the file's list rather than adding to it.
    ns = parsed(["--config", str(config), "--allowed-sts-url", "https://c.example"])
    assert ns.allowed_sts_url == ["https://c.example"]
    ns = parsed([], {"CEDARKEY_ACCESS_LOG": "yes", "CEDARKEY_ALLOWED_STS_URL": "https://d.example, https://e.example"})
    assert ns.access_log is True and ns.allowed_sts_url == ["https://d.example", "https://e.example"]
    assert parsed([], {"CEDARKEY_ACCESS_LOG": "0"}).access_log is False
    assert parsed([], {"CEDARKEY_NO_HUGE_PAGES": "true"}).huge_pages is False


@pytest.mark.parametrize(
    ("text", "env", "says"),
    [
        ("max-conections = 5\n", {}, "unknown setting 'max-conections'"),
        ("port = [1, 2]\n", {}, "port: one value, not a list"),
        ("access-log = 1\n", {}, "access-log: true or false"),
        ("port = true\n", {}, "port: not a boolean"),
        ("port = {a = 1}\n", {}, "port: a string, number, boolean or list of them"),
        ("port = \n", {}, "not TOML"),
        ("", {"CEDARKEY_ACCESS_LOG": "maybe"}, "CEDARKEY_ACCESS_LOG: 1, true or yes, or 0, false or no"),
    ],
)
def test_a_setting_that_cannot_be_used_is_named(tmp_path: Path, text: str, env: dict[str, str], says: str) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(text)
    with pytest.raises(serve_cli.ConfigError, match=re.escape(says)):
        argv(["--config", str(config)], env)


def test_the_cli_refuses_a_bad_config_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "missing.toml" in err and "No such file" in err
    config = tmp_path / "serve.toml"
    config.write_text("tls-cert = 'only-a-cert.pem'\n")
    assert main(["serve", "--config", str(config), "--data-dir", str(tmp_path / "d")]) == 2
    assert "--tls-cert and --tls-key: both, or neither" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_serve_help_names_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("(default: 1000)", "(default: 8200)", "(default: 127.0.0.1)", "(default: info)", "CEDARKEY_"):
        assert shown in text
    for flag in ("--config", "--tls-cert", "--tls-key", "--log-level", "--access-log", "--host"):
        assert flag in text


# --- a running server --------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def read_until(log: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {log.read_text()}")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path, dict[str, str], subprocess.Popen[str]]]:
    data = tmp_path / "data"
    init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    admin = orjson.loads(init.stdout)
    cert, key = self_signed(tmp_path)
    config = tmp_path / "serve.toml"
    config.write_text(f'tls-cert = "{cert}"\ntls-key = "{key}"\nserver-id = "tls-node"\n')
    log = tmp_path / "server.log"
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CEDARKEY, "serve", "--config", str(config), "--data-dir", str(data), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CEDARKEY_ACCESS_LOG": "1"},
        )
    try:
        read_until(log, r"listening on https://127\.0\.0\.1:\d+", proc)
        yield f"https://127.0.0.1:{port}", cert, log, admin, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_tls_serves_https_with_its_certificate_and_logs_what_happens(
    tls_server: tuple[str, Path, Path, dict[str, str], subprocess.Popen[str]],
) -> None:
    url, cert, log, admin, proc = tls_server
    started = read_until(log, r"listening on https://127\.0\.0\.1:(\d+), server id 'tls-node', store (\S+)", proc)
    assert url.endswith(f":{started.group(1)}") and "cedarkey.db" in started.group(2)
    with pytest.raises(httpx.ConnectError):  # not a certificate the client trusts by default
        httpx.get(f"{url}/health", timeout=5)
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=10) as http:
        assert http.get("/health").json()["server_id"] == "tls-node"
        login = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
        token = http.post("/auth", json=login).json()["token"]
        listed = http.post("/list-items", json={}, headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        assert http.post("/list-items", json={"token": "t-nope"}).status_code == 401
        # The console's cookie over HTTPS is Secure (and HttpOnly, SameSite=Strict, as over HTTP).
        signed = http.post("/ui/session", json=login, headers={"Origin": url})
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url.replace("https", "http") + "/health", timeout=5)  # plain HTTP is not served
    line = read_until(log, r"cedarkey\.access POST /list-items 200 [\d.]+ ms (\S+)", proc)
    assert line.group(1) == admin["access_id"]
    read_until(log, r"cedarkey\.access POST /auth 200 [\d.]+ ms -", proc)
    read_until(log, r"cedarkey\.access POST /list-items 401 [\d.]+ ms -", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    text = log.read_text()
    assert "shutting down" in text and text.rstrip().endswith("stopped")
    for secret in (token, admin["access_key"], "t-nope"):
        assert secret not in text  # no token, key or client string in the log


def test_log_level_warning_keeps_the_info_lines_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, check=True)
    log = tmp_path / "server.log"
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CEDARKEY, "serve", "--data-dir", str(data), "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise AssertionError(log.read_text())
        httpx.post(f"http://127.0.0.1:{port}/list-items", json={"token": "t-nope"}, timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    text = log.read_text()
    assert "listening on" not in text and "cedarkey.access" not in text and "stopped" not in text


def test_the_readme_config_example_is_accepted(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [example] = re.findall(r"```toml\n(# /etc/cedarkey/serve.toml.+?)```", readme, re.S)
    config = tmp_path / "serve.toml"
    config.write_text(example)
    ns = parsed(["--config", str(config)])
    assert (ns.host, ns.server_id, ns.access_log) == ("0.0.0.0", "prod", True)  # noqa: S104 (the example's)
    assert ns.tls_cert == Path("/etc/cedarkey/tls/cert.pem") and ns.data_dir == Path("/var/lib/cedarkey")
