"""``cedarkey serve --workers 2``: real worker processes on one port act as one server.

Connections land on whichever worker the kernel picks; a keep-alive connection stays with its worker, and
``/health`` names the worker that answered, so each test holds one connection per worker and checks, after
every call, that the call went where it meant to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cedarkey.client import serve_cli
from cedarkey.client.cli import main
from cedarkey.client.proof import make_cloud_id

from tests.support.moto import MotoHandle, botocore_credentials
from tests.support.postgres import fresh_database
from tests.support.server import CEDARKEY, ServerProcess, start_server

SERVER_ID = "workers-under-test"


class Pinned:
    """A keep-alive connection to one worker."""

    def __init__(self, http: httpx.Client, worker: int) -> None:
        self.http, self.worker = http, worker

    def call(self, command: str, token: str | None = None, **body: Any) -> httpx.Response:
        data = {k.replace("_", "-"): v for k, v in body.items()}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(f"/{command}", json=data, headers=headers)
        assert worker_of(self.http) == self.worker, "the connection moved to another worker"
        return response

    def ok(self, command: str, token: str | None = None, **body: Any) -> dict[str, Any]:
        response = self.call(command, token, **body)
        assert response.status_code == 200, response.text
        return response.json()


def worker_of(http: httpx.Client) -> int:
    answer = http.get("/health")
    assert answer.status_code == 200
    return int(answer.json()["worker"])


@dataclass
class Workers:
    server: ServerProcess
    admin: dict[str, str]
    clients: list[httpx.Client]
    log: Path

    def pinned(self, count: int = 2) -> list[Pinned]:
        """One connection to each of ``count`` workers, in worker order."""
        found: dict[int, Pinned] = {}
        deadline = time.monotonic() + 30  # a worker still starting takes no connection yet
        while time.monotonic() < deadline:
            http = httpx.Client(base_url=self.server.url, timeout=30)
            worker = worker_of(http)
            if worker in found:
                http.close()
                continue
            self.clients.append(http)
            found[worker] = Pinned(http, worker)
            if len(found) == count:
                return [found[n] for n in sorted(found)]
        pytest.fail(f"30 s of connections reached workers {sorted(found)} only")

    def login(self, to: Pinned) -> str:
        body = {
            "access_type": "access_key",
            "access_id": self.admin["access_id"],
            "access_key": self.admin["access_key"],
        }
        return str(to.ok("auth", **body)["token"])

    def children(self) -> set[int]:
        """The live worker processes (not multiprocessing's resource tracker, also a child; not zombies)."""
        pid = self.server.process.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return {int(p) for p in text.split() if b"spawn_main" in _cmdline(int(p)) and _alive(int(p))}


@contextmanager
def running_workers(tmp_path: Path, *flags: str) -> Iterator[Workers]:
    """``init`` then ``serve --workers 2`` with ``flags`` (a ``--database-url`` goes to both)."""
    data = tmp_path / "data"
    store = (
        flags[flags.index("--database-url") : flags.index("--database-url") + 2] if "--database-url" in flags else ()
    )
    init = subprocess.run(
        [CEDARKEY, "init", "--data-dir", str(data), *store], capture_output=True, text=True, check=True
    )
    log = tmp_path / "server.log"
    server = start_server(data, "--workers", "2", "--server-id", SERVER_ID, *flags, log=log)
    workers = Workers(server, orjson.loads(init.stdout), [], log)
    try:
        workers.pinned()  # /health answers once one worker listens: wait for both
        yield workers
    finally:
        for http in workers.clients:
            http.close()
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    if request.param == "sqlite":
        with running_workers(tmp_path) as w:
            yield w
        return
    with fresh_database() as url, running_workers(tmp_path, "--database-url", url) as w:
        yield w


def test_a_write_acknowledged_by_one_worker_is_what_the_next_request_sees_on_any(workers: Workers) -> None:
    one, other = workers.pinned()
    admin = workers.login(one)
    reader = workers.login(other)  # another session, of the other worker
    for n in range(20):
        writer, seen_by = (one, other) if n % 2 == 0 else (other, one)
        writer.ok("create-role", admin, name=f"r{n}")
        writer.ok("set-role-rule", admin, role_name=f"r{n}", path=f"/p{n}/*", capability=["read"])
        rules = seen_by.ok("get-role", reader, name=f"r{n}")["rules"]
        assert [r["path"] for r in rules] == [f"/p{n}/*"]
        writer.ok("delete-role", admin, name=f"r{n}")
        assert seen_by.call("get-role", admin, name=f"r{n}").status_code == 404


def test_a_token_revoked_on_one_worker_is_refused_by_the_other_at_once(workers: Workers) -> None:
    one, other = workers.pinned()
    for n in range(10):
        token = workers.login(one if n % 2 else other)
        assert other.call("lookup-token", token).status_code == 200
        assert one.call("lookup-token", token).status_code == 200  # both hold the session now
        (one if n % 2 == 0 else other).ok("revoke-token", token)
        for pinned in (one, other):
            answer = pinned.call("lookup-token", token)
            assert answer.status_code == 401 and answer.json()["error"] == "AuthenticationFailed"


def test_a_worker_follows_a_write_it_was_not_asked_about_within_50_ms(tmp_path: Path) -> None:
    """The follower alone (no request made the worker look): its ``watch`` long poll wakes within 50 ms."""
    with running_workers(tmp_path) as w:
        one, other = w.pinned()
        admin = w.login(one)
        for n in range(5):
            version = other.ok("watch", admin)["version"]
            with ThreadPoolExecutor(1) as pool:
                woke = pool.submit(lambda v=version: (other.ok("watch", admin, version=v), time.monotonic()))
                time.sleep(0.3)  # the long poll is waiting on the other worker
                one.ok("create-role", admin, name=f"f{n}")
                written = time.monotonic()  # acknowledged
                answer, at = woke.result(timeout=10)
            assert answer["version"] != version
            assert at - written < 0.05, at - written


def test_a_login_proof_is_single_use_across_workers(tmp_path: Path, moto: MotoHandle, aws: dict[str, Any]) -> None:
    with running_workers(tmp_path, "--allowed-sts-url", moto.url) as w:
        one, other = w.pinned()
        admin = w.login(one)
        made = one.ok(
            "create-auth-method-aws-iam",
            admin,
            name="iam",
            bound_aws_account_id=["123456789012"],
            bound_role_name=["dev-role"],
            sts_url=moto.url,
        )
        creds = botocore_credentials(aws["dev_role"])

        def attempt(pinned: Pinned, proof: str) -> int:
            return pinned.call("auth", access_type="aws_iam", access_id=made["access-id"], cloud_id=proof).status_code

        proof = make_cloud_id(moto.url, SERVER_ID, credentials=creds)
        assert attempt(one, proof) == 200
        assert attempt(other, proof) == 401
        for _ in range(5):  # two copies at the two workers at the same moment: exactly one gets in
            proof = make_cloud_id(moto.url, SERVER_ID, credentials=creds)
            with ThreadPoolExecutor(2) as pool:
                codes = sorted(pool.map(attempt, [one, other], [proof, proof]))
            assert codes == [200, 401]


def test_a_worker_that_dies_is_restarted_and_the_port_keeps_answering(tmp_path: Path) -> None:
    with running_workers(tmp_path) as w:
        before = w.children()
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        # While the kernel tears the victim down, a connection it hashed there is refused (SO_REUSEPORT);
        # once it is gone, every connection goes to a listening worker.
        deadline = time.monotonic() + 20
        while victim in w.children() and time.monotonic() < deadline:
            time.sleep(0.01)
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{w.server.url}/health", timeout=10)  # the survivor answers
            except httpx.ConnectError as exc:
                pytest.fail(f"{exc} at {time.monotonic()}; the log:\n{w.log.read_text()}")
            assert answer.status_code == 200
            now = w.children()
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no worker took the place of {victim}: {w.children()}")
        one, other = w.pinned()  # both answer again, and the new one serves the model
        admin = w.login(other)
        one.ok("create-role", admin, name="after-restart")
        assert other.ok("get-role", admin, name="after-restart")["name"] == "/after-restart"
        assert "exited with signal SIGKILL: restarting it" in w.log.read_text()


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    with running_workers(tmp_path) as w:
        children = w.children()
        w.server.process.send_signal(signal.SIGTERM)
        assert w.server.process.wait(30) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # gone meanwhile
        return b""


def test_workers_is_a_number_from_one_or_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = serve_cli.serve_parser()
    assert parser.parse_args(["--workers", "3"]).workers == 3
    assert parser.parse_args(["--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    assert parser.parse_args([]).workers == 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--workers", bad])
        assert "a number from 1, or auto" in capsys.readouterr().err
    flags = ["serve", "--data-dir", str(tmp_path / "d"), "--workers", "2", "--metrics-address", "127.0.0.1:9300"]
    assert main(flags) == 2
    assert "--metrics-address: not with --workers above 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_a_port_taken_by_another_socket_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flags = ["--data-dir", str(tmp_path / "d"), "--port", str(port), "--workers", "2"]
        result = subprocess.run([CEDARKEY, "serve", *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    """A certificate that is no certificate: each worker fails loading it; after a few tries, all stop."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    flags = ["--data-dir", str(tmp_path / "d"), "--port", "0", "--workers", "2", "--tls-cert", str(cert)]
    result = subprocess.run(
        [CEDARKEY, "serve", *flags, "--tls-key", str(key)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "failed to start 5 times in a row: stopping" in result.stderr


def test_workers_share_the_limit_on_refused_logins(tmp_path: Path) -> None:
    """An address's connections spread over the workers: together they refuse no more than one server would
    before answering 429 (a burst of 20, then 1 a second)."""
    with running_workers(tmp_path) as w:
        bad = {"access-type": "access_key", "access-id": w.admin["access_id"], "access-key": "not-the-key"}
        start = time.monotonic()
        codes = [httpx.post(f"{w.server.url}/auth", json=bad, timeout=30).status_code for _ in range(40)]
        refilled = int(time.monotonic() - start) + 1
        assert set(codes) == {401, 429}
        assert codes.count(401) <= 20 + refilled, codes
