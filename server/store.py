"""Persistence: the storage interface every backend implements, and the types and codecs they share.

The server keeps the access model in memory (an :class:`cedarkey.engine.Engine`) and persists every change
through a :class:`Store` before applying it. The interface is synchronous: the HTTP layer serializes writes
under one asyncio lock and runs them in a worker thread. A backend must nevertheless be safe to call from
several threads, and several processes may open the same database.

Contract of every backend:

- every write method is one transaction: it either happens entirely or not at all;
- a write that returned is durable (it survives the process being killed right after);
- a name (or id) already taken raises :class:`cedarkey.engine.AlreadyExists`, anything missing raises
  :class:`cedarkey.engine.NotFound`, both with the API field that was wrong (``name``, ``role-name``,
  ``access-id``, ``assoc-id``, ``path``...); a database that does not answer (locked, I/O error, closed
  store) raises :class:`StoreUnavailable`; other failures (a database from a newer cedarkey, a failed
  migration, a corrupt file) raise :class:`StoreError`, of which StoreUnavailable is a kind;
- only hashes of tokens and access keys are stored, and items only as ciphertext (see ``secret_box``);
- an audit event given with :meth:`Store.audited` is stored in the transaction of the write it records: a
  committed change has its audit record, a change rolled back has none.

Model objects are stored through the codecs below (shared, so that every backend writes the same JSON):
lists and tuples become JSON arrays, and loading gives back objects equal to the ones stored.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import orjson
from cedarkey.engine import AccessRole, Association, AuthMethod, Capability, RoleRule
from cedarkey.engine.access_role import SubClaims

#: The item type of a static secret (the only type so far).
STATIC_SECRET = "static-secret"  # noqa: S105


def new_item_id() -> str:
    return secrets.token_hex(8)


#: The columns of an auth method kept outside its JSON ``config``.
_AM_KEY_FIELDS = ("name", "access_id", "type")


class StoreError(RuntimeError):
    """The store cannot do its job: not a cedarkey database, from a newer version, a failed migration..."""


class StoreUnavailable(StoreError):
    """The database did not answer: locked past the busy timeout, an I/O error, a full disk, a closed store.

    Likely transient; the write did not happen. The HTTP layer answers 503.
    """


class SchemaVersionError(StoreError):
    """The database was written by a newer cedarkey (its schema version is ahead of this code's)."""


@dataclass(frozen=True)
class Snapshot:
    """Everything :meth:`cedarkey.engine.Engine.load` needs, in creation order.

    ``roles`` carry only their name and description: their associations and rules are in ``associations``
    and ``rules`` (``(role name, rule)`` pairs).
    """

    auth_methods: list[AuthMethod]
    roles: list[AccessRole]
    associations: list[Association]
    rules: list[tuple[str, RoleRule]]


#: Versions an item keeps unless it says otherwise, and the most it may keep.
DEFAULT_MAX_VERSIONS = 10
MAX_VERSIONS = 100


@dataclass(frozen=True)
class StoredItem:
    """An item at rest: its value is ``ciphertext`` (AES-256-GCM under ``nonce``), never plaintext.

    ``item_id`` is random, given at creation: with the name and the version it is what the ciphertext is
    bound to (see ``secret_box``), so a value copied from another item, an older version, or an item of the
    same name deleted before, does not decrypt."""

    name: str
    item_type: str
    ciphertext: bytes
    nonce: bytes
    created_at: float
    updated_at: float
    version: int = 1
    description: str = ""
    item_id: str = ""
    #: How many versions are kept, this one included (an update that keeps the previous one drops the oldest).
    max_versions: int = DEFAULT_MAX_VERSIONS
    #: Who wrote this version (the caller's name), for ``describe-item``.
    updated_by: str = ""


@dataclass(frozen=True)
class StoredVersion:
    """An earlier version of an item kept beside its latest: its value is ciphertext bound to the item's id,
    name and this version number, as the latest's is."""

    version: int
    ciphertext: bytes
    nonce: bytes
    created_at: float
    created_by: str = ""


@dataclass(frozen=True)
class StoredToken:
    """An issued token, by the hash of its value; ``identity`` is the JSON attributes of its Identity."""

    token_hash: bytes
    access_id: str
    identity: dict[str, Any]
    issued_at: float
    expires_at: float


@dataclass
class AuditEvent:
    """An audit record bound for the log, stored in the transaction of the change it records (``Store.audited``).

    ``fields`` are its JSON object's (``time`` among them); ``node`` names the node whose log exports it;
    ``id`` is its row's, set once that transaction committed (None while not, or when nothing was written).
    """

    node: str
    fields: dict[str, Any]
    id: int | None = None

    @property
    def at(self) -> float:
        return float(self.fields["time"])

    def record(self) -> str:
        return orjson.dumps(self.fields, default=str).decode()


@runtime_checkable
class Store(Protocol):
    """The storage interface. See the module documentation for the contract every method keeps."""

    def load(self) -> Snapshot:
        """The whole access model, read in one consistent snapshot."""
        ...

    def batch(self) -> AbstractContextManager[Store]:
        """A context in which every call on the store (from this thread) is one transaction, all or none:
        ``with store.batch(): store.add_role(...); store.set_rule(...)``."""
        ...

    # --- auth methods ----------------------------------------------------------------------------------

    def add_auth_method(self, am: AuthMethod, access_key_hash: bytes | None = None) -> None:
        """AlreadyExists(``name``) or AlreadyExists(``access-id``) when taken."""
        ...

    def update_auth_method(self, am: AuthMethod) -> None:
        """Replaces the auth method named ``am.name``; its access id, type and key hash stay.

        NotFound(``name``) when missing; ModelError(``name``) when ``am`` changes the access id or type.
        """
        ...

    def delete_auth_method(self, name: str) -> None:
        """Deletes the auth method, its associations and its tokens. NotFound(``name``) when missing."""
        ...

    def access_key_hash(self, access_id: str) -> bytes | None:
        """The stored access key hash of that auth method; None when there is none (or no such method)."""
        ...

    def replace_access_key(self, access_id: str, access_key_hash: bytes) -> int:
        """The access-key auth method's key is from now on the one of ``access_key_hash``, and its live tokens
        are revoked, in one transaction; returns how many were. NotFound(``access-id``) when no access-key
        auth method has it."""
        ...

    # --- roles -----------------------------------------------------------------------------------------

    def add_role(self, name: str, description: str) -> None:
        """AlreadyExists(``name``) when taken."""
        ...

    def update_role(self, name: str, description: str) -> None:
        """Replaces the role's description. NotFound(``name``) when missing."""
        ...

    def delete_role(self, name: str) -> None:
        """Deletes the role, its associations and its rules. NotFound(``name``) when missing."""
        ...

    def add_association(self, assoc: Association) -> None:
        """NotFound(``role-name``) / NotFound(``access-id``) when the role / auth method is missing;
        AlreadyExists(``assoc-id``) when the id is taken; AlreadyExists(``am-name``) when the role already
        has an association to that auth method with the same sub-claims."""
        ...

    def delete_association(self, assoc_id: str) -> None:
        """NotFound(``assoc-id``) when missing."""
        ...

    def set_rule(self, role_name: str, rule: RoleRule) -> None:
        """Inserts or replaces the role's rule on (rule type, path). NotFound(``role-name``)."""
        ...

    def delete_rule(self, role_name: str, rule_type: str, path: str) -> None:
        """NotFound(``role-name``) when the role is missing, NotFound(``path``) when the rule is."""
        ...

    # --- items -----------------------------------------------------------------------------------------

    def add_item(self, item: StoredItem) -> None:
        """Stores the item as given (its version included). AlreadyExists(``name``) when taken."""
        ...

    def update_item(
        self,
        name: str,
        ciphertext: bytes,
        nonce: bytes,
        updated_at: float,
        *,
        version: int | None = None,
        description: str | None = None,
        keep_previous: bool = False,
        max_versions: int | None = None,
        updated_by: str = "",
    ) -> StoredItem:
        """Stores a new latest value, the version bumped by one, and returns the item as now stored.

        ``version``: the version the new value is, which must be the current one plus one, else
        VersionConflict(``name``) and nothing is written (how a value encrypted for its version is stored);
        None: the next one, whatever it is. ``description`` None keeps the current one. ``keep_previous``: the
        value it replaces is kept as an earlier version (else it is gone); then the earlier versions beyond
        the item's ``max_versions`` (``max_versions`` sets it anew), oldest first, are dropped. NotFound(``name``)
        when missing.
        """
        ...

    def item_versions(self, name: str) -> list[StoredVersion]:
        """The earlier versions the item keeps, newest first (the latest is the item itself). NotFound(``name``)."""
        ...

    def get_item_version(self, name: str, version: int) -> StoredItem:
        """The item as it was at ``version`` (its ciphertext, nonce, time and writer then), the latest or a kept
        one. NotFound(``name``) for no such item, NotFound(``version``) for no such version of it."""
        ...

    def delete_item_version(self, name: str, version: int) -> None:
        """Deletes one kept earlier version. NotFound(``name``) or NotFound(``version``); VersionConflict(``version``)
        for the latest (an item always has one: roll back to another first, or delete the item)."""
        ...

    def rewrite_items(self, items: Sequence[StoredItem]) -> None:
        """Replaces the ciphertext and nonce of each item at its version (re-encryption), in one transaction.

        VersionConflict(``name``) when an item is missing or at another version: then nothing is written."""
        ...

    def get_item(self, name: str) -> StoredItem:
        """NotFound(``name``) when missing."""
        ...

    def delete_item(self, name: str) -> None:
        """Deletes the item and every version it keeps. NotFound(``name``) when missing."""
        ...

    def list_items(self) -> list[StoredItem]:
        """Every item, ordered by name (ciphertext included)."""
        ...

    # --- tokens (only their hashes) --------------------------------------------------------------------

    def add_token(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool:
        """Stores the token; True. With ``proof`` = (key, expires_at, now), the login proof it was issued for
        is claimed in the same transaction (as ``claim_proof``): when it was claimed already, nothing is
        written and the answer is False. NotFound(``access-id``) when the auth method is gone;
        AlreadyExists(``token``) on a hash clash."""
        ...

    def add_token_now(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool | None:
        """``add_token`` when it can be done at once on the calling thread (the event loop's) without waiting
        for a lock, the network or the disk; None when it cannot, and then nothing was written."""
        ...

    def revoke_token(self, token_hash: bytes) -> bool:
        """Marks the token revoked; True when it existed and was not revoked already."""
        ...

    def renew_token(self, token_hash: bytes, expires_at: float, now: float) -> bool:
        """The token expires at ``expires_at`` from now on; True when it was live at ``now`` (neither revoked
        nor expired: a dead token is never brought back), else nothing is written."""
        ...

    def load_tokens(self, now: float) -> list[StoredToken]:
        """The tokens neither revoked nor expired (``expires_at > now``), by issue time."""
        ...

    def purge_expired(self, now: float) -> int:
        """Deletes tokens expired at ``now`` (revoked or not) and expired login proofs.

        Returns the number of tokens deleted.
        """
        ...

    # --- single-use login proofs -----------------------------------------------------------------------

    def claim_proof(self, key: bytes, expires_at: float, now: float) -> bool:
        """Records a login proof as used, atomically: False when it is already recorded and unexpired.

        Prunes the proofs expired at ``now`` in the same transaction (so an expired key can be claimed again).
        """
        ...

    # --- audit records ---------------------------------------------------------------------------------

    def audited(self, event: AuditEvent) -> AbstractContextManager[AuditEvent]:
        """Inside the block, the first write transaction of this thread that changes a row (in a batch: the
        batch's) also stores ``event``, all or nothing with it; ``event.id`` is set once it committed."""
        ...

    def audit_events(self, node: str, after: int, limit: int = 1000) -> list[tuple[int, str]]:
        """The stored audit records of ``node`` with an id above ``after``, ``(id, record)`` in id order."""
        ...

    def prune_audit_events(self, node: str, through: int, before: float) -> int:
        """Deletes the audit records of ``node`` with an id up to ``through`` stored before ``before`` (epoch
        seconds); returns how many."""
        ...

    # --- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # --- change feed (see below) -----------------------------------------------------------------------

    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """The changes with a seq above ``seq``, in seq order, at most ``limit`` of them."""
        ...

    def latest_change(self) -> int:
        """The highest seq committed so far (0 when there is none)."""
        ...

    def change_horizon(self) -> int:
        """The highest seq pruned so far (0 when none was): changes at or below it may be gone."""
        ...

    def prune_changes(self, older_than: float | None = None) -> int:
        """Deletes the changes older than ``older_than`` seconds (the store's retention when None).

        Stores do it by themselves from time to time; returns the number of rows deleted.
        """
        ...

    def get_auth_method(self, name: str) -> AuthMethod | None: ...

    def get_role(self, name: str) -> AccessRole | None:
        """The role with its name and description only (its associations and rules are separate keys)."""
        ...

    def get_association(self, assoc_id: str) -> Association | None: ...

    def get_rule(self, role_name: str, rule_type: str, path: str) -> RoleRule | None: ...

    def get_token(self, token_hash: bytes, now: float | None = None) -> StoredToken | None:
        """The token when it is stored, not revoked and not expired at ``now`` (default: the current time)."""
        ...

    def live_tokens(self, token_hashes: Sequence[bytes], now: float) -> set[bytes]:
        """Those of ``token_hashes`` that are stored, not revoked and not expired at ``now`` (one read: how a
        node following the change feed checks the tokens it already holds)."""
        ...

    def listen(
        self, callback: Callable[[int | None], None], stop: threading.Event, *, poll_interval: float = 1.0
    ) -> None:
        """Calls ``callback(seq)`` when a change commits, until ``stop`` is set (checked every ``poll_interval``).

        ``callback(None)`` means "changes may have been missed" (first call, and after each reconnection):
        catch up with ``changes_since``. Blocks: run it in a thread of its own. An exception from the callback
        ends the loop and propagates.
        """
        ...

    def close(self) -> None:
        """Releases the database; later calls raise StoreError. Closing twice is harmless."""
        ...


# --- codecs shared by the backends -------------------------------------------------------------------------


def dumps(value: object) -> str:
    """Compact, deterministic JSON (equal values give equal text, so it can sit in a UNIQUE column)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def auth_method_config(am: AuthMethod) -> str:
    """The JSON of every auth method field but name, access id and type (tuples as arrays)."""
    config: dict[str, Any] = {}
    for f in fields(am):
        if f.name in _AM_KEY_FIELDS:
            continue
        value = getattr(am, f.name)
        config[f.name] = list(value) if isinstance(value, tuple) else value
    return dumps(config)


def auth_method_from_row(name: str, access_id: str, am_type: str, config: str) -> AuthMethod:
    values: dict[str, Any] = json.loads(config)
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return AuthMethod(name=name, access_id=access_id, type=am_type, **values)


def sub_claims_json(sub_claims: SubClaims) -> str:
    """Sub-claims as an array of ``[attribute, [pattern, ...]]``, in their order."""
    return dumps([[attribute, list(patterns)] for attribute, patterns in sub_claims])


def sub_claims_from_json(text: str) -> SubClaims:
    return tuple((attribute, tuple(patterns)) for attribute, patterns in json.loads(text))


def capabilities_json(capabilities: frozenset[Capability]) -> str:
    return dumps([str(c) for c in Capability if c in capabilities])


def rule_from_row(rule_type: str, path: str, capabilities: str) -> RoleRule:
    return RoleRule.parse(rule_type, path, json.loads(capabilities))


def identity_json(identity: dict[str, Any]) -> str:
    return dumps(identity)


def identity_from_json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError("a stored token's identity is not a JSON object")
    return value


# --- change feed (several nodes sharing one database) ------------------------------------------------------
#
# Every write that changes the access model or the tokens also records, in the same transaction, one row per
# key whose stored state it changed: ``changes(seq, kind, key, at)``. The rows a delete cascades to are recorded
# too (deleting a role records its associations and rules, deleting an auth method its associations and live
# tokens), children before their parent. Items and meta are not in the feed.
#
# A change says "the stored state of this key changed", not what changed: a consumer (another node) applies it
# by reading the key's current state with the ``get_*`` methods below (None: it is gone) and reconciling its
# memory with it. Applying a change twice, or late, is therefore harmless, and a consumer that has seen every
# key changed since its snapshot converges to the database's state.
#
# Catching up: remember the highest ``seq`` applied; on wake-up (a notification, a timer, a reconnection) read
# ``changes_since(last_seen - window)`` and skip the seqs already applied (:class:`ChangeCursor` does exactly
# that). Sequence numbers are allocated before their transaction commits, so were writers free to commit in
# any order a lower seq could become visible after a higher one: re-scanning a small window below the last seq
# seen catches it. Both backends do make seqs visible in order (SQLite's write lock; a lock PostgreSQL writers
# hold from their change rows to their commit), so the window is insurance, cheap. Old rows are pruned (after
# an hour by default); a consumer whose ``last_seen`` is below :meth:`Store.change_horizon` may have
# missed pruned changes and must reload everything (``load()``, ``load_tokens()``), then follow on from the
# ``latest_change()`` read before the reload.
#
# A follower node, in short (``listen`` wakes it up; a timer too, should a notification connection die silently):
#
#     start = store.latest_change()               # before the snapshot: what happens meanwhile is replayed
#     snapshot, tokens = store.load(), store.load_tokens(time.time())
#     cursor = ChangeCursor(store, start)
#     wake = threading.Event()
#     threading.Thread(target=store.listen, args=(lambda seq: wake.set(), stop), daemon=True).start()
#     while not stop.is_set():
#         wake.wait(30)
#         wake.clear()
#         try:
#             changes = cursor.poll()
#         except ChangesLost:
#             ...reload as at the start, with a new cursor...
#         for change in changes:
#             ...read change.key with the get_* method of change.kind, and add, replace or drop it in memory...


class Kind(StrEnum):
    """What a change row's key names."""

    AUTH_METHOD = "auth-method"  # key: its name
    ROLE = "role"  # key: its name
    ASSOCIATION = "association"  # key: its assoc id
    RULE = "rule"  # key: (role name, rule type, path)
    TOKEN = "token"  # noqa: S105 -- key: the token hash in lower-case hex
    META = "meta"  # key: the meta key (e.g. the authors' Cedar files)


#: The meta key holding the highest change seq pruned so far.
CHANGES_PRUNED_META = "cedarkey.changes-pruned-through"

#: How long change rows are kept (seconds) unless a backend is told otherwise.
DEFAULT_CHANGE_RETENTION = 3600.0

ChangeKey = str | tuple[str, str, str]


@dataclass(frozen=True)
class Change:
    """One change row: the stored state of ``key`` (of kind ``kind``) changed, in a transaction committed at
    about ``at`` (seconds since the epoch)."""

    seq: int
    kind: str
    key: ChangeKey
    at: float


class ChangesLost(StoreError):
    """Changes a consumer has not applied yet were pruned: reload everything, then follow on."""


def change_key_json(kind: str, key: ChangeKey) -> str:
    """A change key as stored: a JSON string, or for a rule a JSON array ``[role name, rule type, path]``."""
    if kind == Kind.RULE:
        if not (isinstance(key, tuple) and len(key) == 3):
            raise ValueError("a rule change key is (role name, rule type, path)")
        return dumps([str(part) for part in key])
    if not isinstance(key, str):
        raise ValueError(f"a {kind} change key is a string")
    return dumps(key)


def change_from_row(seq: int, kind: str, key: str, at: float) -> Change:
    value = json.loads(key)
    if isinstance(value, list):
        role_name, rule_type, path = value
        return Change(int(seq), kind, (role_name, rule_type, path), float(at))
    return Change(int(seq), kind, str(value), float(at))


class ChangeCursor:
    """Follows a change feed: each :meth:`poll` returns the changes it has not returned yet, in seq order.

    ``after`` is a seq whose changes the consumer already has, typically the ``latest_change()`` read just
    before ``load()``. Every poll re-reads the ``window`` seqs below the highest one returned and skips those
    already returned, so that a change whose seq committed after a higher one is still delivered (the changes
    in the window below ``after`` are delivered once too: applying them again is harmless). Not thread-safe.
    """

    def __init__(self, feed: Store, after: int, *, window: int = 100, page: int = 1000) -> None:
        if window < 0 or page < 1:
            raise ValueError("window >= 0 and page >= 1")
        self.feed = feed
        self.window = window
        self.page = page
        #: The highest seq returned (or ``after``).
        self.position = after
        self._floor = max(0, after - window)  # seqs at or below it are never returned
        self._seen: set[int] = set()

    def poll(self) -> list[Change]:
        """The new changes. Raises :class:`ChangesLost` when some may have been pruned before being read."""
        if self.feed.change_horizon() > self.position:
            raise ChangesLost(
                f"changes after seq {self.position} were pruned before this consumer read them: reload everything"
            )
        out: list[Change] = []
        start = max(self._floor, self.position - self.window)
        while True:
            rows = self.feed.changes_since(start, self.page)
            for change in rows:
                if change.seq > self._floor and change.seq not in self._seen:
                    self._seen.add(change.seq)
                    out.append(change)
            if len(rows) < self.page:
                break
            start = rows[-1].seq
        out.sort(key=lambda c: c.seq)
        if out:
            self.position = max(self.position, out[-1].seq)
        self._floor = max(self._floor, self.position - self.window)
        self._seen = {seq for seq in self._seen if seq > self._floor}
        return out
