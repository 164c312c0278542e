"""Making the served model a desired one in one step (``apply-model``, and the policy-files watcher).

1. under the state's lock, ``cedarkey.policies.apply.prepare`` plans against the model in memory (what every
   write checks against) and builds the *final* engine, validated;
2. the caller's decisions and ceiling are checked (``apply-model``; the files need none: whoever controls the
   directory controls the model), and every STS URL must be one this server trusts;
3. the store is changed in ONE transaction (``with store.batch(): ...``): all of the plan or none of it,
   and the change's audit event with it;
4. only then the final engine is swapped in, and the tokens of deleted auth methods are dropped.

The authors' Cedar files are kept in the store's meta table (:data:`AUTHOR_POLICIES_META`): every engine the
service rebuilds from the store gets them back, and other nodes learn of a change through the change feed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import orjson
from cedarkey.engine import ModelError
from cedarkey.engine.delegation import model_grants
from cedarkey.policies import ModelState
from cedarkey.policies.apply import Prepared, loaded_author_policies, prepare, required_decisions
from starlette.concurrency import run_in_threadpool

from .store import AuditEvent, Store

if TYPE_CHECKING:
    from .service import Service
    from .tokens import Session

AUTHOR_POLICIES_META = "author-policies"


def stored_author_policies(store: Store) -> dict[str, str]:
    """The authors' Cedar files last applied, ``{file name: text}`` (empty when none)."""
    raw = store.get_meta(AUTHOR_POLICIES_META)
    if not raw:
        return {}
    value = orjson.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


async def apply_desired(
    service: Service,
    desired: ModelState,
    *,
    session: Session | None,
    event: Callable[[Prepared], AuditEvent | None],
    dry_run: bool = False,
) -> Prepared:
    """Plans ``desired`` and, unless ``dry_run`` or it changes nothing, applies it all or nothing, with the
    audit event ``event`` makes of the plan (None: none). With a ``session``, its caller must be allowed every
    change (ModelError or a 403 ApiError: nothing changed)."""
    state = service.state
    async with state.lock:
        stored = await run_in_threadpool(stored_author_policies, service.store)
        engine = state.engine
        prepared = await run_in_threadpool(prepare, engine, loaded_author_policies(engine, stored), stored, desired)
        _check_sts_urls(service, prepared)
        if session is not None:
            _check_decisions(service, session, prepared)
        if dry_run or not (prepared.plan or prepared.ops):
            return prepared
        audit = event(prepared)
        if prepared.ops:
            await run_in_threadpool(_commit, service.store, prepared.ops, audit)
            service.committed()
        if audit is not None:
            service.audit.export(audit)
        before = engine.model.auth_methods
        state.swap(prepared.engine, author_policies=prepared.cedar)
        for access_id in prepared.removed_access_ids:
            state.tokens.drop_access_id(access_id)
        for name, am in prepared.engine.model.auth_methods.items():
            if name in before and before[name] != am:
                state.end_refused_sessions(am.access_id)
    return prepared


def _commit(store: Store, ops: list[tuple[Any, ...]], audit: AuditEvent | None) -> None:
    """The store writes of a prepared change and its audit event, in one transaction (run in one thread)."""
    with store.audited(audit) if audit is not None else nullcontext(), store.batch():
        for name, *args in ops:
            if name == "set_author_policies":
                store.set_meta(AUTHOR_POLICIES_META, orjson.dumps(args[0]).decode())
            else:
                getattr(store, name)(*args)


def _check_decisions(service: Service, session: Session, prepared: Prepared) -> None:
    """The caller may make every change of the plan, as the single commands would require, and grants
    nothing beyond its own ceiling; author Cedar and STS URLs are a full admin's."""
    before, after = service.engine.model, prepared.engine.model
    for capability, path, rule_type in required_decisions(prepared.plan, before, after):
        service.require(session, capability, path, rule_type)
    if any(c.kind == "cedar" for c in prepared.plan.changes):
        service.require_full_admin(session, "changing author Cedar policies")
    for name, am in after.auth_methods.items():
        old = before.auth_methods.get(name)
        if old is not None and old.sts_url != am.sts_url:
            service.require_full_admin(session, f"changing the sts-url of {name}")
    service.within_ceiling(session, model_grants(before, after))


def _check_sts_urls(service: Service, prepared: Prepared) -> None:
    """Every auth method of the final model points at an STS URL this server trusts."""
    for am in prepared.engine.model.auth_methods.values():
        try:
            service.sts_urls.check(am.sts_url)
        except ModelError as exc:
            raise ModelError("auth-methods", f"{am.name}: {exc.message}") from None
