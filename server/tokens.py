"""Tokens: random bearer strings, of which only a SHA-256 hash is kept (in memory and in the store).

A token is ``t-`` and 43 URL-safe characters (256 random bits), so a plain SHA-256 is a safe key: there is
nothing to brute-force. Checking one is a hash and a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

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


def access_key_hash(key: str) -> bytes:
    """What the store keeps of an access key (never the key): its SHA-256, compared in constant time."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


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


@dataclass(slots=True)
class _Shared:
    identity: Identity
    sessions: int = 0


#: Live tokens one auth method may hold by default (``cedarkey serve --max-tokens-per-auth-method``).
MAX_TOKENS_PER_AUTH_METHOD = 10_000


#: Unknown tokens remembered at most (:class:`Misses`).
MAX_MISSES = 10_000


class Misses:
    """Token hashes the store did not have, each remembered for ``ttl`` seconds so that a token presented again
    is refused without another look-up. At most ``max_entries`` are held: beyond, the oldest go first (a
    forgotten one only costs a look-up)."""

    def __init__(self, ttl: float = 1.0, max_entries: int = MAX_MISSES) -> None:
        self._ttl, self._max = ttl, max_entries
        self._until: dict[bytes, float] = {}  # in the order they were added: the oldest first

    def __len__(self) -> int:
        return len(self._until)

    def recent(self, digest: bytes, now: float) -> bool:
        return self._until.get(digest, 0.0) > now

    def add(self, digest: bytes, now: float) -> None:
        if len(self._until) >= self._max:
            self.purge(now)
        while len(self._until) >= self._max:
            del self._until[next(iter(self._until))]
        self._until.pop(digest, None)  # added again: it moves to the end
        self._until[digest] = now + self._ttl

    def purge(self, now: float) -> None:
        """Forgets the misses whose time has passed."""
        self._until = {d: t for d, t in self._until.items() if t > now}


class TokenRegistry:
    """The live sessions by token hash, and by auth method (what its cap counts, and what deleting it drops).
    Expiries wait in a heap, so :meth:`purge` forgets the expired ones without looking at the others (a token
    nobody presents again would otherwise stay forever)."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, Session] = {}
        self._by_method: dict[str, dict[bytes, Session]] = {}
        self._expiries: ExpiryQueue[bytes] = ExpiryQueue()
        #: One object per identity value, and how many sessions hold it: the tokens of one caller share its
        #: parsed Cedar entities (3.3 KB each, built at the login's decision) and its memo reference.
        self._identities: dict[Identity, _Shared] = {}
        self._ended = 0

    @property
    def ended(self) -> int:
        """How many times live tokens were ended before their expiry (revoked, refused by new bindings, their
        auth method deleted): ``watch`` announces it, so a cache of decisions drops what those tokens held."""
        return self._ended

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, digest: bytes, session: Session) -> None:
        self._forget(digest)
        shared = self._identities.setdefault(session.identity, _Shared(session.identity))
        shared.sessions += 1
        if shared.identity is not session.identity:
            session = replace(session, identity=shared.identity)
        self._sessions[digest] = session
        self._by_method.setdefault(session.identity.access_id, {})[digest] = session
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
            self._forget(digest)
            return None
        return session

    def get(self, digest: bytes) -> Session | None:
        return self._sessions.get(digest)

    def revoke(self, digest: bytes) -> bool:
        if self._forget(digest) is None:
            return False
        self._ended += 1
        return True

    def end_refused(self, access_id: str, admits: Callable[[Session], bool]) -> int:
        """Forgets the sessions of ``access_id`` that ``admits`` refuses (its auth method's bindings changed);
        returns how many."""
        refused = [d for d, s in self._by_method.get(access_id, {}).items() if not admits(s)]
        for digest in refused:
            self._forget(digest)
        self._ended += bool(refused)
        return len(refused)

    def drop_access_id(self, access_id: str) -> int:
        """Forgets every token issued through an auth method (it was deleted)."""
        gone = self._by_method.pop(access_id, {})
        for digest, session in gone.items():
            del self._sessions[digest]
            self._release(session.identity)
        self._ended += bool(gone)
        return len(gone)

    def live(self, access_id: str) -> int:
        """How many tokens of the auth method ``access_id`` are held (expired ones until they are purged)."""
        return len(self._by_method.get(access_id, ()))

    def wait_for_room(self, access_id: str, limit: int, now: float) -> float | None:
        """None when the auth method may have one more live token beside its others (at most ``limit``); else
        the seconds until its soonest token expires."""
        if self.live(access_id) < limit:
            return None
        self.purge(now)  # expired ones make room, although the minute's purge has not come yet
        sessions = self._by_method.get(access_id, {})
        if len(sessions) < limit:
            return None
        return min(s.expires_at for s in sessions.values()) - now

    def purge(self, now: float) -> int:
        """Forgets every session expired at ``now``; returns how many."""
        gone = 0
        for _, digest in self._expiries.expired(now):
            session = self._sessions.get(digest)
            if session is not None and session.expires_at <= now:
                self._forget(digest)
                gone += 1
        if len(self._expiries) > 2 * len(self._sessions) + 1024:  # revoked and dropped ones piled up
            self._expiries.rebuild((s.expires_at, d) for d, s in self._sessions.items())
        return gone

    def _forget(self, digest: bytes) -> Session | None:
        session = self._sessions.pop(digest, None)
        if session is not None:
            method = self._by_method[session.identity.access_id]
            del method[digest]
            if not method:
                del self._by_method[session.identity.access_id]
            self._release(session.identity)
        return session

    def _release(self, identity: Identity) -> None:
        shared = self._identities[identity]
        shared.sessions -= 1
        if not shared.sessions:
            del self._identities[identity]
