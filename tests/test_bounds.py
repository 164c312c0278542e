"""What grows with a client's input stays bounded: decision memos (shared by identity, weighed globally), the
in-memory replay guard, the live tokens of an auth method (a cap) and the remembered misses of unknown tokens.
Each test floods one of them."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cedarkey.engine import AccessRole, AuthMethod, Engine, Identity, RoleRule
from cedarkey.engine.memo import ENTRY_WEIGHT, Memos
from cedarkey.policies import schema_text
from cedarkey.server.sts import MemoryReplayGuard
from cedarkey.server.tokens import Misses, Session, TokenRegistry, new_token, token_hash

from tests.support.server import Api, audit_events, running_api

SCHEMA = schema_text()


def engine_with(memos: Memos) -> Engine:
    engine = Engine(SCHEMA, memos=memos)
    engine.add_auth_method(AuthMethod("/keys", "p-keys00000000001", "access_key"))
    engine.add_role(AccessRole("/readers"))
    engine.associate("/readers", "/keys", ())
    engine.set_rule("/readers", RoleRule.parse("item-rule", "/dev/*", ["read"]))
    return engine


def caller(n: int) -> Identity:
    return Identity("p-keys00000000001", "access_key", "access-key", source_ip=f"10.0.{n // 250}.{n % 250}")


def test_memos_stay_under_their_global_bound_however_many_callers_flood_them() -> None:
    memos = Memos(max_weight=2 << 20, max_identity_weight=256 << 10)
    engine = engine_with(memos)
    path = "/dev/" + "x" * 1000
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        for n in range(60):  # 60 callers, each asking 300 distinct 1 KB paths: 18 MB of memo unbounded
            identity = caller(n)
            for i in range(0, 300, 50):
                engine.decide_batch(identity, [("read", f"{path}/{n}/{j}", "item-rule") for j in range(i, i + 50)])
                assert memos.weight <= memos.max_weight
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    finally:
        tracemalloc.stop()
    assert memos.weight <= memos.max_weight
    # The memo's own estimate is close to what Python really holds: the bound bounds memory, not a number.
    assert grown < 2 * memos.max_weight, grown


def test_one_callers_memo_starts_over_at_its_own_bound() -> None:
    memos = Memos(max_weight=1 << 20, max_identity_weight=100 * (ENTRY_WEIGHT + 20))
    engine = engine_with(memos)
    identity = caller(0)
    for j in range(1000):
        engine.decide(identity, "read", f"/dev/{j:015d}", "item-rule")
        assert memos.of(identity).weight <= memos.max_identity_weight


def test_a_callers_memo_answers_again_until_the_model_changes() -> None:
    memos = Memos()
    engine = engine_with(memos)
    identity = caller(1)
    first = engine.decide(identity, "read", "/dev/a", "item-rule")
    assert first.allowed and engine.decide(identity, "read", "/dev/a", "item-rule") is first
    engine.set_rule("/readers", RoleRule.parse("item-rule", "/dev/*", ["deny"]))
    assert memos.weight == 0
    assert not engine.decide(identity, "read", "/dev/a", "item-rule").allowed


def test_a_hot_caller_keeps_its_memo_while_a_flood_evicts_others() -> None:
    memos = Memos(max_weight=400 * (ENTRY_WEIGHT + 30), max_identity_weight=300 * (ENTRY_WEIGHT + 30))
    engine = engine_with(memos)
    hot = caller(0)
    answer = engine.decide(hot, "read", "/dev/hot", "item-rule")
    for n in range(1, 40):
        engine.decide_batch(caller(n), [("read", f"/dev/flood/{n}/{j:05d}", "item-rule") for j in range(20)])
        assert engine.decide(hot, "read", "/dev/hot", "item-rule") is answer  # used between sweeps: kept


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def test_tokens_of_one_identity_share_one_memo(api: Api) -> None:
    """Six tokens of one caller used to hold six memos: one identity holds one."""
    created = api.ok("create-auth-method", name="/apps/flood")
    body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
    tokens = [api.client.post("/auth", content=orjson.dumps(body)).json()["token"] for _ in range(6)]
    requests = [{"path": f"/flood/{'p' * 900}/{j}", "capability": "read"} for j in range(1000)]
    memos = api.service.engine.memos
    before = memos.weight
    for token in tokens:
        assert api.call("authorize", token, requests=requests).status_code == 200
    grown = memos.weight - before
    assert 1000 * ENTRY_WEIGHT < grown < 2 * 1000 * (ENTRY_WEIGHT + 920)


def test_the_replay_guard_holds_at_most_its_bound_and_forgets_the_oldest_first() -> None:
    guard = MemoryReplayGuard(clock=lambda: 0.0, max_claims=1000)

    async def flood() -> None:
        for n in range(5000):
            assert await guard.claim(f"proof-{n}", 1000.0 + n)
            assert len(guard) <= 1000
        assert not await guard.claim("proof-4999", 9999.0)  # the newest are still refused
        assert await guard.claim("proof-0", 9999.0)  # the oldest was forgotten (the store refuses it then)

    asyncio.run(flood())


def test_an_auth_method_holds_at_most_its_cap_of_live_tokens_and_refuses_logins_beyond(tmp_path: Path) -> None:
    with running_api(tmp_path / "data", max_tokens_per_auth_method=50) as api:
        created = api.ok("create-auth-method", name="/apps/flood")
        body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
        answers = [api.client.post("/auth", content=orjson.dumps(body)) for _ in range(300)]
        assert [a.status_code for a in answers] == [200] * 50 + [429] * 250
        refused = answers[-1]
        assert refused.json()["error"] == "TooManyTokens", refused.text
        assert 3500 <= int(refused.headers["retry-after"]) <= 3600  # when the first token expires (jwt-ttl 1 h)
        assert api.service.tokens.live(created["access-id"]) == 50
        stored = [t for t in api.service.store.load_tokens(time.time()) if t.access_id == created["access-id"]]
        assert len(stored) == 50  # a refused login wrote nothing
        first = answers[0].json()["token"]
        asked = [{"path": "/x", "capability": "read"}]
        assert api.call("authorize", first, requests=asked).status_code == 200  # issued sessions keep working
        assert api.client.post("/auth", content=orjson.dumps(admin_body(api))).status_code == 200  # others too
        api.ok("revoke-token", first)  # one goes: room for one
        assert [api.client.post("/auth", content=orjson.dumps(body)).status_code for _ in range(2)] == [200, 429]
        refusals = [e for e in audit_events(api.settings.data_dir, "login") if e.get("reason") == "token_limit"]
        assert len(refusals) == 251 and refusals[0]["access_id"] == created["access-id"]


def admin_body(api: Api) -> dict[str, str]:
    return {"access-type": "access_key", "access-id": api.admin["access_id"], "access-key": api.admin["access_key"]}


def session(identity: Identity, expires_at: float) -> Session:
    return Session(identity, 0.0, expires_at)


def test_room_for_a_token_comes_back_when_the_soonest_expires_and_deleting_frees_all() -> None:
    registry = TokenRegistry()
    for n, expires in enumerate((300.0, 100.0, 200.0)):
        registry.add(token_hash(new_token()), session(caller(n), expires))
    access_id = caller(0).access_id
    assert registry.wait_for_room(access_id, 4, 50.0) is None
    assert registry.wait_for_room(access_id, 3, 50.0) == 50.0  # the soonest expires at 100
    assert registry.wait_for_room(access_id, 3, 150.0) is None and registry.live(access_id) == 2
    assert registry.drop_access_id(access_id) == 2 and registry.live(access_id) == 0 and len(registry) == 0


def test_the_tokens_of_one_identity_share_one_identity_object_while_any_lives() -> None:
    """A login builds its identity's Cedar entities (3.3 KB): 1,000 tokens of one caller hold them once."""
    registry = TokenRegistry()
    digests = [token_hash(new_token()) for _ in range(1000)]
    for digest in digests:
        registry.add(digest, session(caller(7), 100.0))  # an equal identity, a new object each time
    shared = registry.get(digests[0])
    assert shared is not None
    assert all(registry.get(d).identity is shared.identity for d in digests)  # type: ignore[union-attr]
    for digest in digests:
        registry.revoke(digest)
    again = caller(7)
    registry.add(digests[0], session(again, 100.0))
    assert registry.get(digests[0]).identity is again  # type: ignore[union-attr]  # none held the old one


def test_remembered_misses_of_unknown_tokens_hold_at_most_their_bound() -> None:
    misses = Misses(ttl=1.0, max_entries=100)
    digests = [token_hash(new_token()) for _ in range(5000)]
    for digest in digests:  # a flood within one second: none has expired
        misses.add(digest, 0.0)
        assert len(misses) <= 100
    assert misses.recent(digests[-1], 0.5) and not misses.recent(digests[0], 0.5)  # the oldest went first
    assert not misses.recent(digests[-1], 1.0)
    misses.purge(1.0)
    assert len(misses) == 0
