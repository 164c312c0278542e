"""What a node serves from memory, and the one lock every change to it takes.

The engine, the live tokens and the authors' Cedar files are read by every request without a lock (one event
loop owns them). A change holds :attr:`State.lock` from its check to its apply: the API's writes, the change
feed's follower, ``apply-model`` and the policy-files watcher all take the same lock, so none interleaves
with another. A whole new engine (a reload, an apply) comes in by :meth:`State.swap`, one assignment: a
reader sees the old model or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from cedarkey.engine import Engine

from .tokens import Session, TokenRegistry

log = logging.getLogger("cedarkey.server")


class State:
    def __init__(self, engine: Engine, tokens: TokenRegistry, author_policies: Mapping[str, str]) -> None:
        self.engine = engine
        self.tokens = tokens
        self.author_policies = dict(author_policies)
        self.lock = asyncio.Lock()

    def admits(self, session: Session) -> bool:
        """Does the session's auth method, as it is now, still admit the identity it was issued for?"""
        return self.engine.admits(session.identity, session.issued_at)

    def end_refused_sessions(self, access_id: str) -> int:
        """Ends the live sessions of ``access_id`` whose identity its changed bindings refuse."""
        ended = self.tokens.end_refused(access_id, self.admits)
        if ended:
            log.info("auth method %s changed: %d session(s) it no longer admits ended", access_id, ended)
        return ended

    def swap(
        self,
        engine: Engine,
        *,
        tokens: TokenRegistry | None = None,
        author_policies: Mapping[str, str] | None = None,
    ) -> None:
        """Serves ``engine`` from now on (and ``tokens``, ``author_policies`` when given). The caller holds
        the lock, or no request is being served yet."""
        self.engine = engine
        if tokens is not None:
            self.tokens = tokens
        if author_policies is not None:
            self.author_policies = dict(author_policies)
