"""What a node serves from memory, and the one lock every change to it takes.

The engine, the live tokens and the authors' Cedar files are read by every request without a lock (one event
loop owns them). A change holds :attr:`State.lock` from its check to its apply: the API's writes, the change
feed's follower, ``apply-model`` and the policy-files watcher all take the same lock, so none interleaves
with another. A whole new engine (a reload, an apply) comes in by :meth:`State.swap`, one assignment: a
reader sees the old model or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from cedarkey.engine import Engine

from .tokens import TokenRegistry


class State:
    def __init__(self, engine: Engine, tokens: TokenRegistry, author_policies: Mapping[str, str]) -> None:
        self.engine = engine
        self.tokens = tokens
        self.author_policies = dict(author_policies)
        self.lock = asyncio.Lock()

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
