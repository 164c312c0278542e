"""Capabilities and rule types.

A rule grants capabilities on a path pattern under one rule type: ``item-rule`` governs secrets,
``role-rule`` access roles, ``auth-method-rule`` auth methods. ``deny`` is a capability of its own: a
matching deny rule of any of a caller's roles beats every allow, for every capability of that rule type.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from .errors import ModelError, shown


class Capability(StrEnum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    LIST = "list"
    DENY = "deny"


class RuleType(StrEnum):
    ITEM = "item-rule"
    ROLE = "role-rule"
    AUTH_METHOD = "auth-method-rule"

    @property
    def entity_type(self) -> str:
        """The Cedar entity type of the objects this rule type governs."""
        return _ENTITY_TYPES[self]


_ENTITY_TYPES = {RuleType.ITEM: "Item", RuleType.ROLE: "AccessRole", RuleType.AUTH_METHOD: "AuthMethod"}

#: The capabilities a caller can exercise (``deny`` only takes them away).
ACTIONS: tuple[Capability, ...] = tuple(c for c in Capability if c is not Capability.DENY)


#: By name (a member is found too: it hashes and compares as its name). A dict lookup is several times
#: cheaper than the enum's constructor, and every decision parses both.
_CAPABILITIES: dict[object, Capability] = {c.value: c for c in Capability}
_RULE_TYPES: dict[object, RuleType] = {r.value: r for r in RuleType}


def parse_capability(value: object, field: str = "capability") -> Capability:
    """A capability a caller asks for (``deny`` is not one)."""
    try:
        capability = _CAPABILITIES[value]
    except (KeyError, TypeError):  # TypeError: unhashable, so no name
        raise ModelError(field, f"unknown capability {shown(value)}; one of {', '.join(ACTIONS)}") from None
    if capability is Capability.DENY:
        raise ModelError(field, "'deny' is a rule capability, not one a caller can ask for")
    return capability


def parse_rule_type(value: object, field: str = "rule-type") -> RuleType:
    try:
        return _RULE_TYPES[value]
    except (KeyError, TypeError):
        raise ModelError(field, f"unknown rule type {shown(value)}; one of {', '.join(RuleType)}") from None


def parse_rule_capabilities(values: Iterable[object], field: str = "capability") -> frozenset[Capability]:
    """The capabilities of a rule: at least one; ``deny`` stands alone."""
    if isinstance(values, str | bytes):
        values = [values]
    capabilities = set()
    for value in values:
        try:
            capabilities.add(Capability(value))  # type: ignore[arg-type]
        except ValueError:
            names = ", ".join(Capability)
            raise ModelError(field, f"unknown capability {shown(value)}; one of {names}") from None
    if not capabilities:
        raise ModelError(field, "at least one capability is required")
    if Capability.DENY in capabilities and len(capabilities) > 1:
        raise ModelError(field, "'deny' cannot be combined with other capabilities")
    return frozenset(capabilities)
