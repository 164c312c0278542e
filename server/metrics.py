"""The metrics, kept as plain numbers and shown in Prometheus' text format at scrape time.

Every update happens on the event loop's thread (the thread pool only reads and writes the store), so a
count is a plain ``+=``: no lock, no label lookup per call. ``prometheus_client`` still writes the exposition,
from a collector in a registry of the app's own (several apps can live in one test process).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

#: Seconds, for every latency histogram: from a memo hit to the STS budget.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BOUNDS = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]


class Count:
    """One labelled counter's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Timing:
    """One labelled histogram's observations: a count per bucket (not cumulative) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1  # a bucket counts what is <= its bound
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        total, out = 0, []
        for bound, count in zip(_BOUNDS, self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


Child = TypeVar("Child", Count, Timing)


class Family(Generic[Child]):
    """A metric's children by label values, made on first use (as ``prometheus_client``'s ``labels``)."""

    def __init__(self, kind: type[Child], name: str, help: str, labels: str) -> None:
        self.kind, self.name, self.help, self.label_names = kind, name, help, labels.split()
        self.children: dict[tuple[str, ...], Child] = {}

    def labels(self, *values: str) -> Child:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}")
            child = self.children[values] = self.kind()
        return child

    def collect(self) -> Metric:
        if self.kind is Count:
            counter = CounterMetricFamily(self.name, self.help, labels=self.label_names)
            for values, count in self.children.items():
                counter.add_metric(values, count.value)
            return counter
        histogram = HistogramMetricFamily(self.name, self.help, labels=self.label_names)
        for values, timing in self.children.items():
            histogram.add_metric(values, timing.buckets(), timing.sum)
        return histogram


class Metrics:
    def __init__(self) -> None:
        self.requests = Family(Count, "cedarkey_requests", "Requests by command and status", "command status")
        self.latency = Family(Timing, "cedarkey_request_seconds", "Request latency by command", "command")
        self.decisions = Family(Count, "cedarkey_decisions", "Engine decisions by outcome", "outcome")
        self.login_failures = Family(Count, "cedarkey_login_failures", "Refused logins by reason", "reason")
        # STS as this server sees it (retries and reading the answer included): what a login waits for that
        # is not cedarkey's own work. "unreachable": no answer within the budget (or no connection).
        self.sts = Family(Timing, "cedarkey_sts_seconds", "STS GetCallerIdentity round trips by outcome", "outcome")
        self.logins = Family(Count, "cedarkey_logins", "Accepted logins by access type", "type")
        for outcome in ("answered", "unreachable"):
            self.sts.labels(outcome)
        self.allowed = self.decisions.labels("allow")
        self.denied = self.decisions.labels("deny")
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe_sts(self, seconds: float, outcome: str) -> None:
        self.sts.labels(outcome).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """What a scrape shows (the collector protocol of ``prometheus_client``)."""
        for family in (self.requests, self.latency, self.decisions, self.login_failures, self.sts, self.logins):
            yield family.collect()
