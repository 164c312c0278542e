"""The storage layer on a real SQLite file: round trips, errors, transactions, migrations, concurrency and
durability across SIGKILL."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cedarkey.engine import AuthMethod, NotFound
from cedarkey.server.sqlite_store import MIGRATIONS, SqliteStore, split_statements
from cedarkey.server.store import (
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
)

from tests import store_contract
from tests.store_contract import aws_method, populated, run_threads, token

# --- helpers -------------------------------------------------------------------------------------------------


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection beside the store, to look at (or sabotage) the database directly."""
    return sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cedarkey.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


# --- interface and round trips -------------------------------------------------------------------------------


def test_fresh_database_is_private_wal_and_at_the_latest_schema(store: SqliteStore, db_path: Path) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert store.applied_migrations == list(range(1, len(MIGRATIONS) + 1))
    assert store.schema_version() == len(MIGRATIONS)
    conn = raw(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    store.set_meta("k", "v")
    wal = db_path.with_name(db_path.name + "-wal")
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_the_test_auth_method_sets_every_field() -> None:
    am = aws_method()
    for f in dataclasses.fields(AuthMethod):
        assert getattr(am, f.name) != f.default, f"aws_method() leaves {f.name} at its default"


# --- auth methods --------------------------------------------------------------------------------------------


def test_a_failed_delete_changes_nothing(store: SqliteStore, db_path: Path) -> None:
    """All or nothing: when the last statement of delete_auth_method fails, its earlier deletes roll back."""
    populated(store)
    store.add_token(token(b"t-aws", "p-awsprod00000001", 10_000))
    before = store.load()
    conn = raw(db_path)
    conn.execute("CREATE TRIGGER no_delete BEFORE DELETE ON auth_methods BEGIN SELECT RAISE(ABORT, 'sabotage'); END")
    conn.close()
    with pytest.raises(StoreError, match="sabotage") as exc:
        store.delete_auth_method("/aws/prod")
    assert not isinstance(exc.value, StoreUnavailable)  # a refused write is not an unavailable database
    assert store.load() == before
    assert [t.token_hash for t in store.load_tokens(0)] == [b"t-aws"]
    # The store is still usable after the failed transaction.
    store.set_meta("after", "ok")
    assert store.get_meta("after") == "ok"


# --- roles, associations, rules ------------------------------------------------------------------------------


# --- items ---------------------------------------------------------------------------------------------------


# --- tokens and login proofs ---------------------------------------------------------------------------------


def test_a_writer_waits_for_the_lock_up_to_the_busy_timeout(db_path: Path) -> None:
    with SqliteStore(db_path, busy_timeout=0.2) as impatient, SqliteStore(db_path) as patient:
        other = raw(db_path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO meta (key, value) VALUES ('held', 'by another writer')")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            impatient.set_meta("k", "v")
        assert time.monotonic() - started >= 0.15
        # Reads are not blocked by a writer (WAL), and see only committed data.
        assert impatient.get_meta("held") is None

        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        patient.set_meta("k", "v")  # waits for the commit, then writes
        release.join()
        other.close()
        assert (impatient.get_meta("k"), impatient.get_meta("held")) == ("v", "by another writer")


# --- schema and migrations -----------------------------------------------------------------------------------


def test_opening_an_up_to_date_database_applies_nothing(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = raw(db_path)
    rows = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    conn.close()
    with SqliteStore(db_path) as s:
        assert s.applied_migrations == []
    conn = raw(db_path)
    assert conn.execute("SELECT version, applied_at FROM schema_version").fetchall() == rows
    conn.close()


@pytest.mark.parametrize("check", store_contract.MIGRATION_CONTRACT, ids=lambda c: c.__name__)
def test_migration_contract_on_sqlite(check: store_contract.MigrationCheck, db_path: Path) -> None:
    def query(sql: str) -> list[tuple[Any, ...]] | None:
        conn = raw(db_path)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()

    check(lambda migrations: SqliteStore(db_path, migrations=migrations), query)


def test_a_database_from_the_future_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = raw(db_path)
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer cedarkey"):
        SqliteStore(db_path)


def test_a_foreign_database_is_refused(db_path: Path) -> None:
    conn = raw(db_path)
    conn.execute("CREATE TABLE somebody_elses (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a cedarkey database"):
        SqliteStore(db_path)


def test_a_file_that_is_not_sqlite_is_refused(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database at all, not even close" * 100)
    with pytest.raises(StoreError, match=str(db_path)):
        SqliteStore(db_path)


def test_split_statements_respects_literals_and_trigger_bodies() -> None:
    script = """
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    -- a comment; with a semicolon
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
        DELETE FROM t WHERE x = ';';
    END;
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert "CREATE TRIGGER" in statements[1] and statements[1].rstrip().endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x);\nCREATE TABLE u (y)")


# --- concurrency ---------------------------------------------------------------------------------------------


def test_two_stores_opening_a_new_file_at_once_migrate_once(db_path: Path) -> None:
    stores: list[SqliteStore] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        s = SqliteStore(db_path)
        with lock:
            stores.append(s)

    run_threads(4, work)
    try:
        applied = sorted(v for s in stores for v in s.applied_migrations)
        assert applied == list(range(1, len(MIGRATIONS) + 1))
        assert stores[0].schema_version() == len(MIGRATIONS)
    finally:
        for s in stores:
            s.close()


# --- durability ----------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from cedarkey.server.sqlite_store import SqliteStore
    from cedarkey.server.store import StoredItem

    store = SqliteStore(sys.argv[1])
    if sys.argv[2] == "once":
        store.set_meta("durable", "yes")
        print("acknowledged", flush=True)
        sys.stdin.read()  # wait to be killed
    else:
        i = 0
        while True:
            store.add_item(StoredItem(f"/k/{i}", "static-secret", b"c" * 64, b"n" * 12, 1.0, 1.0, 1, ""))
            print(f"acknowledged {i}", flush=True)
            i += 1
    """
)


def start_writer(db_path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_an_acknowledged_write_survives_sigkill(db_path: Path) -> None:
    proc = start_writer(db_path, "once")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "acknowledged"
    finally:
        kill(proc)
    with SqliteStore(db_path) as s:
        assert s.get_meta("durable") == "yes"


def test_every_acknowledged_write_survives_sigkill_mid_stream(db_path: Path) -> None:
    proc = start_writer(db_path, "loop")
    acknowledged: list[int] = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line.startswith("acknowledged "), line
            acknowledged.append(int(line.split()[1]))
    finally:
        kill(proc)  # most likely in the middle of the next write
    assert len(acknowledged) == 40
    with SqliteStore(db_path) as s:
        names = {i.name for i in s.list_items()}
    assert {f"/k/{i}" for i in acknowledged} <= names
    conn = raw(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


# --- the backend-independent store contract, on SQLite (test_postgres_store.py runs it on PostgreSQL) ---------


@pytest.mark.parametrize("check", store_contract.CONTRACT, ids=lambda c: c.__name__)
def test_contract_on_sqlite(check: store_contract.Check, tmp_path: Path) -> None:
    check(lambda: SqliteStore(tmp_path / "contract.db"))


# --- token writes on the event loop (add_token_now) -------------------------------------------------------------


def _settings(conn: sqlite3.Connection | None) -> tuple[int, int, int]:
    assert conn is not None
    names = ("busy_timeout", "wal_autocheckpoint", "synchronous")
    return tuple(int(conn.execute(f"PRAGMA {n}").fetchone()[0]) for n in names)  # type: ignore[return-value]


MAIN = (10_000, 1000, 2)  # the store's connection: waits up to 10 s, checkpoints, synchronous=FULL
FAST = (0, 0, 1)  # add_token_now's: never waits, never checkpoints, synchronous=NORMAL


def test_add_token_now_writes_at_once_when_nothing_waits(store: SqliteStore) -> None:
    store.add_auth_method(aws_method())
    proof = (b"\x07" * 32, 5000.0, 100.0)
    assert store.add_token_now(token(b"\x01", "p-awsprod00000001", 9000.0), proof) is True
    # the same proof again: refused, nothing written (proofs are single use on this path too)
    assert store.add_token_now(token(b"\x02", "p-awsprod00000001", 9000.0), proof) is False
    assert [t.token_hash for t in store.load_tokens(now=0.0)] == [b"\x01"]
    assert (_settings(store._conn), _settings(store._fast_conn)) == (MAIN, FAST)


def test_add_token_now_errors_roll_back(store: SqliteStore) -> None:
    store.add_auth_method(aws_method())
    proof = (b"\x08" * 32, 5000.0, 100.0)
    with pytest.raises(NotFound):
        store.add_token_now(token(b"\x01", "p-nosuchmethod0001", 9000.0), proof)
    assert store.load_tokens(now=0.0) == []
    assert store.claim_proof(*proof) is True  # the failed write's claim was rolled back with it
    assert store._fast_conn is not None and not store._fast_conn.in_transaction
    assert store.add_token_now(token(b"\x03", "p-awsprod00000001", 9000.0)) is True
    assert store.add_token(token(b"\x02", "p-awsprod00000001", 9000.0)) is True


def test_add_token_now_never_waits_for_the_store_lock(store: SqliteStore) -> None:
    store.add_auth_method(aws_method())
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        t0 = time.monotonic()
        assert store.add_token_now(token(b"\x01", "p-awsprod00000001", 9000.0)) is None
        assert time.monotonic() - t0 < 0.5
    finally:
        release.set()
        thread.join(10)
    assert store.load_tokens(now=0.0) == []


def test_add_token_now_never_waits_for_another_writer(store: SqliteStore, db_path: Path) -> None:
    """Another connection (another process, say) holds SQLite's write lock: no busy wait (the store's
    busy_timeout is 10 s), None at once, nothing written, and the waiting path still works afterwards."""
    store.add_auth_method(aws_method())
    other = raw(db_path)
    other.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        assert store.add_token_now(token(b"\x01", "p-awsprod00000001", 9000.0)) is None
        assert time.monotonic() - t0 < 0.5
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.load_tokens(now=0.0) == []
    assert store.add_token(token(b"\x02", "p-awsprod00000001", 9000.0)) is True


def test_add_token_now_leaves_checkpoints_to_the_checkpointer(db_path: Path) -> None:
    """Fast writes never checkpoint (a checkpoint fsyncs) and never go to a worker thread on their own; the
    store's checkpointer thread copies the WAL back, so the WAL stays small while logins keep coming."""
    with SqliteStore(db_path, checkpoint_interval=0.05) as store:
        store.add_auth_method(aws_method())
        wal = db_path.with_name(db_path.name + "-wal")
        largest = 0
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for i in range(3000):
            t = token(i.to_bytes(4, "big"), "p-awsprod00000001", 9000.0)
            assert store.add_token_now(t, (b"p" + i.to_bytes(4, "big"), 5000.0, 100.0)) is True
            if i % 100 == 99:
                # Two more rounds: at least one whole checkpoint began after the last write. (A fixed pause lost
                # the race on a slow machine, where one checkpoint's fsync outlasted it.)
                seen, deadline = checkpointer.checkpoints, time.monotonic() + 10
                while checkpointer.checkpoints < seen + 2:
                    assert time.monotonic() < deadline, "the checkpointer stopped checkpointing"
                    time.sleep(0.01)
                largest = max(largest, wal.stat().st_size // 4096)
        assert len(store.load_tokens(now=0.0)) == 3000
    # Without checkpoints 3,000 token writes leave about 10,000 pages in the WAL.
    assert largest < 2500, largest


def test_the_checkpointer_stops_with_the_store(db_path: Path) -> None:
    store = SqliteStore(db_path, checkpoint_interval=0.01)
    checkpointer = store._checkpointer
    assert checkpointer is not None and checkpointer._thread.is_alive()
    store.close()
    assert not checkpointer._thread.is_alive()


def test_an_in_memory_store_never_writes_now() -> None:
    """An in-memory database has a single connection: tokens go the waiting way."""
    with SqliteStore(":memory:") as memory:
        memory.add_auth_method(aws_method())
        assert memory.add_token_now(token(b"\x01", "p-awsprod00000001", 9000.0)) is None
        assert memory.load_tokens(now=0.0) == []
