"""Refused logins, limited per source address: a client that sends refused logins as fast as it can gets
``429 TooManyRequests`` with ``Retry-After`` instead of the server's time, and the audit log a line per
episode instead of a line per refusal.

Each address has a bucket of ``burst`` refusals that refills at ``per_second``; a refusal takes one. An
address whose bucket is empty is answered 429 for every login, a correct one included, until a refusal's
worth has refilled: the limit must not tell a guesser which guess was right. Successful logins take nothing.
At most ``max_addresses`` are tracked, the least recently refused forgotten first (a forgotten address starts
with a full bucket again: the bound costs at most one more burst).

An IPv6 address counts as its /64 (a host is given a whole /64: each of its addresses is the same client),
an IPv4-mapped one as its IPv4 address.

The audit log gets each refusal of the burst, one ``login-limited`` line when an episode begins (the bucket
empties; it ends when it is full again), and then, instead of a line per refusal, one line per (address,
reason) per interval with its ``count`` (:class:`RefusalTally`): the refusals the limit lets through and
the 429s (reason ``rate_limited``) alike.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float
    #: Whether the episode that emptied it has been audited (once per episode).
    limited: bool = False


class FailedLogins:
    def __init__(self, burst: int = 20, per_second: float = 1.0, max_addresses: int = 10_000) -> None:
        self.burst, self.per_second, self.max_addresses = burst, per_second, max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def retry_after(self, address: str | None, now: float) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        bucket = self._buckets.get(client_key(address))
        if bucket is None:
            return None
        self._refill(bucket, now)
        if bucket.tokens >= 1:
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self.per_second))

    def refused(self, address: str | None, now: float) -> bool:
        """Counts a refused login of ``address``; True when it empties the bucket (a new episode begins)."""
        key = client_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        bucket.tokens = max(0.0, bucket.tokens - 1)
        if bucket.tokens < 1 and not bucket.limited:
            bucket.limited = True
            return True
        return False

    def limited(self, address: str | None) -> bool:
        """Whether ``address`` is in an episode: its bucket emptied and has not been full again since."""
        bucket = self._buckets.get(client_key(address))
        return bucket is not None and bucket.limited

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if bucket.tokens >= self.burst:  # full again: the episode is over
            bucket.limited = False


def client_key(address: str | None) -> str:
    """The client an address stands for: an IPv6 address's /64, an IPv4-mapped address's IPv4 address."""
    if not address or ":" not in address:
        return address or ""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


@dataclass
class _Count:
    count: int
    first: float
    last: float


class RefusalTally:
    """Refused logins counted per (client, reason) until :meth:`drain`; at most ``max_keys`` keys, the refusals
    of clients beyond them counted under the client ``*``."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[tuple[str, str], _Count] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, address: str | None, reason: str, now: float) -> None:
        key = (client_key(address), reason)
        counted = self._counts.get(key)
        if counted is None:
            if len(self._counts) >= self.max_keys:
                key = ("*", reason)
                counted = self._counts.get(key)
            if counted is None:
                counted = self._counts[key] = _Count(0, now, now)
        counted.count += 1
        counted.last = now

    def drain(self) -> list[tuple[str, str, int, float, float]]:
        """``(client, reason, count, first, last)`` of every key counted since the last drain, which forgets them."""
        counts, self._counts = self._counts, {}
        return [(client, reason, c.count, c.first, c.last) for (client, reason), c in counts.items()]
