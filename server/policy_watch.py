"""``cedarkey serve --policies DIR``: the rule files are the source of truth of the access model.

The directory is applied when the server starts (files with errors stop the start: their Cedar files may
hold forbids, and serving without them could let through what they forbid) and again on every edit while
it runs: a thread watches it (``watchfiles``, plus a rescan every second in case an event was missed) and,
when the files changed, parses and checks them, and applies the difference like ``apply-model`` does, in
one store transaction, then swaps in the new engine. An edit with any error is refused and logged, and the
last good model keeps serving. Applying from files needs no caller's decision: whoever controls the
directory controls the model (but never the ``/admin`` role or ``access_key`` auth methods). A change made
through the API to a managed object lasts until the next edit of the files (or the next start).

The watcher runs in a thread of its own because the app's lifespan is not ours to extend; to exclude every
other write while it applies, the service's write lock is replaced by :class:`SharedWriteLock`, which
coroutines take with ``async with`` exactly as before and the watcher thread takes too. The watcher never
mutates the engine in place: it builds the new one aside and assigns it, so readers on the event loop see
the old model or the new one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cedarkey.engine import ModelError
from cedarkey.policies import parse_rule_files
from cedarkey.policies.loader import RulesDirectoryError, read_rule_files

from .policy_api import apply_state_sync
from .store import StoreError

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("cedarkey.server.policies")

#: How long the watcher lets a burst of file events settle, and its longest wait (milliseconds).
STEP_MS = 50
DEBOUNCE_MS = 400
#: The rescan period (milliseconds): also how often the watcher notices it was asked to stop.
RESCAN_MS = 1000


class PolicyFilesError(RuntimeError):
    """The rules directory cannot be served (at start)."""


class SharedWriteLock:
    """The service's write lock, shared with a thread: ``async with lock`` on the event loop (as the service
    does), ``with lock.held()`` in a thread. Coroutines queue on an asyncio lock, then take the thread lock
    without blocking the loop (polling it, so that a cancelled waiter never leaves it taken)."""

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()
        self._async_lock = asyncio.Lock()

    async def __aenter__(self) -> SharedWriteLock:
        await self._async_lock.acquire()
        try:
            while not self._thread_lock.acquire(blocking=False):
                await asyncio.sleep(0.002)
        except BaseException:
            self._async_lock.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._thread_lock.release()
        self._async_lock.release()

    def locked(self) -> bool:
        return self._thread_lock.locked()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            yield


class PolicyWatcher:
    """Applies a rules directory to a service, now and on every change."""

    def __init__(self, service: Service, directory: Path, lock: SharedWriteLock) -> None:
        self.service = service
        self.directory = directory
        self.lock = lock
        #: Successful applies so far (the start's included), and the last refusal.
        self.generation = 0
        self.last_error: str | None = None
        self._last_seen: dict[str, str] | None = None
        self._engine: object = None  # the engine serving when the files were last applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- applying ------------------------------------------------------------------------------------

    def apply_files(self) -> bool | None:
        """Reads the directory and applies it if it changed since last time. True: applied (or nothing to
        change); False: refused (logged, the last good model keeps serving); None: unchanged, skipped."""
        try:
            files = self._read_settled()
        except RulesDirectoryError as exc:
            return self._refuse(None, [str(exc)])
        if files == self._last_seen and self.service.engine is self._engine:
            return None  # unchanged (an engine rebuilt by someone else, e.g. Service.load(), is re-planned)
        rule_set = parse_rule_files(files, self.service.engine.schema_text)
        if rule_set.errors:
            return self._refuse(files, [str(d) for d in rule_set.errors])
        for warning in rule_set.warnings:
            log.warning("%s", warning)
        desired = rule_set.state()
        if not (desired.auth_methods or desired.roles or desired.cedar) and self._manages_something():
            return self._refuse(
                files,
                [
                    f"{self.directory}: the files describe an empty model; refusing to remove every managed object "
                    "(an accident, e.g. a checkout in progress, is likelier than the intent: use cedarkey policy "
                    "apply for that)"
                ],
            )
        try:
            with self.lock.held():
                prepared = apply_state_sync(self.service, desired)
        except ModelError as exc:
            return self._refuse(files, [str(exc)])
        except StoreError as exc:  # transient (or the store closed under us): try again at the next rescan
            log.warning("policy files in %s not applied, the store failed: %s", self.directory, exc)
            self.last_error = str(exc)
            return False
        self._last_seen = files
        self._engine = self.service.engine
        self.last_error = None
        self.generation += 1
        plan = prepared.plan
        if plan:
            log.info("policy files in %s applied:\n%s", self.directory, plan.text().rstrip())
            self.service.audit.write(
                "apply-policy-files",
                directory=str(self.directory),
                **plan.summary(),
                created=sorted(prepared.created),
            )
        return True

    def _read_settled(self) -> dict[str, str]:
        """The directory's files, read until two reads 50 ms apart agree (an editor or a checkout may be
        half way through writing), at most for a second."""
        files = read_rule_files(self.directory)
        for _ in range(20):
            time.sleep(0.05)
            again = read_rule_files(self.directory)
            if again == files:
                break
            files = again
        return files

    def _manages_something(self) -> bool:
        model = self.service.engine.model
        return any(am.type == "aws_iam" for am in model.auth_methods.values()) or any(
            name != "/admin" for name in model.roles
        )

    def _refuse(self, files: dict[str, str] | None, errors: list[str]) -> bool:
        message = "\n".join(errors)
        if files is not None:
            self._last_seen = files
        if message != self.last_error:
            log.error("policy files in %s refused; the last good model keeps serving:\n%s", self.directory, message)
        self.last_error = message
        return False

    # --- watching ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cedarkey-policy-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        from watchfiles import watch

        while not self._stop.is_set():
            try:
                for _changes in watch(
                    self.directory,
                    stop_event=self._stop,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    rust_timeout=RESCAN_MS,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                ):
                    if self._stop.is_set():
                        return
                    self.apply_files()  # on an event, and on each timeout (a rescan: skipped when unchanged)
            except Exception:  # the directory vanished, the watcher broke...: rescan, and watch again
                if not self._stop.is_set():
                    log.debug("watching %s failed; retrying", self.directory, exc_info=True)
                    self._safe_apply()
                    self._stop.wait(RESCAN_MS / 1000)

    def _safe_apply(self) -> None:
        try:
            self.apply_files()
        except Exception:  # pragma: no cover - apply_files reports its own failures
            log.exception("applying the policy files in %s failed", self.directory)


def attach_policies(service: Service, directory: str | Path) -> PolicyWatcher:
    """Makes ``directory`` the source of truth of ``service``'s model: applies it now (raises
    PolicyFilesError when it cannot) and watches it from a thread, which the service's ``aclose`` stops."""
    path = Path(directory)
    if not path.is_dir():
        raise PolicyFilesError(f"--policies {path}: not a directory")
    lock = SharedWriteLock()
    service._lock = lock  # type: ignore[assignment]
    watcher = PolicyWatcher(service, path, lock)
    started = time.monotonic()
    if watcher.apply_files() is not True:
        raise PolicyFilesError(f"--policies {path}: the rule files cannot be served:\n{watcher.last_error}")
    log.info("serving the policy files in %s (applied in %.0f ms)", path, (time.monotonic() - started) * 1000)
    watcher.start()
    service.policy_watcher = watcher  # type: ignore[attr-defined]
    close = service.aclose

    async def aclose() -> None:
        await asyncio.to_thread(watcher.stop)  # off the loop: the watcher may be waiting for the write lock
        await close()

    service.aclose = aclose  # type: ignore[method-assign]
    return watcher
