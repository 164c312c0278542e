"""Decisions: allowed or not, the policies that determined it, and any evaluation errors; and how Cedar's answers
for parts of one policy set combine into one."""

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


def combine(answers: list[dict[str, Any]]) -> Decision:
    """Cedar's answers for parts of a policy set, combined as Cedar combines policies: a satisfied forbid
    (the reasons of a Deny) denies, else a satisfied permit (the reasons of an Allow) allows, else deny;
    any evaluation error denies."""
    if not answers:
        return NO_POLICY
    permits: list[str] = []
    forbids: list[str] = []
    errors: list[str] = []
    for answer in answers:
        diagnostics = answer["diagnostics"]
        if diagnostics.get("errors"):
            errors.extend(str(e) for e in diagnostics["errors"])
        reasons = diagnostics.get("reason") or ()
        (permits if answer["decision"] == "Allow" else forbids).extend(reasons)
    if errors:
        return Decision(False, tuple(sorted(forbids)), tuple(errors))
    if forbids:
        return Decision(False, tuple(sorted(forbids)))
    if permits:
        return Decision(True, tuple(sorted(permits)))
    return NO_POLICY


def decision_of(answer: dict[str, Any]) -> Decision:
    return combine([answer])
