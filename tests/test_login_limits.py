"""Refused logins are limited per source address (``server/login_limit.py``): a flood from one address
gets 429 with Retry-After, other addresses log in as before and stay fast, and the audit log does not grow
with the flood."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cedarkey.server.login_limit import FailedLogins

from tests.support.server import ServerProcess, start_initialized

JSON = {"content-type": "application/json"}


def test_a_bucket_empties_after_its_burst_and_refills_at_its_rate() -> None:
    limits = FailedLogins(burst=3, per_second=0.5)
    assert [limits.refused("1.2.3.4", 0.0) for _ in range(3)] == [False, False, True]  # the third empties it
    assert limits.retry_after("1.2.3.4", 0.0) == 2  # one refusal's worth refills in 2 s
    assert limits.retry_after("1.2.3.4", 2.0) is None
    assert limits.retry_after("5.6.7.8", 0.0) is None  # another address is untouched
    assert not limits.refused("1.2.3.4", 2.0)  # the same episode: audited once
    assert limits.refused("1.2.3.4", 100.0) is False and limits.retry_after("1.2.3.4", 100.0) is None


def test_the_table_of_addresses_is_bounded_and_forgets_the_least_recent() -> None:
    limits = FailedLogins(burst=1, per_second=0.001, max_addresses=100)
    for n in range(10_000):
        limits.refused(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limits) == 100
    assert limits.retry_after("10.0.39.15", 0.0) is not None  # the last one is remembered
    assert limits.retry_after("10.0.0.0", 0.0) is None  # the first was forgotten


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str], Path]]:
    data = tmp_path_factory.mktemp("limits")
    # Believe X-Forwarded-For from loopback, so that one test client can speak for several addresses.
    process, admin = start_initialized(data / "data", "--forwarded-allow-ips", "127.0.0.1", log=data / "log")
    try:
        yield process, admin, data / "data" / "audit.log"
    finally:
        process.stop()


_HTTP = httpx.Client(timeout=10)  # one pool: a client per call would spend its time making TLS contexts


def _login(process: ServerProcess, body: dict[str, Any], source: str) -> httpx.Response:
    return _HTTP.post(f"{process.url}/auth", content=orjson.dumps(body), headers={**JSON, "x-forwarded-for": source})


def test_a_flood_of_refused_logins_is_limited_and_others_are_not(
    server: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    process, admin, audit = server
    good = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
    bad = {**good, "access-key": "wrong"}

    def timed_login() -> float:
        start = time.perf_counter()
        assert _login(process, good, "198.51.100.7").status_code == 200
        return time.perf_counter() - start

    baseline = statistics.median(timed_login() for _ in range(20))
    lines_before = len(audit.read_text().splitlines())
    start = time.monotonic()
    statuses = [_login(process, bad, "203.0.113.9").status_code for _ in range(1000)]
    elapsed = time.monotonic() - start
    assert statuses[:20] == [401] * 20  # the burst: every refusal answered as refusals are
    # Then the limit, for as long as the flood lasts: one refusal a second gets through.
    assert statuses[20] == 429 and set(statuses[20:]) <= {401, 429}, statuses[15:30]
    assert statuses[20:].count(401) <= elapsed + 2, elapsed
    limited = _login(process, good, "203.0.113.9")  # while limited, even a correct login waits
    assert limited.status_code == 429 and limited.json()["error"] == "TooManyRequests"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another address logs in at once, about as fast as before the flood.
    during = statistics.median(timed_login() for _ in range(20))
    assert during < 3 * baseline + 0.005, (baseline, during)
    # The audit log got the burst and one line for the episode, not a line per refusal.
    new = [orjson.loads(line) for line in audit.read_text().splitlines()[lines_before:]]
    flood = [e for e in new if e.get("source_ip") == "203.0.113.9"]
    assert len(flood) <= 20 + 1 + elapsed + 2, (len(flood), elapsed)
    assert sum(e["event"] == "login-limited" for e in flood) == 1


def test_a_limited_address_logs_in_again_once_its_bucket_refills(
    server: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    process, admin, _ = server
    good = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
    for _ in range(30):
        _login(process, {**good, "access-key": "wrong"}, "192.0.2.44")
    answer = _login(process, good, "192.0.2.44")
    assert answer.status_code == 429
    time.sleep(int(answer.headers["retry-after"]) + 0.1)
    assert _login(process, good, "192.0.2.44").status_code == 200
