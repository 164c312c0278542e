"""``cedarkey serve --workers N``: N server processes on one port, one supervisor restarting those that die.

Each worker is a whole server (its own engine, tokens and event loop) on its own listening socket bound with
``SO_REUSEPORT``: the kernel spreads new connections over the workers, and only processes of the same user
may join the port. The supervisor initializes the store once (the admin's key is printed once), reserves the
port (a bound socket that does not listen, so ``--port 0`` picks one port for all), starts the workers and
restarts any that exits while the server is not stopping. SIGTERM or SIGINT stops them all (each finishes its
requests in flight); SIGHUP is passed on (each reopens the audit log).

The workers share the store and follow its change feed as separate nodes do (:mod:`.cluster`), polled every
:data:`FOLLOW_INTERVAL` on SQLite, at once on PostgreSQL's notifications. On top of that, a
:class:`WriteMark` in shared memory counts the writes the workers committed: a worker that has not caught up
with the count when a request arrives reads the feed before it answers, so a write acknowledged by one worker
is what the next request sees on any worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

from .config import Settings

log = logging.getLogger("cedarkey.server")

#: How often a worker reads the SQLite change feed when no request made it look: others follow within twice it.
FOLLOW_INTERVAL = 0.02
#: A worker that exits before it listened is restarted only after this long (a crash loop).
RESTART_BACKOFF = 1.0
#: Exits before listening, in a row, after which a worker is taken to be unable to start: all stop, status 1.
MAX_FAILED_STARTS = 5
#: How long the workers have to finish their requests in flight once told to stop.
STOP_GRACE = 30.0


class WriteMark:
    """How many writes the workers of one server committed, in memory they all share.

    A write bumps it after its commit and before its answer; a reader takes it before reading the feed, so
    whatever the feed then shows includes every write counted."""

    def __init__(self, context: SpawnContext) -> None:
        self._count = context.RawValue("q", 0)  # an aligned 64-bit word: a read needs no lock
        self._lock = context.Lock()

    def bump(self) -> None:
        with self._lock:
            self._count.value += 1

    def read(self) -> int:
        return int(self._count.value)


@dataclass(frozen=True)
class Worker:
    """What a worker process knows of its place: its number (0 runs the rule-files watcher), the mark, and
    the event it sets once it listens."""

    index: int
    count: int
    mark: WriteMark
    listening: Event


def worker_count(value: str) -> int:
    """``--workers``: a number from 1, or ``auto`` for the CPUs this process may run on."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    number = int(value)
    if number < 1:
        raise ValueError("at least 1")
    return number


def listening_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket on ``host:port`` that other sockets of this user may bind too (``SO_REUSEPORT``)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host in ("::", "") else 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def supervise(settings: Settings, count: int) -> int:
    """Runs ``count`` workers until SIGTERM or SIGINT (status 0), or until one cannot start (status 1)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no thread or loop is forked
    try:
        reserved = listening_socket(settings.host, settings.port, listen=False)
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    settings = replace(settings, port=reserved.getsockname()[1])
    mark = WriteMark(context)
    stopping = threading.Event()
    procs: dict[int, tuple[SpawnProcess, Worker]] = {}

    def start(index: int) -> None:
        worker = Worker(index, count, mark, context.Event())
        proc = context.Process(target=_run_worker, args=(settings, worker), name=f"worker-{index}")
        proc.start()
        procs[index] = proc, worker

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    def reopen(signum: int, frame: Any) -> None:
        for proc, _ in procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reopen)
    log.info("starting %d workers on port %d", count, settings.port)
    for index in range(count):
        start(index)
    restart_at: dict[int, float] = {}
    failed_starts = dict.fromkeys(procs, 0)
    status = 0
    while not stopping.is_set():
        # A dead one's sentinel stays ready: waiting on it through its restart's backoff would spin.
        wait([proc.sentinel for index, (proc, _) in procs.items() if index not in restart_at], timeout=0.2)
        now = time.monotonic()
        for index, (proc, worker) in list(procs.items()):
            if proc.is_alive() or stopping.is_set():
                continue
            if index not in restart_at:
                failed = not worker.listening.is_set()
                failed_starts[index] = failed_starts[index] + 1 if failed else 0
                if failed_starts[index] >= MAX_FAILED_STARTS:
                    log.error("worker %d failed to start %d times in a row: stopping", index, MAX_FAILED_STARTS)
                    stopping.set()
                    status = 1
                    break
                log.warning("worker %d (pid %s) exited with %s: restarting it", index, proc.pid, _exit(proc))
                restart_at[index] = now + RESTART_BACKOFF if failed else now
            if now >= restart_at[index]:
                del restart_at[index]
                start(index)
    _stop_all([proc for proc, _ in procs.values()])
    reserved.close()
    return status


def _exit(proc: SpawnProcess) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _stop_all(procs: list[SpawnProcess]) -> None:
    log.info("stopping %d workers", len(procs))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("worker pid %s did not stop within %.0f s: killing it", proc.pid, STOP_GRACE)
            proc.kill()
            proc.join(5)


def _run_worker(settings: Settings, worker: Worker) -> None:
    from .main import serve  # imported in the worker's own interpreter

    parent = os.getppid()

    def orphaned() -> None:  # the supervisor was killed: nobody would stop or restart this one
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="cedarkey-supervisor-watch", daemon=True).start()
    if worker.index != 0:
        settings = replace(settings, policies_dir=None)  # one watcher applies the files; the others follow
    serve(settings, worker=worker)
