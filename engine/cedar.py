"""The one place that talks to cedarpy.

``evaluate`` calls cedarpy's native batch entry point with pre-parsed handles and a context already in
JSON: the public ``cedarpy.is_authorized`` wrapper re-encodes the context with ``json`` and decodes every
answer into objects, which costs about as much as Cedar's own evaluation of a small policy set. Equal
answers differ only in their timing metrics, so each answer's decision is looked up by the rest of its text
and decoded only when new. The decisions are the same (a test checks both paths agree).

A :class:`Handle` gives Cedar its policies by position ("0", "1"...) and names them back: answers of
different sets of the same shape then read alike, so one decoded answer serves every role's slice, and
handles of equal policies share one parsed set (:class:`ParsedSets`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import cedarpy
import orjson

from .bounded import kept
from .decision import Decision, decision_of

try:  # the native entry point; fall back to the public wrapper if a cedarpy release moves it
    from cedarpy import _internal as _native

    _batch = _native.is_authorized_batch
except (ImportError, AttributeError):  # pragma: no cover - depends on the installed cedarpy
    _batch = None

PolicySet = cedarpy.PolicySet
Schema = cedarpy.Schema


def entities(entity_list: list[dict[str, Any]]) -> Any:
    """A pre-parsed entity set, in the form ``evaluate`` takes."""
    handle = cedarpy.Entities.from_json_str(orjson.dumps(entity_list).decode())
    return handle._inner if _batch is not None else handle


#: The empty entity store, for policy sets that read nothing of any entity.
NO_ENTITIES = entities([])


def policy_set(policies: Mapping[str, dict[str, Any]]) -> cedarpy.PolicySet:
    """A pre-parsed policy set from Cedar JSON policies keyed by id."""
    doc = {"staticPolicies": policies, "templates": {}, "templateLinks": []}
    return cedarpy.PolicySet.from_json_str(orjson.dumps(doc).decode())


def policy_set_of_encoded(policies: Sequence[bytes]) -> cedarpy.PolicySet:
    """A pre-parsed policy set from policies each already encoded by ``orjson.dumps`` (how the engine keeps
    them, smaller than the dicts), their ids their positions ("0", "1"...). The document is assembled from
    those encoded values: JSON put together from JSON, never Cedar text from names."""
    members = b",".join(b'"%d":%b' % (n, encoded) for n, encoded in enumerate(policies))
    doc = b'{"staticPolicies":{' + members + b'},"templates":{},"templateLinks":[]}'
    return cedarpy.PolicySet.from_json_str(doc.decode())


#: How Cedar's message for a policy that failed to evaluate begins; the policy's id follows, then a backtick.
_POLICY_ERROR = "error while evaluating policy `"


#: The context attributes a policy set reads, each with the offset of the part of the request's path it holds.
Reads = tuple[tuple[str, int], ...]


class Parsed:
    """One parsed policy set of encoded policies, ids their positions, and the context attributes they read
    (see :class:`Handle`); shared by handles of equal policies."""

    __slots__ = ("__weakref__", "policies", "reads")

    def __init__(self, encoded: Sequence[bytes], reads: Reads) -> None:
        self.policies = policy_set_of_encoded(encoded)
        self.reads = reads


class Handle:
    """A pre-parsed policy set of the policies ``ids``, known to Cedar by their positions in ``ids``: its
    decisions name the policies by ``ids``, as a set keyed by those ids would. ``reads``: the context
    attributes its policies read, each with the offset of the part of the request's path it holds (the whole
    path at 0, or what follows a rule's literal prefix: see ``compile.routed_rule_policy``); a request's
    context holds those and no others."""

    __slots__ = ("_parsed", "ids", "policies", "reads")

    def __init__(self, ids: Sequence[str], parsed: Parsed) -> None:
        self.ids = tuple(ids)
        self.policies = parsed.policies
        self.reads = parsed.reads  # one tuple for every handle of the set: warm whichever handle reads it
        self._parsed = parsed  # keeps the shared set (and its entry in ParsedSets) alive

    def evaluate(self, requests: list[dict[str, Any]], ents: Any) -> list[Decision]:
        """Cedar's decisions on ``requests`` (see :func:`evaluate`), in order."""
        return [self.named(d) for d in evaluate(requests, self.policies, ents)]

    def named(self, decision: Decision) -> Decision:
        """``decision``, whose reasons and errors name policies by position, with them named by id (in an
        error, the id as it is: Cedar's own message escapes its quotes)."""
        if not decision.reasons and not decision.errors:
            return decision
        ids = self.ids
        reasons = tuple(sorted(ids[int(r)] for r in decision.reasons))
        return Decision(decision.allowed, reasons, tuple(self._named_error(e) for e in decision.errors))

    def _named_error(self, error: str) -> str:
        if not error.startswith(_POLICY_ERROR):
            return error
        end = error.find("`", len(_POLICY_ERROR))
        position = error[len(_POLICY_ERROR) : end]
        if end < 0 or not position.isdecimal() or int(position) >= len(self.ids):
            return error
        return _POLICY_ERROR + self.ids[int(position)] + error[end:]


def evaluate(requests: list[dict[str, Any]], policies: cedarpy.PolicySet, ents: Any) -> list[Decision]:
    """Cedar's decisions on ``requests``, in order. Each request's ``context`` must already be a JSON string."""
    if _batch is not None:
        return [decision_of_text(out) for out in _batch(requests, policies, ents, None, False)]
    results = cedarpy.is_authorized_batch(  # pragma: no cover
        [{**r, "context": orjson.loads(r["context"])} for r in requests], policies, ents
    )
    return [  # pragma: no cover
        decision_of(
            {
                "decision": r.decision.value,
                "diagnostics": {"reason": r.diagnostics.reasons, "errors": r.diagnostics.errors},
            }
        )
        for r in results
    ]


class ParsedSets:
    """Parsed policy sets by content, kept while a handle holds them: the slices of roles that hold equal
    rules (a tree every team reads) share one set, in memory once and warm for all their callers."""

    __slots__ = ("_by_content",)

    def __init__(self) -> None:
        self._by_content: weakref.WeakValueDictionary[tuple[bytes, ...], Parsed] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._by_content)

    def handle(self, ids: Sequence[str], encoded: Sequence[bytes], reads: Reads = ()) -> Handle:
        """The handle of the policies ``ids``, encoded as ``encoded`` (in the same order), which read the
        context attributes ``reads`` (see :class:`Handle`; equal policies read equal ones)."""
        pairs = sorted(zip(encoded, ids, strict=True))  # one order for equal policies listed in any order
        content = tuple(e for e, _ in pairs)
        parsed = self._by_content.get(content)
        if parsed is None:
            parsed = self._by_content[content] = Parsed(content, reads)
        return Handle([pid for _, pid in pairs], parsed)


#: An answer's timing metrics begin so; a string inside the JSON cannot hold it (its quotes would be escaped).
_METRICS = ',"metrics":'
DECISION_CACHE_SIZE = 4096


class AnswerDecisions:
    """Decisions of native answers by their text up to the timing metrics, the only part that differs between
    equal answers: far cheaper than decoding each one. Bounded (the oldest entry goes first).

    serde writes an answer's fields in the order of cedarpy's struct, metrics last: the first answer checks
    it (a release that orders them otherwise is decoded in full, every time)."""

    __slots__ = ("_cache", "_metrics_last", "size")

    def __init__(self, size: int = DECISION_CACHE_SIZE) -> None:
        self.size = size
        self._cache: OrderedDict[str, Decision] = OrderedDict()
        self._metrics_last: bool | None = None

    def __len__(self) -> int:
        return len(self._cache)

    def of(self, text: str) -> Decision:
        """The decision of one native answer, in JSON text."""
        cut = text.rfind(_METRICS)
        if cut <= 0 or self._metrics_last is False:
            return decision_of(orjson.loads(text))
        key = text[:cut]
        found = self._cache.get(key)
        if found is None:
            if self._metrics_last is None:
                self._metrics_last = _metrics_alone(text[cut + 1 :])
                if not self._metrics_last:
                    return decision_of(orjson.loads(text))
            found = kept(self._cache, key, decision_of(orjson.loads(text)), self.size)
        return found


def _metrics_alone(tail: str) -> bool:
    """Whether an answer's text past the comma before its last metrics is the metrics and the answer's end."""
    try:
        return orjson.loads("{" + tail).keys() == {"metrics"}
    except orjson.JSONDecodeError:
        return False


decision_of_text = AnswerDecisions().of


def to_text(policies: dict[str, dict[str, Any]]) -> str:
    """Cedar text of JSON policies (each keeps its id as an ``@id`` annotation)."""
    if not policies:
        return ""
    doc = {"staticPolicies": policies, "templates": {}, "templateLinks": []}
    return cedarpy.policies_from_json_str(orjson.dumps(doc).decode())


def to_json(text: str) -> dict[str, dict[str, Any]]:
    """The static policies of Cedar text, keyed by the ids Cedar gives them (``policy0``...)."""
    doc = orjson.loads(cedarpy.policies_to_json_str(text))
    if doc.get("templates") or doc.get("templateLinks"):
        raise ValueError("templates are not supported in author policies")
    return doc["staticPolicies"]


def validate(policies: dict[str, dict[str, Any]], schema: cedarpy.Schema) -> list[str]:
    """Schema validation errors of JSON policies, each prefixed by the policy's ``@id``."""
    if not policies:
        return []
    result = cedarpy.validate_policies(to_text(policies), schema)
    annotations = result.id_annotations_by_policy_id
    return [f"{annotations.get(e.policy_id, e.policy_id)}: {e.error}" for e in result.errors]


def validate_each(policies: dict[str, dict[str, Any]], schema: cedarpy.Schema) -> list[tuple[str, str]]:
    """Schema validation errors of JSON policies as ``(policy id, message)`` pairs."""
    if not policies:
        return []
    result = cedarpy.validate_policies(to_text(policies), schema)
    annotations = result.id_annotations_by_policy_id
    return [(annotations.get(e.policy_id, e.policy_id), e.error) for e in result.errors]
