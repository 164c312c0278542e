"""Single use of login proofs, in memory and across nodes.

``ProofGuard.claim`` (the verifier calls it before STS) refuses at once a proof this process has seen; the
store's unique row, written in the same transaction as the token the login issues (``Store.add_token(...,
proof=...)``), refuses it on every node sharing the store, also when two copies arrive at two nodes at the
same moment. The claimed key travels from ``claim`` to the token write in a context variable: both happen in
the task of one login.
"""

from __future__ import annotations

import contextvars
import hashlib

from .sts import MemoryReplayGuard

_claimed: contextvars.ContextVar[tuple[bytes, float] | None] = contextvars.ContextVar(
    "cedarkey_claimed_proof", default=None
)


class ProofGuard:
    def __init__(self) -> None:
        self._memory = MemoryReplayGuard()

    async def claim(self, key: str, expires_at: float) -> bool:
        if not await self._memory.claim(key, expires_at):
            return False
        _claimed.set((hashlib.sha256(key.encode()).digest(), expires_at))
        return True


def start_login() -> None:
    """A login begins: no proof claimed yet in this task."""
    _claimed.set(None)


def claimed_proof(now: float) -> tuple[bytes, float, float] | None:
    """The proof this task's login claimed, as ``Store.add_token`` takes it; None for an access-key login."""
    claimed = _claimed.get()
    return None if claimed is None else (claimed[0], claimed[1], now)
