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
- the change feed (:class:`cedarkey.server.store.ChangeFeed`): writes record their change rows last, after
  taking a transaction-scoped advisory lock, and ``NOTIFY cedarkey_changes, '<highest seq>'``; the lock makes
  seqs become visible in commit order (PostgreSQL already serializes the commits of notifying transactions, so
  it costs little), and notifications arrive in commit order. :meth:`PostgresStore.listen` wakes a node up.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
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
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

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

#: Migration *n* (1-based) brings the schema to version *n*. Append only: never edit a released script.
#: Version numbers match SQLite's (2 is the change feed in both). The ``seq`` identity columns give the
#: creation order that :meth:`PostgresStore.load` returns.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_version (
        version     integer PRIMARY KEY,
        applied_at  double precision NOT NULL
    );
    CREATE TABLE auth_methods (
        name             text NOT NULL,
        access_id        text NOT NULL,
        type             text NOT NULL,
        config           jsonb NOT NULL,
        access_key_hash  bytea,
        seq              bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT auth_methods_pkey PRIMARY KEY (name),
        CONSTRAINT auth_methods_access_id_key UNIQUE (access_id)
    );
    CREATE TABLE roles (
        name         text NOT NULL,
        description  text NOT NULL DEFAULT '',
        seq          bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT roles_pkey PRIMARY KEY (name)
    );
    -- sub_claims can be far larger than a btree entry may be: uniqueness is on their SHA-256 (of the
    -- canonical JSON the shared codec writes).
    CREATE TABLE associations (
        assoc_id           text NOT NULL,
        role_name          text NOT NULL,
        access_id          text NOT NULL,
        sub_claims         jsonb NOT NULL,
        sub_claims_digest  bytea NOT NULL,
        seq                bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT associations_pkey PRIMARY KEY (assoc_id),
        CONSTRAINT associations_role_name_fkey FOREIGN KEY (role_name)
            REFERENCES roles (name) ON DELETE CASCADE,
        CONSTRAINT associations_access_id_fkey FOREIGN KEY (access_id)
            REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        CONSTRAINT associations_role_access_sub_claims_key UNIQUE (role_name, access_id, sub_claims_digest)
    );
    CREATE INDEX associations_access_id ON associations (access_id);
    CREATE TABLE rules (
        role_name     text NOT NULL,
        rule_type     text NOT NULL,
        path          text NOT NULL,
        capabilities  jsonb NOT NULL,
        seq           bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT rules_pkey PRIMARY KEY (role_name, rule_type, path),
        CONSTRAINT rules_role_name_fkey FOREIGN KEY (role_name) REFERENCES roles (name) ON DELETE CASCADE
    );
    CREATE TABLE items (
        name         text NOT NULL,
        item_type    text NOT NULL,
        ciphertext   bytea NOT NULL,
        nonce        bytea NOT NULL,
        created_at   double precision NOT NULL,
        updated_at   double precision NOT NULL,
        version      bigint NOT NULL,
        description  text NOT NULL DEFAULT '',
        CONSTRAINT items_pkey PRIMARY KEY (name)
    );
    CREATE TABLE tokens (
        token_hash  bytea NOT NULL,
        access_id   text NOT NULL,
        identity    jsonb NOT NULL,
        issued_at   double precision NOT NULL,
        expires_at  double precision NOT NULL,
        revoked     boolean NOT NULL DEFAULT false,
        seq         bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT tokens_pkey PRIMARY KEY (token_hash),
        CONSTRAINT tokens_access_id_fkey FOREIGN KEY (access_id)
            REFERENCES auth_methods (access_id) ON DELETE CASCADE
    );
    CREATE INDEX tokens_access_id ON tokens (access_id);
    CREATE INDEX tokens_expires_at ON tokens (expires_at);
    CREATE TABLE login_proofs (
        proof_key   bytea NOT NULL,
        expires_at  double precision NOT NULL,
        CONSTRAINT login_proofs_pkey PRIMARY KEY (proof_key)
    );
    CREATE INDEX login_proofs_expires_at ON login_proofs (expires_at);
    CREATE TABLE meta (
        key    text NOT NULL,
        value  text NOT NULL,
        CONSTRAINT meta_pkey PRIMARY KEY (key)
    );
    """,
    # 2: the change feed (see cedarkey.server.store).
    """
    CREATE TABLE changes (
        seq   bigserial PRIMARY KEY,
        kind  text NOT NULL,
        key   jsonb NOT NULL,
        at    double precision NOT NULL
    );
    CREATE INDEX changes_at ON changes (at);
    """,
    # 3: items get a random id, bound into their ciphertext with the version (see cedarkey.server.secret_box).
    """
    ALTER TABLE items ADD COLUMN item_id text NOT NULL DEFAULT '';
    UPDATE items SET item_id = substr(md5(random()::text || name), 1, 16) WHERE item_id = '';
    """,
)

_SELECT_ITEMS = (
    "SELECT name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id FROM items"
)
_SELECT_TOKENS = "SELECT token_hash, access_id, identity::text, issued_at, expires_at FROM tokens"

#: What a constraint violated by a write another node made meanwhile means, in the API's terms.
_CONSTRAINTS: dict[str, tuple[type[ModelError], str, str]] = {
    "auth_methods_pkey": (AlreadyExists, "name", "auth method already exists"),
    "auth_methods_access_id_key": (AlreadyExists, "access-id", "access id already in use"),
    "roles_pkey": (AlreadyExists, "name", "access role already exists"),
    "associations_pkey": (AlreadyExists, "assoc-id", "association id already in use"),
    "associations_role_access_sub_claims_key": (
        AlreadyExists,
        "am-name",
        "this role is already associated with that auth method",
    ),
    "associations_role_name_fkey": (NotFound, "role-name", "no such access role"),
    "associations_access_id_fkey": (NotFound, "access-id", "no auth method with that access id"),
    "rules_role_name_fkey": (NotFound, "role-name", "no such access role"),
    "items_pkey": (AlreadyExists, "name", "item already exists"),
    "tokens_pkey": (AlreadyExists, "token", "a token with that hash is already stored"),
    "tokens_access_id_fkey": (NotFound, "access-id", "no auth method with that access id"),
}

#: SQLSTATE classes and codes of a database that does not answer now but may later (503, not 500).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40")  # connection, resources, operator, system, rolled back
_UNAVAILABLE_CODES = ("55P03", "55006", "25006")  # lock not available, object in use, read-only (failover)
#: Connection failures that no retry will fix.
_CONFIGURATION_ERRORS = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")
#: The server rolled the transaction back by itself: running it again is safe.
_ROLLED_BACK_CODES = ("40001", "40P01")  # serialization failure, deadlock


class _Tx:
    """The cursor of one transaction (or of one call inside a batch), and the change rows it will record."""

    __slots__ = ("changes", "cur")

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.changes: list[tuple[str, str]] = []

    def execute(self, query: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        return self.cur.execute(query, params)  # type: ignore[arg-type]  # our queries are literals

    def one(self, query: str, params: Sequence[Any] | None = None) -> Any:
        return self.execute(query, params).fetchone()

    def all(self, query: str, params: Sequence[Any] | None = None) -> list[Any]:
        return self.execute(query, params).fetchall()

    def exists(self, query: str, params: Sequence[Any]) -> bool:
        return self.one(query, params) is not None

    def insert(self, query: str, params: Sequence[Any], errors: dict[str, ModelError]) -> psycopg.Cursor[Any]:
        """Executes a write; a violation of one of the ``errors`` constraints raises that error instead."""
        try:
            return self.execute(query, params)
        except psycopg.IntegrityError as exc:
            error = errors.get(exc.diag.constraint_name or "")
            if error is not None:
                raise error from None
            raise

    def changed(self, kind: str, *keys: ChangeKey) -> None:
        self.changes.extend((kind, change_key_json(kind, key)) for key in keys)


class _Batch:
    __slots__ = ("changes", "conn", "cur")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.changes: list[tuple[str, str]] = []


class PostgresStore:
    """A :class:`~cedarkey.server.store.Store` (and :class:`~cedarkey.server.store.ChangeFeed`) in PostgreSQL.

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
        self._where = "{}:{}/{}".format(
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
            name=f"cedarkey {self._where}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout + acquire_timeout)
            self._migrate()
        except PoolTimeout as exc:
            self._pool.close()
            self._closed = True
            raise StoreUnavailable(f"cannot connect to the database {self._where} in time") from exc
        except BaseException:
            self._pool.close()
            self._closed = True
            raise

    # --- plumbing --------------------------------------------------------------------------------------

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

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
            message = _first_line(exc)
            kind = StoreError if any(m in message for m in _CONFIGURATION_ERRORS) else StoreUnavailable
            raise kind(f"cannot connect to the database {self._where}: {message}") from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database {self._where}: {_first_line(exc)}") from None
        try:
            encoding = conn.info.parameter_status("server_encoding")
        finally:
            conn.close()
        if encoding != "UTF8":
            # jsonb and text must hold any Unicode character, as SQLite does.
            raise StoreError(f"the database {self._where} must use the UTF8 encoding, not {encoding!r}")

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
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
                f"no connection to the database {self._where} within {self._acquire_timeout:g}s"
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
            try:
                with conn.cursor() as cur:
                    tx = _Tx(cur)
                    if begin is not None:
                        cur.execute(begin)  # type: ignore[arg-type]
                    result = work(tx)
                    if tx.changes:
                        self._record_changes(cur, tx.changes)
                    if begin is not None:
                        committing = write
                        cur.execute("COMMIT")
            except psycopg.Error as exc:
                _rollback_quietly(conn)
                lost = _connection_lost(conn, exc)
                if attempt == 1 and not committing and (lost or exc.sqlstate in _ROLLED_BACK_CODES):
                    log.info("database connection lost or transaction rolled back (%s); retrying once", exc)
                    self._release(conn)
                    if lost:
                        self._recover()
                    continue
                self._release(conn)
                raise _translate(exc, lost=lost, committing=committing, where=self._where) from exc
            except BaseException:
                _rollback_quietly(conn)
                self._release(conn)
                raise
            self._release(conn)
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
            lost = _connection_lost(batch.conn, exc)
            raise _translate(exc, lost=lost, committing=False, where=self._where) from exc
        batch.changes.extend(tx.changes)
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
                lost = _connection_lost(conn, exc)
                self._release(conn)
                if attempt == 1 and lost:
                    self._recover()
                    continue
                raise _translate(exc, lost=lost, committing=False, where=self._where) from exc
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
                if batch.changes:
                    self._record_changes(batch.cur, batch.changes)
                committing = True
                batch.cur.execute("COMMIT")
            except psycopg.Error as exc:
                lost = _connection_lost(conn, exc)
                raise _translate(exc, lost=lost, committing=committing, where=self._where) from exc
        except BaseException:
            _rollback_quietly(conn)
            raise
        finally:
            batch.cur.close()
            self._release(conn)
        if batch.changes:
            self._maybe_prune()

    def _write(self, work: Callable[[_Tx], T]) -> T:
        return self._run(work, write=True)

    def _read(self, work: Callable[[_Tx], T], *, snapshot: bool = False) -> T:
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
    def _schema_version(tx: _Tx) -> int:
        tables = {row[0] for row in tx.all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        if "schema_version" not in tables:
            if tables:
                raise StoreError("not a cedarkey database (it has tables but no schema_version)")
            return 0
        return int(tx.one("SELECT coalesce(max(version), 0) FROM schema_version")[0])

    def _migrate(self) -> None:
        target = len(self._migrations)
        current = self._read(self._schema_version, snapshot=True)
        self._refuse_future(current, target)
        for version in range(current + 1, target + 1):
            script = self._migrations[version - 1]

            def work(tx: _Tx, version: int = version, script: str = script) -> bool:
                # Another node may be migrating too: decide again once holding the migration lock.
                tx.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATION_LOCK)
                now = self._schema_version(tx)
                self._refuse_future(now, target)
                if now >= version:
                    return False
                tx.execute(script)
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (version, time.time()))
                return True

            try:
                applied = self._write(work)
            except (StoreUnavailable, SchemaVersionError):
                raise
            except StoreError as exc:
                raise StoreError(
                    f"{self._where}: migrating to schema version {version} failed (nothing of it applied): {exc}"
                ) from exc
            if applied:
                self.applied_migrations.append(version)

    def _refuse_future(self, current: int, target: int) -> None:
        if current > target:
            raise SchemaVersionError(
                f"the database {self._where} has schema version {current}, newer than the {target} this "
                "cedarkey knows: it was written by a newer cedarkey; upgrade cedarkey to open it"
            )

    def schema_version(self) -> int:
        return self._read(self._schema_version, snapshot=True)

    # --- load ------------------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        def work(tx: _Tx) -> Snapshot:
            auth_methods = [
                auth_method_from_row(*row)
                for row in tx.all("SELECT name, access_id, type, config::text FROM auth_methods ORDER BY seq")
            ]
            roles = [
                AccessRole(name, description)
                for name, description in tx.all("SELECT name, description FROM roles ORDER BY seq")
            ]
            associations = [
                Association(assoc_id, role_name, access_id, sub_claims_from_json(sub_claims))
                for assoc_id, role_name, access_id, sub_claims in tx.all(
                    "SELECT assoc_id, role_name, access_id, sub_claims::text FROM associations ORDER BY seq"
                )
            ]
            rules = [
                (role_name, rule_from_row(rule_type, path, capabilities))
                for role_name, rule_type, path, capabilities in tx.all(
                    "SELECT role_name, rule_type, path, capabilities::text FROM rules ORDER BY seq"
                )
            ]
            return Snapshot(auth_methods, roles, associations, rules)

        return self._read(work, snapshot=True)

    # --- auth methods ----------------------------------------------------------------------------------

    def add_auth_method(self, am: AuthMethod, access_key_hash: bytes | None = None) -> None:
        name_taken = AlreadyExists("name", f"auth method {shown(am.name)} already exists")
        access_id_taken = AlreadyExists("access-id", "access id already in use")

        def work(tx: _Tx) -> None:
            if tx.exists("SELECT 1 FROM auth_methods WHERE name = %s", (am.name,)):
                raise name_taken
            if tx.exists("SELECT 1 FROM auth_methods WHERE access_id = %s", (am.access_id,)):
                raise access_id_taken
            tx.insert(
                "INSERT INTO auth_methods (name, access_id, type, config, access_key_hash) "
                "VALUES (%s, %s, %s, %s::jsonb, %s)",
                (am.name, am.access_id, am.type, auth_method_config(am), _bytes(access_key_hash)),
                {"auth_methods_pkey": name_taken, "auth_methods_access_id_key": access_id_taken},
            )
            tx.changed(CHANGE_AUTH_METHOD, am.name)

        self._write(work)

    def update_auth_method(self, am: AuthMethod) -> None:
        def work(tx: _Tx) -> None:
            row = tx.one("SELECT access_id, type FROM auth_methods WHERE name = %s FOR UPDATE", (am.name,))
            if row is None:
                raise NotFound("name", f"no auth method {shown(am.name)}")
            if tuple(row) != (am.access_id, am.type):
                raise ModelError("name", "an update keeps the auth method's access id and type")
            tx.execute("UPDATE auth_methods SET config = %s::jsonb WHERE name = %s", (auth_method_config(am), am.name))
            tx.changed(CHANGE_AUTH_METHOD, am.name)

        self._write(work)

    def delete_auth_method(self, name: str) -> None:
        def work(tx: _Tx) -> None:
            row = tx.one("SELECT access_id FROM auth_methods WHERE name = %s FOR UPDATE", (name,))
            if row is None:
                raise NotFound("name", f"no auth method {shown(name)}")
            now = time.time()
            # The foreign keys cascade too; saying it here keeps the intent visible and feeds the change feed.
            tokens = tx.all(
                "DELETE FROM tokens WHERE access_id = %s RETURNING token_hash, revoked, expires_at, seq", row
            )
            live = sorted((seq, bytes(h).hex()) for h, revoked, exp, seq in tokens if not revoked and exp > now)
            tx.changed(CHANGE_TOKEN, *(key for _, key in live))
            assocs = tx.all("DELETE FROM associations WHERE access_id = %s RETURNING assoc_id, seq", row)
            tx.changed(CHANGE_ASSOCIATION, *(a for a, _ in sorted(assocs, key=lambda r: r[1])))
            tx.execute("DELETE FROM auth_methods WHERE name = %s", (name,))
            tx.changed(CHANGE_AUTH_METHOD, name)

        self._write(work)

    def access_key_hash(self, access_id: str) -> bytes | None:
        row = self._read(
            lambda tx: tx.one("SELECT access_key_hash FROM auth_methods WHERE access_id = %s", (access_id,))
        )
        return None if row is None or row[0] is None else bytes(row[0])

    # --- roles -----------------------------------------------------------------------------------------

    def add_role(self, name: str, description: str) -> None:
        def work(tx: _Tx) -> None:
            tx.insert(
                "INSERT INTO roles (name, description) VALUES (%s, %s)",
                (name, description),
                {"roles_pkey": AlreadyExists("name", f"access role {shown(name)} already exists")},
            )
            tx.changed(CHANGE_ROLE, name)

        self._write(work)

    def delete_role(self, name: str) -> None:
        def work(tx: _Tx) -> None:
            if not tx.exists("SELECT 1 FROM roles WHERE name = %s FOR UPDATE", (name,)):
                raise NotFound("name", f"no access role {shown(name)}")
            assocs = tx.all("DELETE FROM associations WHERE role_name = %s RETURNING assoc_id, seq", (name,))
            tx.changed(CHANGE_ASSOCIATION, *(a for a, _ in sorted(assocs, key=lambda r: r[1])))
            rules = tx.all("DELETE FROM rules WHERE role_name = %s RETURNING rule_type, path, seq", (name,))
            tx.changed(CHANGE_RULE, *((name, t, p) for t, p, _ in sorted(rules, key=lambda r: r[2])))
            tx.execute("DELETE FROM roles WHERE name = %s", (name,))
            tx.changed(CHANGE_ROLE, name)

        self._write(work)

    def add_association(self, assoc: Association) -> None:
        sub_claims = sub_claims_json(assoc.sub_claims)
        digest = hashlib.sha256(sub_claims.encode()).digest()
        no_role = NotFound("role-name", f"no access role {shown(assoc.role_name)}")
        no_am = NotFound("access-id", f"no auth method with access id {shown(assoc.access_id)}")
        id_taken = AlreadyExists("assoc-id", "association id already in use")
        duplicate = AlreadyExists("am-name", "this role is already associated with that auth method")

        def work(tx: _Tx) -> None:
            if not tx.exists("SELECT 1 FROM roles WHERE name = %s", (assoc.role_name,)):
                raise no_role
            if not tx.exists("SELECT 1 FROM auth_methods WHERE access_id = %s", (assoc.access_id,)):
                raise no_am
            if tx.exists("SELECT 1 FROM associations WHERE assoc_id = %s", (assoc.assoc_id,)):
                raise id_taken
            if tx.exists(
                "SELECT 1 FROM associations WHERE role_name = %s AND access_id = %s AND sub_claims_digest = %s",
                (assoc.role_name, assoc.access_id, digest),
            ):
                raise duplicate
            tx.insert(
                "INSERT INTO associations (assoc_id, role_name, access_id, sub_claims, sub_claims_digest) "
                "VALUES (%s, %s, %s, %s::jsonb, %s)",
                (assoc.assoc_id, assoc.role_name, assoc.access_id, sub_claims, digest),
                {
                    "associations_role_name_fkey": no_role,
                    "associations_access_id_fkey": no_am,
                    "associations_pkey": id_taken,
                    "associations_role_access_sub_claims_key": duplicate,
                },
            )
            tx.changed(CHANGE_ASSOCIATION, assoc.assoc_id)

        self._write(work)

    def delete_association(self, assoc_id: str) -> None:
        def work(tx: _Tx) -> None:
            if tx.execute("DELETE FROM associations WHERE assoc_id = %s", (assoc_id,)).rowcount == 0:
                raise NotFound("assoc-id", f"no association {shown(assoc_id)}")
            tx.changed(CHANGE_ASSOCIATION, assoc_id)

        self._write(work)

    def set_rule(self, role_name: str, rule: RoleRule) -> None:
        no_role = NotFound("role-name", f"no access role {shown(role_name)}")

        def work(tx: _Tx) -> None:
            if not tx.exists("SELECT 1 FROM roles WHERE name = %s", (role_name,)):
                raise no_role
            tx.insert(
                "INSERT INTO rules (role_name, rule_type, path, capabilities) VALUES (%s, %s, %s, %s::jsonb) "
                "ON CONFLICT (role_name, rule_type, path) DO UPDATE SET capabilities = excluded.capabilities",
                (role_name, str(rule.rule_type), rule.path, capabilities_json(rule.capabilities)),
                {"rules_role_name_fkey": no_role},
            )
            tx.changed(CHANGE_RULE, (role_name, str(rule.rule_type), rule.path))

        self._write(work)

    def delete_rule(self, role_name: str, rule_type: str, path: str) -> None:
        def work(tx: _Tx) -> None:
            if not tx.exists("SELECT 1 FROM roles WHERE name = %s", (role_name,)):
                raise NotFound("role-name", f"no access role {shown(role_name)}")
            deleted = tx.execute(
                "DELETE FROM rules WHERE role_name = %s AND rule_type = %s AND path = %s",
                (role_name, str(rule_type), path),
            ).rowcount
            if deleted == 0:
                raise NotFound("path", f"role {shown(role_name)} has no {rule_type} on {shown(path)}")
            tx.changed(CHANGE_RULE, (role_name, str(rule_type), path))

        self._write(work)

    # --- items -----------------------------------------------------------------------------------------

    def add_item(self, item: StoredItem) -> None:
        def work(tx: _Tx) -> None:
            tx.insert(
                "INSERT INTO items (name, item_type, ciphertext, nonce, created_at, updated_at, version, "
                "description, item_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                {"items_pkey": AlreadyExists("name", f"item {shown(item.name)} already exists")},
            )

        self._write(work)

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
        def work(tx: _Tx) -> StoredItem:
            row = tx.one(
                "UPDATE items SET ciphertext = %s, nonce = %s, updated_at = %s, version = version + 1, "
                "description = coalesce(%s, description) WHERE name = %s "
                "AND (%s::bigint IS NULL OR version = %s::bigint - 1) "
                "RETURNING name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id",
                (bytes(ciphertext), bytes(nonce), float(updated_at), description, name, version, version),
            )
            if row is None:
                if tx.one("SELECT 1 FROM items WHERE name = %s", (name,)) is not None:
                    raise VersionConflict("name", f"item {shown(name)} is not at version {version - 1}")
                raise NotFound("name", f"no item {shown(name)}")
            return _item(row)

        return self._write(work)

    def rewrite_items(self, items: Sequence[StoredItem]) -> None:
        def work(tx: _Tx) -> None:
            for item in items:
                changed = tx.execute(
                    "UPDATE items SET ciphertext = %s, nonce = %s WHERE name = %s AND version = %s",
                    (bytes(item.ciphertext), bytes(item.nonce), item.name, int(item.version)),
                ).rowcount
                if changed == 0:
                    raise VersionConflict("name", f"item {shown(item.name)} is not at version {item.version}")

        self._write(work)

    def get_item(self, name: str) -> StoredItem:
        row = self._read(lambda tx: tx.one(_SELECT_ITEMS + " WHERE name = %s", (name,)))
        if row is None:
            raise NotFound("name", f"no item {shown(name)}")
        return _item(row)

    def delete_item(self, name: str) -> None:
        def work(tx: _Tx) -> None:
            if tx.execute("DELETE FROM items WHERE name = %s", (name,)).rowcount == 0:
                raise NotFound("name", f"no item {shown(name)}")

        self._write(work)

    def list_items(self) -> list[StoredItem]:
        rows = self._read(lambda tx: tx.all(_SELECT_ITEMS + ' ORDER BY name COLLATE "C"'))
        return [_item(row) for row in rows]

    # --- tokens ----------------------------------------------------------------------------------------

    def add_token(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool:
        def work(tx: _Tx) -> bool:
            if proof is not None and not self._claim(tx, *proof):
                return False
            tx.insert(
                "INSERT INTO tokens (token_hash, access_id, identity, issued_at, expires_at) "
                "VALUES (%s, %s, %s::jsonb, %s, %s)",
                (
                    bytes(token.token_hash),
                    token.access_id,
                    identity_json(token.identity),
                    float(token.issued_at),
                    float(token.expires_at),
                ),
                {
                    "tokens_access_id_fkey": NotFound(
                        "access-id", f"no auth method with access id {shown(token.access_id)}"
                    ),
                    "tokens_pkey": AlreadyExists("token", "a token with that hash is already stored"),
                },
            )
            tx.changed(CHANGE_TOKEN, bytes(token.token_hash).hex())
            return True

        return self._write(work)

    def add_token_now(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> None:
        """Never: every PostgreSQL write is a network round trip, made from a worker thread."""
        return None

    def revoke_token(self, token_hash: bytes) -> bool:
        def work(tx: _Tx) -> bool:
            revoked = tx.execute(
                "UPDATE tokens SET revoked = true WHERE token_hash = %s AND NOT revoked", (bytes(token_hash),)
            ).rowcount
            if revoked != 1:
                return False
            tx.changed(CHANGE_TOKEN, bytes(token_hash).hex())
            return True

        return self._write(work)

    def load_tokens(self, now: float) -> list[StoredToken]:
        rows = self._read(
            lambda tx: tx.all(_SELECT_TOKENS + " WHERE NOT revoked AND expires_at > %s ORDER BY issued_at, seq", (now,))
        )
        return [_token(row) for row in rows]

    def purge_expired(self, now: float) -> int:
        def work(tx: _Tx) -> int:
            purged = tx.execute("DELETE FROM tokens WHERE expires_at <= %s", (float(now),)).rowcount
            tx.execute("DELETE FROM login_proofs WHERE expires_at <= %s", (float(now),))
            return purged

        return self._write(work)

    # --- single-use login proofs -----------------------------------------------------------------------

    def claim_proof(self, key: bytes, expires_at: float, now: float) -> bool:
        """Atomic across nodes: of concurrent claims of one key, the unique key lets exactly one insert."""

        return self._write(lambda tx: self._claim(tx, key, expires_at, now))

    @staticmethod
    def _claim(tx: _Tx, key: bytes, expires_at: float, now: float) -> bool:
        # One statement, one round trip: a new key is inserted, this key's expired claim is taken over (the
        # others go with purge_expired, which the server's housekeeping runs every minute), a live claim is
        # left as it is and changes no row. A concurrent claim of the same key waits for the first to commit,
        # then sees its row.
        claimed = tx.execute(
            "INSERT INTO login_proofs (proof_key, expires_at) VALUES (%s, %s) ON CONFLICT (proof_key) "
            "DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE login_proofs.expires_at <= %s",
            (bytes(key), float(expires_at), float(now)),
        ).rowcount
        return claimed == 1

    # --- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._read(lambda tx: tx.one("SELECT value FROM meta WHERE key = %s", (key,)))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        def work(tx: Any) -> None:
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            tx.changed(CHANGE_META, key)

        self._write(work)

    # --- change feed (see cedarkey.server.store.ChangeFeed) ---------------------------------------------

    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT seq, kind, key::text, at FROM changes WHERE seq > %s ORDER BY seq LIMIT %s",
                (int(seq), int(limit)),
            )
        )
        return [change_from_row(*row) for row in rows]

    def latest_change(self) -> int:
        row = self._read(
            lambda tx: tx.one(
                "SELECT greatest((SELECT max(seq) FROM changes), (SELECT value::bigint FROM meta WHERE key = %s), 0)",
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

        def work(tx: _Tx) -> int:
            # SKIP LOCKED: nodes pruning at the same moment share the work instead of waiting for each other.
            row = tx.one(
                "WITH gone AS ("
                " DELETE FROM changes WHERE seq IN (SELECT seq FROM changes"
                "  WHERE at < date_part('epoch', clock_timestamp()) - %s"
                "  ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING seq),"
                " mark AS ("
                " INSERT INTO meta (key, value) SELECT %s, max(seq)::text FROM gone HAVING count(*) > 0"
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

    def get_auth_method(self, name: str) -> AuthMethod | None:
        row = self._read(
            lambda tx: tx.one("SELECT name, access_id, type, config::text FROM auth_methods WHERE name = %s", (name,))
        )
        return None if row is None else auth_method_from_row(*row)

    def get_role(self, name: str) -> AccessRole | None:
        row = self._read(lambda tx: tx.one("SELECT name, description FROM roles WHERE name = %s", (name,)))
        return None if row is None else AccessRole(row[0], row[1])

    def get_association(self, assoc_id: str) -> Association | None:
        row = self._read(
            lambda tx: tx.one(
                "SELECT assoc_id, role_name, access_id, sub_claims::text FROM associations WHERE assoc_id = %s",
                (assoc_id,),
            )
        )
        return None if row is None else Association(row[0], row[1], row[2], sub_claims_from_json(row[3]))

    def get_rule(self, role_name: str, rule_type: str, path: str) -> RoleRule | None:
        row = self._read(
            lambda tx: tx.one(
                "SELECT rule_type, path, capabilities::text FROM rules "
                "WHERE role_name = %s AND rule_type = %s AND path = %s",
                (role_name, str(rule_type), path),
            )
        )
        return None if row is None else rule_from_row(*row)

    def get_token(self, token_hash: bytes, now: float | None = None) -> StoredToken | None:
        row = self._read(
            lambda tx: tx.one(
                _SELECT_TOKENS + " WHERE token_hash = %s AND NOT revoked AND expires_at > %s",
                (bytes(token_hash), float(time.time() if now is None else now)),
            )
        )
        return None if row is None else _token(row)

    def live_tokens(self, token_hashes: Sequence[bytes], now: float) -> set[bytes]:
        if not token_hashes:
            return set()
        rows = self._read(
            lambda tx: tx.all(
                "SELECT token_hash FROM tokens WHERE token_hash = ANY(%s) AND NOT revoked AND expires_at > %s",
                ([bytes(h) for h in token_hashes], float(now)),
            )
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
                log.warning("change listener cannot connect to %s: %s", self._where, _first_line(exc))
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
                log.warning("change listener lost its connection to %s: %s", self._where, _first_line(exc))
                stop.wait(delay)
                delay = min(delay * 2, max_backoff)
            finally:
                conn.close()


# --- helpers -------------------------------------------------------------------------------------------------


def _connection_lost(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether the connection is gone (the server restarted, terminated it, or cannot be reached)."""
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _translate(exc: psycopg.Error, *, lost: bool, committing: bool, where: str) -> Exception:
    """The store error (or model error) a driver error means."""
    if lost and committing:
        return StoreUnavailable(
            f"the connection to the database {where} was lost while committing: the write may or may not "
            f"have been applied ({_first_line(exc)})"
        )
    state = exc.sqlstate or ""
    if lost or state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"database unavailable: {_first_line(exc)}")
    if isinstance(exc, psycopg.IntegrityError):
        meaning = _CONSTRAINTS.get(exc.diag.constraint_name or "")
        if meaning is not None:
            error_type, field, message = meaning
            return error_type(field, message)
    # PostgreSQL text cannot hold NUL (the driver refuses it, jsonb refuses \\u0000): bad input, not a fault.
    if state in ("22021", "22P05") or (isinstance(exc, psycopg.DataError) and "NUL" in str(exc)):
        return ModelError("", "PostgreSQL cannot store the NUL character")
    if isinstance(exc, psycopg.InterfaceError):
        return StoreUnavailable(f"database unavailable: {_first_line(exc)}")
    return StoreError(f"database error: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _seq(payload: str) -> int | None:
    try:
        return int(payload)
    except ValueError:
        return None


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


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


def _token(row: Sequence[Any]) -> StoredToken:
    token_hash, access_id, identity, issued_at, expires_at = row
    return StoredToken(bytes(token_hash), access_id, identity_from_json(identity), float(issued_at), float(expires_at))
