"""The rule groups a decision evaluates: a role's rules of one rule type, indexed by the literal prefix of their
patterns, with the slices (pre-parsed policy sets) a path can need; and the caches of slices built on demand
or merged for one request (see :mod:`.engine`)."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping, Sequence
from typing import Any

import orjson

from . import cedar
from .bounded import kept

#: Parsed handles kept per cache (on-demand slices, merged slices).
SLICE_CACHE_SIZE = 4096
#: A request whose policies are in several slices is evaluated against one merged handle of at most this many.
MERGE_LIMIT = 64
#: A group of at most this many distinct literal prefixes keeps every slice it can have pre-built.
SMALL_GROUP = 32

#: A pre-parsed policy set and the ids of its policies (which a merged slice is built from).
Slice = cedar.Handle


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
    group keeps all of them parsed, keyed by their deepest prefix. A large one builds slices on demand
    (cached: the oldest goes first).
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

    def rebuild(self, build: Callable[[Sequence[str]], Slice], routed: Container[str]) -> None:
        """Derives again what its rules decide: whether one reads the principal (one not in ``routed``, the ids
        evaluated in their routed form) and, for a small group, the slice of each chain (``build`` parses one)."""
        self.reads_principal = not all(pid in routed for pid in self.ids)
        by_prefix = self.index.by_prefix
        if len(by_prefix) > SMALL_GROUP:
            self.chains = None
            return
        self.chains = {
            deepest: build([pid for prefix, pids in by_prefix.items() if deepest.startswith(prefix) for pid in pids])
            for deepest in by_prefix
        }
        self.longest_first = tuple(reversed(self.index.lengths))


#: What a request is evaluated against: handles, each with whether it reads the principal's entities.
Handles = list[tuple[Slice, bool]]


def context(path: str, handles: Handles) -> str:
    """The context, in JSON, of a request on ``path`` evaluated against ``handles``: the parts of the path
    their policies read, and nothing else."""
    reads = handles[0][0].reads if len(handles) == 1 else {read for handle, _ in handles for read in handle.reads}
    return orjson.dumps({attr: path[offset:] for attr, offset in reads}).decode() if reads else "{}"


class Slices:
    """The parsed handles decisions evaluate, beyond the groups' pre-built ones: on-demand slices keyed by
    the serials of their policies, and merged slices keyed by their parts, each cache bounded (the oldest goes first).

    ``build`` parses the handle of policy ids; ``serial`` is the engine's policy id -> serial mapping (a
    change gives a changed policy a new serial, so no key outlives its policies' content)."""

    __slots__ = ("build", "merged", "on_demand", "serial")

    def __init__(self, build: Callable[[Sequence[str]], Slice], serial: Mapping[str, int]) -> None:
        self.build = build
        self.serial = serial
        self.on_demand: OrderedDict[tuple[int, ...], Slice] = OrderedDict()
        self.merged: OrderedDict[tuple[int, ...], tuple[Handles, Any]] = OrderedDict()

    def of_ids(self, ids: Sequence[str]) -> Slice:
        """The handle of the policies ``ids``."""
        key = tuple(sorted(self.serial[i] for i in ids))
        handle = self.on_demand.get(key)
        if handle is None:
            handle = kept(self.on_demand, key, self.build(ids), SLICE_CACHE_SIZE)
        return handle

    def in_group(self, group: Group, path: str) -> Slice | None:
        """The slice of the group's rules that can match ``path`` (None when none can)."""
        chains = group.chains
        if chains is not None:
            n = len(path)
            for length in group.longest_first:
                if length <= n:
                    found = chains.get(path[:length])
                    if found is not None:
                        return found
            return None
        ids: list[str] = []
        group.index.candidates(path, ids)
        return self.of_ids(ids) if ids else None

    def to_evaluate(self, parts: list[tuple[Slice, bool]]) -> Handles:
        """What a request whose policies are in ``parts`` (slices, each with whether it reads the principal)
        is evaluated against: its one part; for several, one handle of their union (one native call instead
        of one per slice), or, when the union is larger than ``MERGE_LIMIT`` policies, the parts' own handles.

        Merged handles are keyed by the identity of their parts, and each entry holds its parts: a part is
        immutable and alive while its entry is, so a key never names another part's handle (a model change
        builds new parts, hence new keys)."""
        if len(parts) <= 1:
            return parts
        key = tuple(id(part) for part, _ in parts)
        entry = self.merged.get(key)
        if entry is None:
            ids = [pid for part, _ in parts for pid in part.ids]
            if len(ids) > MERGE_LIMIT:
                handles = list(parts)
            else:
                handles = [(self.build(ids), any(reads for _, reads in parts))]
            entry = kept(self.merged, key, (handles, parts), SLICE_CACHE_SIZE)
        return entry[0]
