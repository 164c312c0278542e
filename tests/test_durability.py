"""kill -9 durability, a few rounds of ``bench/durability.py``'s: every acknowledged write survives a
SIGKILL with its acknowledged value, nothing is half-written, the database opens cleanly, tokens issued
before the kill still work, and every acknowledged write has its audit record. On SQLite, and on PostgreSQL
with the server's database connections cut mid-write as well."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.durability import initialized, one_round
from tests.support.postgres import cut_connections, fresh_database


def _assert_clean(results: list) -> None:  # type: ignore[type-arg]
    for n, r in enumerate(results):
        assert r.errors == [], (n, r.errors)
        assert r.acknowledged > 0, f"round {n}: no write was acknowledged before the kill"
        assert r.lost == [] and r.corrupted == [], (n, r.lost[:5], r.corrupted[:5])
        assert r.audit_missing == 0, (n, r.audit_missing)
        assert r.in_flight_unaudited == 0, (n, r.in_flight, r.in_flight_unaudited)


def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    target, admin = initialized(tmp_path / "data")
    rng = random.Random(22)
    _assert_clean([one_round(target, admin, rng) for _ in range(3)])


def test_postgres_survives_kill_9_and_cut_connections(tmp_path: Path) -> None:
    with fresh_database() as url:
        target, admin = initialized(tmp_path / "data", url)
        rng = random.Random(23)
        _assert_clean([one_round(target, admin, rng, cut=lambda: cut_connections(url)) for _ in range(2)])
