"""Prometheus metrics, in a registry of the app's own (several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cedarkey_requests", "Requests by command and status", ["command", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cedarkey_request_seconds",
            "Request latency by command",
            ["command"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.decisions = Counter(
            "cedarkey_decisions", "Engine decisions by outcome", ["outcome"], registry=self.registry
        )
        self.login_failures = Counter(
            "cedarkey_login_failures", "Refused logins by reason", ["reason"], registry=self.registry
        )
        # STS as this server sees it (retries and reading the answer included): what a login waits for that
        # is not cedarkey's own work. "unreachable": no answer within the budget (or no connection).
        self.sts = Histogram(
            "cedarkey_sts_seconds",
            "STS GetCallerIdentity round trips by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._sts_outcomes = {outcome: self.sts.labels(outcome) for outcome in ("answered", "unreachable")}
        self.logins = Counter("cedarkey_logins", "Accepted logins by access type", ["type"], registry=self.registry)
        self.allowed = self.decisions.labels("allow")
        self.denied = self.decisions.labels("deny")

    def observe_sts(self, seconds: float, outcome: str) -> None:
        self._sts_outcomes[outcome].observe(seconds)
