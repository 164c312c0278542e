"""The PostgreSQL backend of :class:`cedarkey.server.store.Store`, for several server nodes sharing one database.

Connections come from a :class:`psycopg_pool.ConnectionPool` (autocommit connections: transactions are
explicit ``BEGIN``/``COMMIT``), so one store may be shared by threads, and any number of stores (nodes) may use
the same database:

- every write method is one ``READ COMMITTED`` transaction. It checks what it can up front (so that the errors
  are the same as SQLite's, in the same order) and relies on the constraints for what another node may do
  meanwhile: a unique or foreign key violation becomes the same :class:`AlreadyExists` / :class:`NotFound` as
  the up-front check would have raised, never a raw driver error;
- ``load()`` reads in one ``REPEATABLE READ`` snapshot; single-statement reads run without a transaction;
- ``batch()`` holds one connection (per thread) for its transaction; each call inside runs under a savepoint,
  so that a call that fails (and whose error is caught) leaves the rest of the batch intact, like SQLite's;
  batches of all nodes run one at a time (an advisory lock), like SQLite's, so check-then-write batches
  (``bootstrap()``) are race-free across nodes;
- a connection lost, a server that does not answer, a lock not granted within ``lock_timeout``, a deadlock:
  :class:`StoreUnavailable`. When the failure happened before ``COMMIT`` was sent, nothing was written and the
  call is retried once, transparently, on a fresh connection (after the pool has tested its idle ones): a
  server restart or ``pg_terminate_backend`` costs the callers nothing. A connection lost *during* ``COMMIT``
  leaves the outcome unknown: that raises StoreUnavailable and is never retried. The pool replaces broken
  connections and reconnects by itself when the server is back;
- the schema is versioned like SQLite's (:data:`MIGRATIONS`, own SQL); each migration runs in a transaction
  holding ``pg_advisory_xact_lock``, so that nodes starting together migrate once;
- the change feed (the change feed of :class:`cedarkey.server.store.Store`): writes record their change rows last, after
  taking a transaction-scoped advisory lock, and ``NOTIFY cedarkey_changes, '<highest seq>'``; the lock makes
  seqs become visible in commit order (PostgreSQL already serializes the commits of notifying transactions, so
  it costs little), and notifications arrive in commit order. :meth:`PostgresStore.listen` wakes a node up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from .postgres_errors import (
    CONFIGURATION_ERRORS,
    ROLLED_BACK_CODES,
    connection_lost,
    first_line,
    rollback_quietly,
    translate,
)
from .postgres_schema import MIGRATIONS
from .sql_store import CONSTRAINTS, SqlStore, StoredAudit, audit_committed
from .sql_tx import Tx, one
from .store import (
    CHANGES_PRUNED_META,
    DEFAULT_CHANGE_RETENTION,
    ChangeKey,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    change_key_json,
)

log = logging.getLogger("cedarkey.store.postgres")

T = TypeVar("T")

#: The channel of the change notifications; the payload is the highest seq of the committed transaction.
CHANNEL = "cedarkey_changes"

# Advisory lock keys (two int4: "ceda", n), scoped to the database.
_MIGRATION_LOCK = (0x63656461, 1)
_CHANGES_LOCK = (0x63656461, 2)
_BATCH_LOCK = (0x63656461, 3)

#: How often (seconds) a store prunes old change rows, after one of its writes; and how many rows at most
#: one pruning transaction deletes.
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 10_000


class _Tx:
    """The cursor of one transaction (or of one call inside a batch), the change rows it will record, and
    whether it changed a row (``wrote``: what decides that an audit event is stored with it)."""

    __slots__ = ("changes", "cur", "wrote")

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.changes: list[tuple[str, str]] = []
        self.wrote = False

    def execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """``query`` with ``?`` placeholders; a violated constraint of :data:`CONSTRAINTS` raises its error."""
        try:
            cur = self.cur.execute(_placeholders(query), params or None)  # type: ignore[arg-type]  # literals
        except psycopg.IntegrityError as exc:
            known = CONSTRAINTS.get(exc.diag.constraint_name or "")
            if known is None:
                raise
            raise known() from None
        self.wrote = self.wrote or _changed_rows(cur.statusmessage)
        return cur

    def changed(self, kind: str, *keys: ChangeKey) -> None:
        self.changes.extend((kind, change_key_json(kind, key)) for key in keys)


def _changed_rows(status: str | None) -> bool:
    """Whether a command tag (``INSERT 0 1``, ``UPDATE 0``, ``SELECT 3``...) says rows were changed."""
    return bool(status) and status.startswith(("INSERT", "UPDATE", "DELETE")) and not status.endswith(" 0")


@functools.cache
def _placeholders(query: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (the queries hold no other ``?`` or ``%``)."""
    return query.replace("?", "%s")


class _Batch:
    __slots__ = ("changes", "conn", "cur", "wrote")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.changes: list[tuple[str, str]] = []
        self.wrote = False


class PostgresStore(SqlStore):
    """A :class:`~cedarkey.server.store.Store` in PostgreSQL (its domain methods are :class:`SqlStore`'s).

    ``url`` is a libpq URL or conninfo string (``postgresql://user@host:5432/db``). ``connect_timeout`` bounds
    each connection attempt, ``acquire_timeout`` the wait for a pooled connection (then StoreUnavailable),
    ``lock_timeout`` the wait for a row lock held by another writer (like SQLite's busy timeout),
    ``reconnect_timeout`` how long the pool retries a lost connection before starting over on demand.
    ``migrations`` exists for the migration tests; the server never passes it.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        connect_timeout: float = 5,
        acquire_timeout: float = 10.0,
        lock_timeout: float = 10.0,
        reconnect_timeout: float = 10.0,
        change_retention: float = DEFAULT_CHANGE_RETENTION,
        migrations: Sequence[str] = MIGRATIONS,
    ) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"not a PostgreSQL URL: {exc}") from None
        self.where = "{}:{}/{}".format(
            params.get("host") or "localhost", params.get("port") or 5432, params.get("dbname") or params.get("user")
        )
        defaults: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "cedarkey",
            # A server that vanished (a partition, a dead host) is noticed instead of waited for forever.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60_000,
        }
        self._conn_kwargs = {k: v for k, v in defaults.items() if k not in params}
        self._url = url
        self._lock_timeout_ms = round(lock_timeout * 1000)
        self._acquire_timeout = acquire_timeout
        self.change_retention = change_retention
        self._migrations = tuple(migrations)
        #: The schema versions this open applied (empty when the database was up to date).
        self.applied_migrations: list[int] = []
        self._local = threading.local()  # .batch: the _Batch of this thread, if any
        self._closed = False
        self._prune_lock = threading.Lock()
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        super().__init__()

        # One plain connection first: it says precisely why the database cannot be reached, if it cannot.
        self._probe()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, **self._conn_kwargs},
            configure=self._configure,
            timeout=acquire_timeout,
            reconnect_timeout=reconnect_timeout,
            name=f"cedarkey {self.where}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout + acquire_timeout)
            self._migrate()
        except PoolTimeout as exc:
            self._pool.close()
            self._closed = True
            raise StoreUnavailable(f"cannot connect to the database {self.where} in time") from exc
        except BaseException:
            self._pool.close()
            self._closed = True
            raise

    # --- plumbing --------------------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def _probe(self) -> None:
        try:
            conn = psycopg.connect(self._url, **self._conn_kwargs)
        except psycopg.OperationalError as exc:
            # Wrong credentials, no such database or user: a configuration error, not a transient one. (libpq
            # gives no SQLSTATE for a failed connection: only its message says.)
            message = first_line(exc)
            kind = StoreError if any(m in message for m in CONFIGURATION_ERRORS) else StoreUnavailable
            raise kind(f"cannot connect to the database {self.where}: {message}") from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database {self.where}: {first_line(exc)}") from None
        try:
            encoding = conn.info.parameter_status("server_encoding")
        finally:
            conn.close()
        if encoding != "UTF8":
            # jsonb and text must hold any Unicode character, as SQLite does.
            raise StoreError(f"the database {self.where} must use the UTF8 encoding, not {encoding!r}")

    def json(self, text: str) -> Any:
        return Jsonb(text, dumps=str)  # already JSON text: sent as is, typed jsonb

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # jsonb columns come back as their text, as SQLite's TEXT columns do (the codecs parse them).
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self._lock_timeout_ms}ms",))
        # A node that dies inside a transaction must not hold its locks for long.
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '60s', false)")

    def _acquire(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            return self._pool.getconn(timeout=self._acquire_timeout)
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"no connection to the database {self.where} within {self._acquire_timeout:g}s"
            ) from exc
        except PoolClosed as exc:
            raise StoreUnavailable("the store is closed") from exc

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        try:
            self._pool.putconn(conn)  # a broken connection is replaced, an open transaction rolled back
        except Exception:  # the pool was closed meanwhile
            conn.close()

    def _recover(self) -> None:
        """After a lost connection: test the idle ones (the server may have dropped them all) before a retry."""
        try:
            self._pool.check()
        except Exception:
            log.warning("checking the connection pool failed", exc_info=True)

    def _run(self, work: Callable[[_Tx], T], *, write: bool, begin: str | None = "BEGIN") -> T:
        """Runs ``work`` in a transaction (``begin`` None: a single statement, no transaction) and commits.

        Inside :meth:`batch`, ``work`` runs under a savepoint of the batch's transaction instead.
        """
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:
            return self._in_batch(batch, work)
        for attempt in (1, 2):
            conn = self._acquire()
            committing = False
            stored: StoredAudit | None = None
            try:
                with conn.cursor() as cur:
                    tx = _Tx(cur)
                    if begin is not None:
                        cur.execute(begin)  # type: ignore[arg-type]
                    result = work(tx)
                    if write:
                        stored = self._audit_row(tx, tx.wrote)
                    if tx.changes:
                        self._record_changes(cur, tx.changes)
                    if begin is not None:
                        committing = write
                        cur.execute("COMMIT")
            except psycopg.Error as exc:
                rollback_quietly(conn)
                lost = connection_lost(conn, exc)
                if attempt == 1 and not committing and (lost or exc.sqlstate in ROLLED_BACK_CODES):
                    log.info("database connection lost or transaction rolled back (%s); retrying once", exc)
                    self._release(conn)
                    if lost:
                        self._recover()
                    continue
                self._release(conn)
                raise translate(exc, lost=lost, committing=committing, where=self.where) from exc
            except BaseException:
                rollback_quietly(conn)
                self._release(conn)
                raise
            self._release(conn)
            audit_committed(stored)
            if write and tx.changes:
                self._maybe_prune()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _in_batch(self, batch: _Batch, work: Callable[[_Tx], T]) -> T:
        cur = batch.cur
        try:
            cur.execute("SAVEPOINT cedarkey_call")
            tx = _Tx(cur)
            try:
                result = work(tx)
                cur.execute("RELEASE SAVEPOINT cedarkey_call")
            except BaseException:
                if not batch.conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        cur.execute("ROLLBACK TO SAVEPOINT cedarkey_call")
                        cur.execute("RELEASE SAVEPOINT cedarkey_call")
                raise
        except psycopg.Error as exc:
            lost = connection_lost(batch.conn, exc)
            raise translate(exc, lost=lost, committing=False, where=self.where) from exc
        batch.changes.extend(tx.changes)
        batch.wrote = batch.wrote or tx.wrote
        return result

    def _begin_batch(self) -> _Batch:
        for attempt in (1, 2):
            conn = self._acquire()
            batch = _Batch(conn)
            try:
                batch.cur.execute("BEGIN")
                batch.cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _BATCH_LOCK)
                return batch
            except psycopg.Error as exc:
                lost = connection_lost(conn, exc)
                self._release(conn)
                if attempt == 1 and lost:
                    self._recover()
                    continue
                raise translate(exc, lost=lost, committing=False, where=self.where) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def batch(self) -> Iterator[PostgresStore]:
        """Every store call made inside (from this thread) is one transaction: all of them or none.

        The batch holds one pooled connection until it ends; other threads keep using the pool (and do not see
        the batch's writes before it commits). A batch inside a batch is part of the outer one.

        Batches run one at a time across every node (a transaction-scoped advisory lock, taken first), as
        SQLite's do: a check-then-write batch such as ``bootstrap()`` (``if not get_meta(...): create...``)
        run by nodes starting together on a new database is decided by the first and seen done by the others.
        """
        if getattr(self._local, "batch", None) is not None:
            yield self
            return
        batch = self._begin_batch()
        conn = batch.conn
        committing = False
        try:
            self._local.batch = batch
            try:
                yield self
            finally:
                self._local.batch = None
            try:
                stored = self._audit_row(_Tx(batch.cur), batch.wrote)
                if batch.changes:
                    self._record_changes(batch.cur, batch.changes)
                committing = True
                batch.cur.execute("COMMIT")
            except psycopg.Error as exc:
                lost = connection_lost(conn, exc)
                raise translate(exc, lost=lost, committing=committing, where=self.where) from exc
        except BaseException:
            rollback_quietly(conn)
            raise
        finally:
            batch.cur.close()
            self._release(conn)
        audit_committed(stored)
        if batch.changes:
            self._maybe_prune()

    creation_order = "seq"

    def _write(self, work: Callable[[Tx], T]) -> T:
        return self._run(work, write=True)

    def _read(self, work: Callable[[Tx], T], *, snapshot: bool = False) -> T:
        """A read: one statement without a transaction, or (``snapshot``) several in one consistent snapshot."""
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot else None
        return self._run(work, write=False, begin=begin)

    # --- change recording ------------------------------------------------------------------------------

    @staticmethod
    def _record_changes(cur: psycopg.Cursor[Any], changes: list[tuple[str, str]]) -> None:
        """The last statements of a write: its change rows and their notification (delivered at commit).

        Holding the advisory lock from the seqs' allocation to the commit makes the seqs visible in order: the
        lock is released after the commit is visible, so a reader seeing seq n sees every committed seq < n.
        """
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _CHANGES_LOCK)
        cur.execute(
            "WITH c AS ("
            " INSERT INTO changes (kind, key, at)"
            " SELECT u.kind, u.key::jsonb, date_part('epoch', clock_timestamp())"
            " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u (kind, key, n) ORDER BY u.n"
            " RETURNING seq)"
            " SELECT pg_notify(%s, (SELECT max(seq) FROM c)::text)",
            ([kind for kind, _ in changes], [key for _, key in changes], CHANNEL),
        )

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        with self._prune_lock:
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_INTERVAL
        try:
            self.prune_changes()
        except StoreError as exc:
            log.warning("pruning old change rows failed: %s", exc)

    # --- schema ----------------------------------------------------------------------------------------

    @staticmethod
    def _schema_version(tx: Tx) -> int:
        rows = tx.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        tables = {row[0] for row in rows}
        if "schema_version" not in tables:
            if tables:
                raise StoreError("not a cedarkey database (it has tables but no schema_version)")
            return 0
        return int(one(tx, "SELECT coalesce(max(version), 0) FROM schema_version")[0])

    def _migrate(self) -> None:
        target = len(self._migrations)
        current = self._read(self._schema_version, snapshot=True)
        self._refuse_future(current, target)
        for version in range(current + 1, target + 1):
            script = self._migrations[version - 1]

            def work(tx: Tx, version: int = version, script: str = script) -> bool:
                # Another node may be migrating too: decide again once holding the migration lock.
                tx.execute("SELECT pg_advisory_xact_lock(?, ?)", _MIGRATION_LOCK)
                now = self._schema_version(tx)
                self._refuse_future(now, target)
                if now >= version:
                    return False
                tx.execute(script)
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
                return True

            try:
                applied = self._write(work)
            except (StoreUnavailable, SchemaVersionError):
                raise
            except StoreError as exc:
                raise StoreError(
                    f"{self.where}: migrating to schema version {version} failed (nothing of it applied): {exc}"
                ) from exc
            if applied:
                self.applied_migrations.append(version)

    def _refuse_future(self, current: int, target: int) -> None:
        if current > target:
            raise SchemaVersionError(
                f"the database {self.where} has schema version {current}, newer than the {target} this "
                "cedarkey knows: it was written by a newer cedarkey; upgrade cedarkey to open it"
            )

    def schema_version(self) -> int:
        return self._read(self._schema_version, snapshot=True)

    # --- change feed (see cedarkey.server.store) ---------------------------------------------

    def latest_change(self) -> int:
        row = self._read(
            lambda tx: one(
                tx,
                "SELECT greatest((SELECT max(seq) FROM changes), (SELECT value::bigint FROM meta WHERE key = ?), 0)",
                (CHANGES_PRUNED_META,),
            )
        )
        return int(row[0])

    def change_horizon(self) -> int:
        value = self.get_meta(CHANGES_PRUNED_META)
        return 0 if value is None else int(value)

    def prune_changes(self, older_than: float | None = None) -> int:
        """Deletes the change rows older than ``older_than`` seconds (by the server's clock), in transactions of
        at most :data:`PRUNE_BATCH` rows, and records the highest seq deleted (:meth:`change_horizon`)."""
        age = self.change_retention if older_than is None else older_than

        def work(tx: Tx) -> int:
            # SKIP LOCKED: nodes pruning at the same moment share the work instead of waiting for each other.
            row = one(
                tx,
                "WITH gone AS ("
                " DELETE FROM changes WHERE seq IN (SELECT seq FROM changes"
                "  WHERE at < date_part('epoch', clock_timestamp()) - ?"
                "  ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED)"
                " RETURNING seq),"
                " mark AS ("
                " INSERT INTO meta (key, value) SELECT ?, max(seq)::text FROM gone HAVING count(*) > 0"
                " ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value::bigint, excluded.value::bigint)::text)"
                " SELECT count(*) FROM gone",
                (float(age), PRUNE_BATCH, CHANGES_PRUNED_META),
            )
            return int(row[0])

        total = 0
        for _ in range(100):
            deleted = self._write(work)
            total += deleted
            if deleted < PRUNE_BATCH:
                break
        return total

    def live_tokens(self, token_hashes: Sequence[bytes], now: float) -> set[bytes]:
        if not token_hashes:
            return set()
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT token_hash FROM tokens WHERE token_hash = ANY(?) AND NOT revoked AND expires_at > ?",
                ([bytes(h) for h in token_hashes], float(now)),
            ).fetchall()
        )
        return {bytes(row[0]) for row in rows}

    def listen(
        self,
        callback: Callable[[int | None], None],
        stop: threading.Event,
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
    ) -> None:
        """Calls ``callback(seq)`` for each change notification, until ``stop`` is set.

        Uses a connection of its own (outside the pool), listening on :data:`CHANNEL`. ``callback(None)`` comes
        first, once listening, and again after each reconnection: notifications sent meanwhile are lost, so the
        consumer must catch up with ``changes_since`` (see :class:`~cedarkey.server.store.ChangeCursor`). While
        the database is unreachable it retries, backing off up to ``max_backoff`` seconds. Several
        notifications may be folded into the last one (each carries the highest seq of its transaction).
        """
        delay = 0.1
        while not stop.is_set():
            try:
                conn = psycopg.connect(self._url, autocommit=True, **self._conn_kwargs)
            except psycopg.Error as exc:
                log.warning("change listener cannot connect to %s: %s", self.where, first_line(exc))
                stop.wait(delay)
                delay = min(delay * 2, max_backoff)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                delay = 0.1
                callback(None)
                while not stop.is_set():
                    for notify in conn.notifies(timeout=poll_interval):
                        callback(_seq(notify.payload))
                        if stop.is_set():
                            break
            except psycopg.Error as exc:
                log.warning("change listener lost its connection to %s: %s", self.where, first_line(exc))
                stop.wait(delay)
                delay = min(delay * 2, max_backoff)
            finally:
                conn.close()


def _seq(payload: str) -> int | None:
    try:
        return int(payload)
    except ValueError:
        return None
