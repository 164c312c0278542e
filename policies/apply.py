"""Planning an apply: from the model a server serves to a desired one, the plan, the writes that make it, and
the engine to serve afterwards; and the decisions the caller needs for it. Pure, like all of authoring: the
server (``cedarkey.server.policy_api``) commits the writes and swaps the engine in.

Managed: every ``aws_iam`` auth method, every role but ``/admin``, and the authors' Cedar files. Never
touched: ``access_key`` auth methods (the desired model may only *name* them, so that roles can be
associated with them) and the ``/admin`` role with its associations and rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cedarkey.engine import (
    ACCESS_KEY,
    ADMIN,
    AWS_IAM,
    AccessRole,
    Association,
    AuthMethod,
    Capability,
    Engine,
    RoleRule,
    RuleType,
    cedar,
    new_access_id,
)
from cedarkey.engine.access_role import new_assoc_id
from cedarkey.engine.delegation import widened_bindings
from cedarkey.engine.model import Model

from .plan import Plan, diff_states
from .state import ModelState, state_from_model

CREATE, UPDATE, DELETE = Capability.CREATE, Capability.UPDATE, Capability.DELETE
ROLE, AM = RuleType.ROLE, RuleType.AUTH_METHOD


def loaded_author_policies(engine: Engine, stored: Mapping[str, str]) -> dict[str, str]:
    """The stored Cedar files the engine actually serves: a file with policies whose policies the engine
    does not hold (an engine rebuilt from the store without them) counts as absent, so a plan re-adds it."""
    loaded = {engine.source(pid)["name"] for pid in engine.author_policies()}
    out = {}
    for name, text in stored.items():
        if name in loaded:
            out[name] = text
        else:
            try:
                if not cedar.to_json(text):  # no policy in it: nothing to serve
                    out[name] = text
            except ValueError:
                pass
    return out


@dataclass
class Prepared:
    """Everything one apply does: the plan, the store writes (``(Store method, args...)``, in order, for
    one transaction; ``("set_author_policies", {file: text})`` for the Cedar files) and the engine to serve
    afterwards."""

    plan: Plan
    engine: Engine
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # new auth method name -> access id
    removed_access_ids: list[str] = field(default_factory=list)
    cedar: dict[str, str] = field(default_factory=dict)  # the author policies the engine serves


def prepare(
    engine: Engine, current_cedar: Mapping[str, str], stored_cedar: Mapping[str, str], desired: ModelState
) -> Prepared:
    """The plan from ``engine``'s model (serving ``current_cedar``) to ``desired``, the final engine and
    the store writes. Pure but for fresh random ids. Raises ModelError (nothing changed) when ``desired``
    is refused: it touches what is not managed, or the final model does not compile or validate."""
    model = engine.model
    current = state_from_model(model, current_cedar)
    plan = diff_states(current, desired)
    names_by_id = {am.access_id: am.name for am in model.auth_methods.values()}

    final_ams: dict[str, AuthMethod] = {n: am for n, am in model.auth_methods.items() if am.type == ACCESS_KEY}
    created: dict[str, str] = {}
    taken = set(model.by_access_id)
    for name, am in desired.auth_methods.items():
        if am.type == ACCESS_KEY:
            continue
        cur = model.auth_methods.get(name)
        if cur is not None:
            final_ams[name] = replace(am, access_id=cur.access_id)
            continue
        access_id = new_access_id()
        while access_id in taken:  # pragma: no cover - 80 random bits
            access_id = new_access_id()
        taken.add(access_id)
        final_ams[name] = replace(am, access_id=access_id)
        created[name] = access_id
    removed = [am for n, am in model.auth_methods.items() if am.type == AWS_IAM and n not in desired.auth_methods]

    roles: list[AccessRole] = []
    associations: list[Association] = []
    rules: list[tuple[str, RoleRule]] = []
    admin = model.roles.get(ADMIN)
    if admin is not None:
        roles.append(AccessRole(admin.name, admin.description))
        associations.extend(admin.associations.values())
        rules.extend((admin.name, r) for r in admin.rules.values())
    for name, rs in desired.roles.items():
        if name == ADMIN:  # identical to the server's (diff_states refuses anything else)
            continue
        cur_role = model.roles.get(name)
        keep: dict[tuple[str, Any], str] = {}
        if cur_role is not None:
            keep = {(names_by_id[a.access_id], a.sub_claims): a.assoc_id for a in cur_role.associations.values()}
        roles.append(AccessRole(name, rs.description))
        for key in rs.associations:
            am_name, sub_claims = key
            associations.append(
                Association(keep.get(key) or new_assoc_id(), name, final_ams[am_name].access_id, sub_claims)
            )
        rules.extend((name, r) for r in rs.rules.values())

    final = Engine(engine.schema_text)
    final.load(final_ams.values(), roles, associations, rules)
    final.set_author_policies(desired.cedar)

    ops: list[tuple[Any, ...]] = []
    kept_assoc_ids = {a.assoc_id for a in associations}
    for name, cur_role in model.roles.items():
        if name == ADMIN:
            continue
        if name not in desired.roles:
            ops.append(("delete_role", name))
            continue
        if desired.roles[name].description != cur_role.description:
            ops.append(("update_role", name, desired.roles[name].description))
        wanted_rules = desired.roles[name].rules
        for a in cur_role.associations.values():
            if a.assoc_id not in kept_assoc_ids:
                ops.append(("delete_association", a.assoc_id))
        for key, r in cur_role.rules.items():
            if key not in wanted_rules:
                ops.append(("delete_rule", name, str(r.rule_type), r.path))
    ops.extend(("delete_auth_method", am.name) for am in removed)
    for name, am in final_ams.items():
        cur = model.auth_methods.get(name)
        if cur is None:
            ops.append(("add_auth_method", am, None))
        elif cur != am:
            ops.append(("update_auth_method", am))
    for role in roles:
        if role.name != ADMIN and role.name not in model.roles:
            ops.append(("add_role", role.name, role.description))
    ops.extend(("add_association", a) for a in associations if a.assoc_id not in model.associations)
    for name, r in rules:
        cur_role = model.roles.get(name)
        if cur_role is None or cur_role.rules.get(r.key) != r:
            ops.append(("set_rule", name, r))
    if dict(stored_cedar) != desired.cedar:
        ops.append(("set_author_policies", dict(sorted(desired.cedar.items()))))
    return Prepared(plan, final, ops, created, [am.access_id for am in removed], dict(desired.cedar))


def required_decisions(plan: Plan, before: Model, after: Model) -> list[tuple[Capability, str, RuleType]]:
    """What the caller must be allowed, as the single commands would require it: create / update / delete
    on each auth method and role touched (``update`` on a role for its associations and rules, ``update``
    on an auth method for its associations, ``create`` on an auth method whose bindings widen)."""
    need: dict[tuple[Capability, str, RuleType], None] = {}
    by_id = {**before.by_access_id, **after.by_access_id}
    for c in plan.changes:
        if c.kind == "auth-method":
            need[({"add": CREATE, "change": UPDATE, "remove": DELETE}[c.action], c.name, AM)] = None
            old, new = before.auth_methods.get(c.name), after.auth_methods.get(c.name)
            if c.action == "change" and old is not None and new is not None and widened_bindings(old, new):
                need[(CREATE, c.name, AM)] = None
        elif c.kind == "role":
            caps = {"add": [CREATE], "remove": [DELETE], "change": [UPDATE]}[c.action]
            for cap in caps:
                need[(cap, c.name, ROLE)] = None
        elif c.kind in ("association", "rule"):
            need[(UPDATE, c.name, ROLE)] = None
    for role in after.roles.values():  # associating changes what the auth method's identities get
        old_role = before.roles.get(role.name)
        had = {(a.access_id, a.sub_claims) for a in old_role.associations.values()} if old_role else set()
        for a in role.associations.values():
            if (a.access_id, a.sub_claims) not in had and a.access_id in by_id:
                need[(UPDATE, by_id[a.access_id].name, AM)] = None
    return list(need)
