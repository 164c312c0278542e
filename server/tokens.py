"""Tokens: random bearer strings, of which only a SHA-256 hash is kept (in memory and in the store).

A token is ``t-`` and 43 URL-safe characters (256 random bits), so a plain SHA-256 is a safe key: there is
nothing to brute-force. Checking one is a hash and a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from cedarkey.engine import Identity

from .expiry import ExpiryQueue
from .store import StoredToken

PREFIX = "t-"
MAX_TOKEN_LENGTH = 128


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_access_key() -> str:
    """A generated access key: 256 random bits, URL-safe, never starting with ``-`` (a key that did could not
    follow ``--access-key`` on a command line: argparse takes it for an option)."""
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """What a token stands for."""

    identity: Identity
    issued_at: float
    expires_at: float


def session_of(stored: StoredToken) -> Session:
    """The session a stored token stands for (ModelError when its identity is not one any more)."""
    attributes = dict(stored.identity)
    if attributes.get("principal_type") == "federated-user" and "user_name" in attributes:
        # stored before federated names had their own attribute: never let one pass for an IAM user's name
        attributes.setdefault("federated_name", attributes.pop("user_name"))
    return Session(Identity.from_attributes(attributes), stored.issued_at, stored.expires_at)


class TokenRegistry:
    """The live sessions by token hash. Expiries wait in a heap, so :meth:`purge` forgets the expired ones
    without looking at the others (a token nobody presents again would otherwise stay forever)."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, Session] = {}
        self._expiries: ExpiryQueue[bytes] = ExpiryQueue()

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, digest: bytes, session: Session) -> None:
        self._sessions[digest] = session
        self._expiries.push(session.expires_at, digest)

    def check(self, token: object, now: float) -> Session | None:
        """The live session of ``token``, or None (unknown, malformed, expired or revoked)."""
        if type(token) is not str or len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX):
            return None
        digest = token_hash(token)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._sessions[digest]
            return None
        return session

    def get(self, digest: bytes) -> Session | None:
        return self._sessions.get(digest)

    def revoke(self, digest: bytes) -> bool:
        return self._sessions.pop(digest, None) is not None

    def drop_access_id(self, access_id: str) -> int:
        """Forgets every token issued through an auth method (it was deleted)."""
        gone = [d for d, s in self._sessions.items() if s.identity.access_id == access_id]
        for digest in gone:
            del self._sessions[digest]
        return len(gone)

    def purge(self, now: float) -> int:
        """Forgets every session expired at ``now``; returns how many."""
        gone = 0
        for _, digest in self._expiries.expired(now):
            session = self._sessions.get(digest)
            if session is not None and session.expires_at <= now:
                del self._sessions[digest]
                gone += 1
        if len(self._expiries) > 2 * len(self._sessions) + 1024:  # revoked and dropped ones piled up
            self._expiries.rebuild((s.expires_at, d) for d, s in self._sessions.items())
        return gone
