"""The policy-author commands of the server: ``export-model``, ``apply-model``, ``who-can`` and ``can``.

``apply-model`` (and the rules-directory watcher, :mod:`cedarkey.server.policy_watch`) turn the server's
model into a desired one in one step:

1. under the service's write lock, the plan is computed against the model in memory (what every write
   checks against) and the *final* engine is built, validated, from that model and the plan, with fresh
   access ids for the auth methods it creates and fresh ids for new associations;
2. the store is changed in ONE transaction (``with store.batch(): ...``): all of the plan or none of it;
3. only then the final engine replaces the service's engine (a single assignment, so a reader sees the
   old model or the new one, never half of it) and the tokens of deleted auth methods are dropped.

Managed: every ``aws_iam`` auth method, every role but ``/admin``, and the authors' Cedar files. Never
touched: ``access_key`` auth methods (the desired model may only *name* them, so that roles can be
associated with them) and the ``/admin`` role with its associations and rules. The Cedar files are kept
in the store's meta table (key ``author-policies``); ``Service.load()`` reads them back into every engine it
builds, and other nodes learn of a change through the store's change feed (a ``meta`` change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from cedarkey.engine import (
    ACCESS_KEY,
    ADMIN,
    AWS_IAM,
    AccessRole,
    Association,
    AuthMethod,
    Capability,
    Engine,
    ModelError,
    RoleRule,
    RuleType,
    cedar,
    new_access_id,
)
from cedarkey.engine.access_role import new_assoc_id
from cedarkey.engine.delegation import model_grants, widened_bindings
from cedarkey.engine.model import Model
from cedarkey.engine.rulefiles import (
    ModelState,
    Plan,
    diff_states,
    resolve_identity,
    state_from_json,
    state_from_model,
    state_to_json,
)
from cedarkey.engine.whocan import can as can_decide
from cedarkey.engine.whocan import who_can as who_can_analysis
from starlette.concurrency import run_in_threadpool

from .errors import bad_request, permission_denied
from .store import Store

if TYPE_CHECKING:
    from .service import Service
    from .tokens import Session

log = logging.getLogger("cedarkey.server")

AUTHOR_POLICIES_META = "author-policies"

CREATE, UPDATE, DELETE, LIST = Capability.CREATE, Capability.UPDATE, Capability.DELETE, Capability.LIST
ROLE, AM = RuleType.ROLE, RuleType.AUTH_METHOD

Args = dict[str, Any]


# --- author policies in the store ----------------------------------------------------------------------


def stored_author_policies(store: Store) -> dict[str, str]:
    """The authors' Cedar files last applied, ``{file name: text}`` (empty when none)."""
    raw = store.get_meta(AUTHOR_POLICIES_META)
    if not raw:
        return {}
    value = orjson.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


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


# --- preparing a change --------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything one apply does: the plan, the store writes (``(Store method, args...)``, in order, for
    one transaction) and the engine to serve afterwards."""

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
    recreate = {c.name for c in plan.changes if c.kind == "role" and c.action == "change"}
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
        if cur_role is not None and name not in recreate:
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
        if name not in desired.roles or name in recreate:
            ops.append(("delete_role", name))
            continue
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
        if role.name != ADMIN and (role.name not in model.roles or role.name in recreate):
            ops.append(("add_role", role.name, role.description))
    ops.extend(("add_association", a) for a in associations if a.assoc_id not in model.associations)
    for name, r in rules:
        cur_role = model.roles.get(name)
        if cur_role is None or name in recreate or cur_role.rules.get(r.key) != r:
            ops.append(("set_rule", name, r))
    if dict(stored_cedar) != desired.cedar:
        ops.append(("set_meta", AUTHOR_POLICIES_META, orjson.dumps(dict(sorted(desired.cedar.items()))).decode()))
    return Prepared(plan, final, ops, created, [am.access_id for am in removed], dict(desired.cedar))


def commit(store: Store, ops: list[tuple[Any, ...]]) -> None:
    """The store writes of a prepared change, in one transaction (run it in one thread)."""
    with store.batch():
        for name, *args in ops:
            getattr(store, name)(*args)


def install(service: Service, prepared: Prepared) -> None:
    """Serves the final engine (after the commit) and forgets the tokens of deleted auth methods. The author
    policies are also handed to the service (``_author_policies``), which puts them back into every engine it
    rebuilds from the store."""
    service._author_policies = dict(prepared.cedar)
    service.engine = prepared.engine
    for access_id in prepared.removed_access_ids:
        for _ in range(10):  # another thread may be adding a token right now: retry the sweep
            try:
                service.tokens.drop_access_id(access_id)
                break
            except RuntimeError:  # pragma: no cover - "dictionary changed size during iteration"
                continue


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
            caps = {"add": [CREATE], "remove": [DELETE], "change": [DELETE, CREATE, UPDATE]}[c.action]
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


def check_decisions(service: Service, session: Session, prepared: Prepared) -> None:
    """The caller may make every change of the plan, as the single commands would require, and grants
    nothing beyond its own ceiling; author Cedar and STS URLs are a full admin's."""
    before, after = service.engine.model, prepared.engine.model
    need = required_decisions(prepared.plan, before, after)
    decisions = service.engine.decide_batch(session.identity, need)
    for (cap, path, rt), decision in zip(need, decisions, strict=True):
        if not decision.allowed:
            service.metrics.denied.inc()
            raise permission_denied(str(cap), path, str(rt))
    if any(c.kind == "cedar" for c in prepared.plan.changes):
        service.require_full_admin(session, "changing author Cedar policies")
    for name, am in after.auth_methods.items():
        old = before.auth_methods.get(name)
        if old is not None and old.sts_url != am.sts_url:
            service.require_full_admin(session, f"changing the sts-url of {name}")
    service.within_ceiling(session, model_grants(before, after))


def check_sts_urls(service: Service, prepared: Prepared) -> None:
    """Every auth method of the final model points at an STS URL this server trusts."""
    for am in prepared.engine.model.auth_methods.values():
        try:
            service.sts_urls.check(am.sts_url)
        except ModelError as exc:
            raise ModelError("auth-methods", f"{am.name}: {exc.message}") from None


def answer(prepared: Prepared, *, applied: bool, dry_run: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"plan": prepared.plan.to_dict(), "applied": applied, "dry-run": dry_run}
    if applied:
        out["created"] = dict(prepared.created)
    return out


async def apply_state(service: Service, desired: ModelState, *, session: Session, dry_run: bool) -> dict[str, Any]:
    """``apply-model``: plan, check the caller's decisions, then (unless ``dry_run``) apply it all or nothing.
    The caller needs ``list`` on everything first: a plan (and a refusal) names objects of the whole model."""
    require_list_everything(service, session)
    async with service._lock:
        stored = await run_in_threadpool(stored_author_policies, service.store)
        engine = service.engine
        prepared = await run_in_threadpool(prepare, engine, loaded_author_policies(engine, stored), stored, desired)
        check_sts_urls(service, prepared)
        check_decisions(service, session, prepared)
        if dry_run or not (prepared.plan or prepared.ops):
            return answer(prepared, applied=False, dry_run=dry_run)
        if prepared.ops:
            await run_in_threadpool(commit, service.store, prepared.ops)
        install(service, prepared)
    summary = prepared.plan.summary()
    service.audited(session, "apply-model", **summary, created=sorted(prepared.created))
    return answer(prepared, applied=True, dry_run=False)


def apply_state_sync(service: Service, desired: ModelState) -> Prepared:
    """The same without a caller to authorize, from a thread that already excludes every other write (the
    rules-directory watcher): the files are the source of truth."""
    stored = stored_author_policies(service.store)
    engine = service.engine
    prepared = prepare(engine, loaded_author_policies(engine, stored), stored, desired)
    check_sts_urls(service, prepared)
    if prepared.ops:
        commit(service.store, prepared.ops)
    if prepared.plan or prepared.ops:
        install(service, prepared)
    return prepared


# --- handlers ------------------------------------------------------------------------------------------


def require_list_everything(service: Service, session: Session) -> None:
    """``list`` on every role and every auth method, as ``export-policies`` requires."""
    model = service.engine.model
    for names, rule_type in ((sorted(model.roles), ROLE), (sorted(model.auth_methods), AM)):
        if len(service.allowed_paths(session, LIST, names, rule_type)) != len(names):
            service.metrics.denied.inc()
            raise permission_denied("list", "every object", str(rule_type))


async def export_model(service: Service, session: Session, args: Args) -> dict[str, Any]:
    require_list_everything(service, session)
    engine = service.engine
    stored = await run_in_threadpool(stored_author_policies, service.store)
    return state_to_json(state_from_model(engine.model, loaded_author_policies(engine, stored)))


async def apply_model(service: Service, session: Session, args: Args) -> dict[str, Any]:
    try:
        data = orjson.loads(args["model"])
    except orjson.JSONDecodeError:
        raise bad_request("model: not valid JSON") from None
    desired = state_from_json(data)
    return await apply_state(service, desired, session=session, dry_run=bool(args.get("dry-run")))


def who_can(service: Service, session: Session, args: Args) -> dict[str, Any]:
    require_list_everything(service, session)
    rule_type = args.get("rule-type") or "item-rule"
    return who_can_analysis(service.engine, args["capability"], args["path"], rule_type).to_dict()


def can(service: Service, session: Session, args: Args) -> dict[str, Any]:
    require_list_everything(service, session)
    try:
        data = orjson.loads(args["identity"])
    except orjson.JSONDecodeError:
        raise bad_request("identity: not valid JSON") from None
    engine = service.engine
    identity = resolve_identity(data, engine.model)
    rule_type = args.get("rule-type") or "item-rule"
    return can_decide(engine, identity, args["capability"], args["path"], rule_type, int(time.time()))
