"""``cedarkey serve --policies DIR``: the rule files are the source of truth of the access model.

The directory is applied when the server starts (files with errors stop the start: their Cedar files may
hold forbids, and serving without them could let through what they forbid) and again on every edit while
it runs: an asyncio task of the app watches it (``watchfiles.awatch``, plus a rescan every second in case an
event was missed) and, when the files changed, parses and checks them, and applies the difference like
``apply-model`` does (``cedarkey.server.apply``: under the state's lock, in one store transaction, then the new
engine swapped in). An edit with any error is refused and logged, and the last good model keeps serving.
Applying from files needs no caller's decision: whoever controls the directory controls the model (but never
the ``/admin`` role or ``access_key`` auth methods). A change made through the API to a managed object lasts
until the next edit of the files (or the next start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cedarkey.engine import ModelError
from cedarkey.policies import parse_rule_files
from cedarkey.policies.apply import Prepared
from cedarkey.policies.loader import RulesDirectoryError, read_rule_files

from .apply import apply_desired
from .store import AuditEvent, StoreError

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("cedarkey.server.policies")

#: How long the watcher lets a burst of file events settle, and its longest wait (milliseconds).
STEP_MS = 50
DEBOUNCE_MS = 400
#: The rescan period (milliseconds).
RESCAN_MS = 1000


class PolicyFilesError(RuntimeError):
    """The rules directory cannot be served (at start)."""


class PolicyWatcher:
    """Applies a rules directory to a service, now and on every change."""

    def __init__(self, service: Service, directory: str | Path) -> None:
        self.service = service
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise PolicyFilesError(f"--policies {self.directory}: not a directory")
        #: Successful applies so far (the start's included), and the last refusal.
        self.generation = 0
        self.last_error: str | None = None
        self._last_seen: dict[str, str] | None = None
        self._engine: object = None  # the engine serving when the files were last applied
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def apply_at_start(self) -> None:
        """The first apply, before the server serves anyone: PolicyFilesError when the files cannot be served."""
        started = time.monotonic()
        if asyncio.run(self.apply_files()) is not True:
            raise PolicyFilesError(f"--policies {self.directory}: the rule files cannot be served:\n{self.last_error}")
        log.info(
            "serving the policy files in %s (applied in %.0f ms)", self.directory, (time.monotonic() - started) * 1000
        )

    # --- applying ------------------------------------------------------------------------------------

    async def apply_files(self) -> bool | None:
        """Reads the directory and applies it if it changed since last time. True: applied (or nothing to
        change); False: refused (logged, the last good model keeps serving); None: unchanged, skipped."""
        try:
            files = await self._read_settled()
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
            prepared = await apply_desired(self.service, desired, session=None, event=self._event)
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
        if prepared.plan:
            log.info("policy files in %s applied:\n%s", self.directory, prepared.plan.text().rstrip())
        return True

    def _event(self, prepared: Prepared) -> AuditEvent | None:
        """The audit event of applying the files (none when the plan is empty)."""
        if not prepared.plan:
            return None
        summary = prepared.plan.summary()
        return self.service.audit.event(
            "apply-policy-files", directory=str(self.directory), **summary, created=sorted(prepared.created)
        )

    async def _read_settled(self) -> dict[str, str]:
        """The directory's files, read until two reads 50 ms apart agree (an editor or a checkout may be
        half way through writing), at most for a second."""
        files = await asyncio.to_thread(read_rule_files, self.directory)
        for _ in range(20):
            await asyncio.sleep(0.05)
            again = await asyncio.to_thread(read_rule_files, self.directory)
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

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cedarkey-policy-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            try:
                async for _changes in awatch(
                    self.directory,
                    stop_event=self._stop,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    rust_timeout=RESCAN_MS,
                    yield_on_timeout=True,
                ):
                    await self._safe_apply()  # on an event, and on each timeout (a rescan: skipped when unchanged)
            except Exception:  # the directory vanished, the watcher broke...: rescan, and watch again
                if not self._stop.is_set():
                    log.debug("watching %s failed; retrying", self.directory, exc_info=True)
                    await self._safe_apply()
                    await asyncio.sleep(RESCAN_MS / 1000)

    async def _safe_apply(self) -> None:
        if self._stop.is_set():
            return
        try:
            await self.apply_files()
        except Exception:  # apply_files reports its own refusals: anything else must not stop the watcher
            log.exception("applying the policy files in %s failed", self.directory)
