"""What grows with a client's input stays bounded: decision memos (shared by identity, weighed globally) and
the in-memory replay guard. Each test floods one of them."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cedarkey.engine import AccessRole, AuthMethod, Engine, Identity, RoleRule
from cedarkey.engine.memo import ENTRY_WEIGHT, Memos
from cedarkey.policies import schema_text
from cedarkey.server.sts import MemoryReplayGuard

from tests.support.server import Api, running_api

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
