"""Decisions: allowed or not, the policies that determined it, and any evaluation errors; how a Cedar answer
becomes one, and how the decisions of parts of one policy set combine into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
    """An answer: allowed or not, the ids of the policies that determined it, and any evaluation errors."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision, "reasons": list(self.reasons)}
        if self.errors:
            out["errors"] = list(self.errors)
        return out


NO_POLICY = Decision(False)


def decision_of(answer: dict[str, Any]) -> Decision:
    """One Cedar answer as a decision: an Allow without errors allows; a Deny's reasons are the forbids that
    denied; any evaluation error denies (Cedar skips an erroring policy, which for a forbid would fail open)."""
    diagnostics = answer["diagnostics"]
    reasons = diagnostics.get("reason")
    allowed = answer["decision"] == "Allow"
    errors = diagnostics.get("errors")
    if errors:
        return Decision(False, () if allowed or not reasons else tuple(sorted(reasons)), tuple(map(str, errors)))
    if not reasons:
        return Decision(True) if allowed else NO_POLICY
    return Decision(allowed, tuple(sorted(reasons)))


def combine(decisions: list[Decision]) -> Decision:
    """The decisions of parts of a policy set, combined as Cedar combines policies: a satisfied forbid (the
    reasons of a denial) denies, else a satisfied permit (the reasons of an allow) allows, else deny; any
    evaluation error denies."""
    permits: list[str] = []
    forbids: list[str] = []
    errors: list[str] = []
    for decision in decisions:
        errors.extend(decision.errors)
        (permits if decision.allowed else forbids).extend(decision.reasons)
    if errors:
        return Decision(False, tuple(sorted(forbids)), tuple(errors))
    if forbids:
        return Decision(False, tuple(sorted(forbids)))
    if permits:
        return Decision(True, tuple(sorted(permits)))
    return NO_POLICY
