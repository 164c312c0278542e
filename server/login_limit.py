"""Refused logins, limited per source address: a client that sends refused logins as fast as it can gets
``429 TooManyRequests`` with ``Retry-After`` instead of the server's time, and the audit log a line per
episode instead of a line per refusal.

Each address has a bucket of ``burst`` refusals that refills at ``per_second``; a refusal takes one. An
address whose bucket is empty is answered 429 for every login, a correct one included, until a refusal's
worth has refilled: the limit must not tell a guesser which guess was right. Successful logins take nothing.
At most ``max_addresses`` are tracked, the least recently refused forgotten first (a forgotten address starts
with a full bucket again: the bound costs at most one more burst).

The audit log gets each refusal the limit lets through (at most ``burst``, then ``per_second`` a second) and
one ``login-limited`` line when an episode begins (the bucket empties; it ends when it is full again); the
429s themselves are counted in ``cedarkey_requests_total``, not logged one by one.
"""

from __future__ import annotations

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
        bucket = self._buckets.get(address or "")
        if bucket is None:
            return None
        self._refill(bucket, now)
        if bucket.tokens >= 1:
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self.per_second))

    def refused(self, address: str | None, now: float) -> bool:
        """Counts a refused login of ``address``; True when it empties the bucket (a new episode begins)."""
        key = address or ""
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

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if bucket.tokens >= self.burst:  # full again: the episode is over
            bucket.limited = False
