"""Model states: the neutral form that rule files, a server's model and the ``export-model`` / ``apply-model``
JSON all turn into, its JSON codec, and the engine it describes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cedarkey.engine import (
    ACCESS_KEY,
    AWS_IAM,
    AccessRole,
    Association,
    AuthMethod,
    Engine,
    Identity,
    ModelError,
    RoleRule,
    RuleType,
    canonical_path,
    parse_sub_claims,
)
from cedarkey.engine.access_role import SubClaims, new_assoc_id
from cedarkey.engine.auth_method import SETTINGS
from cedarkey.engine.model import Model

from .schema import schema_text as packaged_schema

#: The auth method fields a rule file (or the model's JSON) may set, by their flag names.
AM_FIELDS: tuple[str, ...] = ("type", *(s.flag for s in SETTINGS))
AM_LIST_FIELDS = frozenset(s.flag for s in SETTINGS if s.kind == "list")


def offline_access_id(name: str) -> str:
    """The stable access id an auth method gets offline (engines built from files, tests, exports); the
    server gives each auth method it creates a random one instead."""
    return "p-" + hashlib.sha256(("cedarkey-offline:" + name).encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass
class RoleState:
    name: str
    description: str = ""
    #: (auth method name, sub-claims) -> association id (None when not known: files)
    associations: dict[tuple[str, SubClaims], str | None] = field(default_factory=dict)
    rules: dict[tuple[RuleType, str], RoleRule] = field(default_factory=dict)


@dataclass
class ModelState:
    """An access model by names: what rule files describe, what a server holds, what ``export-model`` gives
    and ``apply-model`` takes. ``cedar`` is the author policies, ``{file name: Cedar text}``."""

    auth_methods: dict[str, AuthMethod] = field(default_factory=dict)
    roles: dict[str, RoleState] = field(default_factory=dict)
    cedar: dict[str, str] = field(default_factory=dict)


def state_from_model(model: Model, cedar_files: Mapping[str, str] | None = None) -> ModelState:
    """The state of an engine's model (association ids kept)."""
    names = {am.access_id: am.name for am in model.auth_methods.values()}
    state = ModelState(dict(model.auth_methods), cedar=dict(cedar_files or {}))
    for role in model.roles.values():
        rs = RoleState(role.name, role.description)
        for a in role.associations.values():
            rs.associations[(names[a.access_id], a.sub_claims)] = a.assoc_id
        rs.rules = dict(role.rules)
        state.roles[role.name] = rs
    return state


def state_to_json(state: ModelState) -> dict[str, Any]:
    """The ``export-model`` JSON of a state."""
    roles = []
    for name in sorted(state.roles):
        rs = state.roles[name]
        assocs = []
        for (am_name, sub_claims), assoc_id in rs.associations.items():
            entry: dict[str, Any] = {"am-name": am_name, "sub-claims": {k: list(v) for k, v in sub_claims}}
            if assoc_id is not None:
                entry["assoc-id"] = assoc_id
            assocs.append(entry)
        rules = [r.to_dict() for r in sorted(rs.rules.values(), key=lambda r: (r.rule_type, r.path))]
        roles.append({"name": name, "description": rs.description, "associations": assocs, "rules": rules})
    return {
        "auth-methods": [state.auth_methods[n].to_dict() for n in sorted(state.auth_methods)],
        "roles": roles,
        "cedar": dict(sorted(state.cedar.items())),
    }


_JSON_AM_KEYS = frozenset({"name", "access-id", *AM_FIELDS})


def state_from_json(data: object) -> ModelState:
    """A state from ``export-model`` JSON (what ``apply-model`` takes). Access ids may be left out: an auth
    method is known by its name. Raises ModelError naming the bad field (``roles[2].rules[0].path``)."""
    if not isinstance(data, dict):
        raise ModelError("model", "must be a JSON object with auth-methods, roles and cedar")
    unknown = set(data) - {"auth-methods", "roles", "cedar"}
    if unknown:
        raise ModelError("model", f"unknown key {sorted(unknown)[0]!r}")
    state = ModelState()
    for n, raw in enumerate(_list(data.get("auth-methods", []), "auth-methods")):
        where = f"auth-methods[{n}]"
        if not isinstance(raw, dict):
            raise ModelError(where, "must be an object")
        bad = set(raw) - _JSON_AM_KEYS
        if bad:
            raise ModelError(f"{where}.{sorted(bad)[0]}", "unknown field")
        values = {k.replace("-", "_"): tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        values.setdefault("type", AWS_IAM)
        values.setdefault("access_id", offline_access_id(str(values.get("name"))))
        try:
            am = AuthMethod(**values)
        except ModelError as exc:
            raise ModelError(f"{where}.{exc.field}", exc.message) from None
        except TypeError as exc:
            raise ModelError(where, str(exc)) from None
        if am.name in state.auth_methods:
            raise ModelError(f"{where}.name", f"auth method {am.name} given twice")
        state.auth_methods[am.name] = am
    for n, raw in enumerate(_list(data.get("roles", []), "roles")):
        where = f"roles[{n}]"
        if not isinstance(raw, dict):
            raise ModelError(where, "must be an object")
        bad = set(raw) - {"name", "description", "associations", "rules"}
        if bad:
            raise ModelError(f"{where}.{sorted(bad)[0]}", "unknown field")
        try:
            role = AccessRole(raw.get("name"), raw.get("description") or "")  # type: ignore[arg-type]
        except ModelError as exc:
            raise ModelError(f"{where}.{exc.field}", exc.message) from None
        if role.name in state.roles:
            raise ModelError(f"{where}.name", f"role {role.name} given twice")
        rs = RoleState(role.name, role.description)
        for m, a in enumerate(_list(raw.get("associations", []), f"{where}.associations")):
            at = f"{where}.associations[{m}]"
            if not isinstance(a, dict) or set(a) - {"am-name", "sub-claims", "assoc-id"}:
                raise ModelError(at, "must be an object with am-name and sub-claims")
            try:
                am_name = canonical_path(a.get("am-name"), "am-name")
                sub_claims = parse_sub_claims(a.get("sub-claims") or (), "sub-claims")
            except ModelError as exc:
                raise ModelError(f"{at}.{exc.field}", exc.message) from None
            except TypeError:
                raise ModelError(f"{at}.sub-claims", "must map attributes to patterns") from None
            if am_name not in state.auth_methods:
                raise ModelError(f"{at}.am-name", f"{am_name} is not among the model's auth-methods")
            rs.associations.setdefault((am_name, sub_claims), None)
        for m, r in enumerate(_list(raw.get("rules", []), f"{where}.rules")):
            at = f"{where}.rules[{m}]"
            if not isinstance(r, dict) or set(r) - {"rule-type", "path", "capabilities"}:
                raise ModelError(at, "must be an object with rule-type, path and capabilities")
            try:
                rule = RoleRule.parse(r.get("rule-type", "item-rule"), r.get("path"), r.get("capabilities") or [])
            except ModelError as exc:
                raise ModelError(f"{at}.{exc.field}", exc.message) from None
            except TypeError:
                raise ModelError(f"{at}.capabilities", "must be a list of capabilities") from None
            rs.rules[rule.key] = rule
        state.roles[role.name] = rs
    cedar_files = data.get("cedar", {})
    if not isinstance(cedar_files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in cedar_files.items()
    ):
        raise ModelError("cedar", "must be an object of file name to Cedar text")
    state.cedar = dict(cedar_files)
    return state


def _list(value: object, field_name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ModelError(field_name, "must be a list")
    return value


def build_engine(state: ModelState, schema_text: str | None = None) -> Engine:
    """An engine holding ``state`` (associations without an id get a fresh one). Raises ModelError."""
    engine = Engine(schema_text or packaged_schema())
    access_ids = {name: am.access_id for name, am in state.auth_methods.items()}
    associations = []
    rules = []
    for rs in state.roles.values():
        for (am_name, sub_claims), assoc_id in rs.associations.items():
            if am_name not in access_ids:
                raise ModelError("am-name", f"role {rs.name}: no auth method {am_name}")
            associations.append(Association(assoc_id or new_assoc_id(), rs.name, access_ids[am_name], sub_claims))
        rules.extend((rs.name, r) for r in rs.rules.values())
    engine.load(
        state.auth_methods.values(),
        [AccessRole(rs.name, rs.description) for rs in state.roles.values()],
        associations,
        rules,
    )
    engine.set_author_policies(state.cedar)
    return engine


def resolve_identity(data: object, model: Model) -> Identity:
    """An identity from a JSON object of attributes (``Identity.from_attributes``), where ``auth_method``
    may name the auth method instead of giving its ``access_id``; ``auth_type`` then defaults to that
    method's type and ``principal_type`` to ``assumed-role`` (aws_iam) or ``access-key``."""
    if not isinstance(data, dict):
        raise ModelError("identity", "must be a JSON object of attributes")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    name = values.pop("auth_method", None)
    if name is not None:
        am = model.auth_method(name, "auth_method")
        if values.setdefault("access_id", am.access_id) != am.access_id:
            raise ModelError("access_id", f"is not the access id of {am.name}")
        values.setdefault("auth_type", am.type)
    if isinstance(values.get("access_id"), str):
        am_by_id = model.by_access_id.get(values["access_id"])
        values.setdefault("auth_type", am_by_id.type if am_by_id else AWS_IAM)
    values.setdefault("principal_type", "access-key" if values.get("auth_type") == ACCESS_KEY else "assumed-role")
    return Identity.from_attributes(values)
