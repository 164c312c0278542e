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
from typing import TYPE_CHECKING, Any

import orjson
from cedarkey.engine import (
    Capability,
    ModelError,
    RuleType,
)
from cedarkey.engine.delegation import model_grants
from cedarkey.policies import (
    ModelState,
    resolve_identity,
    state_from_json,
    state_from_model,
    state_to_json,
)
from cedarkey.policies import can as can_decide
from cedarkey.policies import who_can as who_can_analysis
from cedarkey.policies.apply import Prepared, loaded_author_policies, prepare, required_decisions
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


def commit(store: Store, ops: list[tuple[Any, ...]]) -> None:
    """The store writes of a prepared change, in one transaction (run it in one thread)."""
    with store.batch():
        for name, *args in ops:
            if name == "set_author_policies":
                store.set_meta(AUTHOR_POLICIES_META, orjson.dumps(args[0]).decode())
            else:
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
