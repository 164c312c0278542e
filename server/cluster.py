"""Following the store's change feed, so that several nodes sharing one database act as one service.

Every write records which keys it changed (see ``store.py``, "change feed"). Each node follows the feed: on a
notification (PostgreSQL ``LISTEN``) or at the latest every ``poll_interval``, it reads the changes it has not
applied, reads the current stored state of each changed key, and reconciles its memory (engine and tokens)
with it. Reconciling is idempotent, so a node's own writes coming back through the feed change nothing, and a
change seen twice or late is harmless. A node that missed pruned changes reloads everything.

The hot path never waits on this: decisions are answered from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from cedarkey.engine import AccessRole, ModelError, parse_rule_type
from starlette.concurrency import run_in_threadpool

from .apply import AUTHOR_POLICIES_META, stored_author_policies
from .store import (
    Change,
    ChangeCursor,
    ChangesLost,
    Kind,
    StoreError,
)
from .tokens import session_of

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("cedarkey.cluster")

#: Seconds between two reads of the feed when no notification came (SQLite has none).
POLL_INTERVAL = 0.5

#: The state of a token change whose token this node holds and the store still has live: nothing to do.
_HELD = object()


class Follower:
    def __init__(self, service: Service, after: int, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.service = service
        self.cursor = ChangeCursor(service.store, after)
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        self.applied = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def notify(seq: int | None) -> None:
            loop.call_soon_threadsafe(self._wake.set)

        def listen() -> None:
            while not self._stop.is_set():
                try:
                    self.service.store.listen(notify, self._stop, poll_interval=self.poll_interval)
                except Exception as exc:  # the database went away: the poll timer covers us; try again
                    log.warning("change listener stopped (%s); retrying", exc)
                    self._stop.wait(1.0)

        self._listener = threading.Thread(target=listen, name="cedarkey-changes", daemon=True)
        self._listener.start()
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        """Ends the loop by its flag, not by cancelling it (Python 3.11's ``wait_for`` can swallow a
        cancellation that comes with its timeout: the loop then ran on, and this waited for ever)."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)

    async def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.catch_up()
                backoff = self.poll_interval
            except ChangesLost:
                log.warning("changes were pruned before this node read them: reloading everything")
                await self.service.reload()
            except StoreError as exc:
                log.warning("cannot read the change feed (%s); retrying in %.1f s", exc, backoff)
                with contextlib.suppress(TimeoutError):  # a stop wakes it at once
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                backoff = min(backoff * 2, 5.0)

    async def catch_up(self) -> int:
        """Applies every change not applied yet; returns how many.

        The stored states are read under the state's lock: a write of this node's own (which holds the lock
        from its check to its apply) is then either wholly before the read, which sees it, or after the apply,
        which it supersedes; an older state read before it can never overwrite it."""
        async with self.service.state.lock:
            changes, states = await run_in_threadpool(self._read)
            if not changes:
                return 0
            for change, state in zip(changes, states, strict=True):
                try:
                    self._apply(change, state)
                except (ModelError, KeyError) as exc:  # out of step: rebuild from the store
                    log.warning(
                        "change %s (%s %r) did not apply (%s): reloading", change.seq, change.kind, change.key, exc
                    )
                    self.service.load()
                    break
        self.applied += len(changes)
        return len(changes)

    def _read(self) -> tuple[list[Change], list[Any]]:
        store = self.service.store
        changes = self.cursor.poll()
        now = time.time()
        # Most token changes are logins this node served (or already learned of): one query says which of
        # those are still live, and only the others (new here, or revoked elsewhere) are read one by one.
        tokens = self.service.tokens
        digests = (bytes.fromhex(str(c.key)) for c in changes if c.kind == Kind.TOKEN)
        held = {digest for digest in digests if tokens.get(digest) is not None}
        live = store.live_tokens(sorted(held), now) if held else set()
        states: list[Any] = []
        for change in changes:
            key = change.key
            if change.kind == Kind.AUTH_METHOD:
                states.append(store.get_auth_method(key))
            elif change.kind == Kind.ROLE:
                states.append(store.get_role(key))
            elif change.kind == Kind.ASSOCIATION:
                states.append(store.get_association(key))
            elif change.kind == Kind.RULE:
                states.append(store.get_rule(*key))
            elif change.kind == Kind.TOKEN:
                digest = bytes.fromhex(str(key))
                states.append(_HELD if digest in live else store.get_token(digest, now))
            elif change.kind == Kind.META and key == AUTHOR_POLICIES_META:
                states.append(stored_author_policies(store))
            else:
                states.append(None)
        return changes, states

    def _apply(self, change: Change, state: Any) -> None:
        served = self.service.state
        engine, tokens = served.engine, served.tokens
        model = engine.model
        kind, key = change.kind, change.key
        if kind == Kind.AUTH_METHOD:
            current = model.auth_methods.get(key)
            if state is None:
                if current is not None:
                    engine.delete_auth_method(key)
                    tokens.drop_access_id(current.access_id)
            elif current is None:
                engine.add_auth_method(state)
            elif current != state:
                if (current.access_id, current.type) == (state.access_id, state.type):
                    engine.update_auth_method(state)
                    served.end_refused_sessions(state.access_id)
                else:
                    engine.delete_auth_method(key)
                    tokens.drop_access_id(current.access_id)
                    engine.add_auth_method(state)
        elif kind == Kind.ROLE:
            current = model.roles.get(key)
            if state is None:
                if current is not None:
                    engine.delete_role(key)
            elif current is None:
                engine.add_role(AccessRole(state.name, state.description))
            elif current.description != state.description:
                current.description = state.description
        elif kind == Kind.ASSOCIATION:
            current = model.associations.get(key)
            if state is None:
                if current is not None:
                    engine.delete_association(key)
            elif current is None:
                am = model.by_access_id[state.access_id]
                engine.associate(state.role_name, am.name, state.sub_claims, state.assoc_id)
        elif kind == Kind.RULE:
            role_name, rule_type, path = key
            role = model.roles.get(role_name)
            current = role.rules.get((parse_rule_type(rule_type), path)) if role is not None else None
            if state is None:
                if current is not None:
                    engine.delete_rule(role_name, rule_type, path)
            elif current != state:
                engine.set_rule(role_name, state)
        elif kind == Kind.META and key == AUTHOR_POLICIES_META:
            if state != served.author_policies:
                engine.set_author_policies(state)
                served.author_policies = dict(state)
        elif kind == Kind.TOKEN and state is not _HELD:
            digest = bytes.fromhex(str(key))
            if state is None:
                tokens.revoke(digest)
            elif tokens.get(digest) is None:
                session = session_of(state)
                if served.admits(session):
                    tokens.add(digest, session)
