"""The PostgreSQL backend on a real server: the backend-independent store contract (also run on SQLite here),
then what only PostgreSQL has to prove: several nodes (stores with pools of their own) on one database, lost
connections and outages, migrations from concurrent processes, the change feed's ordering and notifications.

Each test gets a database of its own (``cedarkey_test_<random>``), dropped afterwards. The server is
``$CEDARKEY_TEST_POSTGRES`` or ``postgresql://root@127.0.0.1:5432/postgres``. When it cannot be reached the
PostgreSQL tests are skipped, unless ``$CI`` is set: then they fail.
"""

from __future__ import annotations

import json
import queue
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cedarkey.engine import AccessRole, AlreadyExists, Association, ModelError, NotFound
from cedarkey.server.postgres_store import CHANNEL, MIGRATIONS, PostgresStore
from cedarkey.server.store import ChangeCursor, SchemaVersionError, StoreError, StoreUnavailable
from psycopg.conninfo import make_conninfo

from tests import store_contract
from tests.store_contract import CONTRACT, FAR, item, key_method, rule, run_threads, token
from tests.support.postgres import SERVER, require_server

SERVER_URL = SERVER
ROOT = Path(__file__).resolve().parent.parent


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> str:
    require_server()
    return SERVER_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for this test."""
    name = f"cedarkey_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    yield s
    s.close()


def raw(url: str) -> psycopg.Connection[Any]:
    """A plain connection beside the store, to look at (or sabotage) the database directly."""
    return psycopg.connect(url, autocommit=True)


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with raw(url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def terminate_others(url: str) -> int:
    """Ends every other session on the test's database (as a server restart or an administrator would)."""
    with raw(url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


# --- the contract, on both backends ---------------------------------------------------------------------------


def _ids(check: Callable[..., None]) -> str:
    return check.__name__


@pytest.mark.parametrize("check", CONTRACT, ids=_ids)
def test_contract_on_postgres(check: store_contract.Check, pg_url: str) -> None:
    check(lambda: PostgresStore(pg_url, max_size=10))


# --- schema and migrations -----------------------------------------------------------------------------------


def test_a_fresh_database_is_at_the_latest_schema_with_native_types(store: PostgresStore, pg_url: str) -> None:
    assert store.applied_migrations == list(range(1, len(MIGRATIONS) + 1))
    assert store.schema_version() == len(MIGRATIONS)
    with raw(pg_url) as conn:
        types = dict(
            ((table, column), data_type)
            for table, column, data_type in conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
        )
        identity = {
            table
            for (table,) in conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_name = 'seq' AND is_identity = 'YES'"
            )
        }
    assert types["tokens", "token_hash"] == types["items", "ciphertext"] == types["items", "nonce"] == "bytea"
    assert types["auth_methods", "access_key_hash"] == types["login_proofs", "proof_key"] == "bytea"
    assert types["auth_methods", "config"] == types["associations", "sub_claims"] == "jsonb"
    assert types["tokens", "identity"] == types["rules", "capabilities"] == types["changes", "key"] == "jsonb"
    assert types["changes", "seq"] == "bigint"
    assert {"auth_methods", "roles", "associations", "rules", "tokens"} <= identity


def test_opening_an_up_to_date_database_applies_nothing(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    rows = scalar(pg_url, "SELECT json_agg(json_build_array(version, applied_at)) FROM schema_version")
    with PostgresStore(pg_url) as s:
        assert s.applied_migrations == []
    assert scalar(pg_url, "SELECT json_agg(json_build_array(version, applied_at)) FROM schema_version") == rows


@pytest.mark.parametrize("check", store_contract.MIGRATION_CONTRACT, ids=lambda c: c.__name__)
def test_migration_contract_on_postgres(check: store_contract.MigrationCheck, pg_url: str) -> None:
    def query(sql: str) -> list[tuple[Any, ...]] | None:
        with raw(pg_url) as conn:
            try:
                return [tuple(row) for row in conn.execute(sql).fetchall()]  # type: ignore[arg-type]
            except psycopg.errors.UndefinedTable:
                return None

    check(lambda migrations: PostgresStore(pg_url, migrations=migrations), query)


def test_a_database_from_the_future_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with raw(pg_url) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaVersionError, match="newer cedarkey"):
        PostgresStore(pg_url)


def test_a_foreign_database_is_refused(pg_url: str) -> None:
    with raw(pg_url) as conn:
        conn.execute("CREATE TABLE somebody_elses (x int)")
    with pytest.raises(StoreError, match="not a cedarkey database"):
        PostgresStore(pg_url)


OPENER = textwrap.dedent(
    """
    import json, sys, time
    from cedarkey.server.postgres_store import PostgresStore

    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    store = PostgresStore(sys.argv[1])
    print(json.dumps(store.applied_migrations), flush=True)
    store.close()
    """
)


def test_processes_opening_a_new_database_at_once_migrate_once(pg_url: str) -> None:
    start = time.time() + 2.0  # every process is up and waiting by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, pg_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    applied: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        applied.extend(json.loads(out))
    assert sorted(applied) == list(range(1, len(MIGRATIONS) + 1))
    assert scalar(pg_url, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


# --- connecting ----------------------------------------------------------------------------------------------


def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        PostgresStore(f"postgresql://root@127.0.0.1:{port}/cedarkey", connect_timeout=2)
    assert time.monotonic() - started < 10


def test_a_missing_database_or_a_bad_url_is_a_configuration_error(pg_server: str) -> None:
    with pytest.raises(StoreError) as exc:
        PostgresStore(make_conninfo(pg_server, dbname=f"cedarkey_missing_{secrets.token_hex(4)}"))
    assert not isinstance(exc.value, StoreUnavailable)
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        PostgresStore("this is = not a = url")


def test_a_database_not_in_utf8_is_refused(pg_server: str) -> None:
    name = f"cedarkey_test_{secrets.token_hex(6)}"
    with raw(pg_server) as conn:
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        with pytest.raises(StoreError, match="UTF8"):
            PostgresStore(make_conninfo(pg_server, dbname=name))
    finally:
        with raw(pg_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- several nodes -------------------------------------------------------------------------------------------


def test_two_nodes_writing_200_things_at_once_lose_nothing(pg_url: str) -> None:
    with PostgresStore(pg_url) as node_a, PostgresStore(pg_url) as node_b:
        node_a.add_auth_method(key_method())
        per_thread = 25

        def work(n: int) -> None:
            node = (node_a, node_b)[n % 2]
            for i in range(per_thread):
                name = f"/n{n}/{i}"
                if i % 3 == 0:
                    node.add_role(name, f"by thread {n}")
                elif i % 3 == 1:
                    node.add_item(item(name))
                else:
                    node.add_token(token(name.encode(), key_method().access_id, FAR))

        run_threads(8, work)  # 8 threads, 4 on each node: 200 writes
        roles = [r.name for r in node_b.load().roles]
        items = [i.name for i in node_a.list_items()]
        tokens = node_b.load_tokens(0)
        assert len(roles) + len(items) + len(tokens) == 200
        assert len(set(roles)) == len(roles) and len(set(items)) == len(items)
        changes = node_a.changes_since(0, limit=10_000)
        assert len(changes) == 1 + len(roles) + len(tokens)  # items are not in the feed
        assert len({c.seq for c in changes}) == len(changes)


def test_a_unique_violation_from_a_concurrent_insert_is_already_exists(store: PostgresStore, pg_url: str) -> None:
    """Forces the race the up-front checks cannot see: another node's insert, not committed yet."""
    store.add_auth_method(key_method())
    cases: list[tuple[str, Callable[[], None], type[Exception], str]] = [
        ("INSERT INTO roles (name) VALUES ('/x')", lambda: store.add_role("/x", ""), AlreadyExists, "name"),
        (
            "INSERT INTO auth_methods (name, access_id, type, config) "
            "VALUES ('/am2', 'p-dup000000000001', 'access_key', '{}')",
            lambda: store.add_auth_method(key_method("/am3", "p-dup000000000001")),
            AlreadyExists,
            "access-id",
        ),
        (
            "INSERT INTO items (name, item_type, ciphertext, nonce, created_at, updated_at, version) "
            "VALUES ('/i', 't', '', '', 0, 0, 1)",
            lambda: store.add_item(item("/i")),
            AlreadyExists,
            "name",
        ),
        (  # the role exists when the store checks, and is gone when it inserts
            "DELETE FROM roles WHERE name = '/x'",
            lambda: store.add_association(Association("ac-1", "/x", key_method().access_id)),
            NotFound,
            "role-name",
        ),
        (
            "DELETE FROM auth_methods WHERE name = '/keys/ci'",
            lambda: store.add_token(token(b"t", key_method().access_id, FAR)),
            NotFound,
            "access-id",
        ),
    ]
    for sql, call, error, field in cases:
        with raw(pg_url) as other:
            other.execute("BEGIN")
            other.execute(sql)  # type: ignore[arg-type]
            outcome: list[BaseException | None] = []
            thread = threading.Thread(target=lambda call=call, outcome=outcome: outcome.append(_catch(call)))
            thread.start()
            time.sleep(0.3)  # the store passed its checks and waits for the other transaction's row
            assert thread.is_alive(), f"{sql}: the store did not wait"
            other.execute("COMMIT")
            thread.join(timeout=30)
        assert isinstance(outcome[0], error), (sql, outcome)
        assert outcome[0].field == field  # type: ignore[attr-defined]


def _catch(call: Callable[[], None]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:
        return exc
    return None


def test_nodes_bootstrapping_a_new_database_at_once_create_one_admin(pg_url: str) -> None:
    """Batches run one at a time across nodes: the check-then-create of bootstrap() is decided once."""
    from cedarkey.server.service import bootstrap

    stores = [PostgresStore(pg_url) for _ in range(4)]
    try:
        admins: list[dict[str, str] | None] = [None] * len(stores)

        def work(n: int) -> None:
            admins[n] = bootstrap(stores[n], "check")

        run_threads(len(stores), work)
        created = [a for a in admins if a is not None]
        assert len(created) == 1
        snap = stores[0].load()
        assert [am.access_id for am in snap.auth_methods] == [created[0]["access_id"]]
        assert len(snap.roles) == 1 and len(snap.associations) == 1
    finally:
        for s in stores:
            s.close()


def test_a_batch_is_invisible_to_other_nodes_until_it_commits(pg_url: str) -> None:
    with PostgresStore(pg_url) as node_a, PostgresStore(pg_url) as node_b:
        with node_a.batch():
            node_a.add_role("/b", "")
            assert node_a.get_role("/b") == AccessRole("/b", "")
            assert node_b.get_role("/b") is None
            assert node_b.changes_since(0) == []
        assert node_b.get_role("/b") == AccessRole("/b", "")


def test_a_failed_delete_changes_nothing(store: PostgresStore, pg_url: str) -> None:
    """All or nothing: when the last statement of delete_auth_method fails, its earlier deletes roll back."""
    store_contract.populated(store)
    store.add_token(token(b"t-aws", "p-awsprod00000001", FAR))
    before, latest = store.load(), store.latest_change()
    with raw(pg_url) as conn:
        conn.execute(
            "CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'sabotage'; END $$"
        )
        conn.execute("CREATE TRIGGER no_delete BEFORE DELETE ON auth_methods FOR EACH ROW EXECUTE FUNCTION sabotage()")
    with pytest.raises(StoreError, match="sabotage") as exc:
        store.delete_auth_method("/aws/prod")
    assert not isinstance(exc.value, StoreUnavailable)  # a refused write is not an unavailable database
    assert store.load() == before
    assert [t.token_hash for t in store.load_tokens(0)] == [b"t-aws"]
    assert store.latest_change() == latest
    with pytest.raises(StoreError, match="sabotage"), store.batch():
        store.add_role("/in-batch", "")
        store.delete_auth_method("/aws/prod")
    assert store.load() == before
    store.set_meta("after", "ok")
    assert store.get_meta("after") == "ok"


def test_text_postgresql_cannot_hold_is_refused_as_bad_input(store: PostgresStore) -> None:
    with pytest.raises(ModelError, match="NUL"):
        store.add_role("/r", "a\x00b")
    store.add_role("/r", "fine")


def test_a_writer_waits_for_a_row_lock_up_to_the_lock_timeout(pg_url: str) -> None:
    with PostgresStore(pg_url, lock_timeout=0.3) as impatient, PostgresStore(pg_url) as patient:
        impatient.add_item(item("/i"))
        with raw(pg_url) as other:
            other.execute("BEGIN")
            other.execute("UPDATE items SET version = 100 WHERE name = '/i'")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="lock"):
                impatient.update_item("/i", b"c", b"n" * 12, 1.0)
            assert time.monotonic() - started >= 0.25
            assert impatient.get_item("/i").version == 1  # readers are not blocked, and see committed data
            release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
            release.start()
            assert patient.update_item("/i", b"c", b"n" * 12, 1.0).version == 101
            release.join()


# --- lost connections and outages ----------------------------------------------------------------------------


def test_terminated_connections_are_replaced_transparently(pg_url: str) -> None:
    with PostgresStore(pg_url, min_size=4) as s:
        s.add_role("/r", "")
        assert terminate_others(pg_url) >= 4
        assert s.get_role("/r") == AccessRole("/r", "")  # a read: retried on a fresh connection
        assert terminate_others(pg_url) >= 1
        s.add_role("/w", "")  # a write that failed before COMMIT was sent: nothing happened, retried
        assert terminate_others(pg_url) >= 1
        with s.batch():
            s.add_role("/b", "")
        assert terminate_others(pg_url) >= 1
        assert s.claim_proof(b"k", 1e12, 0.0) is True
        assert s.claim_proof(b"k", 1e12, 0.0) is False
        assert [r.name for r in s.load().roles] == ["/r", "/w", "/b"]
        assert [c.key for c in s.changes_since(0)] == ["/r", "/w", "/b"]


def test_a_connection_lost_during_a_batch_is_unavailable_and_undoes_it(pg_url: str) -> None:
    with PostgresStore(pg_url) as s:
        with pytest.raises(StoreUnavailable), s.batch():
            s.add_role("/one", "")
            assert terminate_others(pg_url) >= 1
            s.add_role("/two", "")
        assert s.load().roles == []
        s.add_role("/after", "")
        assert [r.name for r in s.load().roles] == ["/after"]


def test_a_commit_with_an_unknown_outcome_is_unavailable_and_never_retried(pg_url: str) -> None:
    """The connection dies while COMMIT runs: the store cannot know whether it committed, so it must not run the
    write again (a retry could apply it twice); it says "unavailable" and leaves the decision to the caller."""
    with PostgresStore(pg_url) as s:
        with raw(pg_url) as conn:
            conn.execute("CREATE SEQUENCE commit_attempts")
            conn.execute(
                "CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM nextval('commit_attempts'); PERFORM pg_terminate_backend(pg_backend_pid()); "
                "PERFORM pg_sleep(5); RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON roles DEFERRABLE INITIALLY DEFERRED "
                "FOR EACH ROW EXECUTE FUNCTION die_at_commit()"
            )
        with pytest.raises(StoreUnavailable, match="may or may not"):
            s.add_role("/r", "")
        assert scalar(pg_url, "SELECT last_value FROM commit_attempts") == 1  # exactly one attempt
        with raw(pg_url) as conn:
            conn.execute("DROP TRIGGER die_at_commit ON roles")
        assert s.get_role("/r") is None  # (here it had not committed)
        s.add_role("/r", "")
        assert s.get_role("/r") == AccessRole("/r", "")


class Proxy:
    """A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones (an outage)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.running = False
        self.cut()
        self.listener.close()
        self.thread.join(timeout=5)


def test_the_store_is_unavailable_during_an_outage_and_recovers_by_itself(pg_url: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(pg_url)
    proxy = Proxy((str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)))
    try:
        url = make_conninfo(pg_url, host="127.0.0.1", port=proxy.port)
        with PostgresStore(url, min_size=2, connect_timeout=2, acquire_timeout=1.0, reconnect_timeout=3.0) as s:
            s.add_role("/before", "")
            proxy.cut()
            with pytest.raises(StoreUnavailable):
                s.get_role("/before")
            with pytest.raises(StoreUnavailable):
                s.add_role("/during", "")
            time.sleep(4)  # past the pool's reconnect_timeout: it gave up retrying on its own
            with pytest.raises(StoreUnavailable):
                s.load()
            proxy.restore()
            restored = time.monotonic()
            while True:
                try:
                    s.add_role("/after", "")
                    break
                except StoreUnavailable:
                    assert time.monotonic() - restored < 20, "the store did not recover"
                    time.sleep(0.2)
            assert [r.name for r in s.load().roles] == ["/before", "/after"]
            for _ in range(20):  # and it stays healthy
                assert s.get_role("/after") is not None
    finally:
        proxy.close()


# --- change feed: order and notifications --------------------------------------------------------------------


def test_seqs_become_visible_in_order_under_concurrent_writers(pg_url: str) -> None:
    """A reader that never re-reads below the highest seq it saw (no window) still misses nothing: writers
    take a lock from the allocation of their seqs to their commit."""
    with PostgresStore(pg_url) as node_a, PostgresStore(pg_url) as node_b, PostgresStore(pg_url) as reader:
        node_a.add_auth_method(key_method())
        seen: list[int] = []
        done = threading.Event()

        def read() -> None:
            last = 0
            while True:
                finished = done.is_set()
                for change in reader.changes_since(last):
                    seen.append(change.seq)
                    last = change.seq
                if finished:
                    return

        thread = threading.Thread(target=read)
        thread.start()

        def work(n: int) -> None:
            node = (node_a, node_b)[n % 2]
            for i in range(40):
                node.add_token(token(f"{n}/{i}".encode(), key_method().access_id, FAR))

        try:
            run_threads(8, work)
        finally:
            done.set()
            thread.join(timeout=60)
        committed = [c.seq for c in reader.changes_since(0, limit=10_000)]
        assert len(committed) == 1 + 8 * 40
        assert seen == committed


def test_notifications_are_sent_at_commit_with_the_highest_seq(store: PostgresStore, pg_url: str) -> None:
    store_contract.populated(store)
    store.add_token(token(b"\x01", "p-awsprod00000001", FAR))
    with raw(pg_url) as listener:
        listener.execute(f"LISTEN {CHANNEL}")

        def received(timeout: float = 0.5) -> list[str]:
            return [n.payload for n in listener.notifies(timeout=timeout)]

        store.add_role("/one", "")
        assert received() == [str(store.latest_change())]

        with store.batch():
            store.add_role("/two", "")
            store.add_role("/three", "")
            assert received() == []  # not before the commit
        assert received() == [str(store.latest_change())]  # one per transaction

        store.delete_auth_method("/aws/prod")  # a token, two associations and the auth method: one notification
        assert received() == [str(store.latest_change())]

        with pytest.raises(AlreadyExists):
            store.add_role("/one", "")
        with pytest.raises(RuntimeError), store.batch():
            store.add_role("/four", "")
            raise RuntimeError
        store.add_item(item("/i"))  # not in the feed
        assert received() == []
        store.set_meta("k", "v")  # the authors' Cedar files live in meta: in the feed
        assert received() == [str(store.latest_change())]


def test_listen_catches_up_after_losing_its_connection(store: PostgresStore, pg_url: str) -> None:
    events: queue.Queue[int | None] = queue.Queue()
    stop = threading.Event()
    with PostgresStore(pg_url) as writer:
        cursor = ChangeCursor(store, store.latest_change())
        thread = threading.Thread(target=store.listen, args=(events.put, stop), kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            assert events.get(timeout=30) is None
            writer.add_role("/one", "")
            assert events.get(timeout=30) == writer.latest_change()
            assert [c.key for c in cursor.poll()] == ["/one"]

            assert terminate_others(pg_url) >= 1  # the listener's connection, among others
            writer.add_role("/while-away", "")  # its notification may be lost...
            got = events.get(timeout=30)
            while got is not None:  # ...but the listener says "catch up" once it listens again
                got = events.get(timeout=30)
            assert [c.key for c in cursor.poll()] == ["/while-away"]
            writer.add_role("/two", "")
            seq = writer.latest_change()
            while (got := events.get(timeout=30)) != seq:
                assert got is None or got < seq
            assert [c.key for c in cursor.poll()] == ["/two"]
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()


def test_stores_prune_old_changes_by_themselves(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cedarkey.server import postgres_store

    monkeypatch.setattr(postgres_store, "PRUNE_INTERVAL", 0.0)
    with PostgresStore(pg_url, change_retention=3600) as s:
        for n in range(3):
            s.add_role(f"/old{n}", "")
        old = s.latest_change()
        with raw(pg_url) as conn:
            conn.execute("UPDATE changes SET at = at - 7200")
        s.add_role("/new", "")  # this write prunes, after its commit
        assert [c.key for c in s.changes_since(0)] == ["/new"]
        assert s.change_horizon() == old
        assert s.get_role("/old0") is not None  # only the change rows go

        monkeypatch.setattr(postgres_store, "PRUNE_BATCH", 2)  # in transactions of 2 rows: 3 of them for 5
        for n in range(4):
            s.add_role(f"/more{n}", "")
        assert s.prune_changes(older_than=-60) == 5
        assert s.change_horizon() == s.latest_change()


def test_concurrent_rules_on_one_role_from_two_nodes(pg_url: str) -> None:
    """Upserts of one rule from two nodes at once: no error, one row, last write wins."""
    with PostgresStore(pg_url) as node_a, PostgresStore(pg_url) as node_b:
        node_a.add_role("/r", "")

        def work(n: int) -> None:
            node = (node_a, node_b)[n % 2]
            for i in range(30):
                node.set_rule("/r", rule("item-rule", "/shared", "read" if (i + n) % 2 else "list"))

        run_threads(4, work)
        assert len(node_b.load().rules) == 1
        assert len(node_a.changes_since(0, limit=1000)) == 1 + 4 * 30
