"""The service: what every command works with (the store, the state served from memory, the verifier, the
audit log, the metrics) and the checks they share. The commands themselves are in ``cedarkey.server.commands``.

Reads are served from memory (:class:`~cedarkey.server.state.State`). Writes take the state's lock, are checked
against the in-memory model, committed to the store in a worker thread (one transaction), and only then
applied to the engine: a refused or failed write changes nothing, and an acknowledged one is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from cedarkey.engine import (
    ACCESS_KEY,
    ADMIN,
    Association,
    AuthMethod,
    Capability,
    Engine,
    Grant,
    Identity,
    ModelError,
    RoleRule,
    RuleType,
    new_access_id,
)
from cedarkey.engine.access_role import new_assoc_id
from cedarkey.policies import schema_text
from starlette.concurrency import run_in_threadpool

from .apply import stored_author_policies
from .audit import AuditLog
from .cluster import POLL_INTERVAL, Follower
from .config import Settings
from .errors import ApiError, AuthenticationFailed, permission_denied, too_many
from .login_limit import FailedLogins, RefusalTally
from .metrics import Metrics
from .policy_watch import PolicyWatcher
from .proofs import ProofGuard
from .secret_box import KEY_CHECK_META, SecretBox, SecretBoxError
from .state import State
from .store import AuditEvent, ChangeCursor, ChangesLost, Store, StoreError
from .sts import StsVerifier
from .sts_urls import StsUrls
from .tokens import Misses, Session, TokenRegistry, access_key_hash, new_access_key, session_of, token_hash
from .workers import FOLLOW_INTERVAL, Worker

log = logging.getLogger("cedarkey.server")

LIST = Capability.LIST
#: Seconds between purges of expired tokens (memory and store).
HOUSEKEEPING_INTERVAL = 60.0
#: The store's meta key saying when the store was initialized (by :func:`bootstrap`).
INITIALIZED_META = "initialized"
#: Set once every stored value is bound to its item's id and version (no legacy value is accepted after).
ITEMS_BOUND_META = "items-bound-to-id-and-version"


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        box: SecretBox,
        *,
        engine: Engine | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.box = box
        self.metrics = Metrics()
        self.audit = AuditLog(settings.audit_path)
        self.audit.catch_up(store)  # what a kill left stored but not in the file, before anything new
        # N workers share the limit: an address's connections spread over them, so each allows its share.
        share = 1 if worker is None else worker.count
        self.failed_logins = FailedLogins(max(1, settings.login_burst // share), settings.login_refill / share)
        self.refusals = RefusalTally()
        self.sts_urls = StsUrls(settings.allowed_sts_urls)
        self.verifier = StsVerifier(
            settings.server_id, ProofGuard(), timeout=settings.sts_timeout, on_sts=self.metrics.observe_sts
        )
        self.follower: Follower | None = None
        #: Set in a process of ``serve --workers`` (see :mod:`.workers`): its number and the shared write mark.
        self.worker = worker
        self._marked = 0  # the write mark this worker has caught up with
        self._catching_up = asyncio.Lock()
        #: Set by ``cedarkey serve --policies DIR`` (see :mod:`.policy_watch`); started and stopped with the app.
        self.policy_watcher: PolicyWatcher | None = None
        self.legacy_items = not self.bind_legacy_items()
        self._schema_text = engine.schema_text if engine is not None else schema_text()
        self._housekeeping: asyncio.Task[None] | None = None
        self._refusal_lines: asyncio.Task[None] | None = None
        self._unknown_tokens = Misses()
        #: Set when the server stops taking requests: a request that waits (``watch``) answers at once.
        self.shutting_down = False
        engine, tokens, author_policies, self.change_position = self._read_state()
        self.state = State(engine, tokens, author_policies)

    @property
    def engine(self) -> Engine:
        return self.state.engine

    @property
    def tokens(self) -> TokenRegistry:
        return self.state.tokens

    # --- life cycle ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Replays the stored model into a fresh engine and the live tokens into the registry."""
        engine, tokens, author_policies, self.change_position = self._read_state()
        self.state.swap(engine, tokens=tokens, author_policies=author_policies)

    def _read_state(self) -> tuple[Engine, TokenRegistry, dict[str, str], int]:
        position = self.store.latest_change()  # before the snapshot: what follows it is caught up later
        snapshot = self.store.load()
        engine = Engine(self._schema_text)
        engine.load(snapshot.auth_methods, snapshot.roles, snapshot.associations, snapshot.rules)
        author_policies = stored_author_policies(self.store)
        if author_policies:
            try:
                engine.set_author_policies(author_policies)
            except ModelError as exc:  # stored by an older cedarkey, say: serve the rules, say so loudly
                log.error("the stored author policies are refused: %s", exc)
        tokens = TokenRegistry()
        for tok in self.store.load_tokens(time.time()):
            try:
                session = session_of(tok)
            except ModelError:
                continue
            if engine.admits(session.identity, session.issued_at):  # bindings changed since: it ended
                tokens.add(tok.token_hash, session)
        return engine, tokens, author_policies, position

    async def reload(self) -> None:
        """Rebuilds memory from the store off the event loop, then swaps it in (a node that fell behind)."""
        engine, tokens, author_policies, position = await run_in_threadpool(self._read_state)
        async with self.state.lock:
            self.state.swap(engine, tokens=tokens, author_policies=author_policies)
        if self.follower is not None:
            self.follower.cursor = ChangeCursor(self.store, position)

    async def start(self) -> None:
        """Starts following the store's change feed (other nodes' writes become live here within a second)
        and the housekeeping of expired tokens."""
        interval = FOLLOW_INTERVAL if self.worker is not None else POLL_INTERVAL
        self.follower = Follower(self, self.change_position, poll_interval=interval)
        self.follower.start()
        if self.policy_watcher is not None:
            self.policy_watcher.start()
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._housekeep_every(HOUSEKEEPING_INTERVAL))
        self._refusal_lines = loop.create_task(self._audit_refusals_every(self.settings.login_audit_interval))

    async def housekeep(self, now: float) -> tuple[int, int]:
        """Forgets expired tokens, in memory and in the store (with expired login proofs); returns how many
        sessions and stored tokens went."""
        in_memory = self.tokens.purge(now)
        stored = await run_in_threadpool(self.store.purge_expired, now)
        await run_in_threadpool(self.audit.prune, self.store, now)
        self._unknown_tokens.purge(now)
        return in_memory, stored

    async def _housekeep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.housekeep(time.time())
            except StoreError as exc:  # unavailable for now: the next round tries again
                log.warning("housekeeping could not purge expired tokens: %s", exc)

    async def _audit_refusals_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.audit_refusals()

    async def aclose(self) -> None:
        if self.policy_watcher is not None:
            await self.policy_watcher.stop()
        for task in (self._housekeeping, self._refusal_lines):
            if task is not None:
                task.cancel()
        self.audit_refusals()  # what the last interval counted
        if self.follower is not None:
            await self.follower.stop()
        await self.verifier.aclose()
        self.audit.close()
        self.store.close()

    # --- sessions ------------------------------------------------------------------------------------

    async def session_or_lookup(self, token: object) -> Session:
        """The live session of ``token``; a token unknown here is looked up in the store once, since another
        node may have issued it a moment ago (its change may not have arrived yet). Misses are remembered for
        1 s. AuthenticationFailed otherwise."""
        now = time.time()
        session = self.tokens.check(token, now)
        if session is not None:
            return session
        if type(token) is not str or not token.startswith("t-") or len(token) > 128:
            raise AuthenticationFailed()
        digest = token_hash(token)
        if self._unknown_tokens.recent(digest, now):
            raise AuthenticationFailed()
        stored = await run_in_threadpool(self.store.get_token, digest, now)
        if stored is None:
            self._unknown_tokens.add(digest, now)
            raise AuthenticationFailed()
        session = session_of(stored)
        if not self.state.admits(session):  # issued before its auth method's bindings changed to refuse it
            self._unknown_tokens.add(digest, now)
            raise AuthenticationFailed()
        self.tokens.add(digest, session)
        return session

    # --- decisions every command shares --------------------------------------------------------------

    def require(self, session: Session, capability: Capability, path: str, rule_type: RuleType) -> None:
        self.require_any(session, (capability,), path, rule_type)

    def require_any(self, session: Session, capabilities: Iterable[Capability], path: str, rule_type: RuleType) -> None:
        """One of ``capabilities`` on ``path``: PermissionDenied naming them otherwise."""
        caps = tuple(capabilities)
        decisions = self.engine.decide_batch(session.identity, [(c, path, rule_type) for c in caps])
        allowed = any(d.allowed for d in decisions)
        (self.metrics.allowed if allowed else self.metrics.denied).inc()
        if not allowed:
            raise permission_denied(" or ".join(str(c) for c in caps), path, str(rule_type))

    def require_list_everything(self, session: Session) -> None:
        """``list`` on every role and every auth method: what the answer names is the whole model."""
        missing = self._unlisted_kind(session)
        if missing is not None:
            self.metrics.denied.inc()
            raise permission_denied("list", "every object", str(missing))

    def may_list_everything(self, session: Session) -> bool:
        return self._unlisted_kind(session) is None

    def _unlisted_kind(self, session: Session) -> RuleType | None:
        model = self.engine.model
        for names, rule_type in (
            (sorted(model.roles), RuleType.ROLE),
            (sorted(model.auth_methods), RuleType.AUTH_METHOD),
        ):
            if len(self.allowed_paths(session, LIST, names, rule_type)) != len(names):
                return rule_type
        return None

    def allowed_paths(
        self, session: Session, capability: Capability, paths: list[str], rule_type: RuleType
    ) -> list[str]:
        decisions = self.engine.decide_batch(session.identity, [(capability, p, rule_type) for p in paths])
        return [p for p, d in zip(paths, decisions, strict=True) if d.allowed]

    def within_ceiling(self, session: Session, grants: list[Grant]) -> None:
        """The caller holds everything ``grants`` hand out (see ``cedarkey.engine.delegation``)."""
        if grants:
            why = self.engine.ceiling(session.identity).first_shortfall(grants)
            if why is not None:
                self.metrics.denied.inc()
                raise ApiError(403, "PermissionDenied", why)

    def require_full_admin(self, session: Session, what: str) -> None:
        if not self.engine.ceiling(session.identity).full_admin:
            self.metrics.denied.inc()
            raise ApiError(403, "PermissionDenied", f"{what} needs every capability on /* for every rule type")

    # --- writes --------------------------------------------------------------------------------------

    async def write(
        self, check: Callable[[], None], persist: Callable[[], Any], apply: Callable[[], Any], event: AuditEvent
    ) -> Any:
        """Check against memory, persist in one transaction with its audit ``event``, apply to the engine;
        under the state's lock."""
        async with self.state.lock:
            check()
            result = await run_in_threadpool(self.audited_call, event, persist)
            self.audit.export(event)
            try:
                apply()
            except Exception:  # the store has it: rebuild memory from the store rather than diverge
                log.exception("applying a committed change failed; reloading the model from the store")
                self.load()
            return result

    async def write_store(self, persist: Callable[[], Any], event: AuditEvent) -> Any:
        """A write with nothing in memory to change (an item): persisted with its ``event`` under the same lock."""
        async with self.state.lock:
            result = await run_in_threadpool(self.audited_call, event, persist)
            self.audit.export(event)
            return result

    def audited_call(self, event: AuditEvent, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)``, its store write storing ``event`` in its transaction (``Store.audited``)."""
        with self.store.audited(event):
            result = work(*args)
        self.committed()
        return result

    # --- workers of one server (see :mod:`.workers`) ------------------------------------------------

    def committed(self) -> None:
        """A write committed (and is not answered yet): the other workers catch up before their next answer.
        Thread-safe. A new token needs none: a worker looks up a token it does not hold in the store."""
        if self.worker is not None:
            self.worker.mark.bump()

    def behind(self) -> bool:
        """Has any worker committed a write this one may not have applied?"""
        return self.worker is not None and self.worker.mark.read() != self._marked

    async def catch_up_with_writes(self) -> None:
        """Applies the change feed up to the writes counted now: what a request waits for when :meth:`behind`."""
        assert self.worker is not None and self.follower is not None
        async with self._catching_up:  # one read of the feed at a time; those waiting may find it done
            mark = self.worker.mark.read()  # before the feed: the feed then holds every write counted
            if mark == self._marked:
                return
            try:
                await self.follower.catch_up()
            except ChangesLost:
                await self.reload()
            self._marked = mark

    def check_login_rate(self, source_ip: str | None) -> None:
        """429 TooManyRequests for an address whose refused logins emptied its bucket (:mod:`.login_limit`)."""
        if source_ip is None:  # a Unix socket's peer: the proxy in front knows the address, and limits
            return
        wait = self.failed_logins.retry_after(source_ip, time.monotonic())
        if wait is not None:
            self.metrics.login_failures.labels("rate_limited").inc()
            self.refusals.count(source_ip, "rate_limited", time.time())
            raise too_many("TooManyRequests", f"too many refused logins from this address; try again in {wait} s", wait)

    def login_refused(self, source_ip: str | None) -> None:
        if source_ip is not None and self.failed_logins.refused(source_ip, time.monotonic()):
            retry = self.failed_logins.retry_after(source_ip, time.monotonic())
            self.audit.write("login-limited", source_ip=source_ip, retry_after=retry)

    def refusal_counted(self, source_ip: str | None, reason: str) -> bool:
        """True when ``source_ip`` is limited: its refusal is counted for the interval's line, not logged alone."""
        if source_ip is None or not self.failed_logins.limited(source_ip):
            return False
        self.refusals.count(source_ip, reason, time.time())
        return True

    def audit_refusals(self) -> None:
        """One audit line per (client, reason) counted by :meth:`refusal_counted` and the 429s since the last."""
        for client, reason, count, first, last in self.refusals.drain():
            self.audit.write(
                "login",
                outcome="failure",
                reason=reason,
                source_ip=None if client == "*" else client,
                count=count,
                first=round(first, 3),
                last=round(last, 3),
            )

    def event(self, session: Session, event: str, **fields: Any) -> AuditEvent:
        """The audit event of a change ``session`` makes, to store with it (:meth:`write`)."""
        identity = session.identity
        return self.audit.event(event, access_id=identity.access_id, caller=caller_name(identity), **fields)

    def audited(self, session: Session, event: str, **fields: Any) -> None:
        """An event with no change to store with (a read, a decision): appended at once."""
        self.audit.export(self.event(session, event, **fields))

    # --- item values ---------------------------------------------------------------------------------

    def bind_legacy_items(self) -> bool:
        """Re-encrypts, in one transaction, the values stored before they were bound to their item's id and
        version (``secret_box``); True when none is left. Only when every one decrypts: a node with another
        master key must never make the right key's values unreadable."""
        if self.store.get_meta(ITEMS_BOUND_META):
            return True
        rewritten = []
        for item in self.store.list_items():
            try:
                value = self.box.decrypt(item, item.nonce, item.ciphertext, legacy=True)
            except SecretBoxError:
                log.error("item values are not re-encrypted: %s does not decrypt under this master key", item.name)
                return False
            nonce, ciphertext = self.box.encrypt(item, value)
            rewritten.append(replace(item, nonce=nonce, ciphertext=ciphertext))
        with self.store.batch():
            self.store.rewrite_items(rewritten)
            self.store.set_meta(ITEMS_BOUND_META, str(int(time.time())))
        if rewritten:
            log.info("re-encrypted %d item values, bound to their item id and version", len(rewritten))
        return True


def caller_name(identity: Identity) -> str:
    """Who a caller is, for the audit log."""
    return identity.arn or f"{identity.principal_type}:{identity.access_id}"


def bootstrap(store: Store, key_check: str) -> dict[str, str] | None:
    """On an empty store: an admin access-key auth method and an admin role with every capability on every
    path of every rule type, and the master key's ``key_check`` (``secret_box``). Returns ``{"access_id",
    "access_key"}`` once; None when already initialized."""
    access_id = new_access_id()
    key = new_access_key()
    am = AuthMethod(name=ADMIN, access_id=access_id, type=ACCESS_KEY)
    every = ["read", "create", "update", "delete", "list"]
    with store.batch():
        if store.get_meta(INITIALIZED_META):
            return None
        store.add_auth_method(am, access_key_hash(key))
        store.add_role(ADMIN, "administrators: every capability on every path")
        store.add_association(Association(new_assoc_id(), ADMIN, access_id, ()))
        for rule_type in RuleType:
            store.set_rule(ADMIN, RoleRule.parse(rule_type, "/*", every))
        store.set_meta(KEY_CHECK_META, key_check)
        store.set_meta(INITIALIZED_META, str(int(time.time())))
    return {"access_id": access_id, "access_key": key}


def reset_admin(store: Store, audit: AuditLog, operator: str) -> tuple[dict[str, str], int]:
    """A new access key for ``/admin``, when its key is lost: the old key is refused and the tokens issued with
    it are revoked from the commit on (on every node, through the change feed), audited as ``reset-admin``
    with ``operator`` (who ran it, where). Returns ``{"access_id", "access_key"}`` (the key shown this once)
    and how many tokens were revoked."""
    am = store.get_auth_method(ADMIN)
    if am is None or am.type != ACCESS_KEY:  # /admin cannot be deleted or replaced: a store edited by hand
        raise StoreError(f"this store has no access-key auth method {ADMIN}: there is no admin key to reset")
    key = new_access_key()
    event = audit.event("reset-admin", name=ADMIN, access_id=am.access_id, caller=operator)
    with store.audited(event):
        revoked = store.replace_access_key(am.access_id, access_key_hash(key))
    audit.export(event)
    return {"access_id": am.access_id, "access_key": key}, revoked
