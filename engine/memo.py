"""Decision memos: the answers already given to each identity, under one global bound.

A memo belongs to an identity *value* (every token of the same identity shares it), lives until a change of
the model that can change its identity's decisions (the engine says which), and is weighed in approximate
bytes (a fixed cost per decision plus the path's length, since the path a caller sends is the one thing it
controls the size of). Two bounds hold at all times: one memo never weighs more than
``max_identity_weight`` (a full memo starts over), and all memos together never more than ``max_weight``
(when it would, the memos used least recently go until a quarter is free).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .identity import Identity

#: What one remembered decision costs beyond its path's characters: the key tuple, the dict slot.
ENTRY_WEIGHT = 200
MAX_WEIGHT = 64 << 20
MAX_IDENTITY_WEIGHT = 4 << 20

_EPOCHS = itertools.count(1)


class Memo(dict[Any, Any]):
    """One identity's decisions, ``{(capability, path, rule type): Decision}``, and its rule groups by rule
    type (``routes``), valid while ``epoch`` is the memos' current epoch. The memo is the dict of decisions
    itself: a decision for one of many callers reads one object less from memory."""

    __slots__ = ("epoch", "routes", "used", "weight")

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.routes: dict[Any, Any] = {}
        self.epoch = epoch
        self.weight = 0
        self.used = 0  # the memos' tick at its last use


class Memos:
    def __init__(self, max_weight: int = MAX_WEIGHT, max_identity_weight: int = MAX_IDENTITY_WEIGHT) -> None:
        if not 0 < max_identity_weight <= max_weight:
            raise ValueError("0 < max_identity_weight <= max_weight")
        self.max_weight = max_weight
        self.max_identity_weight = max_identity_weight
        self.epoch = next(_EPOCHS)
        self.weight = 0
        self._tick = 0
        self._by_identity: dict[Identity, Memo] = {}

    def __len__(self) -> int:
        return len(self._by_identity)

    def of(self, identity: Identity) -> Memo:
        """The identity's memo for the current model (the object's own reference is the fast path)."""
        memo: Memo | None = identity._decisions
        if memo is None or memo.epoch != self.epoch:
            memo = self._by_identity.get(identity)
            if memo is None:
                memo = self._by_identity[identity] = Memo(self.epoch)
            object.__setattr__(identity, "_decisions", memo)
        self._tick += 1
        memo.used = self._tick
        return memo

    def remember(self, memo: Memo, key: tuple[Any, Any, Any], decision: Any) -> None:
        path = key[1]
        weight = ENTRY_WEIGHT + (len(path) if isinstance(path, str) else 0)
        if memo.weight + weight > self.max_identity_weight:
            self.weight -= memo.weight
            memo.clear()
            memo.weight = 0
        memo[key] = decision
        memo.weight += weight
        self.weight += weight
        if self.weight > self.max_weight:
            self._sweep(memo)

    def invalidate(self, affected: Callable[[Identity], bool] | None = None) -> None:
        """The model changed: the memos of the ``affected`` identities are dropped (None: every memo), their
        memory freed now, not at their identity's next call; the others keep answering."""
        if affected is not None:
            for identity, memo in list(self._by_identity.items()):
                if affected(identity):
                    self._evict(identity, memo)
            return
        for memo in self._by_identity.values():
            memo.clear()
            memo.routes.clear()
            memo.epoch = 0
        self._by_identity = {}
        self.weight = 0
        self.epoch = next(_EPOCHS)

    def _sweep(self, keep: Memo) -> None:
        """Evicts the memos used least recently until a quarter of the bound is free (the one being filled
        last of all: alone over the bound, it starts over)."""
        target = self.max_weight * 3 // 4
        for identity, memo in sorted(self._by_identity.items(), key=lambda item: item[1].used):
            if self.weight <= target:
                return
            if memo is not keep:
                self._evict(identity, memo)
        if self.weight > self.max_weight:
            self.weight -= keep.weight
            keep.clear()
            keep.weight = 0

    def _evict(self, identity: Identity, memo: Memo) -> None:
        del self._by_identity[identity]
        self.weight -= memo.weight
        memo.clear()
        memo.routes.clear()
        memo.epoch = 0
