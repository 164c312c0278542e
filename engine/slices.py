"""The rule groups a decision evaluates: a role's rules of one rule type, indexed by the literal prefix of their
patterns, with the slices (pre-parsed policy sets) a path can need (see :mod:`.engine`)."""

from __future__ import annotations

import bisect

from . import cedar

#: A pre-parsed policy set and the ids of its policies (which a merged slice is built from).
Slice = tuple[cedar.PolicySet, tuple[str, ...]]


class PathIndex:
    """Rule policy ids by the literal prefix of their pattern."""

    __slots__ = ("by_prefix", "lengths")

    def __init__(self) -> None:
        self.by_prefix: dict[str, list[str]] = {}
        self.lengths: list[int] = []

    def add(self, prefix: str, policy_id: str) -> None:
        ids = self.by_prefix.setdefault(prefix, [])
        if not ids and len(prefix) not in self.lengths:
            bisect.insort(self.lengths, len(prefix))
        ids.append(policy_id)

    def remove(self, prefix: str, policy_id: str) -> None:
        ids = self.by_prefix[prefix]
        ids.remove(policy_id)
        if not ids:
            del self.by_prefix[prefix]
            if not any(len(p) == len(prefix) for p in self.by_prefix):
                self.lengths.remove(len(prefix))

    def candidates(self, path: str, out: list[str]) -> None:
        by_prefix = self.by_prefix
        n = len(path)
        for length in self.lengths:
            if length > n:
                break
            ids = by_prefix.get(path[:length])
            if ids:
                out.extend(ids)


class Group:
    """The rules of one role and rule type: their index and, for a small group, a pre-built handle per chain.

    The rules whose literal prefix is a prefix of a path are those of the *chain* of the deepest such prefix
    (it and every indexed prefix of it), so a group of k prefixes has at most k different slices: a small
    group keeps all of them parsed, keyed by their deepest prefix. A large one builds slices on demand (LRU).
    """

    __slots__ = ("chains", "ids", "index", "longest_first", "reads_principal")

    def __init__(self) -> None:
        self.index = PathIndex()
        self.ids: set[str] = set()
        self.chains: dict[str, Slice] | None = None
        self.longest_first: tuple[int, ...] = ()  # the index's prefix lengths, longest first (with chains)
        # Whether a rule of the group reads the principal's attributes: if none does, the group's slices are
        # evaluated with one shared empty entity store instead of the caller's.
        self.reads_principal = True
