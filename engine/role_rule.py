"""Role rules: capabilities on a path pattern, under one rule type."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .capability import Capability, RuleType, parse_rule_capabilities, parse_rule_type
from .path import canonical_pattern


@dataclass(frozen=True)
class RoleRule:
    rule_type: RuleType
    path: str
    capabilities: frozenset[Capability]

    @classmethod
    def parse(cls, rule_type: object, path: object, capabilities: Iterable[object]) -> RoleRule:
        return cls(
            parse_rule_type(rule_type),
            canonical_pattern(path),
            parse_rule_capabilities(capabilities),
        )

    @property
    def key(self) -> tuple[RuleType, str]:
        """A role holds at most one rule per (rule type, path): setting it again replaces it."""
        return (self.rule_type, self.path)

    @property
    def is_deny(self) -> bool:
        return Capability.DENY in self.capabilities

    def to_dict(self) -> dict[str, object]:
        order = list(Capability)
        return {
            "rule-type": str(self.rule_type),
            "path": self.path,
            "capabilities": sorted((str(c) for c in self.capabilities), key=lambda c: order.index(c)),
        }
