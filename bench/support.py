"""What the benchmarks share: free ports, server processes that are healthy before use and stopped after,
and calls to the HTTP API.

The scripts import it as ``support``: each moves its own folder from the front of ``sys.path`` to the end
(bench/http.py would otherwise shadow the standard library's ``http``), where this module is still found.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cedarkey.dev.health import wait_healthy as dev_wait_healthy

CEDARKEY = str(Path(sys.executable).with_name("cedarkey"))
HOST = "127.0.0.1"


@contextmanager
def on_cpus(cpus: frozenset[int] | None) -> Iterator[None]:
    """This process runs on ``cpus`` inside the block (None: as it was), and so does every child it starts
    there: a child inherits its parent's CPU set, and its threads inherit the child's."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def collector_paused() -> Iterator[None]:
    """This process's garbage collector off inside the block, as ``timeit`` does: a benchmark that times
    exchanges with a server must not time its own collector. With botocore's models on this process's heap a
    full collection took 134 ms here, and landed in whichever exchange was being timed (most often a login,
    the longer one). What the block leaves behind is collected after it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def split_cpus() -> tuple[frozenset[int], frozenset[int]] | None:
    """This process's CPUs in two halves, (the server's, everything else's), or None with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return frozenset(cpus[:half]), frozenset(cpus[half:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Returns once ``GET url/health`` answers 200; raises with the log's tail if the process exits first."""
    dev_wait_healthy(url, lambda: None if proc.poll() is None else f"({proc.returncode}) {tail(log)}", timeout)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``cmd`` with its output to ``log`` (a file, never an unread pipe: servers log every login)."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def serving(cmd: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server ``cmd``, healthy at ``url`` inside the block and stopped after it."""
    proc = start(cmd, log)
    try:
        wait_healthy(url, proc, log)
        yield proc
    finally:
        stop(proc)


def call(http: httpx.Client, command: str, token: str | None = None, **flags: Any) -> dict[str, Any]:
    """``POST /command``; flags are given with ``_`` for ``-`` (``role_name`` is ``role-name``)."""
    body = {k.replace("_", "-"): v for k, v in flags.items()}
    if token:
        body["token"] = token
    answer = http.post(f"/{command}", json=body)
    if answer.status_code != 200:
        raise RuntimeError(f"{command}: {answer.status_code} {answer.text}")
    return answer.json()


def admin_token(http: httpx.Client, admin: dict[str, str]) -> str:
    """A token for the admin that ``cedarkey init`` printed."""
    answer = call(http, "auth", access_type="access_key", access_id=admin["access_id"], access_key=admin["access_key"])
    return str(answer["token"])


def arguments(doc: str | None, *, load: bool = False) -> argparse.ArgumentParser:
    """A bench script's parser: ``--json``, and with ``load`` the flags of an HTTP load run."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if load:
        parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
        parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each run")
        parser.add_argument("--connections", type=int, default=16, help="keep-alive connections per generator")
        parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every run (best counts)")
        parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    return parser
