"""The plain-number metrics show exactly what ``prometheus_client``'s own Counter and Histogram would."""

from __future__ import annotations

from cedarkey.server.metrics import BUCKETS, Metrics
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

#: Observations around every bucket bound: exactly on it, just below and just above.
EDGES = [b * f for b in BUCKETS for f in (0.999999, 1, 1.000001)]
seconds = st.one_of(st.sampled_from(EDGES), st.floats(min_value=0, max_value=20, allow_nan=False))


def lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(prefix) and "_created" not in line]


@given(st.lists(st.tuples(st.sampled_from(["authorize", "auth", "unknown"]), seconds), max_size=40))
def test_a_latency_histogram_reads_as_prometheus_clients(observations: list[tuple[str, float]]) -> None:
    ours = Metrics()
    theirs = CollectorRegistry()
    reference = Histogram(
        "cedarkey_request_seconds", "Request latency by command", ["command"], registry=theirs, buckets=BUCKETS
    )
    reference.labels("authorize")  # a child made up front, as the app makes its timers
    ours.latency.labels("authorize")
    for command, value in observations:
        ours.latency.labels(command).observe(value)
        reference.labels(command).observe(value)
    assert sorted(lines(ours.registry, "cedarkey_request_seconds")) == sorted(lines(theirs, "cedarkey_request_seconds"))


@given(st.lists(st.tuples(st.sampled_from(["200", "401", "404"]), st.integers(1, 5)), max_size=20))
def test_a_request_counter_reads_as_prometheus_clients(increments: list[tuple[str, int]]) -> None:
    ours = Metrics()
    theirs = CollectorRegistry()
    reference = Counter("cedarkey_requests", "Requests by command and status", ["command", "status"], registry=theirs)
    for status, amount in increments:
        ours.requests.labels("authorize", status).inc(amount)
        reference.labels("authorize", status).inc(amount)
    assert sorted(lines(ours.registry, "cedarkey_requests")) == sorted(lines(theirs, "cedarkey_requests"))


def test_decisions_and_sts_outcomes_are_shown_before_the_first_one() -> None:
    scraped = generate_latest(Metrics().registry).decode()
    assert 'cedarkey_decisions_total{outcome="allow"} 0.0' in scraped
    assert 'cedarkey_decisions_total{outcome="deny"} 0.0' in scraped
    assert 'cedarkey_sts_seconds_count{outcome="unreachable"} 0.0' in scraped


def test_a_child_with_the_wrong_labels_is_refused() -> None:
    metrics = Metrics()
    try:
        metrics.requests.labels("authorize")
    except ValueError as exc:
        assert "command" in str(exc)
    else:
        raise AssertionError("a child with one of two labels was made")
