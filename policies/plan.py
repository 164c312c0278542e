"""Plans: the changes that turn one model state into another, and how they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from cedarkey.engine import ACCESS_KEY, ADMIN, AWS_IAM, AuthMethod, ModelError, RoleRule, RuleType
from cedarkey.engine.access_role import SubClaims
from cedarkey.engine.auth_method import DEFAULT_JWT_TTL, DEFAULT_STS_URL

from .state import ModelState, RoleState


@dataclass(frozen=True)
class Change:
    action: str  # "add" | "change" | "remove"
    kind: str  # "auth-method" | "role" | "association" | "rule" | "cedar"
    name: str  # the auth method, role, or Cedar file
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "name": self.name, **self.detail}


_MARK = {"add": "+", "change": "~", "remove": "-"}


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, int]:
        out = {"add": 0, "change": 0, "remove": 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "summary": self.summary(), "text": self.text()}

    def text(self) -> str:
        """The plan as a readable diff, ending with a summary line."""
        if not self.changes:
            return "No changes: the server already holds what the files say.\n"
        lines = [render_change(c) for c in self.changes]
        s = self.summary()
        lines.append(f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove.")
        return "\n".join(lines) + "\n"


def _show(value: object) -> str:
    return orjson.dumps(value).decode()


def _claims(sub_claims: Any) -> str:
    if not sub_claims:
        return ""
    return " where " + ", ".join(f"{k} like {' or '.join(_show(p) for p in v)}" for k, v in dict(sub_claims).items())


def render_change(c: Change) -> str:
    mark = _MARK[c.action]
    d = c.detail
    if c.kind == "auth-method":
        head = f"{mark} auth method {c.name}"
        if c.action == "add":
            body = [f"      {k} = {_show(v)}" for k, v in d["after"].items() if _worth_showing(k, v)]
            return "\n".join([f"{head} ({d['after']['type']})", *body])
        if c.action == "change":
            body = [f"      {k}: {_show(d['before'][k])} -> {_show(d['after'][k])}" for k in d["fields"]]
            return "\n".join([head, *body])
        return head
    if c.kind == "role":
        if c.action == "change":
            return (
                f"{mark} role {c.name}: description {_show(d['before'])} -> {_show(d['after'])} "
                "(the role is recreated with its associations and rules)"
            )
        if c.action == "remove":
            return f"{mark} role {c.name} (with its {d['associations']} associations and {d['rules']} rules)"
        return f"{mark} role {c.name}" + (f": {_show(d['description'])}" if d.get("description") else "")
    if c.kind == "association":
        return f"{mark}   association {c.name} -> {d['am-name']}{_claims(d['sub-claims'])}"
    if c.kind == "rule":
        caps = f"[{', '.join(d['capabilities'])}]"
        if c.action == "change":
            caps = f"[{', '.join(d['before'])}] -> {caps}"
        return f"{mark}   rule {c.name}: {d['rule-type']} {d['path']} {caps}"
    return f"{mark} cedar {c.name}"


def _worth_showing(key: str, value: object) -> bool:
    """A field of a new auth method that is set to something else than its default."""
    defaults: dict[str, object] = {
        "access-expires": 0,
        "jwt-ttl": DEFAULT_JWT_TTL,
        "max-ttl": 0,
        "sts-url": DEFAULT_STS_URL,
    }
    return key not in ("name", "access-id", "type") and value not in ([], None) and defaults.get(key) != value


def _am_config(am: AuthMethod) -> dict[str, Any]:
    out = am.to_dict()
    del out["access-id"]
    return out


def managed_auth_method(am: AuthMethod) -> bool:
    return am.type == AWS_IAM


def diff_states(current: ModelState, desired: ModelState) -> Plan:
    """What turns ``current`` (a server) into ``desired`` (the files). Managed: aws_iam auth methods, every
    role but /admin, and the author Cedar files; access_key auth methods and the /admin role are never
    touched (``desired`` may only *name* access_key methods the server holds). Raises ModelError when
    ``desired`` asks for something that is not managed."""
    for name, am in desired.auth_methods.items():
        cur = current.auth_methods.get(name)
        if am.type == ACCESS_KEY:
            if cur is None or cur.type != ACCESS_KEY:
                raise ModelError(
                    "auth-methods",
                    f"{name}: the server holds no access_key auth method of that name "
                    "(rule files only name access_key methods, never create them)",
                )
        elif cur is not None and cur.type == ACCESS_KEY:
            raise ModelError("auth-methods", f"{name}: an access_key auth method on the server; files cannot change it")
    if ADMIN in desired.roles and not _same_role(desired.roles[ADMIN], current.roles.get(ADMIN)):
        raise ModelError("roles", "/admin is the server's own role; it is never managed by files or apply-model")
    plan = Plan()
    changes = plan.changes
    managed_now = {n: am for n, am in current.auth_methods.items() if managed_auth_method(am)}
    wanted = {n: am for n, am in desired.auth_methods.items() if managed_auth_method(am)}
    admin = current.roles.get(ADMIN)
    for name in sorted(managed_now.keys() | wanted.keys()):
        before, after = managed_now.get(name), wanted.get(name)
        if before is None and after is not None:
            changes.append(Change("add", "auth-method", name, {"after": _am_config(after)}))
        elif after is None and before is not None:
            if admin is not None and any(am_name == name for am_name, _ in admin.associations):
                raise ModelError(
                    "auth-methods",
                    f"{name} is associated with the /admin role, which files never "
                    "touch: remove that association by hand first",
                )
            changes.append(Change("remove", "auth-method", name, {"access-id": before.access_id}))
        elif before is not None and after is not None:
            a, b = _am_config(before), _am_config(after)
            fields = [k for k in b if a.get(k) != b[k]]
            if fields:
                changes.append(Change("change", "auth-method", name, {"before": a, "after": b, "fields": fields}))
    roles_now = {n: r for n, r in current.roles.items() if n != ADMIN}
    for name in sorted(roles_now.keys() | desired.roles.keys() - {ADMIN}):
        before_role, after_role = roles_now.get(name), desired.roles.get(name)
        if after_role is None:
            assert before_role is not None
            detail = {"associations": len(before_role.associations), "rules": len(before_role.rules)}
            changes.append(Change("remove", "role", name, detail))
            continue
        old_assocs: set[tuple[str, SubClaims]] = set()
        old_rules: dict[tuple[RuleType, str], RoleRule] = {}
        if before_role is None:
            changes.append(Change("add", "role", name, {"description": after_role.description}))
        else:
            if before_role.description != after_role.description:
                detail = {"before": before_role.description, "after": after_role.description}
                changes.append(Change("change", "role", name, detail))
            old_assocs = set(before_role.associations)
            old_rules = before_role.rules
        new_assocs = list(after_role.associations)
        for key in before_role.associations if before_role else ():
            if key not in after_role.associations:
                changes.append(Change("remove", "association", name, _assoc_detail(key)))
        for key in new_assocs:
            if key not in old_assocs:
                changes.append(Change("add", "association", name, _assoc_detail(key)))
        for key in sorted(old_rules.keys() | after_role.rules.keys()):
            old, new = old_rules.get(key), after_role.rules.get(key)
            if new is None:
                assert old is not None
                changes.append(Change("remove", "rule", name, old.to_dict()))
            elif old is None:
                changes.append(Change("add", "rule", name, new.to_dict()))
            elif old != new:
                detail = {**new.to_dict(), "before": old.to_dict()["capabilities"]}
                changes.append(Change("change", "rule", name, detail))
    for file in sorted(current.cedar.keys() | desired.cedar.keys()):
        old_text, new_text = current.cedar.get(file), desired.cedar.get(file)
        if old_text is None:
            changes.append(Change("add", "cedar", file))
        elif new_text is None:
            changes.append(Change("remove", "cedar", file))
        elif old_text != new_text:
            changes.append(Change("change", "cedar", file))
    return plan


def _same_role(a: RoleState, b: RoleState | None) -> bool:
    return (
        b is not None
        and a.description == b.description
        and set(a.associations) == set(b.associations)
        and a.rules == b.rules
    )


def _assoc_detail(key: tuple[str, SubClaims]) -> dict[str, Any]:
    return {"am-name": key[0], "sub-claims": {k: list(v) for k, v in key[1]}}
