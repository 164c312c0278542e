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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cedarkey.engine import (
    ACCESS_KEY,
    AWS_IAM,
    AlreadyExists,
    Association,
    AuthMethod,
    Capability,
    Engine,
    ModelError,
    NotFound,
    RoleRule,
    RuleType,
    parse_sub_claims,
)
from cedarkey.server.sqlite_store import MIGRATIONS, SqliteStore, split_statements
from cedarkey.server.store import (
    STATIC_SECRET,
    SchemaVersionError,
    Snapshot,
    Store,
    StoredItem,
    StoredToken,
    StoreError,
    StoreUnavailable,
)

# --- helpers -------------------------------------------------------------------------------------------------


def aws_method(name: str = "/aws/prod", access_id: str = "p-awsprod00000001") -> AuthMethod:
    """An aws_iam auth method with every field away from its default."""
    return AuthMethod(
        name=name,
        access_id=access_id,
        type=AWS_IAM,
        access_expires=1_900_000_000,
        jwt_ttl=900,
        bound_ips=("10.0.0.0/8", "2001:db8::/32"),
        sts_url="https://sts.eu-west-1.amazonaws.com/",
        bound_aws_account_id=("123456789012", "210987654321"),
        bound_arn=("arn:aws:iam::123456789012:role/app-*", "arn:aws:sts::123456789012:assumed-role/x/*"),
        bound_role_name=("app", "worker"),
        bound_role_id=("AROAEXAMPLE1",),
        bound_resource_id=("i-0123456789abcdef0",),
        bound_user_name=("deploy",),
        bound_user_id=("AIDAEXAMPLE1",),
    )


def key_method(name: str = "/keys/ci", access_id: str = "p-keyci000000001") -> AuthMethod:
    return AuthMethod(name=name, access_id=access_id, type=ACCESS_KEY, bound_ips=("192.0.2.7/32",))


def rule(rule_type: str, path: str, *caps: str) -> RoleRule:
    return RoleRule.parse(rule_type, path, caps)


def item(name: str, ciphertext: bytes = b"\x00ct", version: int = 1, at: float = 1000.5) -> StoredItem:
    return StoredItem(name, STATIC_SECRET, ciphertext, b"n" * 12, at, at, version, f"about {name}")


def token(token_hash: bytes, access_id: str, expires_at: float, issued_at: float = 100.0) -> StoredToken:
    identity = {"access_id": access_id, "auth_type": AWS_IAM, "principal_type": "assumed-role", "account": "1"}
    return StoredToken(token_hash, access_id, identity, issued_at, expires_at)


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


def populated(store: SqliteStore) -> None:
    aws, key = aws_method(), key_method()
    store.add_auth_method(aws)
    store.add_auth_method(key, access_key_hash=b"\x01" * 32)
    store.add_role("/roles/app", "the app — ünïcode")
    store.add_role("/roles/ops", "")
    store.add_association(
        Association(
            "ac-0000000000000001",
            "/roles/app",
            aws.access_id,
            parse_sub_claims(["role_name=app*", "role_name=worker", "account=123456789012"]),
        )
    )
    store.add_association(Association("ac-0000000000000002", "/roles/app", key.access_id))
    store.add_association(
        Association("ac-0000000000000003", "/roles/ops", aws.access_id, parse_sub_claims({"principal_type": "user"}))
    )
    store.set_rule("/roles/app", rule("item-rule", "/app/*", "read", "list"))
    store.set_rule("/roles/app", rule("item-rule", "/app/secret/*", "deny"))
    store.set_rule("/roles/app", rule("role-rule", "/roles/*", "read"))
    store.set_rule("/roles/ops", rule("auth-method-rule", "/*", "read", "create", "update", "delete", "list"))


# --- interface and round trips -------------------------------------------------------------------------------


def test_sqlite_store_implements_the_interface(store: SqliteStore) -> None:
    assert isinstance(store, Store)


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


def test_load_round_trips_every_field(db_path: Path) -> None:
    with SqliteStore(db_path) as s:
        populated(s)
        before = s.load()
    with SqliteStore(db_path) as s:
        after = s.load()

    assert after == before
    assert after.auth_methods == [aws_method(), key_method()]
    assert [(r.name, r.description) for r in after.roles] == [
        ("/roles/app", "the app — ünïcode"),
        ("/roles/ops", ""),
    ]
    assert all(not r.associations and not r.rules for r in after.roles)
    assoc = after.associations[0]
    assert assoc == Association(
        "ac-0000000000000001",
        "/roles/app",
        "p-awsprod00000001",
        (("account", ("123456789012",)), ("role_name", ("app*", "worker"))),
    )
    assert [a.assoc_id for a in after.associations] == [
        "ac-0000000000000001",
        "ac-0000000000000002",
        "ac-0000000000000003",
    ]
    assert after.rules == [
        ("/roles/app", RoleRule(RuleType.ITEM, "/app/*", frozenset({Capability.READ, Capability.LIST}))),
        ("/roles/app", RoleRule(RuleType.ITEM, "/app/secret/*", frozenset({Capability.DENY}))),
        ("/roles/app", RoleRule(RuleType.ROLE, "/roles/*", frozenset({Capability.READ}))),
        ("/roles/ops", RoleRule(RuleType.AUTH_METHOD, "/*", frozenset(c for c in Capability if c != "deny"))),
    ]
    assert all(isinstance(r.rule_type, RuleType) for _, r in after.rules)
    assert all(isinstance(c, Capability) for _, r in after.rules for c in r.capabilities)


def test_a_snapshot_loads_into_an_engine(store: SqliteStore) -> None:
    populated(store)
    snap = store.load()
    engine = Engine()
    engine.load(snap.auth_methods, snap.roles, snap.associations, snap.rules)
    assert set(engine.model.auth_methods) == {"/aws/prod", "/keys/ci"}
    assert set(engine.model.associations) == {a.assoc_id for a in snap.associations}
    app = engine.model.roles["/roles/app"]
    assert len(app.rules) == 3


def test_an_empty_store_loads_empty(store: SqliteStore) -> None:
    assert store.load() == Snapshot([], [], [], [])
    assert store.list_items() == []
    assert store.load_tokens(0) == []


# --- auth methods --------------------------------------------------------------------------------------------


def test_auth_method_name_and_access_id_conflicts(store: SqliteStore) -> None:
    store.add_auth_method(aws_method())
    with pytest.raises(AlreadyExists) as exc:
        store.add_auth_method(key_method(name="/aws/prod"))
    assert exc.value.field == "name"
    with pytest.raises(AlreadyExists) as exc:
        store.add_auth_method(key_method(access_id="p-awsprod00000001"))
    assert exc.value.field == "access-id"
    assert store.load().auth_methods == [aws_method()]


def test_update_auth_method_keeps_its_key_hash(store: SqliteStore) -> None:
    store.add_auth_method(key_method(), access_key_hash=b"h" * 32)
    updated = dataclasses.replace(key_method(), jwt_ttl=120, bound_ips=("198.51.100.0/24",), access_expires=5)
    store.update_auth_method(updated)
    assert store.load().auth_methods == [updated]
    assert store.access_key_hash("p-keyci000000001") == b"h" * 32


def test_update_auth_method_refusals(store: SqliteStore) -> None:
    with pytest.raises(NotFound) as exc:
        store.update_auth_method(key_method())
    assert exc.value.field == "name"
    store.add_auth_method(key_method())
    with pytest.raises(ModelError):
        store.update_auth_method(key_method(access_id="p-other0000000001"))
    assert store.load().auth_methods == [key_method()]


def test_access_key_hash(store: SqliteStore) -> None:
    store.add_auth_method(key_method(), access_key_hash=b"\x00\xffhash")
    store.add_auth_method(aws_method())
    assert store.access_key_hash("p-keyci000000001") == b"\x00\xffhash"
    assert store.access_key_hash("p-awsprod00000001") is None
    assert store.access_key_hash("p-nosuch000000001") is None


def test_delete_auth_method_takes_its_associations_and_tokens(store: SqliteStore) -> None:
    populated(store)
    store.add_token(token(b"t-aws", "p-awsprod00000001", 10_000))
    store.add_token(token(b"t-key", "p-keyci000000001", 10_000))
    store.delete_auth_method("/aws/prod")
    snap = store.load()
    assert [am.name for am in snap.auth_methods] == ["/keys/ci"]
    assert [a.assoc_id for a in snap.associations] == ["ac-0000000000000002"]
    assert [t.token_hash for t in store.load_tokens(0)] == [b"t-key"]
    assert len(snap.rules) == 4
    with pytest.raises(NotFound) as exc:
        store.delete_auth_method("/aws/prod")
    assert exc.value.field == "name"


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


def test_roles(store: SqliteStore) -> None:
    store.add_role("/r", "first")
    with pytest.raises(AlreadyExists) as exc:
        store.add_role("/r", "again")
    assert exc.value.field == "name"
    with pytest.raises(NotFound) as exc:
        store.delete_role("/nope")
    assert exc.value.field == "name"
    assert [(r.name, r.description) for r in store.load().roles] == [("/r", "first")]


def test_delete_role_cascades_to_its_associations_and_rules(store: SqliteStore) -> None:
    populated(store)
    store.delete_role("/roles/app")
    snap = store.load()
    assert [r.name for r in snap.roles] == ["/roles/ops"]
    assert [a.assoc_id for a in snap.associations] == ["ac-0000000000000003"]
    assert [name for name, _ in snap.rules] == ["/roles/ops"]
    assert len(snap.auth_methods) == 2


def test_association_refusals(store: SqliteStore) -> None:
    populated(store)
    with pytest.raises(NotFound) as exc:
        store.add_association(Association("ac-x", "/roles/none", "p-keyci000000001"))
    assert exc.value.field == "role-name"
    with pytest.raises(NotFound) as exc:
        store.add_association(Association("ac-x", "/roles/ops", "p-nosuch000000001"))
    assert exc.value.field == "access-id"
    with pytest.raises(AlreadyExists) as exc:
        store.add_association(Association("ac-0000000000000001", "/roles/ops", "p-keyci000000001"))
    assert exc.value.field == "assoc-id"
    with pytest.raises(AlreadyExists) as exc:
        store.add_association(Association("ac-x", "/roles/app", "p-keyci000000001"))
    assert exc.value.field == "am-name"
    # The same role and auth method with other sub-claims is another association.
    store.add_association(Association("ac-x", "/roles/app", "p-keyci000000001", (("account", ("1",)),)))
    store.delete_association("ac-x")
    with pytest.raises(NotFound) as exc:
        store.delete_association("ac-x")
    assert exc.value.field == "assoc-id"
    assert len(store.load().associations) == 3


def test_set_rule_upserts_and_delete_rule(store: SqliteStore) -> None:
    store.add_role("/r", "")
    store.set_rule("/r", rule("item-rule", "/a/*", "read"))
    store.set_rule("/r", rule("role-rule", "/a/*", "list"))
    store.set_rule("/r", rule("item-rule", "/a/*", "create", "update"))
    assert store.load().rules == [
        ("/r", rule("item-rule", "/a/*", "create", "update")),
        ("/r", rule("role-rule", "/a/*", "list")),
    ]
    store.delete_rule("/r", RuleType.ITEM, "/a/*")
    assert store.load().rules == [("/r", rule("role-rule", "/a/*", "list"))]
    with pytest.raises(NotFound) as exc:
        store.delete_rule("/r", "item-rule", "/a/*")
    assert exc.value.field == "path"
    with pytest.raises(NotFound) as exc:
        store.set_rule("/none", rule("item-rule", "/a", "read"))
    assert exc.value.field == "role-name"
    with pytest.raises(NotFound) as exc:
        store.delete_rule("/none", "item-rule", "/a")
    assert exc.value.field == "role-name"


# --- items ---------------------------------------------------------------------------------------------------


def test_items(store: SqliteStore) -> None:
    first = item("/b/one", b"\x00\x01\x02")
    store.add_item(first)
    store.add_item(item("/a/two"))
    assert store.get_item("/b/one") == first
    with pytest.raises(AlreadyExists) as exc:
        store.add_item(item("/b/one"))
    assert exc.value.field == "name"

    updated = store.update_item("/b/one", b"new", b"m" * 12, 2000.25)
    assert updated == dataclasses.replace(first, ciphertext=b"new", nonce=b"m" * 12, updated_at=2000.25, version=2)
    assert store.get_item("/b/one") == updated
    again = store.update_item("/b/one", b"newer", b"o" * 12, 3000.0, description="changed")
    assert (again.version, again.description, again.created_at) == (3, "changed", first.created_at)

    assert [i.name for i in store.list_items()] == ["/a/two", "/b/one"]
    store.delete_item("/a/two")
    for call in (
        lambda: store.get_item("/a/two"),
        lambda: store.delete_item("/a/two"),
        lambda: store.update_item("/a/two", b"x", b"y" * 12, 1.0),
    ):
        with pytest.raises(NotFound) as exc:
            call()
        assert exc.value.field == "name"
    assert store.list_items() == [again]


# --- tokens and login proofs ---------------------------------------------------------------------------------


def test_tokens(store: SqliteStore) -> None:
    store.add_auth_method(aws_method())
    live = token(b"\x00live", "p-awsprod00000001", expires_at=500.0, issued_at=10.0)
    later = token(b"\x00later", "p-awsprod00000001", expires_at=900.0, issued_at=20.0)
    dead = token(b"\x00dead", "p-awsprod00000001", expires_at=150.0, issued_at=5.0)
    for t in (later, dead, live):
        store.add_token(t)
    assert store.load_tokens(now=100.0) == [dead, live, later]
    assert store.load_tokens(now=150.0) == [live, later]  # expires_at is exclusive

    assert store.revoke_token(b"\x00live") is True
    assert store.revoke_token(b"\x00live") is False
    assert store.revoke_token(b"\x00unknown") is False
    assert store.load_tokens(now=100.0) == [dead, later]

    with pytest.raises(AlreadyExists):
        store.add_token(later)
    with pytest.raises(NotFound) as exc:
        store.add_token(token(b"x", "p-nosuch000000001", 1000.0))
    assert exc.value.field == "access-id"

    assert store.purge_expired(now=600.0) == 2  # dead and the revoked live one
    assert store.purge_expired(now=600.0) == 0
    assert store.load_tokens(now=0) == [later]


def test_claim_proof_is_single_use_until_expiry(store: SqliteStore, db_path: Path) -> None:
    assert store.claim_proof(b"proof-1", expires_at=100.0, now=10.0) is True
    assert store.claim_proof(b"proof-1", expires_at=100.0, now=50.0) is False
    assert store.claim_proof(b"proof-2", expires_at=60.0, now=50.0) is True
    # At 100 proof-1 has expired: it is pruned, and may be claimed again.
    assert store.claim_proof(b"proof-1", expires_at=200.0, now=100.0) is True
    conn = raw(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM login_proofs").fetchone()[0] == 1
    finally:
        conn.close()


def test_purge_expired_also_prunes_proofs(store: SqliteStore, db_path: Path) -> None:
    store.claim_proof(b"p", expires_at=10.0, now=0.0)
    store.purge_expired(now=20.0)
    conn = raw(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM login_proofs").fetchone()[0] == 0
    finally:
        conn.close()


def test_meta(store: SqliteStore) -> None:
    assert store.get_meta("k") is None
    store.set_meta("k", "1")
    store.set_meta("k", "2")
    assert store.get_meta("k") == "2"


def test_a_closed_store_refuses(db_path: Path) -> None:
    s = SqliteStore(db_path)
    s.close()
    s.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        s.get_meta("k")
    with pytest.raises(StoreUnavailable, match="closed"):
        s.set_meta("k", "v")


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

M1 = "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);\nCREATE TABLE a (x);"
M2 = "CREATE TABLE b (y);\nINSERT INTO a (x) VALUES ('from m2');"


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


def test_migrations_apply_in_order_once(db_path: Path) -> None:
    with SqliteStore(db_path, migrations=[M1]) as s:
        assert s.applied_migrations == [1]
        assert s.schema_version() == 1
    with SqliteStore(db_path, migrations=[M1, M2]) as s:
        assert s.applied_migrations == [2]
        assert s.schema_version() == 2
    conn = raw(db_path)
    assert conn.execute("SELECT x FROM a").fetchall() == [("from m2",)]
    conn.close()


def test_a_failing_migration_is_rolled_back_whole(db_path: Path) -> None:
    SqliteStore(db_path, migrations=[M1]).close()
    broken = "CREATE TABLE b (y);\nINSERT INTO nowhere VALUES (1);"
    with pytest.raises(StoreError, match="migrating to schema version 2 failed"):
        SqliteStore(db_path, migrations=[M1, broken])
    conn = raw(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "b" not in tables
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 1
    conn.close()


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


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def test_threads_hammering_one_store_lose_nothing(store: SqliteStore) -> None:
    store.add_role("/r", "")
    store.add_item(item("/counter"))
    threads, per_thread = 8, 25

    def work(n: int) -> None:
        for i in range(per_thread):
            store.set_rule("/r", rule("item-rule", f"/t{n}/{i}", "read"))
            store.set_rule("/r", rule("item-rule", "/shared", "read" if i % 2 else "list"))
            store.add_item(item(f"/t{n}/{i}"))
            store.update_item("/counter", f"{n}.{i}".encode(), b"n" * 12, float(i))

    run_threads(threads, work)
    rules = store.load().rules
    assert len(rules) == threads * per_thread + 1
    assert len(store.list_items()) == threads * per_thread + 1
    assert store.get_item("/counter").version == 1 + threads * per_thread


def test_two_stores_on_one_file_lose_nothing(db_path: Path) -> None:
    first, second = SqliteStore(db_path), SqliteStore(db_path)
    try:
        first.add_role("/r", "")
        first.add_item(item("/counter"))
        per_thread = 60
        claims: list[bool] = []

        def work(n: int) -> None:
            s = (first, second)[n]
            for i in range(per_thread):
                s.set_rule("/r", rule("item-rule", f"/s{n}/{i}", "read"))
                s.add_item(item(f"/s{n}/{i}"))
                s.update_item("/counter", b"x", b"n" * 12, float(i))
                claims.append(s.claim_proof(f"proof-{i}".encode(), expires_at=1e12, now=0.0))

        run_threads(2, work)
        for s in (first, second):
            assert len(s.load().rules) == 2 * per_thread
            assert len(s.list_items()) == 2 * per_thread + 1
            assert s.get_item("/counter").version == 1 + 2 * per_thread
        # Each proof was claimed by exactly one of the two stores.
        assert claims.count(True) == per_thread
    finally:
        first.close()
        second.close()


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
