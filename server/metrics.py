"""Prometheus metrics, in a registry of the app's own (several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Seconds, for every latency histogram: from a memo hit to the STS budget.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(name: str, help: str, label: str) -> Counter:
            return Counter(name, help, label.split(), registry=self.registry)

        def histogram(name: str, help: str, label: str) -> Histogram:
            return Histogram(name, help, [label], registry=self.registry, buckets=BUCKETS)

        self.requests = counter("cedarkey_requests", "Requests by command and status", "command status")
        self.latency = histogram("cedarkey_request_seconds", "Request latency by command", "command")
        self.decisions = counter("cedarkey_decisions", "Engine decisions by outcome", "outcome")
        self.login_failures = counter("cedarkey_login_failures", "Refused logins by reason", "reason")
        # STS as this server sees it (retries and reading the answer included): what a login waits for that
        # is not cedarkey's own work. "unreachable": no answer within the budget (or no connection).
        self.sts = histogram("cedarkey_sts_seconds", "STS GetCallerIdentity round trips by outcome", "outcome")
        self._sts_outcomes = {outcome: self.sts.labels(outcome) for outcome in ("answered", "unreachable")}
        self.logins = counter("cedarkey_logins", "Accepted logins by access type", "type")
        self.allowed = self.decisions.labels("allow")
        self.denied = self.decisions.labels("deny")

    def observe_sts(self, seconds: float, outcome: str) -> None:
        self._sts_outcomes[outcome].observe(seconds)
