"""The SQLite backend of :class:`cedarkey.server.store.Store`.

One connection per :class:`SqliteStore`, guarded by a lock, so one store may be shared by threads; several
stores (in several processes too) may open the same file: SQLite's write lock, taken up front by
``BEGIN IMMEDIATE`` and waited for up to ``busy_timeout``, serializes their writes, so no update is lost.

- WAL journal, ``synchronous=FULL``: a write that returned has been fsynced and survives a crash of the
  process (and of the machine);
- foreign keys on: associations, rules and tokens cannot outlive what they belong to;
- the schema is versioned: :data:`MIGRATIONS` is an ordered list of SQL scripts, script *n* bringing the
  database to version *n*; each is applied in a transaction of its own and recorded in ``schema_version``.
  Opening an up-to-date database applies nothing; a database from a newer cedarkey is refused.
- the change feed (:class:`cedarkey.server.store.ChangeFeed`, schema version 2): each write of the model or of
  the tokens records its change rows in its own transaction; :meth:`SqliteStore.listen` polls.

The database file is created with mode 0600 (its WAL and shared-memory files inherit that mode): it holds
ciphertext and hashes, never plaintext secrets or tokens, but it is nobody else's business either.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

from cedarkey.engine import (
    AccessRole,
    AlreadyExists,
    Association,
    AuthMethod,
    ModelError,
    NotFound,
    RoleRule,
    VersionConflict,
)
from cedarkey.engine.errors import shown

from .store import (
    CHANGE_ASSOCIATION,
    CHANGE_AUTH_METHOD,
    CHANGE_META,
    CHANGE_ROLE,
    CHANGE_RULE,
    CHANGE_TOKEN,
    CHANGES_PRUNED_META,
    DEFAULT_CHANGE_RETENTION,
    Change,
    ChangeKey,
    SchemaVersionError,
    Snapshot,
    StoredItem,
    StoredToken,
    StoreError,
    StoreUnavailable,
    auth_method_config,
    auth_method_from_row,
    capabilities_json,
    change_from_row,
    change_key_json,
    identity_from_json,
    identity_json,
    rule_from_row,
    sub_claims_from_json,
    sub_claims_json,
)

log = logging.getLogger("cedarkey.store")

DEFAULT_BUSY_TIMEOUT = 10.0
#: Seconds between the checkpointer thread's passive WAL checkpoints.
CHECKPOINT_INTERVAL = 1.0

#: Migration *n* (1-based) brings the schema to version *n*. Append only: never edit a released script.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_version (
        version     INTEGER PRIMARY KEY,
        applied_at  REAL NOT NULL
    );
    CREATE TABLE auth_methods (
        name             TEXT PRIMARY KEY,
        access_id        TEXT NOT NULL UNIQUE,
        type             TEXT NOT NULL,
        config           TEXT NOT NULL,
        access_key_hash  BLOB
    );
    CREATE TABLE roles (
        name         TEXT PRIMARY KEY,
        description  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE associations (
        assoc_id    TEXT PRIMARY KEY,
        role_name   TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
        access_id   TEXT NOT NULL REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        sub_claims  TEXT NOT NULL,
        UNIQUE (role_name, access_id, sub_claims)
    );
    CREATE INDEX associations_access_id ON associations (access_id);
    CREATE TABLE rules (
        role_name     TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
        rule_type     TEXT NOT NULL,
        path          TEXT NOT NULL,
        capabilities  TEXT NOT NULL,
        PRIMARY KEY (role_name, rule_type, path)
    );
    CREATE TABLE items (
        name         TEXT PRIMARY KEY,
        item_type    TEXT NOT NULL,
        ciphertext   BLOB NOT NULL,
        nonce        BLOB NOT NULL,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL,
        version      INTEGER NOT NULL,
        description  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE tokens (
        token_hash  BLOB PRIMARY KEY,
        access_id   TEXT NOT NULL REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        identity    TEXT NOT NULL,
        issued_at   REAL NOT NULL,
        expires_at  REAL NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tokens_access_id ON tokens (access_id);
    CREATE INDEX tokens_expires_at ON tokens (expires_at);
    CREATE TABLE login_proofs (
        proof_key   BLOB PRIMARY KEY,
        expires_at  REAL NOT NULL
    );
    CREATE INDEX login_proofs_expires_at ON login_proofs (expires_at);
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
    # 2: the change feed (see cedarkey.server.store). AUTOINCREMENT: a seq is never reused, even once pruned.
    """
    CREATE TABLE changes (
        seq   INTEGER PRIMARY KEY AUTOINCREMENT,
        kind  TEXT NOT NULL,
        key   TEXT NOT NULL,
        at    REAL NOT NULL
    );
    CREATE INDEX changes_at ON changes (at);
    """,
    # 3: items get a random id, bound into their ciphertext with the version (see cedarkey.server.secret_box).
    """
    ALTER TABLE items ADD COLUMN item_id TEXT NOT NULL DEFAULT '';
    UPDATE items SET item_id = lower(hex(randomblob(8))) WHERE item_id = '';
    """,
)

_CLAIM_PROOF = (
    "INSERT INTO login_proofs (proof_key, expires_at) VALUES (?, ?) ON CONFLICT (proof_key) "
    "DO UPDATE SET expires_at = excluded.expires_at WHERE login_proofs.expires_at <= ?"
)
_SELECT_ITEMS = (
    "SELECT name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id FROM items"
)


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script (``executescript`` would commit: migrations run in a transaction)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(ln for ln in buffer.splitlines() if not ln.strip().startswith("--")).strip()
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:60]!r}")
    return statements


class SqliteStore:
    """A :class:`~cedarkey.server.store.Store` in one SQLite file (``":memory:"`` works too, for tests).

    ``migrations`` exists for the migration tests; the server never passes it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        migrations: Sequence[str] = MIGRATIONS,
        change_retention: float = DEFAULT_CHANGE_RETENTION,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.path = str(path)
        self.change_retention = change_retention
        # Change rows are recorded when the schema has the table (a store opened with older test migrations
        # has none); pruning happens at most once a minute, inside a write.
        self._has_changes = False
        self._next_prune = 0.0
        self._lock = threading.RLock()
        self._checkpointer: _Checkpointer | None = None
        # The connection add_token_now writes on (none for an in-memory database: it has one connection).
        self._fast_conn: sqlite3.Connection | None = None
        # The cursor of the transaction batch() holds open (only ever seen by the thread holding _lock).
        self._batch_cursor: sqlite3.Cursor | None = None
        self._migrations = tuple(migrations)
        #: The schema versions this open applied (empty when the database was up to date).
        self.applied_migrations: list[int] = []
        in_memory = self.path == ":memory:"
        if not in_memory:
            _create_private(Path(self.path))
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if not in_memory:
                mode = _enable_wal(conn, time.monotonic() + busy_timeout)
                if mode != "wal":
                    raise StoreError(f"{self.path}: SQLite refused WAL mode (journal mode is {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                raise StoreError("this SQLite build does not enforce foreign keys")
            self._migrate()
            with self._read() as cur:
                self._has_changes = self._exists(
                    cur, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'changes'"
                )
            if not in_memory:
                self._fast_conn = _fast_connection(self.path)
                self._checkpointer = _Checkpointer(self.path, checkpoint_interval)
        except sqlite3.Error as exc:
            conn.close()
            self._conn = None
            raise StoreError(f"cannot use the database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            self._conn = None
            raise

    # --- plumbing --------------------------------------------------------------------------------------

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._lock:
            if self._fast_conn is not None:
                self._fast_conn.close()
                self._fast_conn = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _transaction(self, begin: str, synchronous: str = "FULL") -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._batch_cursor is not None:  # inside batch(): part of its transaction
                yield self._batch_cursor
                return
            if self._conn is None:
                raise StoreUnavailable("the store is closed")
            if synchronous != "FULL":
                try:
                    self._conn.execute(f"PRAGMA synchronous = {_SYNC_MODES[synchronous]}")
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"database unavailable: {exc}") from exc
            try:
                with self._open_transaction(begin) as cur:
                    yield cur
            finally:
                if synchronous != "FULL" and self._conn is not None:
                    with suppress(sqlite3.Error):
                        self._conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _open_transaction(self, begin: str, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Cursor]:
        """A transaction on ``conn`` (the store's connection by default): committed when the block ends,
        rolled back when it raises; SQLite errors become StoreUnavailable or StoreError."""
        conn = conn or self._conn
        assert conn is not None
        cur = conn.cursor()
        try:
            cur.execute(begin)
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if _error_code(exc) in _UNAVAILABLE_CODES:
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            raise StoreError(f"database error: {exc}") from exc
        finally:
            cur.close()

    @contextmanager
    def batch(self) -> Iterator[SqliteStore]:
        """Every store call made inside (from this thread) is one transaction: all of them or none."""
        with self._write() as cur:
            self._batch_cursor = cur
            try:
                yield self
            finally:
                self._batch_cursor = None

    def _write(self, synchronous: str = "FULL") -> AbstractContextManager[sqlite3.Cursor]:
        """One write transaction; it holds the database's write lock from its first statement."""
        return self._transaction("BEGIN IMMEDIATE", synchronous)

    def _read(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One read transaction: every query in it sees the same snapshot."""
        return self._transaction("BEGIN DEFERRED")

    @staticmethod
    def _exists(cur: sqlite3.Cursor, sql: str, *params: object) -> bool:
        return cur.execute(sql, params).fetchone() is not None

    def _changed(self, cur: sqlite3.Cursor, kind: str, *keys: ChangeKey) -> None:
        """Records change rows in the write transaction of ``cur`` (and prunes old ones now and then)."""
        if not self._has_changes or not keys:
            return
        at = time.time()
        cur.executemany(
            "INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)", [(kind, change_key_json(kind, k), at) for k in keys]
        )
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 60.0
            self._prune(cur, at - self.change_retention)

    @staticmethod
    def _prune(cur: sqlite3.Cursor, cutoff: float) -> int:
        row = cur.execute("SELECT max(seq), count(*) FROM changes WHERE at < ?", (cutoff,)).fetchone()
        if not row[1]:
            return 0
        cur.execute("DELETE FROM changes WHERE at < ?", (cutoff,))
        cur.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (CHANGES_PRUNED_META, str(row[0])),
        )
        return int(row[1])

    # --- schema ----------------------------------------------------------------------------------------

    @staticmethod
    def _schema_version(cur: sqlite3.Cursor) -> int:
        tables = {
            row[0]
            for row in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        if "schema_version" not in tables:
            if tables:
                raise StoreError("not a cedarkey database (it has tables but no schema_version)")
            return 0
        return int(cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])

    def _migrate(self) -> None:
        target = len(self._migrations)
        with self._read() as cur:
            current = self._schema_version(cur)
        if current > target:
            raise SchemaVersionError(
                f"the database {self.path} has schema version {current}, newer than the {target} this "
                "cedarkey knows: it was written by a newer cedarkey; upgrade cedarkey to open it"
            )
        for version in range(current + 1, target + 1):
            statements = split_statements(self._migrations[version - 1])
            try:
                with self._write() as cur:
                    # Another process may have migrated meanwhile: decide again under the write lock.
                    if self._schema_version(cur) >= version:
                        continue
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time())
                    )
            except StoreError as exc:
                raise StoreError(
                    f"{self.path}: migrating to schema version {version} failed (nothing of it applied): {exc}"
                ) from exc
            self.applied_migrations.append(version)

    def schema_version(self) -> int:
        with self._read() as cur:
            return self._schema_version(cur)

    # --- load ------------------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        with self._read() as cur:
            auth_methods = [
                auth_method_from_row(*row)
                for row in cur.execute("SELECT name, access_id, type, config FROM auth_methods ORDER BY rowid")
            ]
            roles = [
                AccessRole(name, description)
                for name, description in cur.execute("SELECT name, description FROM roles ORDER BY rowid")
            ]
            associations = [
                Association(assoc_id, role_name, access_id, sub_claims_from_json(sub_claims))
                for assoc_id, role_name, access_id, sub_claims in cur.execute(
                    "SELECT assoc_id, role_name, access_id, sub_claims FROM associations ORDER BY rowid"
                )
            ]
            rules = [
                (role_name, rule_from_row(rule_type, path, capabilities))
                for role_name, rule_type, path, capabilities in cur.execute(
                    "SELECT role_name, rule_type, path, capabilities FROM rules ORDER BY rowid"
                )
            ]
        return Snapshot(auth_methods, roles, associations, rules)

    # --- auth methods ----------------------------------------------------------------------------------

    def add_auth_method(self, am: AuthMethod, access_key_hash: bytes | None = None) -> None:
        with self._write() as cur:
            if self._exists(cur, "SELECT 1 FROM auth_methods WHERE name = ?", am.name):
                raise AlreadyExists("name", f"auth method {shown(am.name)} already exists")
            if self._exists(cur, "SELECT 1 FROM auth_methods WHERE access_id = ?", am.access_id):
                raise AlreadyExists("access-id", "access id already in use")
            cur.execute(
                "INSERT INTO auth_methods (name, access_id, type, config, access_key_hash) VALUES (?, ?, ?, ?, ?)",
                (am.name, am.access_id, am.type, auth_method_config(am), access_key_hash),
            )
            self._changed(cur, CHANGE_AUTH_METHOD, am.name)

    def update_auth_method(self, am: AuthMethod) -> None:
        with self._write() as cur:
            row = cur.execute("SELECT access_id, type FROM auth_methods WHERE name = ?", (am.name,)).fetchone()
            if row is None:
                raise NotFound("name", f"no auth method {shown(am.name)}")
            if tuple(row) != (am.access_id, am.type):
                raise ModelError("name", "an update keeps the auth method's access id and type")
            cur.execute("UPDATE auth_methods SET config = ? WHERE name = ?", (auth_method_config(am), am.name))
            self._changed(cur, CHANGE_AUTH_METHOD, am.name)

    def delete_auth_method(self, name: str) -> None:
        with self._write() as cur:
            row = cur.execute("SELECT access_id FROM auth_methods WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound("name", f"no auth method {shown(name)}")
            if self._has_changes:  # what the delete cascades to is in the change feed too
                tokens = cur.execute(
                    "SELECT token_hash FROM tokens WHERE access_id = ? AND revoked = 0 AND expires_at > ? "
                    "ORDER BY rowid",
                    (row[0], time.time()),
                ).fetchall()
                self._changed(cur, CHANGE_TOKEN, *(bytes(t[0]).hex() for t in tokens))
                assocs = cur.execute(
                    "SELECT assoc_id FROM associations WHERE access_id = ? ORDER BY rowid", (row[0],)
                ).fetchall()
                self._changed(cur, CHANGE_ASSOCIATION, *(a[0] for a in assocs))
            # The foreign keys cascade too; saying it here keeps the intent visible (and dialect-proof).
            cur.execute("DELETE FROM tokens WHERE access_id = ?", (row[0],))
            cur.execute("DELETE FROM associations WHERE access_id = ?", (row[0],))
            cur.execute("DELETE FROM auth_methods WHERE name = ?", (name,))
            self._changed(cur, CHANGE_AUTH_METHOD, name)

    def access_key_hash(self, access_id: str) -> bytes | None:
        with self._read() as cur:
            row = cur.execute("SELECT access_key_hash FROM auth_methods WHERE access_id = ?", (access_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # --- roles -----------------------------------------------------------------------------------------

    def add_role(self, name: str, description: str) -> None:
        with self._write() as cur:
            if self._exists(cur, "SELECT 1 FROM roles WHERE name = ?", name):
                raise AlreadyExists("name", f"access role {shown(name)} already exists")
            cur.execute("INSERT INTO roles (name, description) VALUES (?, ?)", (name, description))
            self._changed(cur, CHANGE_ROLE, name)

    def delete_role(self, name: str) -> None:
        with self._write() as cur:
            if not self._exists(cur, "SELECT 1 FROM roles WHERE name = ?", name):
                raise NotFound("name", f"no access role {shown(name)}")
            if self._has_changes:  # what the delete cascades to is in the change feed too
                assocs = cur.execute(
                    "SELECT assoc_id FROM associations WHERE role_name = ? ORDER BY rowid", (name,)
                ).fetchall()
                self._changed(cur, CHANGE_ASSOCIATION, *(a[0] for a in assocs))
                rules = cur.execute(
                    "SELECT rule_type, path FROM rules WHERE role_name = ? ORDER BY rowid", (name,)
                ).fetchall()
                self._changed(cur, CHANGE_RULE, *((name, rule_type, path) for rule_type, path in rules))
            cur.execute("DELETE FROM associations WHERE role_name = ?", (name,))
            cur.execute("DELETE FROM rules WHERE role_name = ?", (name,))
            cur.execute("DELETE FROM roles WHERE name = ?", (name,))
            self._changed(cur, CHANGE_ROLE, name)

    def add_association(self, assoc: Association) -> None:
        sub_claims = sub_claims_json(assoc.sub_claims)
        with self._write() as cur:
            if not self._exists(cur, "SELECT 1 FROM roles WHERE name = ?", assoc.role_name):
                raise NotFound("role-name", f"no access role {shown(assoc.role_name)}")
            if not self._exists(cur, "SELECT 1 FROM auth_methods WHERE access_id = ?", assoc.access_id):
                raise NotFound("access-id", f"no auth method with access id {shown(assoc.access_id)}")
            if self._exists(cur, "SELECT 1 FROM associations WHERE assoc_id = ?", assoc.assoc_id):
                raise AlreadyExists("assoc-id", "association id already in use")
            if self._exists(
                cur,
                "SELECT 1 FROM associations WHERE role_name = ? AND access_id = ? AND sub_claims = ?",
                assoc.role_name,
                assoc.access_id,
                sub_claims,
            ):
                raise AlreadyExists("am-name", "this role is already associated with that auth method")
            cur.execute(
                "INSERT INTO associations (assoc_id, role_name, access_id, sub_claims) VALUES (?, ?, ?, ?)",
                (assoc.assoc_id, assoc.role_name, assoc.access_id, sub_claims),
            )
            self._changed(cur, CHANGE_ASSOCIATION, assoc.assoc_id)

    def delete_association(self, assoc_id: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM associations WHERE assoc_id = ?", (assoc_id,))
            if cur.rowcount == 0:
                raise NotFound("assoc-id", f"no association {shown(assoc_id)}")
            self._changed(cur, CHANGE_ASSOCIATION, assoc_id)

    def set_rule(self, role_name: str, rule: RoleRule) -> None:
        with self._write() as cur:
            if not self._exists(cur, "SELECT 1 FROM roles WHERE name = ?", role_name):
                raise NotFound("role-name", f"no access role {shown(role_name)}")
            cur.execute(
                "INSERT INTO rules (role_name, rule_type, path, capabilities) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (role_name, rule_type, path) DO UPDATE SET capabilities = excluded.capabilities",
                (role_name, str(rule.rule_type), rule.path, capabilities_json(rule.capabilities)),
            )
            self._changed(cur, CHANGE_RULE, (role_name, str(rule.rule_type), rule.path))

    def delete_rule(self, role_name: str, rule_type: str, path: str) -> None:
        with self._write() as cur:
            if not self._exists(cur, "SELECT 1 FROM roles WHERE name = ?", role_name):
                raise NotFound("role-name", f"no access role {shown(role_name)}")
            cur.execute(
                "DELETE FROM rules WHERE role_name = ? AND rule_type = ? AND path = ?",
                (role_name, str(rule_type), path),
            )
            if cur.rowcount == 0:
                raise NotFound("path", f"role {shown(role_name)} has no {rule_type} on {shown(path)}")
            self._changed(cur, CHANGE_RULE, (role_name, str(rule_type), path))

    # --- items -----------------------------------------------------------------------------------------

    def add_item(self, item: StoredItem) -> None:
        with self._write() as cur:
            if self._exists(cur, "SELECT 1 FROM items WHERE name = ?", item.name):
                raise AlreadyExists("name", f"item {shown(item.name)} already exists")
            cur.execute(
                "INSERT INTO items (name, item_type, ciphertext, nonce, created_at, updated_at, version, "
                "description, item_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.name,
                    item.item_type,
                    bytes(item.ciphertext),
                    bytes(item.nonce),
                    float(item.created_at),
                    float(item.updated_at),
                    int(item.version),
                    item.description,
                    item.item_id,
                ),
            )

    def update_item(
        self,
        name: str,
        ciphertext: bytes,
        nonce: bytes,
        updated_at: float,
        *,
        version: int | None = None,
        description: str | None = None,
    ) -> StoredItem:
        with self._write() as cur:
            cur.execute(
                "UPDATE items SET ciphertext = ?, nonce = ?, updated_at = ?, version = version + 1, "
                "description = coalesce(?, description) WHERE name = ? AND (? IS NULL OR version = ? - 1)",
                (bytes(ciphertext), bytes(nonce), float(updated_at), description, name, version, version),
            )
            if cur.rowcount == 0:
                if self._exists(cur, "SELECT 1 FROM items WHERE name = ?", name):
                    raise VersionConflict("name", f"item {shown(name)} is not at version {version - 1}")
                raise NotFound("name", f"no item {shown(name)}")
            row = cur.execute(_SELECT_ITEMS + " WHERE name = ?", (name,)).fetchone()
        return _item(row)

    def rewrite_items(self, items: Sequence[StoredItem]) -> None:
        with self._write() as cur:
            for item in items:
                cur.execute(
                    "UPDATE items SET ciphertext = ?, nonce = ? WHERE name = ? AND version = ?",
                    (bytes(item.ciphertext), bytes(item.nonce), item.name, int(item.version)),
                )
                if cur.rowcount == 0:
                    raise VersionConflict("name", f"item {shown(item.name)} is not at version {item.version}")

    def get_item(self, name: str) -> StoredItem:
        with self._read() as cur:
            row = cur.execute(_SELECT_ITEMS + " WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("name", f"no item {shown(name)}")
        return _item(row)

    def delete_item(self, name: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM items WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise NotFound("name", f"no item {shown(name)}")

    def list_items(self) -> list[StoredItem]:
        with self._read() as cur:
            rows = cur.execute(_SELECT_ITEMS + " ORDER BY name").fetchall()
        return [_item(row) for row in rows]

    # --- tokens ----------------------------------------------------------------------------------------

    def add_token(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool:
        # Committed with synchronous=NORMAL: in WAL mode that survives the process being killed, not a power
        # loss (a token lost so is a new login; see the README). Revocations stay fully synchronous.
        with self._write(synchronous="NORMAL") as cur:
            return self._insert_token(cur, token, proof)

    def add_token_now(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool | None:
        """``add_token`` done on the caller's thread only when nothing can make it wait: the store's lock is
        free and SQLite's write lock is free. It runs on a second connection set up for that: no busy wait
        (``busy_timeout`` 0), ``synchronous=NORMAL`` (as ``add_token``) and no WAL checkpoint on commit
        (``wal_autocheckpoint`` 0; a checkpoint fsyncs: the store's checkpointer thread does them). None when
        it could not be done so, and then nothing was written: the caller uses ``add_token`` from a worker
        thread."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._fast_conn
            if conn is None or self._batch_cursor is not None:
                return None
            with self._open_transaction("BEGIN IMMEDIATE", conn) as cur:
                return self._insert_token(cur, token, proof)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, sqlite3.Error) and _error_code(exc.__cause__) in _BUSY_CODES:
                return None  # another process writes (nothing was written): wait for it in a worker thread
            raise
        finally:
            self._lock.release()

    def _insert_token(self, cur: sqlite3.Cursor, token: StoredToken, proof: tuple[bytes, float, float] | None) -> bool:
        if proof is not None and not self._claim(cur, *proof):
            return False
        try:  # one statement: the token, only while its auth method exists
            cur.execute(
                "INSERT INTO tokens (token_hash, access_id, identity, issued_at, expires_at) "
                "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM auth_methods WHERE access_id = ?)",
                (
                    bytes(token.token_hash),
                    token.access_id,
                    identity_json(token.identity),
                    float(token.issued_at),
                    float(token.expires_at),
                    token.access_id,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists("token", "a token with that hash is already stored") from None
        if cur.rowcount != 1:
            raise NotFound("access-id", f"no auth method with access id {shown(token.access_id)}")
        self._changed(cur, CHANGE_TOKEN, bytes(token.token_hash).hex())
        return True

    def revoke_token(self, token_hash: bytes) -> bool:
        with self._write() as cur:
            cur.execute("UPDATE tokens SET revoked = 1 WHERE token_hash = ? AND revoked = 0", (bytes(token_hash),))
            if cur.rowcount != 1:
                return False
            self._changed(cur, CHANGE_TOKEN, bytes(token_hash).hex())
            return True

    def load_tokens(self, now: float) -> list[StoredToken]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT token_hash, access_id, identity, issued_at, expires_at FROM tokens "
                "WHERE revoked = 0 AND expires_at > ? ORDER BY issued_at, rowid",
                (float(now),),
            ).fetchall()
        return [
            StoredToken(bytes(token_hash), access_id, identity_from_json(identity), issued_at, expires_at)
            for token_hash, access_id, identity, issued_at, expires_at in rows
        ]

    def purge_expired(self, now: float) -> int:
        with self._write() as cur:
            cur.execute("DELETE FROM tokens WHERE expires_at <= ?", (float(now),))
            purged = cur.rowcount
            cur.execute("DELETE FROM login_proofs WHERE expires_at <= ?", (float(now),))
        return purged

    # --- single-use login proofs -----------------------------------------------------------------------

    def claim_proof(self, key: bytes, expires_at: float, now: float) -> bool:
        with self._write() as cur:
            return self._claim(cur, key, expires_at, now)

    @staticmethod
    def _claim(cur: sqlite3.Cursor, key: bytes, expires_at: float, now: float) -> bool:
        # One statement: a new key is inserted, this key's expired claim is taken over (the others go with
        # purge_expired, which the server's housekeeping runs every minute), a live claim is left as it is
        # and changes no row.
        cur.execute(_CLAIM_PROOF, (bytes(key), float(expires_at), float(now)))
        return cur.rowcount == 1

    # --- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._read() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            self._changed(cur, CHANGE_META, key)

    # --- change feed (see cedarkey.server.store.ChangeFeed) ---------------------------------------------
    #
    # Writers hold the database's write lock from their first statement to their commit, so seqs become
    # visible in order here.

    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT seq, kind, key, at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (int(seq), int(limit))
            ).fetchall()
        return [change_from_row(*row) for row in rows]

    def latest_change(self) -> int:
        with self._read() as cur:
            # The sequence's high-water mark survives pruning (AUTOINCREMENT).
            row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def change_horizon(self) -> int:
        value = self.get_meta(CHANGES_PRUNED_META)
        return 0 if value is None else int(value)

    def prune_changes(self, older_than: float | None = None) -> int:
        with self._write() as cur:
            return self._prune(cur, time.time() - (self.change_retention if older_than is None else older_than))

    def get_auth_method(self, name: str) -> AuthMethod | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT name, access_id, type, config FROM auth_methods WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else auth_method_from_row(*row)

    def get_role(self, name: str) -> AccessRole | None:
        with self._read() as cur:
            row = cur.execute("SELECT name, description FROM roles WHERE name = ?", (name,)).fetchone()
        return None if row is None else AccessRole(row[0], row[1])

    def get_association(self, assoc_id: str) -> Association | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT assoc_id, role_name, access_id, sub_claims FROM associations WHERE assoc_id = ?", (assoc_id,)
            ).fetchone()
        return None if row is None else Association(row[0], row[1], row[2], sub_claims_from_json(row[3]))

    def get_rule(self, role_name: str, rule_type: str, path: str) -> RoleRule | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT rule_type, path, capabilities FROM rules WHERE role_name = ? AND rule_type = ? AND path = ?",
                (role_name, str(rule_type), path),
            ).fetchone()
        return None if row is None else rule_from_row(*row)

    def get_token(self, token_hash: bytes, now: float | None = None) -> StoredToken | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT token_hash, access_id, identity, issued_at, expires_at FROM tokens "
                "WHERE token_hash = ? AND revoked = 0 AND expires_at > ?",
                (bytes(token_hash), float(time.time() if now is None else now)),
            ).fetchone()
        if row is None:
            return None
        return StoredToken(bytes(row[0]), row[1], identity_from_json(row[2]), row[3], row[4])

    def live_tokens(self, token_hashes: Sequence[bytes], now: float) -> set[bytes]:
        query = "SELECT 1 FROM tokens WHERE token_hash = ? AND revoked = 0 AND expires_at > ?"
        with self._read() as cur:  # one snapshot; each lookup is one prepared statement on the primary key
            return {bytes(h) for h in token_hashes if cur.execute(query, (bytes(h), float(now))).fetchone()}

    def listen(
        self, callback: Callable[[int | None], None], stop: threading.Event, *, poll_interval: float = 1.0
    ) -> None:
        """SQLite has no notifications: polls :meth:`latest_change` every ``poll_interval`` seconds."""
        seen: int | None = None
        while not stop.is_set():
            try:
                latest = self.latest_change()
            except StoreError:
                seen = None  # unavailable for now: say "catch up" once it answers again
            else:
                if seen is None:
                    callback(None)
                elif latest > seen:
                    callback(latest)
                seen = latest
            stop.wait(poll_interval)


_SYNC_MODES = {"NORMAL": "NORMAL", "FULL": "FULL"}


class _Checkpointer:
    """A thread that copies the WAL back into the database every ``interval`` seconds, on a connection of its
    own (``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for, nor blocks, readers and writers). Token
    writes on the event loop skip SQLite's automatic checkpoint (it fsyncs); this keeps the WAL small
    instead, off every request's path."""

    def __init__(self, path: str, interval: float) -> None:
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        self._stop = threading.Event()
        self._interval = interval
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="cedarkey-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # busy or gone for now: the next round tries again
                log.debug("WAL checkpoint skipped: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
#: The primary result codes of a database that does not answer now but may later (503, not 500).
_UNAVAILABLE_CODES = (
    *_BUSY_CODES,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOLFS,
)


def _fast_connection(path: str) -> sqlite3.Connection:
    """The second connection of a store, for token writes that must never wait (see ``add_token_now``)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _error_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (None when the driver gave none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _enable_wal(conn: sqlite3.Connection, deadline: float) -> str:
    """Switches to WAL (a setting kept in the file). SQLite answers "locked" to the switch without waiting
    while another connection opens the same new database at the same moment: retry until ``deadline``."""
    delay = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return "wal"
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(mode).lower()
        except sqlite3.OperationalError as exc:
            if _error_code(exc) not in _BUSY_CODES or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _item(row: Sequence[Any]) -> StoredItem:
    name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id = row
    return StoredItem(
        name,
        item_type,
        bytes(ciphertext),
        bytes(nonce),
        float(created_at),
        float(updated_at),
        int(version),
        description,
        item_id,
    )


def _create_private(path: Path) -> None:
    """Creates the database file with mode 0600 when it does not exist yet (SQLite would use 0644)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
    os.close(fd)
