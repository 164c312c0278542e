"""Delegation: a caller may grant only what it holds itself, as Kubernetes RBAC refuses escalation.

A change *grants* when it can widen what some identity gets: a new or replaced allow rule grants its
capabilities on its pattern; associating a role with an auth method grants the role's allow rules to that
method's identities; lifting a limit grants too (deleting or replacing a deny rule, removing an association
or a role that holds deny rules, each of which would stop applying): every capability on the deny's pattern.
:func:`rule_grants`, :func:`association_grants` and :func:`lift_grants` say what each change grants, and
:func:`model_grants` the same for a whole new model (``apply-model``), so both paths share one rule.

A :class:`Ceiling` is what one caller holds, from the role rules that apply to it (its auth method's roles
whose sub-claims it meets). It holds capability C on pattern P under rule type T when P is covered by its
allow rules of T granting C and overlaps none of its deny rules of T (:mod:`.glob` decides both exactly,
over every path). Author Cedar policies are not analysed: while one holds a ``forbid``, only the break-glass
auth method's callers (beyond every author policy) can grant. A *full admin* holds every capability on
``/*`` for every rule type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .access_role import AccessRole
from .auth_method import AuthMethod
from .capability import ACTIONS, Capability, RuleType
from .glob import overlap, uncovered
from .identity import Identity
from .model import ADMIN, Model
from .role_rule import RoleRule

EVERYTHING = "/*"


@dataclass(frozen=True)
class Grant:
    """Capabilities on every path ``pattern`` matches, under ``rule_type``: what a change hands out."""

    rule_type: RuleType
    pattern: str
    capabilities: frozenset[Capability]
    why: str  # what hands it out, for the refusal's message

    @classmethod
    def lifting(cls, deny: RoleRule, why: str) -> Grant:
        """A deny that stops applying gives back every capability it stopped."""
        return cls(deny.rule_type, deny.path, frozenset(ACTIONS), why)


def rule_grants(role: str, old: RoleRule | None, new: RoleRule | None) -> list[Grant]:
    """Setting ``new`` on a role (replacing ``old`` on its rule type and path), or deleting ``old``."""
    out = []
    if new is not None and not new.is_deny:
        out.append(Grant(new.rule_type, new.path, new.capabilities, f"the rule of {role}"))
    if old is not None and old.is_deny and (new is None or not new.is_deny):
        out.append(Grant.lifting(old, f"lifting the deny rule of {role}"))
    return out


def association_grants(role: AccessRole) -> list[Grant]:
    """Associating ``role`` with an auth method hands its allow rules to that method's identities."""
    why = f"the rules of {role.name}, which the association hands out"
    return [Grant(r.rule_type, r.path, r.capabilities, why) for r in role.rules.values() if not r.is_deny]


def lift_grants(role: AccessRole, why: str) -> list[Grant]:
    """Removing an association of ``role`` (or ``role`` itself) lifts its deny rules for those identities."""
    return [Grant.lifting(r, why) for r in role.rules.values() if r.is_deny]


def widened_bindings(old: AuthMethod, new: AuthMethod) -> list[str]:
    """The fields of ``new`` that let in an identity ``old`` refused: a binding removed or given another
    value, an earlier or removed ``access-expires``... and a longer ``jwt-ttl`` or max TTL. Adding a binding narrows."""
    widened = []
    for field, flag in [(b.field, b.flag) for b, _ in old.bindings()] + [("bound_ips", "bound-ips")]:
        before, after = getattr(old, field), getattr(new, field)
        if before and (not after or set(after) - set(before)):
            widened.append(flag)
    if old.access_expires and (not new.access_expires or new.access_expires > old.access_expires):
        widened.append("access-expires")
    if new.jwt_ttl > old.jwt_ttl:
        widened.append("jwt-ttl")
    if new.token_max_ttl() > old.token_max_ttl():
        widened.append("max-ttl")
    return widened


def model_grants(before: Model, after: Model) -> list[Grant]:
    """What replacing ``before`` by ``after`` grants, change by change (roles matched by name, associations
    by auth method access id and sub-claims, rules by rule type and path)."""
    out: list[Grant] = []
    for name, role in before.roles.items():
        new_role = after.roles.get(name)
        if new_role is None:
            if any(a.access_id in after.by_access_id for a in role.associations.values()):
                out.extend(lift_grants(role, f"removing the role {name}"))
            continue
        kept = {(a.access_id, a.sub_claims) for a in new_role.associations.values()}
        removed = [a for a in role.associations.values() if (a.access_id, a.sub_claims) not in kept]
        if any(a.access_id in after.by_access_id for a in removed):  # a deleted auth method's identities are gone
            out.extend(lift_grants(role, f"removing an association of {name}"))
    for name, role in after.roles.items():
        old_role = before.roles.get(name)
        old_rules = old_role.rules if old_role is not None else {}
        for key in old_rules.keys() | role.rules.keys():
            old, new = old_rules.get(key), role.rules.get(key)
            if old != new:
                out.extend(rule_grants(name, old, new))
        had = {(a.access_id, a.sub_claims) for a in old_role.associations.values()} if old_role else set()
        if any((a.access_id, a.sub_claims) not in had for a in role.associations.values()):
            out.extend(association_grants(role))
    return out


class Ceiling:
    """What ``identity`` holds in ``model``; ``author_forbids``: author policies with a forbid are in force."""

    def __init__(self, model: Model, identity: Identity, *, author_forbids: bool = False) -> None:
        self.break_glass = identity.access_id == model.break_glass_access_id
        self._blind = author_forbids and not self.break_glass
        self._allows: dict[tuple[RuleType, Capability], list[str]] = {}
        self._denies: dict[RuleType, list[str]] = {}
        for role in _held_roles(model, identity):
            for rule in role.rules.values():
                if rule.is_deny:
                    if not self.break_glass or role.name == ADMIN:
                        self._denies.setdefault(rule.rule_type, []).append(rule.path)
                    continue
                for capability in rule.capabilities:
                    self._allows.setdefault((rule.rule_type, capability), []).append(rule.path)

    def witness(self, grant: Grant) -> tuple[Capability, str, str | None] | None:
        """A capability of ``grant`` and a path its pattern matches where the caller does not hold it, with
        the caller's deny pattern that stops it there (None when no allow covers it); None when it holds all."""
        rt = grant.rule_type
        capabilities = sorted(grant.capabilities, key=ACTIONS.index)
        for capability in capabilities:
            path = uncovered(grant.pattern, self._allows.get((rt, capability), ()))
            if path is not None:
                return capability, path, None
        for deny in self._denies.get(rt, ()):
            path = overlap(grant.pattern, deny)
            if path is not None:
                return capabilities[0], path, deny
        return None

    def shortfall(self, grant: Grant) -> str | None:
        """Why the caller cannot make ``grant``: a message naming a path it does not hold; None when it can."""
        if self._blind:
            return "author Cedar policies with a forbid are in force: only the /admin auth method can grant"
        found = self.witness(grant)
        if found is None:
            return None
        capability, path, deny = found
        held = f"its own deny on {deny} stops it" if deny else f"it holds no {capability} there"
        return (
            f"{grant.why} grants {capability} on {grant.pattern} ({grant.rule_type}); on {path}, a path that "
            f"pattern matches, {held}"
        )

    def first_shortfall(self, grants: Iterable[Grant]) -> str | None:
        for grant in grants:
            why = self.shortfall(grant)
            if why is not None:
                return why
        return None

    @property
    def full_admin(self) -> bool:
        """Every capability on every path for every rule type."""
        every = frozenset(ACTIONS)
        return all(self.shortfall(Grant(rt, EVERYTHING, every, "")) is None for rt in RuleType)


def _held_roles(model: Model, identity: Identity) -> list[AccessRole]:
    roles = (model.roles[name] for name in sorted(model.roles_by_access_id.get(identity.access_id, ())))
    return [r for r in roles if any(a.matches(identity) for a in r.associations.values())]
