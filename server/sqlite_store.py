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
- the change feed (schema version 2): each write of the model or of the tokens records its change rows in its
  own transaction; :meth:`SqliteStore.listen` polls;
- the domain methods are :class:`cedarkey.server.sql_store.SqlStore`'s, shared with PostgreSQL.

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
    ModelError,
    NotFound,
)

from .sql_store import CONSTRAINTS, SqlStore, StoredAudit, audit_committed, sub_claims_digest
from .sql_tx import T, Tx
from .sqlite_schema import MIGRATIONS
from .store import (
    CHANGES_PRUNED_META,
    DEFAULT_CHANGE_RETENTION,
    ChangeKey,
    SchemaVersionError,
    StoredToken,
    StoreError,
    StoreUnavailable,
    change_key_json,
)

log = logging.getLogger("cedarkey.store")

DEFAULT_BUSY_TIMEOUT = 10.0
#: Seconds between the checkpointer thread's passive WAL checkpoints.
CHECKPOINT_INTERVAL = 1.0


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


class SqliteStore(SqlStore):
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
        super().__init__()
        self.path = self.where = str(path)
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
            conn.create_function("cedarkey_sha256", 1, _sha256, deterministic=True)  # for migration 4
            if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                raise StoreError("this SQLite build does not enforce foreign keys")
            self._migrate()
            with self._read_cursor() as cur:
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
        with self._write_cursor() as cur:
            if cur is self._batch_cursor:  # a batch inside a batch is part of the outer one
                yield self
                return
            since = cur.connection.total_changes
            self._batch_cursor = cur
            try:
                yield self
            finally:
                self._batch_cursor = None
            stored = self._audit_in(cur, since)
        audit_committed(stored)

    def _write_cursor(self, synchronous: str = "FULL") -> AbstractContextManager[sqlite3.Cursor]:
        """One write transaction; it holds the database's write lock from its first statement."""
        return self._transaction("BEGIN IMMEDIATE", synchronous)

    def _read_cursor(self) -> AbstractContextManager[sqlite3.Cursor]:
        """One read transaction: every query in it sees the same snapshot."""
        return self._transaction("BEGIN DEFERRED")

    @staticmethod
    def _exists(cur: sqlite3.Cursor, sql: str, *params: object) -> bool:
        return cur.execute(sql, params).fetchone() is not None

    def _changed(self, cur: sqlite3.Cursor, changes: list[tuple[str, str]]) -> None:
        """Records change rows in the write transaction of ``cur`` (and prunes old ones now and then)."""
        if not self._has_changes or not changes:
            return
        at = time.time()
        cur.executemany("INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)", [(k, key, at) for k, key in changes])
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
        with self._read_cursor() as cur:
            current = self._schema_version(cur)
        if current > target:
            raise SchemaVersionError(
                f"the database {self.path} has schema version {current}, newer than the {target} this "
                "cedarkey knows: it was written by a newer cedarkey; upgrade cedarkey to open it"
            )
        for version in range(current + 1, target + 1):
            statements = split_statements(self._migrations[version - 1])
            try:
                with self._write_cursor() as cur:
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
        with self._read_cursor() as cur:
            return self._schema_version(cur)

    # --- transactions of the domain methods (cedarkey.server.sql_store) -----------------------------------

    def _write(self, work: Callable[[Tx], T], synchronous: str = "FULL") -> T:  # type: ignore[override]
        with self._write_cursor(synchronous) as cur:
            if cur is self._batch_cursor:  # the batch stores the audit event, at its end
                return self._in(cur, work)
            since = cur.connection.total_changes
            result = self._in(cur, work)
            stored = self._audit_in(cur, since)
        audit_committed(stored)
        return result

    def _read(self, work: Callable[[Tx], T], *, snapshot: bool = False) -> T:
        with self._read_cursor() as cur:  # a read transaction: always one snapshot
            return work(_Tx(cur))

    def _audit_in(self, cur: sqlite3.Cursor, since: int) -> StoredAudit | None:
        """The pending audit event, stored in ``cur``'s transaction when it changed a row since ``since``."""
        return self._audit_row(_Tx(cur), cur.connection.total_changes > since)

    def _in(self, cur: sqlite3.Cursor, work: Callable[[Tx], T]) -> T:
        """``work`` on ``cur``'s write transaction, its change rows recorded in it."""
        tx = _Tx(cur)
        result = work(tx)
        self._changed(cur, tx.changes)
        return result

    def add_token(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool:
        # Committed with synchronous=NORMAL: in WAL mode that survives the process being killed, not a power
        # loss (a token lost so is a new login; see the README). Revocations stay fully synchronous.
        return self._write(lambda tx: self._insert_token(tx, token, proof), synchronous="NORMAL")

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
                since = conn.total_changes
                written = self._in(cur, lambda tx: self._insert_token(tx, token, proof))
                stored = self._audit_in(cur, since)
            audit_committed(stored)
            return written
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, sqlite3.Error) and _error_code(exc.__cause__) in _BUSY_CODES:
                return None  # another process writes (nothing was written): wait for it in a worker thread
            raise
        finally:
            self._lock.release()

    # --- the change feed's sequence and pruning -------------------------------------------------------------
    #
    # Writers hold the database's write lock from their first statement to their commit, so seqs become
    # visible in order here.

    def latest_change(self) -> int:
        with self._read_cursor() as cur:
            # The sequence's high-water mark survives pruning (AUTOINCREMENT).
            row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def change_horizon(self) -> int:
        value = self.get_meta(CHANGES_PRUNED_META)
        return 0 if value is None else int(value)

    def prune_changes(self, older_than: float | None = None) -> int:
        with self._write_cursor() as cur:
            return self._prune(cur, time.time() - (self.change_retention if older_than is None else older_than))

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


def _create_private(path: Path) -> None:
    """Creates the database file with mode 0600 when it does not exist yet (SQLite would use 0644)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
    os.close(fd)


class _Tx:
    """A transaction's cursor for the domain methods: constraint violations become the catalog's errors."""

    __slots__ = ("changes", "cur")

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur
        self.changes: list[tuple[str, str]] = []

    def execute(self, query: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.cur.execute(query, params)
        except sqlite3.IntegrityError as exc:
            error = _violation(exc)
            if error is None:
                raise
            raise error from None

    def changed(self, kind: str, *keys: ChangeKey) -> None:
        self.changes.extend((kind, change_key_json(kind, key)) for key in keys)


#: SQLite names a violated unique key by its columns; the catalog knows PostgreSQL's constraint names.
_UNIQUE_KEYS = {
    "auth_methods.name": "auth_methods_pkey",
    "auth_methods.access_id": "auth_methods_access_id_key",
    "roles.name": "roles_pkey",
    "associations.assoc_id": "associations_pkey",
    "associations.role_name, associations.access_id, associations.sub_claims": (
        "associations_role_access_sub_claims_key"
    ),
    "items.name": "items_pkey",
    "tokens.token_hash": "tokens_pkey",
}


def _violation(exc: sqlite3.IntegrityError) -> ModelError | None:
    """The catalog's error for a violated key; None for anything else (a trigger, a check: a StoreError)."""
    message = str(exc)
    if message.startswith("UNIQUE constraint failed: "):
        known = CONSTRAINTS.get(_UNIQUE_KEYS.get(message.partition(": ")[2], ""))
        return known() if known is not None else None
    if message.startswith("FOREIGN KEY constraint failed"):
        # SQLite does not say which: the writes' own checks come first, so only a file changed under the
        # server by hand gets here.
        return NotFound("", "the write refers to something that is gone")
    return None


def _sha256(text: str | None) -> bytes | None:
    return None if text is None else sub_claims_digest(text)
