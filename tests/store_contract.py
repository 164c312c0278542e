"""The contract of every :class:`cedarkey.server.store.Store` backend (and of its change feed), as functions
taking a store factory, so that each backend's test module runs the same checks on its own database.

``make()`` opens a new store on the test's database (the same database at every call of one test: calling it
twice gives two nodes sharing it). Each check closes the stores it opened. Not collected by pytest by itself:
``tests/test_postgres_store.py`` runs :data:`CONTRACT` for PostgreSQL and for SQLite.
"""

from __future__ import annotations

import dataclasses
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from cedarkey.engine import (
    ACCESS_KEY,
    AWS_IAM,
    AccessRole,
    AlreadyExists,
    Association,
    AuthMethod,
    Capability,
    Engine,
    ModelError,
    NotFound,
    RoleRule,
    RuleType,
    VersionConflict,
    parse_sub_claims,
)
from cedarkey.policies import schema_text
from cedarkey.server.store import (
    STATIC_SECRET,
    AuditEvent,
    Change,
    ChangeCursor,
    ChangesLost,
    Kind,
    Snapshot,
    Store,
    StoredItem,
    StoredToken,
    StoreError,
    StoreUnavailable,
)

SCHEMA = schema_text()

StoreFactory = Callable[[], Any]  # a Store
Check = Callable[[StoreFactory], None]

#: Every contract check, in definition order.
CONTRACT: list[Check] = []


def contract(check: Check) -> Check:
    CONTRACT.append(check)
    return check


@contextmanager
def opened(make: StoreFactory) -> Iterator[Any]:
    store = make()
    try:
        yield store
    finally:
        store.close()


# --- helpers -------------------------------------------------------------------------------------------------

FAR = 4_000_000_000.0  # an expiry far in the future


def aws_method(name: str = "/aws/prod", access_id: str = "p-awsprod00000001") -> AuthMethod:
    """An aws_iam auth method with every field away from its default."""
    return AuthMethod(
        name=name,
        access_id=access_id,
        type=AWS_IAM,
        access_expires=1_900_000_000,
        jwt_ttl=900,
        max_ttl=5400,
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
    return StoredItem(name, STATIC_SECRET, ciphertext, b"n" * 12, at, at, version, f"about {name}", f"id-{name}")


def token(token_hash: bytes, access_id: str, expires_at: float, issued_at: float = 100.0) -> StoredToken:
    identity = {"access_id": access_id, "auth_type": AWS_IAM, "principal_type": "assumed-role", "account": "1"}
    return StoredToken(token_hash, access_id, identity, issued_at, expires_at)


def populated(store: Any) -> None:
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


def kinds_and_keys(changes: list[Change]) -> list[tuple[str, object]]:
    return [(c.kind, c.key) for c in changes]


# --- interface and round trips -------------------------------------------------------------------------------


@contract
def implements_the_interfaces(make: StoreFactory) -> None:
    with opened(make) as store:
        assert isinstance(store, Store)
        assert isinstance(store, Store)


@contract
def load_round_trips_every_field(make: StoreFactory) -> None:
    with opened(make) as s:
        populated(s)
        before = s.load()
    with opened(make) as s:
        after = s.load()

    assert after == before
    assert after.auth_methods == [aws_method(), key_method()]
    assert [(r.name, r.description) for r in after.roles] == [
        ("/roles/app", "the app — ünïcode"),
        ("/roles/ops", ""),
    ]
    assert after.associations[0] == Association(
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


@contract
def load_returns_creation_order_not_name_order(make: StoreFactory) -> None:
    with opened(make) as s:
        names = ["/z", "/a", "/m", "/B", "/é", "/0"]
        for n, name in enumerate(names):
            s.add_auth_method(key_method(f"/am{name}", f"p-order{n:010d}"))
            s.add_role(name, "")
            s.set_rule(names[0], rule("item-rule", f"/p{name}", "read"))
        snap = s.load()
        assert [am.name for am in snap.auth_methods] == [f"/am{name}" for name in names]
        assert [r.name for r in snap.roles] == names
        assert [r.path for _, r in snap.rules] == [f"/p{name}" for name in names]


@contract
def a_snapshot_loads_into_an_engine(make: StoreFactory) -> None:
    with opened(make) as store:
        populated(store)
        snap = store.load()
    engine = Engine(SCHEMA)
    engine.load(snap.auth_methods, snap.roles, snap.associations, snap.rules)
    assert set(engine.model.auth_methods) == {"/aws/prod", "/keys/ci"}
    assert len(engine.model.roles["/roles/app"].rules) == 3


@contract
def an_empty_store_loads_empty(make: StoreFactory) -> None:
    with opened(make) as store:
        assert store.load() == Snapshot([], [], [], [])
        assert store.list_items() == []
        assert store.load_tokens(0) == []
        assert store.latest_change() == 0
        assert store.changes_since(0) == []


# --- auth methods --------------------------------------------------------------------------------------------


@contract
def auth_method_name_and_access_id_conflicts(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_auth_method(aws_method())
        with pytest.raises(AlreadyExists) as exc:
            store.add_auth_method(key_method(name="/aws/prod"))
        assert exc.value.field == "name"
        with pytest.raises(AlreadyExists) as exc:
            store.add_auth_method(key_method(access_id="p-awsprod00000001"))
        assert exc.value.field == "access-id"
        assert store.load().auth_methods == [aws_method()]


@contract
def update_auth_method_keeps_its_key_hash(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_auth_method(key_method(), access_key_hash=b"h" * 32)
        updated = dataclasses.replace(key_method(), jwt_ttl=120, bound_ips=("198.51.100.0/24",), access_expires=5)
        store.update_auth_method(updated)
        assert store.load().auth_methods == [updated]
        assert store.access_key_hash("p-keyci000000001") == b"h" * 32


@contract
def update_auth_method_refusals(make: StoreFactory) -> None:
    with opened(make) as store:
        with pytest.raises(NotFound) as exc:
            store.update_auth_method(key_method())
        assert exc.value.field == "name"
        store.add_auth_method(key_method())
        with pytest.raises(ModelError):
            store.update_auth_method(key_method(access_id="p-other0000000001"))
        assert store.load().auth_methods == [key_method()]


@contract
def access_key_hash(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_auth_method(key_method(), access_key_hash=b"\x00\xffhash")
        store.add_auth_method(aws_method())
        assert store.access_key_hash("p-keyci000000001") == b"\x00\xffhash"
        assert store.access_key_hash("p-awsprod00000001") is None
        assert store.access_key_hash("p-nosuch000000001") is None


@contract
def replace_access_key_revokes_that_methods_live_tokens(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_auth_method(key_method(), access_key_hash=b"old")
        store.add_auth_method(aws_method())
        for digest, access_id in ((b"t-k1", "p-keyci000000001"), (b"t-k2", "p-keyci000000001")):
            store.add_token(token(digest, access_id, 10_000))
        store.add_token(token(b"t-aws", "p-awsprod00000001", 10_000))
        store.revoke_token(b"t-k2")
        before = store.latest_change()
        assert store.replace_access_key("p-keyci000000001", b"new") == 1  # t-k2 was revoked already
        assert store.access_key_hash("p-keyci000000001") == b"new"
        assert [t.token_hash for t in store.load_tokens(0)] == [b"t-aws"]
        assert kinds_and_keys(store.changes_since(before)) == [("token", b"t-k1".hex()), ("auth-method", "/keys/ci")]
        for refused in ("p-awsprod00000001", "p-nosuch000000001"):  # not an access-key method, or none
            with pytest.raises(NotFound) as exc:
                store.replace_access_key(refused, b"x")
            assert exc.value.field == "access-id"
        assert store.access_key_hash("p-awsprod00000001") is None


@contract
def delete_auth_method_takes_its_associations_and_tokens(make: StoreFactory) -> None:
    with opened(make) as store:
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


# --- roles, associations, rules ------------------------------------------------------------------------------


@contract
def roles(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_role("/r", "first")
        with pytest.raises(AlreadyExists) as exc:
            store.add_role("/r", "again")
        assert exc.value.field == "name"
        with pytest.raises(NotFound) as exc:
            store.delete_role("/nope")
        assert exc.value.field == "name"
        assert [(r.name, r.description) for r in store.load().roles] == [("/r", "first")]


@contract
def delete_role_cascades_to_its_associations_and_rules(make: StoreFactory) -> None:
    with opened(make) as store:
        populated(store)
        store.delete_role("/roles/app")
        snap = store.load()
        assert [r.name for r in snap.roles] == ["/roles/ops"]
        assert [a.assoc_id for a in snap.associations] == ["ac-0000000000000003"]
        assert [name for name, _ in snap.rules] == ["/roles/ops"]
        assert len(snap.auth_methods) == 2


@contract
def association_refusals(make: StoreFactory) -> None:
    with opened(make) as store:
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
        store.add_association(Association("ac-x", "/roles/app", "p-keyci000000001", (("account", ("1",)),)))
        store.delete_association("ac-x")
        with pytest.raises(NotFound) as exc:
            store.delete_association("ac-x")
        assert exc.value.field == "assoc-id"
        assert len(store.load().associations) == 3


@contract
def the_largest_sub_claims_are_stored_and_kept_unique(make: StoreFactory) -> None:
    """32 patterns of 256 characters: far more than a database index entry may hold."""
    claims = parse_sub_claims([f"role_name={chr(0x100 + n) * 256}" for n in range(32)])
    with opened(make) as store:
        store.add_auth_method(aws_method())
        store.add_role("/r", "")
        store.add_association(Association("ac-big", "/r", "p-awsprod00000001", claims))
        with pytest.raises(AlreadyExists) as exc:
            store.add_association(Association("ac-big2", "/r", "p-awsprod00000001", claims))
        assert exc.value.field == "am-name"
        assert store.load().associations == [Association("ac-big", "/r", "p-awsprod00000001", claims)]
        assert store.get_association("ac-big") == Association("ac-big", "/r", "p-awsprod00000001", claims)


@contract
def set_rule_upserts_and_delete_rule(make: StoreFactory) -> None:
    with opened(make) as store:
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


@contract
def items(make: StoreFactory) -> None:
    with opened(make) as store:
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


@contract
def update_role_changes_its_description_and_is_in_the_feed(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_role("/r", "before")
        seen = store.latest_change()
        store.update_role("/r", "after")
        assert store.get_role("/r") == AccessRole("/r", "after")
        assert [(c.kind, c.key) for c in store.changes_since(seen)] == [("role", "/r")]
        with pytest.raises(NotFound) as exc:
            store.update_role("/none", "x")
        assert exc.value.field == "name"


@contract
def item_updates_for_a_version_and_rewrites(make: StoreFactory) -> None:
    """A value encrypted for version N is stored only while the item is at N - 1; a rewrite replaces the
    ciphertext of the versions named, all or none."""
    with opened(make) as store:
        store.add_item(item("/v"))
        store.add_item(item("/w"))
        assert store.update_item("/v", b"two", b"2" * 12, 2.0, version=2).version == 2
        for stale in (2, 4, 1):
            with pytest.raises(VersionConflict) as exc:
                store.update_item("/v", b"lost", b"l" * 12, 3.0, version=stale)
            assert exc.value.field == "name"
        assert store.get_item("/v").ciphertext == b"two"
        with pytest.raises(NotFound):
            store.update_item("/gone", b"x", b"x" * 12, 1.0, version=2)

        v, w = store.get_item("/v"), store.get_item("/w")
        with pytest.raises(VersionConflict):  # /w is at version 1, not 5: nothing of the batch is written
            store.rewrite_items([dataclasses.replace(v, ciphertext=b"re-v"), dataclasses.replace(w, version=5)])
        assert store.get_item("/v") == v
        store.rewrite_items([dataclasses.replace(v, ciphertext=b"re-v", nonce=b"r" * 12)])
        assert store.get_item("/v") == dataclasses.replace(v, ciphertext=b"re-v", nonce=b"r" * 12)
        assert store.get_item("/w") == w


@contract
def versions_are_kept_up_to_max_versions_and_read_one_by_one(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_item(dataclasses.replace(item("/v", b"c1"), max_versions=3, updated_by="alice"))
        store.update_item("/v", b"c2", b"n2" * 6, 2000.0, keep_previous=True, updated_by="bob")
        store.update_item("/v", b"c3", b"n3" * 6, 3000.0, keep_previous=True, updated_by="carol")
        assert [(v.version, v.ciphertext, v.created_by) for v in store.item_versions("/v")] == [
            (2, b"c2", "bob"),
            (1, b"c1", "alice"),
        ]
        latest = store.update_item("/v", b"c4", b"n4" * 6, 4000.0, keep_previous=True, updated_by="dan")
        assert (latest.version, latest.updated_by, latest.max_versions) == (4, "dan", 3)
        assert [v.version for v in store.item_versions("/v")] == [3, 2]  # three in all: the oldest went
        two = store.get_item_version("/v", 2)
        assert (two.version, two.ciphertext, two.nonce, two.updated_at, two.updated_by) == (
            2,
            b"c2",
            b"n2" * 6,
            2000.0,
            "bob",
        )
        assert two.item_id == latest.item_id and store.get_item_version("/v", 4) == store.get_item("/v")
        # Without keep_previous the latest is replaced: the kept ones stay as they are.
        assert store.update_item("/v", b"c5", b"n5" * 6, 5000.0).version == 5
        assert [v.version for v in store.item_versions("/v")] == [3, 2]
        with pytest.raises(NotFound) as exc:
            store.get_item_version("/v", 4)
        assert exc.value.field == "version"
        # max_versions set anew trims at once.
        store.update_item("/v", b"c6", b"n6" * 6, 6000.0, keep_previous=True, max_versions=2)
        assert [v.version for v in store.item_versions("/v")] == [5]
        store.delete_item_version("/v", 5)
        assert store.item_versions("/v") == []
        with pytest.raises(VersionConflict):
            store.delete_item_version("/v", 6)  # the latest stays
        with pytest.raises(NotFound) as exc:
            store.delete_item_version("/v", 5)
        assert exc.value.field == "version"
        for call in (store.item_versions, lambda n: store.get_item_version(n, 1)):
            with pytest.raises(NotFound) as exc:
                call("/none")
            assert exc.value.field == "name"


@contract
def deleting_an_item_takes_its_versions(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_item(item("/d"))
        store.update_item("/d", b"c2", b"n" * 12, 2.0, keep_previous=True)
        store.delete_item("/d")
        store.add_item(item("/d"))  # the same name again: nothing of the old one
        assert store.item_versions("/d") == []


@contract
def list_items_orders_by_code_point(make: StoreFactory) -> None:
    """By the name's code points (SQLite's BINARY), whatever the database's collation."""
    names = ["/b", "/B", "/a", "/é", "/_x", "/a-b", "/a/b", "/Z"]
    with opened(make) as store:
        for name in names:
            store.add_item(item(name))
        assert [i.name for i in store.list_items()] == sorted(names)


# --- tokens and login proofs ---------------------------------------------------------------------------------


@contract
def tokens(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_auth_method(aws_method())
        live = token(b"\x00live", "p-awsprod00000001", expires_at=500.0, issued_at=10.0)
        later = token(b"\x00later", "p-awsprod00000001", expires_at=900.0, issued_at=20.0)
        dead = token(b"\x00dead", "p-awsprod00000001", expires_at=150.0, issued_at=5.0)
        for t in (later, dead, live):
            store.add_token(t)
        assert store.load_tokens(now=100.0) == [dead, live, later]
        assert store.load_tokens(now=150.0) == [live, later]  # expires_at is exclusive

        assert store.renew_token(b"\x00later", 950.0, now=100.0) is True
        later = dataclasses.replace(later, expires_at=950.0)
        assert store.get_token(b"\x00later", now=920.0) == later
        assert store.renew_token(b"\x00dead", 999.0, now=150.0) is False  # expired: never brought back
        assert store.renew_token(b"\x00unknown", 999.0, now=0.0) is False
        assert store.revoke_token(b"\x00live") is True
        assert store.renew_token(b"\x00live", 999.0, now=100.0) is False  # revoked
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


@contract
def claim_proof_is_single_use_until_expiry(make: StoreFactory) -> None:
    with opened(make) as store:
        assert store.claim_proof(b"proof-1", expires_at=100.0, now=10.0) is True
        assert store.claim_proof(b"proof-1", expires_at=100.0, now=50.0) is False
        assert store.claim_proof(b"proof-2", expires_at=60.0, now=50.0) is True
        # At 100 proof-1 has expired: it is pruned, and may be claimed again.
        assert store.claim_proof(b"proof-1", expires_at=200.0, now=100.0) is True
        assert store.claim_proof(b"proof-1", expires_at=200.0, now=150.0) is False
        # Claims a moment apart: the key's own expired claim never blocks it, however recent the last claim.
        assert store.claim_proof(b"proof-3", expires_at=250.3, now=249.9) is True
        assert store.claim_proof(b"proof-4", expires_at=300.0, now=250.0) is True
        assert store.claim_proof(b"proof-3", expires_at=300.0, now=250.4) is True


@contract
def purge_expired_also_prunes_proofs(make: StoreFactory) -> None:
    with opened(make) as store:
        assert store.claim_proof(b"p", expires_at=10.0, now=0.0) is True
        store.purge_expired(now=20.0)
        # Claimed "before" its expiry again: only possible because the purge removed it.
        assert store.claim_proof(b"p", expires_at=30.0, now=5.0) is True


@contract
def meta(make: StoreFactory) -> None:
    with opened(make) as store:
        assert store.get_meta("k") is None
        store.set_meta("k", "1")
        store.set_meta("k", "2")
        assert store.get_meta("k") == "2"


@contract
def a_closed_store_refuses(make: StoreFactory) -> None:
    s = make()
    s.close()
    s.close()
    for call in (lambda: s.get_meta("k"), lambda: s.set_meta("k", "v"), lambda: s.changes_since(0)):
        with pytest.raises(StoreUnavailable, match="closed"):
            call()
    with pytest.raises(StoreUnavailable, match="closed"), s.batch():
        pass


# --- batches -------------------------------------------------------------------------------------------------


@contract
def a_batch_commits_all_its_calls(make: StoreFactory) -> None:
    with opened(make) as store:
        with store.batch():
            store.add_auth_method(key_method())
            store.add_role("/r", "")
            store.add_association(Association("ac-1", "/r", "p-keyci000000001"))
            store.set_rule("/r", rule("item-rule", "/*", "read"))
            assert store.get_meta("initialized") is None
            store.set_meta("initialized", "1")
            assert store.get_meta("initialized") == "1"  # a batch sees its own writes
        with opened(make) as other:
            assert len(other.load().rules) == 1
            assert other.get_meta("initialized") == "1"
            assert [c.kind for c in other.changes_since(0)] == [
                Kind.AUTH_METHOD,
                Kind.ROLE,
                Kind.ASSOCIATION,
                Kind.RULE,
                Kind.META,
            ]


@contract
def a_batch_that_fails_midway_leaves_nothing(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_role("/existing", "")
        before, latest = store.load(), store.latest_change()
        with pytest.raises(AlreadyExists), store.batch():
            store.add_auth_method(key_method())
            store.add_role("/new", "")
            store.set_rule("/new", rule("item-rule", "/*", "read"))
            store.add_item(item("/i"))
            store.set_meta("k", "v")
            store.add_role("/existing", "")  # fails: the whole batch is undone
            store.add_role("/never", "")
        with pytest.raises(RuntimeError, match="boom"), store.batch():
            store.add_role("/new", "")
            raise RuntimeError("boom")
        assert store.load() == before
        assert store.list_items() == []
        assert store.get_meta("k") is None
        assert store.latest_change() == latest
        assert store.changes_since(latest) == []
        # The store is still usable afterwards.
        store.add_role("/after", "")
        assert [r.name for r in store.load().roles] == ["/existing", "/after"]


@contract
def a_caught_error_inside_a_batch_keeps_the_rest(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_role("/existing", "")
        with store.batch():
            store.add_role("/one", "")
            with pytest.raises(AlreadyExists):
                store.add_role("/existing", "")
            with pytest.raises(NotFound):
                store.set_rule("/none", rule("item-rule", "/*", "read"))
            store.add_role("/two", "")
        assert [r.name for r in store.load().roles] == ["/existing", "/one", "/two"]
        assert [c.key for c in store.changes_since(0)] == ["/existing", "/one", "/two"]


# --- audit events --------------------------------------------------------------------------------------------


def audit_event(what: str, node: str = "n-test") -> AuditEvent:
    return AuditEvent(node, {"time": 1000.25, "event": what, "name": "/ü"})


@contract
def an_audited_write_stores_its_event_in_its_transaction(make: StoreFactory) -> None:
    with opened(make) as store:
        event = audit_event("create-role")
        with store.audited(event):
            store.add_role("/r", "")
            store.set_rule("/r", rule("item-rule", "/*", "read"))  # only the first write stores it
        assert event.id is not None
        assert store.audit_events("n-test", 0) == [(event.id, event.record())]
        other = audit_event("create-secret", node="n-other")
        with store.audited(other):
            store.add_item(item("/i"))
        assert store.audit_events("n-test", 0) == [(event.id, event.record())]  # each node reads its own
        assert store.audit_events("n-other", 0) == [(other.id, other.record())]
        assert other.id is not None and other.id > event.id
        assert store.audit_events("n-other", other.id) == []


@contract
def a_write_rolled_back_or_changing_nothing_stores_no_audit_event(make: StoreFactory) -> None:
    with opened(make) as store:
        store.add_role("/r", "")
        store.add_auth_method(aws_method())
        store.claim_proof(b"used", expires_at=FAR, now=0.0)
        refused, revoked, replayed = audit_event("create-role"), audit_event("revoke"), audit_event("login")
        with pytest.raises(AlreadyExists), store.audited(refused):
            store.add_role("/r", "")
        with store.audited(revoked):
            assert store.revoke_token(b"\x00unknown") is False
        with store.audited(replayed):
            assert store.add_token(token(b"\x00t", "p-awsprod00000001", FAR), (b"used", FAR, 1.0)) is False
        assert (refused.id, revoked.id, replayed.id) == (None, None, None)
        assert store.audit_events("n-test", 0) == []
        with store.audited(replayed):  # the write that does happen stores it
            assert store.add_token(token(b"\x00t", "p-awsprod00000001", FAR)) is True
        assert [i for i, _ in store.audit_events("n-test", 0)] == [replayed.id]


@contract
def an_audited_batch_stores_its_event_once_and_only_when_it_commits(make: StoreFactory) -> None:
    with opened(make) as store:
        failed, applied = audit_event("apply-model"), audit_event("apply-model")
        with pytest.raises(RuntimeError, match="boom"), store.audited(failed), store.batch():
            store.add_role("/gone", "")
            raise RuntimeError("boom")
        with store.audited(applied), store.batch():
            store.add_role("/a", "")
            store.add_role("/b", "")
        assert failed.id is None and applied.id is not None
        assert store.audit_events("n-test", 0) == [(applied.id, applied.record())]


@contract
def a_pending_audit_event_belongs_to_its_thread(make: StoreFactory) -> None:
    with opened(make) as store:
        event = audit_event("create-role")
        with store.audited(event):
            thread = threading.Thread(target=store.add_role, args=("/other-thread", ""))
            thread.start()
            thread.join(30)
            assert event.id is None and store.audit_events("n-test", 0) == []
            store.add_role("/mine", "")
        assert [i for i, _ in store.audit_events("n-test", 0)] == [event.id]
        with pytest.raises(RuntimeError, match="nest"), store.audited(event), store.audited(audit_event("x")):
            pass


@contract
def pruning_audit_events_keeps_the_unexported_and_the_recent(make: StoreFactory) -> None:
    with opened(make) as store:
        ids = []
        for n, (node, at) in enumerate([("n-test", 10.0), ("n-test", 20.0), ("n-test", 30.0), ("n-other", 10.0)]):
            event = AuditEvent(node, {"time": at, "event": "create-role"})
            with store.audited(event):
                store.add_role(f"/r{n}", "")
            ids.append(event.id)
        # Exported through the second, older than 25 s: the first two go; the third (newer) and the other
        # node's stay.
        assert store.prune_audit_events("n-test", ids[1], before=25.0) == 2
        assert [i for i, _ in store.audit_events("n-test", 0)] == [ids[2]]
        assert store.prune_audit_events("n-test", ids[2], before=25.0) == 0
        assert [i for i, _ in store.audit_events("n-other", 0)] == [ids[3]]


@contract
def audit_events_come_by_pages_in_id_order(make: StoreFactory) -> None:
    with opened(make) as store:
        events = [audit_event(f"e{n}") for n in range(5)]
        for n, event in enumerate(events):
            with store.audited(event):
                store.set_meta(f"k{n}", "v")
        first = store.audit_events("n-test", 0, limit=2)
        rest = store.audit_events("n-test", first[-1][0])
        assert [i for i, _ in first + rest] == [e.id for e in events]
        assert [orjson.loads(r)["event"] for _, r in first + rest] == [f"e{n}" for n in range(5)]


# --- concurrency ---------------------------------------------------------------------------------------------


@contract
def threads_hammering_one_store_lose_nothing(make: StoreFactory) -> None:
    with opened(make) as store:
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
        assert len(store.load().rules) == threads * per_thread + 1
        assert len(store.list_items()) == threads * per_thread + 1
        assert store.get_item("/counter").version == 1 + threads * per_thread


@contract
def two_stores_on_one_database_lose_nothing(make: StoreFactory) -> None:
    with opened(make) as first, opened(make) as second:
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
        assert claims.count(True) == per_thread


@contract
def two_stores_creating_the_same_names_at_once_one_wins(make: StoreFactory) -> None:
    rounds = 30
    with opened(make) as first, opened(make) as second:
        first.add_auth_method(key_method())
        outcomes: dict[str, list[str]] = {}
        lock = threading.Lock()

        def attempt(label: str, call: Callable[[], None]) -> None:
            try:
                call()
                result = "ok"
            except AlreadyExists as exc:
                result = f"exists:{exc.field}"
            with lock:
                outcomes.setdefault(label, []).append(result)

        def work(n: int) -> None:
            s = (first, second)[n]
            for i in range(rounds):
                attempt(f"role{i}", lambda i=i: s.add_role(f"/race/{i}", f"by {n}"))
                attempt(f"item{i}", lambda i=i: s.add_item(item(f"/race/{i}")))
                attempt(f"am{i}", lambda i=i: s.add_auth_method(key_method(f"/race/am{i}", f"p-race{n}{i:010d}")))
                # Other sub-claims on each side: only the id is contended.
                assoc = Association(f"ac-race{i}", f"/race/{i}", key_method().access_id, (("account", (str(n),)),))
                attempt(f"assoc{i}", lambda assoc=assoc: s.add_association(assoc))

        run_threads(2, work)
        for label, results in outcomes.items():
            assert sorted(results) == ["exists:" + ("assoc-id" if label.startswith("assoc") else "name"), "ok"], (
                label,
                results,
            )
        assert len(first.load().roles) == rounds


@contract
def concurrent_claims_of_one_proof_from_two_stores_give_one_true(make: StoreFactory) -> None:
    keys = [f"k{i}".encode() for i in range(100)]
    with opened(make) as first, opened(make) as second:
        results: list[list[bool]] = [[], []]

        def work(n: int) -> None:
            s = (first, second)[n]
            results[n] = [s.claim_proof(k, expires_at=1e12, now=0.0) for k in keys]

        run_threads(2, work)
        for a, b in zip(*results, strict=True):
            assert a != b  # exactly one of the two stores claimed each key


# --- change feed ---------------------------------------------------------------------------------------------


@contract
def every_model_and_token_write_records_its_changes(make: StoreFactory) -> None:
    with opened(make) as store:
        populated(store)
        assert kinds_and_keys(store.changes_since(0)) == [
            (Kind.AUTH_METHOD, "/aws/prod"),
            (Kind.AUTH_METHOD, "/keys/ci"),
            (Kind.ROLE, "/roles/app"),
            (Kind.ROLE, "/roles/ops"),
            (Kind.ASSOCIATION, "ac-0000000000000001"),
            (Kind.ASSOCIATION, "ac-0000000000000002"),
            (Kind.ASSOCIATION, "ac-0000000000000003"),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/*")),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/secret/*")),
            (Kind.RULE, ("/roles/app", "role-rule", "/roles/*")),
            (Kind.RULE, ("/roles/ops", "auth-method-rule", "/*")),
        ]
        mark = store.latest_change()
        store.update_auth_method(dataclasses.replace(key_method(), jwt_ttl=60))
        store.set_rule("/roles/app", rule("item-rule", "/app/*", "read"))  # an upsert is a change too
        store.delete_rule("/roles/app", "item-rule", "/app/*")
        store.delete_association("ac-0000000000000002")
        store.add_token(token(b"\x0a\x0b", "p-keyci000000001", FAR))
        store.add_token(token(b"\x0c", "p-awsprod00000001", FAR))
        store.add_token(token(b"\x0d", "p-awsprod00000001", FAR))
        assert store.revoke_token(b"\x0a\x0b") is True
        assert store.revoke_token(b"\x0a\x0b") is False  # no change: nothing changed
        assert store.revoke_token(b"\xff") is False
        assert store.revoke_token(b"\x0d") is True
        store.set_meta("k", "v")  # meta is in the feed (the authors' Cedar files live there)
        # Not in the feed: items, proofs, purges (expired tokens need no news).
        store.add_item(item("/i"))
        store.update_item("/i", b"c", b"n" * 12, 1.0)
        store.delete_item("/i")
        store.claim_proof(b"p", 10.0, 0.0)
        store.purge_expired(0.0)
        # Refused writes record nothing.
        with pytest.raises(AlreadyExists):
            store.add_role("/roles/ops", "")
        with pytest.raises(NotFound):
            store.delete_rule("/roles/app", "item-rule", "/nope")
        assert kinds_and_keys(store.changes_since(mark)) == [
            (Kind.AUTH_METHOD, "/keys/ci"),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/*")),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/*")),
            (Kind.ASSOCIATION, "ac-0000000000000002"),
            (Kind.TOKEN, "0a0b"),
            (Kind.TOKEN, "0c"),
            (Kind.TOKEN, "0d"),
            (Kind.TOKEN, "0a0b"),
            (Kind.TOKEN, "0d"),
            (Kind.META, "k"),
        ]


@contract
def deletes_record_what_they_cascade_to(make: StoreFactory) -> None:
    with opened(make) as store:
        populated(store)
        store.add_token(token(b"\x01", "p-awsprod00000001", FAR))
        store.add_token(token(b"\x02", "p-awsprod00000001", FAR))
        store.add_token(token(b"\x03", "p-awsprod00000001", 10.0))  # expired: needs no news
        store.add_token(token(b"\x04", "p-keyci000000001", FAR))
        assert store.revoke_token(b"\x02") is True  # revoked already: needs no news
        mark = store.latest_change()
        store.delete_auth_method("/aws/prod")
        assert kinds_and_keys(store.changes_since(mark)) == [
            (Kind.TOKEN, "01"),
            (Kind.ASSOCIATION, "ac-0000000000000001"),
            (Kind.ASSOCIATION, "ac-0000000000000003"),
            (Kind.AUTH_METHOD, "/aws/prod"),
        ]
        mark = store.latest_change()
        store.delete_role("/roles/app")
        assert kinds_and_keys(store.changes_since(mark)) == [
            (Kind.ASSOCIATION, "ac-0000000000000002"),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/*")),
            (Kind.RULE, ("/roles/app", "item-rule", "/app/secret/*")),
            (Kind.RULE, ("/roles/app", "role-rule", "/roles/*")),
            (Kind.ROLE, "/roles/app"),
        ]


@contract
def change_rows_are_numbered_and_paged(make: StoreFactory) -> None:
    with opened(make) as store:
        before = time.time()
        for n in range(25):
            store.add_role(f"/r{n}", "")
        changes = store.changes_since(0, limit=1000)
        assert [c.key for c in changes] == [f"/r{n}" for n in range(25)]
        seqs = [c.seq for c in changes]
        assert seqs == sorted(seqs) and len(set(seqs)) == 25
        assert store.latest_change() == seqs[-1]
        assert all(before - 5 <= c.at <= time.time() + 5 for c in changes)
        assert store.changes_since(0, limit=10) == changes[:10]
        assert store.changes_since(changes[9].seq, limit=10) == changes[10:20]
        assert store.changes_since(seqs[-1]) == []


@contract
def the_get_methods_read_one_key(make: StoreFactory) -> None:
    with opened(make) as store:
        populated(store)
        store.add_token(token(b"\x01live", "p-awsprod00000001", FAR, issued_at=7.0))
        store.add_token(token(b"\x01dead", "p-awsprod00000001", 50.0))
        store.add_token(token(b"\x01gone", "p-awsprod00000001", FAR))
        store.revoke_token(b"\x01gone")

        assert store.get_auth_method("/aws/prod") == aws_method()
        assert store.get_auth_method("/nope") is None
        assert store.get_role("/roles/app") == AccessRole("/roles/app", "the app — ünïcode")
        assert store.get_role("/nope") is None
        assert store.get_association("ac-0000000000000001") == store.load().associations[0]
        assert store.get_association("ac-nope") is None
        assert store.get_rule("/roles/app", "item-rule", "/app/*") == rule("item-rule", "/app/*", "read", "list")
        assert store.get_rule("/roles/app", RuleType.ROLE, "/roles/*") == rule("role-rule", "/roles/*", "read")
        assert store.get_rule("/roles/app", "role-rule", "/app/*") is None
        assert store.get_token(b"\x01live") == token(b"\x01live", "p-awsprod00000001", FAR, issued_at=7.0)
        assert store.get_token(b"\x01dead", now=10.0) is not None
        assert store.get_token(b"\x01dead") is None  # expired
        assert store.get_token(b"\x01gone") is None  # revoked
        assert store.get_token(b"\x01none") is None
        now = time.time()
        asked = [b"\x01live", b"\x01dead", b"\x01gone", b"\x01none"]
        assert store.live_tokens(asked, now) == {b"\x01live"}
        assert store.live_tokens(asked, 10.0) == {b"\x01live", b"\x01dead"}
        assert store.live_tokens([], now) == set()
        many = [bytes([2]) + n.to_bytes(4, "big") for n in range(1200)]  # more than one statement's worth
        assert store.live_tokens([*many, b"\x01live"], now) == {b"\x01live"}


@contract
def pruning_moves_the_horizon_and_a_cursor_behind_it_must_reload(make: StoreFactory) -> None:
    with opened(make) as store:
        for n in range(5):
            store.add_role(f"/r{n}", "")
        latest = store.latest_change()
        cursor = ChangeCursor(store, 0, window=10)
        assert store.change_horizon() == 0
        assert store.prune_changes(older_than=3600) == 0
        time.sleep(0.05)
        assert store.prune_changes(older_than=0.0) == 5
        assert store.change_horizon() == latest
        assert store.changes_since(0) == []
        assert store.latest_change() == latest  # never goes back, even with every row pruned
        with pytest.raises(ChangesLost):
            cursor.poll()
        store.add_role("/after", "")
        assert store.latest_change() > latest
        fresh = ChangeCursor(store, latest, window=10)
        assert [c.key for c in fresh.poll()] == ["/after"]


@contract
def a_cursor_returns_each_change_once(make: StoreFactory) -> None:
    with opened(make) as writer, opened(make) as reader:
        cursor = ChangeCursor(reader, reader.latest_change(), window=5, page=3)
        assert cursor.poll() == []
        for n in range(7):
            writer.add_role(f"/r{n}", "")
        assert [c.key for c in cursor.poll()] == [f"/r{n}" for n in range(7)]
        assert cursor.poll() == []
        writer.delete_role("/r0")
        assert [(c.kind, c.key) for c in cursor.poll()] == [(Kind.ROLE, "/r0")]
        assert cursor.position == writer.latest_change()


@contract
def a_node_following_the_feed_converges_to_the_database(make: StoreFactory) -> None:
    """A second node that applies changes by reading each changed key (and nothing else) ends up with exactly
    what a fresh load gives, whatever it skipped in between."""
    rng = random.Random(20240611)
    with opened(make) as writer, opened(make) as follower:
        mirror: dict[tuple[str, object], object] = {}
        cursor = ChangeCursor(follower, follower.latest_change(), window=20, page=7)

        def apply(changes: list[Change]) -> None:
            for c in changes:
                value: object
                if c.kind == Kind.AUTH_METHOD:
                    value = follower.get_auth_method(str(c.key))
                elif c.kind == Kind.ROLE:
                    value = follower.get_role(str(c.key))
                elif c.kind == Kind.ASSOCIATION:
                    value = follower.get_association(str(c.key))
                elif c.kind == Kind.RULE:
                    role_name, rule_type, path = c.key
                    value = follower.get_rule(role_name, rule_type, path)
                else:
                    assert c.kind == Kind.TOKEN
                    value = follower.get_token(bytes.fromhex(str(c.key)))
                if value is None:
                    mirror.pop((c.kind, c.key), None)
                else:
                    mirror[(c.kind, c.key)] = value

        def expected() -> dict[tuple[str, object], object]:
            snap = writer.load()
            out: dict[tuple[str, object], object] = {}
            out.update({(Kind.AUTH_METHOD, am.name): am for am in snap.auth_methods})
            out.update({(Kind.ROLE, r.name): AccessRole(r.name, r.description) for r in snap.roles})
            out.update({(Kind.ASSOCIATION, a.assoc_id): a for a in snap.associations})
            out.update({(Kind.RULE, (n, str(r.rule_type), r.path)): r for n, r in snap.rules})
            out.update({(Kind.TOKEN, t.token_hash.hex()): t for t in writer.load_tokens(time.time())})
            return out

        ams = [key_method(f"/am{n}", f"p-conv{n:010d}") for n in range(3)]
        roles = [f"/role{n}" for n in range(3)]
        paths = ["/a/*", "/b/*"]
        for step in range(300):
            op = rng.randrange(10)
            try:
                if op == 0:
                    writer.add_auth_method(rng.choice(ams))
                elif op == 1:
                    writer.delete_auth_method(rng.choice(ams).name)
                elif op == 2:
                    writer.update_auth_method(dataclasses.replace(rng.choice(ams), jwt_ttl=rng.randrange(60, 900)))
                elif op == 3:
                    writer.add_role(rng.choice(roles), f"v{step}")
                elif op == 4:
                    writer.delete_role(rng.choice(roles))
                elif op == 5:
                    claims = parse_sub_claims([f"account={rng.randrange(3)}"])
                    writer.add_association(
                        Association(f"ac-{rng.randrange(6)}", rng.choice(roles), rng.choice(ams).access_id, claims)
                    )
                elif op == 6:
                    writer.delete_association(f"ac-{rng.randrange(6)}")
                elif op == 7:
                    caps = rng.sample(["read", "list", "create"], rng.randrange(1, 3))
                    rule_type = rng.choice(["item-rule", "role-rule"])
                    writer.set_rule(rng.choice(roles), rule(rule_type, rng.choice(paths), *caps))
                elif op == 8:
                    writer.add_token(token(bytes([rng.randrange(20)]), rng.choice(ams).access_id, FAR, issued_at=step))
                else:
                    writer.revoke_token(bytes([rng.randrange(20)]))
            except (AlreadyExists, NotFound):
                pass
            if rng.randrange(15) == 0:
                apply(cursor.poll())
        apply(cursor.poll())
        assert mirror == expected()


@contract
def listen_wakes_a_node_up_on_changes(make: StoreFactory) -> None:
    with opened(make) as listener, opened(make) as writer:
        events: queue.Queue[int | None] = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(
            target=listener.listen, args=(events.put, stop), kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            assert events.get(timeout=30) is None  # first: "catch up", once listening
            writer.add_role("/r", "")
            seq = writer.latest_change()
            got = events.get(timeout=30)
            while got is None:
                got = events.get(timeout=30)
            assert got == seq
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()


# --- migrations: the same rules on every backend ------------------------------------------------------------

#: Test migrations every backend's SQL accepts (SQLite takes PostgreSQL's type names).
M1 = "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at double precision NOT NULL);\n" + (
    "CREATE TABLE a (x text);"
)
M2 = "CREATE TABLE b (y text);\nINSERT INTO a (x) VALUES ('from m2');"

#: A store opened with these migrations; and the rows of a query on its database, or None when it fails.
Opener = Callable[[Sequence[str]], Any]
Query = Callable[[str], list[tuple[Any, ...]] | None]
MigrationCheck = Callable[[Opener, Query], None]
MIGRATION_CONTRACT: list[MigrationCheck] = []


def migration_contract(check: MigrationCheck) -> MigrationCheck:
    MIGRATION_CONTRACT.append(check)
    return check


@migration_contract
def migrations_apply_in_order_once(open_with: Opener, query: Query) -> None:
    with open_with([M1]) as s:
        assert s.applied_migrations == [1]
        assert s.schema_version() == 1
    with open_with([M1, M2]) as s:
        assert s.applied_migrations == [2]
        assert s.schema_version() == 2
    with open_with([M1, M2]) as s:
        assert s.applied_migrations == []
    assert query("SELECT x FROM a") == [("from m2",)]


@migration_contract
def a_failing_migration_is_rolled_back_whole(open_with: Opener, query: Query) -> None:
    open_with([M1]).close()
    broken = "CREATE TABLE b (y text);\nINSERT INTO nowhere VALUES (1);"
    with pytest.raises(StoreError, match="migrating to schema version 2 failed"):
        open_with([M1, broken])
    assert query("SELECT y FROM b") is None  # nothing of it stays
    assert query("SELECT max(version) FROM schema_version") == [(1,)]
