"""Who can: every way some identity could get a capability on a path, and the denies that would stop it.

Pure analysis of an engine's model. A *route* is one way in: log in through an auth method (its bindings
say who can), hold a role through one of its associations (its sub-claims say which of those identities
do), and be granted the capability by one of the role's allow rules whose pattern matches the path. Each
route lists the deny rules that could stop identities on it: every matching deny of any role associated
with the same auth method, marked ``always`` when its association's sub-claims follow from the route's
(then nobody on the route gets through: the route is ``blocked``). This is exactly what the engine
decides from rules (``WhoCan.allows`` agrees with ``Engine.decide`` for every identity; a property test
checks it); the authors' Cedar policies are listed, not analysed, since they can say anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cedarkey.engine import compile
from cedarkey.engine.access_role import Association, sub_claims_match
from cedarkey.engine.auth_method import AuthMethod
from cedarkey.engine.capability import Capability, RuleType, parse_capability, parse_rule_type
from cedarkey.engine.engine import Engine
from cedarkey.engine.glob import glob_match
from cedarkey.engine.identity import Identity
from cedarkey.engine.model import ADMIN
from cedarkey.engine.path import canonical_path
from cedarkey.engine.role_rule import RoleRule

from .lint import sub_claims_imply

AUTHOR_NOTE = (
    "author Cedar policies are not analysed: a permit among them may grant beyond the routes listed, "
    "a forbid may stop a route"
)


@dataclass(frozen=True)
class DenyRoute:
    role: str
    rule: RoleRule
    policy_id: str
    association: Association
    #: the deny applies to every identity of the route it is listed under
    always: bool = False

    def applies(self, identity: Identity) -> bool:
        return identity.access_id == self.association.access_id and sub_claims_match(
            self.association.sub_claims, identity
        )

    def to_dict(self, am_names: Mapping[str, str], sources: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.role,
            "rule": self.rule.to_dict(),
            "policy-id": self.policy_id,
            "auth-method": am_names.get(self.association.access_id),
            "sub-claims": {k: list(v) for k, v in self.association.sub_claims},
            "always": self.always,
        }
        if self.policy_id in sources:
            out["source"] = sources[self.policy_id]
        return out


@dataclass(frozen=True)
class Route:
    auth_method: AuthMethod
    role: str
    association: Association
    rule: RoleRule
    policy_id: str
    denies: tuple[DenyRoute, ...] = ()

    @property
    def blocked(self) -> bool:
        """Some deny stops every identity on this route."""
        return any(d.always for d in self.denies)

    def admits(self, identity: Identity) -> bool:
        """The identity (already logged in) gets the capability through this route."""
        return (
            identity.access_id == self.association.access_id
            and sub_claims_match(self.association.sub_claims, identity)
            and not any(d.applies(identity) for d in self.denies)
        )

    def to_dict(self, am_names: Mapping[str, str], sources: Mapping[str, str]) -> dict[str, Any]:
        am = self.auth_method
        login: dict[str, Any] = {"name": am.name, "access-id": am.access_id, "type": am.type}
        login["bindings"] = {b.flag: list(values) for b, values in am.bindings()}
        if am.bound_ips:
            login["bound-ips"] = list(am.bound_ips)
        if am.access_expires:
            login["access-expires"] = am.access_expires
        out: dict[str, Any] = {
            "auth-method": login,
            "role": self.role,
            "association": {
                "assoc-id": self.association.assoc_id,
                "sub-claims": {k: list(v) for k, v in self.association.sub_claims},
            },
            "rule": self.rule.to_dict(),
            "policy-id": self.policy_id,
            "blocked": self.blocked,
            "denies": [d.to_dict(am_names, sources) for d in self.denies],
        }
        if self.policy_id in sources:
            out["source"] = sources[self.policy_id]
        am_source = sources.get(compile.auth_method_policy_id(am.name, "permit"))
        if am_source:
            login["source"] = am_source
        return out


@dataclass(frozen=True)
class WhoCan:
    capability: Capability
    path: str
    rule_type: RuleType
    routes: tuple[Route, ...]
    denies: tuple[DenyRoute, ...]
    author_policies: tuple[dict[str, Any], ...]
    am_names: Mapping[str, str]

    def allows(self, identity: Identity) -> bool:
        """What the rules decide for ``identity`` (logged in), author policies aside."""
        return any(r.admits(identity) for r in self.routes)

    def to_dict(self, sources: Mapping[str, str] | None = None) -> dict[str, Any]:
        sources = sources or {}
        open_routes = [r for r in self.routes if not r.blocked]
        summary = (
            f"{len(self.routes)} route(s) grant {self.capability} on {self.path} ({self.rule_type}); "
            f"{len(self.routes) - len(open_routes)} blocked by a deny for every identity on them"
        )
        if not self.routes:
            summary = f"no rule grants {self.capability} on {self.path} ({self.rule_type})"
        authors = []
        for policy in self.author_policies:
            entry = dict(policy)
            if policy["id"] in sources:
                entry["source"] = sources[policy["id"]]
            authors.append(entry)
        out: dict[str, Any] = {
            "capability": str(self.capability),
            "path": self.path,
            "rule-type": str(self.rule_type),
            "summary": summary,
            "routes": [r.to_dict(self.am_names, sources) for r in self.routes],
            "denies": [
                {k: v for k, v in d.to_dict(self.am_names, sources).items() if k != "always"} for d in self.denies
            ],
            "author-policies": authors,
        }
        if authors:
            out["note"] = AUTHOR_NOTE
        return out


def who_can(engine: Engine, capability: object, path: object, rule_type: object = RuleType.ITEM) -> WhoCan:
    """Every route to ``capability`` on ``path`` under ``rule_type`` in ``engine``'s model."""
    cap = parse_capability(capability)
    rt = parse_rule_type(rule_type)
    p = canonical_path(path)
    model = engine.model
    by_access_id = model.by_access_id
    exempt = model.break_glass_access_id
    denies: list[DenyRoute] = []
    for role in model.roles.values():
        for rule in role.rules.values():
            if rule.rule_type is rt and rule.is_deny and glob_match(rule.path, p):
                pid = compile.rule_policy_id(role.name, rt, rule.path)
                denies.extend(
                    DenyRoute(role.name, rule, pid, a)
                    for a in role.associations.values()
                    if role.name == ADMIN or a.access_id != exempt
                )
    routes: list[Route] = []
    for role in model.roles.values():
        for rule in role.rules.values():
            if rule.rule_type is not rt or rule.is_deny or cap not in rule.capabilities:
                continue
            if not glob_match(rule.path, p):
                continue
            pid = compile.rule_policy_id(role.name, rt, rule.path)
            for a in role.associations.values():
                stops = tuple(
                    DenyRoute(d.role, d.rule, d.policy_id, d.association, always)
                    for d in denies
                    if d.association.access_id == a.access_id
                    for always in [sub_claims_imply(a.sub_claims, d.association.sub_claims)]
                )
                routes.append(Route(by_access_id[a.access_id], role.name, a, rule, pid, stops))
    routes.sort(key=lambda r: (r.blocked, r.auth_method.name, r.role, r.rule.path))
    return WhoCan(
        cap,
        p,
        rt,
        tuple(routes),
        tuple(denies),
        tuple(_author_policies(engine, cap, rt)),
        {am.access_id: am.name for am in model.auth_methods.values()},
    )


def _author_policies(engine: Engine, cap: Capability, rt: RuleType) -> list[dict[str, Any]]:
    """The authors' policies whose scope can include ``cap`` on ``rt``'s objects."""
    out = []
    for pid, policy in engine.author_policies().items():
        action = policy.get("action") or {}
        names = [e.get("id") for e in action.get("entities") or []]
        if action.get("entity"):
            names.append(action["entity"].get("id"))
        if action.get("op") != "All" and str(cap) not in names:
            continue
        resource = policy.get("resource") or {}
        entity_type = resource.get("entity_type") or (resource.get("entity") or {}).get("type")
        if entity_type and entity_type != rt.entity_type:
            continue
        out.append({"id": pid, "effect": policy.get("effect"), "file": engine.source(pid)["name"]})
    return out


def can(
    engine: Engine,
    identity: Identity,
    capability: object,
    path: object,
    rule_type: object,
    now: int,
    sources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The decision for ``identity`` with the policies that made it, and whether it could log in at ``now``."""
    sources = sources or {}
    answer = engine.explain(identity, capability, path, rule_type)
    login = engine.authenticate(identity, now)
    for key in ("determining", "considered"):
        for entry in answer[key]:
            if entry["id"] in sources:
                entry["source"] = sources[entry["id"]]
    answer["reasons"] = [e["id"] for e in answer["determining"]]
    answer["login"] = {
        "decision": login.decision,
        "reasons": list(login.reasons),
        **({"errors": list(login.errors)} if login.errors else {}),
    }
    answer["identity"] = identity.attributes()
    return answer
