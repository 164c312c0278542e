"""Compilation of the access model to Cedar policies, built structurally in Cedar's JSON form.

No name, path or pattern is ever pasted into policy text: every value becomes a JSON ``Value`` or a
``like`` pattern made of ``Literal`` and ``Wildcard`` items, so no string can change what a policy means.

Policies and their ids (each names its source; names are JSON-quoted so any string stays unambiguous):

- ``auth-method:"/iamAuth1"/permit``: ``authenticate`` on the auth method is permitted for identities
  that came through it;
- ``auth-method:"/iamAuth1"/bound-role-name`` (one per binding that is set, plus ``bound-ips`` and
  ``access-expires``): a ``forbid ... unless { the binding matches }``, so a refused login names the exact
  bindings that failed;
- ``role:"/dev-readers"/item-rule:"/dev/*"``: a role rule, ``permit`` (or ``forbid`` for ``deny``) of its
  capabilities on its rule type's objects whose path is like the pattern, for identities that match one of
  the role's associations (auth method access id and sub-claims).

Every optional identity attribute is read behind a ``has`` test, so compiled policies cannot error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .access_role import Association
from .auth_method import AuthMethod
from .capability import ACTIONS, Capability, RuleType
from .glob import literal_prefix
from .role_rule import RoleRule

Json = dict[str, Any]

PRINCIPAL = {"Var": "principal"}
CONTEXT = {"Var": "context"}
TRUE: Json = {"Value": True}
FALSE: Json = {"Value": False}


def quote(name: str) -> str:
    """A name as a JSON string literal, for policy ids."""
    return orjson.dumps(name).decode()


def auth_method_policy_id(name: str, part: str) -> str:
    return f"auth-method:{quote(name)}/{part}"


def rule_policy_id(role_name: str, rule_type: RuleType, path: str) -> str:
    return f"role:{quote(role_name)}/{rule_type}:{quote(path)}"


# --- expressions -------------------------------------------------------------------------------------


def get(expr: Json, attr: str) -> Json:
    return {".": {"left": expr, "attr": attr}}


def has(expr: Json, attr: str) -> Json:
    return {"has": {"left": expr, "attr": attr}}


def value(v: Any) -> Json:
    return {"Value": v}


def eq(left: Json, right: Json) -> Json:
    return {"==": {"left": left, "right": right}}


def all_of(exprs: Iterable[Json]) -> Json:
    out: Json | None = None
    for expr in exprs:
        out = expr if out is None else {"&&": {"left": out, "right": expr}}
    return TRUE if out is None else out


def any_of(exprs: Iterable[Json]) -> Json:
    out: Json | None = None
    for expr in exprs:
        out = expr if out is None else {"||": {"left": out, "right": expr}}
    return FALSE if out is None else out


def like(expr: Json, pattern: str) -> Json:
    """``expr like pattern`` where each ``*`` of ``pattern`` is a wildcard and everything else literal."""
    items: list[Any] = []
    for i, part in enumerate(pattern.split("*")):
        if i:
            items.append("Wildcard")
        if part:
            items.append({"Literal": part})
    return {"like": {"left": expr, "pattern": items}}


def one_of(expr: Json, values: Iterable[str]) -> Json:
    return {"contains": {"left": {"Set": [value(v) for v in values]}, "right": expr}}


def attribute_matches(attr: str, values: Iterable[str], *, wildcard: bool) -> Json:
    """The principal has ``attr`` and it equals (or, with ``wildcard``, is like) one of ``values``."""
    values = list(values)
    test = any_of(like(get(PRINCIPAL, attr), v) for v in values) if wildcard else one_of(get(PRINCIPAL, attr), values)
    return all_of([has(PRINCIPAL, attr), test])


def action_uid(name: str) -> Json:
    return {"type": "Action", "id": name}


def _policy(effect: str, policy_id: str, action: Json, resource: Json, conditions: list[Json]) -> Json:
    return {
        "effect": effect,
        "principal": {"op": "is", "entity_type": "Identity"},
        "action": action,
        "resource": resource,
        "conditions": conditions,
        "annotations": {"id": policy_id},
    }


# --- auth methods ------------------------------------------------------------------------------------


def auth_method_policies(am: AuthMethod) -> dict[str, Json]:
    """``authenticate`` on ``am``: one permit for its own identities, one forbid per binding."""
    action = {"op": "==", "entity": action_uid("authenticate")}
    resource = {"op": "==", "entity": {"type": "AuthMethod", "id": am.access_id}}
    policies: dict[str, Json] = {}

    def add(effect: str, part: str, kind: str, body: Json) -> None:
        pid = auth_method_policy_id(am.name, part)
        policies[pid] = _policy(effect, pid, action, resource, [{"kind": kind, "body": body}])

    add(
        "permit",
        "permit",
        "when",
        all_of([eq(get(PRINCIPAL, "access_id"), value(am.access_id)), eq(get(PRINCIPAL, "auth_type"), value(am.type))]),
    )
    for binding, values in am.bindings():
        matches = any_of(
            attribute_matches(attr, values, wildcard=binding.wildcard) for attr in binding.identity_attributes
        )
        add("forbid", binding.flag, "unless", matches)
    if am.bound_ips:
        in_range = any_of({"isInRange": [get(PRINCIPAL, "source_ip"), {"ip": [value(cidr)]}]} for cidr in am.bound_ips)
        add("forbid", "bound-ips", "unless", all_of([has(PRINCIPAL, "source_ip"), in_range]))
    if am.access_expires:
        add(
            "forbid",
            "access-expires",
            "unless",
            {"<": {"left": get(CONTEXT, "now"), "right": value(am.access_expires)}},
        )
    return policies


# --- role rules --------------------------------------------------------------------------------------


def association_matches(assoc: Association) -> Json:
    """The principal came through the association's auth method and satisfies its sub-claims."""
    return all_of(
        [
            eq(get(PRINCIPAL, "access_id"), value(assoc.access_id)),
            *(attribute_matches(attr, patterns, wildcard=True) for attr, patterns in assoc.sub_claims),
        ]
    )


def _rule_effect_action(rule: RoleRule) -> tuple[str, Json]:
    """A rule's effect and action scope: its capabilities, or for deny every capability."""
    if rule.is_deny:
        effect, capabilities = "forbid", ACTIONS
    else:
        effect = "permit"
        capabilities = tuple(c for c in ACTIONS if c in rule.capabilities)
    return effect, {"op": "in", "entities": [action_uid(str(c)) for c in capabilities]}


def rule_policy(role_name: str, rule: RoleRule, associations: Iterable[Association]) -> tuple[str, Json]:
    """One role rule: its capabilities (or, for deny, every capability) on paths like its pattern."""
    pid = rule_policy_id(role_name, rule.rule_type, rule.path)
    effect, action = _rule_effect_action(rule)
    resource = {"op": "is", "entity_type": rule.rule_type.entity_type}
    body = all_of([like(get(CONTEXT, "path"), rule.path), any_of(association_matches(a) for a in associations)])
    return pid, _policy(effect, pid, action, resource, [{"kind": "when", "body": body}])


#: What a rule policy in its full form reads of a decision's context: the whole path, as ``context.path``;
#: each context attribute a policy reads is named with the offset of the part of the path it holds.
PATH_READS: tuple[tuple[str, int], ...] = (("path", 0),)


def routed_rule_policy(rule: RoleRule) -> tuple[Json, tuple[tuple[str, int], ...]]:
    """The rule as the engine evaluates it for a role whose every association is plain (an auth method, no
    sub-claims), and the context attributes it reads (as :data:`PATH_READS` names them).

    The engine asks a role's rules of one rule type only for callers through an associated auth method, and
    asks a rule only on paths its literal prefix ``P`` begins (the groups' prefix index), so the principal and
    resource tests of :func:`rule_policy` are already met, and ``path like P + R`` is ``path[len(P):] like R``:
    the engine passes that remainder as ``context.rest<len(P)>``, and when ``R`` is a lone ``*`` there is
    nothing left to test. The form holds no literal of ``P``, so the rules of roles cut alike (a tree per
    team) compile to equal policies that share one parsed set. It reads nothing of the principal and is never
    exported: :func:`rule_policy` is the rule's policy."""
    effect, action = _rule_effect_action(rule)
    prefix = literal_prefix(rule.path)
    rest = rule.path[len(prefix) :]
    reads = () if rest == "*" else ((f"rest{len(prefix)}", len(prefix)),)
    conditions = [{"kind": "when", "body": like(get(CONTEXT, attr), rest)} for attr, _ in reads]
    policy = {
        "effect": effect,
        "principal": {"op": "All"},
        "action": action,
        "resource": {"op": "All"},
        "conditions": conditions,
    }
    return policy, reads


def capability_action(capability: Capability) -> Json:
    return action_uid(str(capability))
