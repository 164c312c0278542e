"""Decisions for other services (``authorize``, ``explain``), tokens (``revoke-token``, ``renew-token``,
``lookup-token``) and the compiled policies (``export-policies``). A service may ask about another caller with
``subject-token``: ``read`` on that caller's auth method to ask, ``update`` to end or renew its session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import replace

from cedarkey.engine import Capability, Engine, Identity, ModelError, RuleType, parse_capability
from cedarkey.engine.decision import Decision
from starlette.concurrency import run_in_threadpool

from ..errors import ApiError, bad_request
from ..service import caller_name
from ..tokens import Session, token_hash
from .command import ASKED_CAPABILITY, ASKED_PATH, MAX_REQUESTS, RULE_TYPE, SUBJECT, Answer, Call, Flag, Need, command

READ, UPDATE = Capability.READ, Capability.UPDATE
#: Requests of a batch decided between two turns of the event loop; a batch decided while the model changes
#: this many times is decided in one go.
SLICE = 100
SLICE_ATTEMPTS = 3
Key = tuple[object, object, object]
AM = RuleType.AUTH_METHOD


def subject(call: Call) -> Session:
    """The session asked about: the caller's own, or ``subject-token``'s (BadRequest when it is not live)."""
    token = call.args.get("subject-token")
    if token is None:
        return call.caller
    found = call.service.tokens.check(token, time.time())
    if found is None:
        raise ApiError(404, "NotFound", "subject-token: not a live token")
    if found.identity.access_id not in call.service.engine.model.by_access_id:
        raise ApiError(404, "NotFound", "subject-token: its auth method is gone")
    return found


def _subject_auth_method(call: Call) -> str | None:
    if call.args.get("subject-token") is None:
        return None
    return call.service.engine.model.by_access_id[subject(call).identity.access_id].name


ASKING = Need((READ,), AM, of="subject-token", path=_subject_auth_method)


@command(
    "authorize",
    "decisions for other services: may the caller (or --subject-token) do these?",
    Flag("requests", "requests", required=True, help=f"1 to {MAX_REQUESTS} {{path, capability, rule-type}}"),
    SUBJECT,
    needs=(ASKING,),
)
def authorize(call: Call) -> Answer | Awaitable[Answer]:
    asked = subject(call)
    keys = [(r.get("capability"), r.get("path"), r.get("rule-type", "item-rule")) for r in call.args["requests"]]
    if len(keys) <= SLICE:
        return _answer(call, asked, keys, _decided(call.service.engine, asked.identity, keys))
    return _authorize_in_slices(call, asked, keys)


async def _authorize_in_slices(call: Call, asked: Session, keys: list[Key]) -> Answer:
    """A large batch, a slice at a time with the event loop free in between (other requests, /health, are
    not kept waiting behind it), every slice decided by one model: if the model changed meanwhile, again."""
    engine = call.service.engine
    for _ in range(SLICE_ATTEMPTS):
        version, decisions = engine.version, []
        for start in range(0, len(keys), SLICE):
            decisions += _decided(engine, asked.identity, keys[start : start + SLICE], start)
            await asyncio.sleep(0)
        if engine.version == version:
            return _answer(call, asked, keys, decisions)
    return _answer(call, asked, keys, _decided(engine, asked.identity, keys))  # under churn: in one go


def _decided(engine: Engine, identity: Identity, keys: list[Key], offset: int = 0) -> list[Decision]:
    try:
        return engine.decide_batch(identity, keys)
    except ModelError as exc:  # its field names the request within ``keys``, or is bare for a single one
        if exc.field.startswith("requests["):
            index, _, rest = exc.field[len("requests[") :].partition("]")
            field = f"requests[{int(index) + offset}]{rest}"
        else:
            field = f"requests[{offset}].{exc.field}"
        raise bad_request(f"{field}: {exc.message}") from None


def _answer(call: Call, asked: Session, keys: list[Key], decisions: list[Decision]) -> Answer:
    service = call.service
    out = []
    allowed = 0
    for (capability, path, rule_type), d in zip(keys, decisions, strict=True):
        allowed += d.allowed
        out.append(
            {
                "path": path if path[0] == "/" else "/" + path,  # valid (decided): canonical but for the /
                "capability": capability,
                "rule-type": rule_type,
                "decision": "allow" if d.allowed else "deny",
                "reasons": d.reasons,
            }
        )
    if allowed:
        service.metrics.allowed.inc(allowed)
    if len(out) - allowed:
        service.metrics.denied.inc(len(out) - allowed)
    if service.settings.audit_decisions:
        service.audited(call.caller, "authorize", subject=caller_name(asked.identity), count=len(out), allowed=allowed)
    return {"decisions": out}


@command(
    "explain",
    "a decision with the roles and policies behind it",
    ASKED_PATH,
    ASKED_CAPABILITY,
    RULE_TYPE,
    SUBJECT,
    needs=(ASKING,),
)
def explain(call: Call) -> Answer:
    capability = parse_capability(call.args["capability"])
    return call.service.engine.explain(subject(call).identity, capability, call.args["path"], call.args["rule-type"])


@command(
    "revoke-token",
    "revoke the caller's token, or --subject-token",
    SUBJECT,
    # Ending another's session changes its auth method's logins.
    needs=(Need((UPDATE,), AM, of="subject-token", path=_subject_auth_method),),
)
async def revoke_token(call: Call) -> Answer:
    service = call.service
    target = call.args.get("subject-token") or call.token
    assert isinstance(target, str)
    digest = token_hash(target)
    event = service.event(call.caller, "revoke-token", own=target == call.token)
    await run_in_threadpool(service.audited_call, event, service.store.revoke_token, digest)
    service.tokens.revoke(digest)
    service.audit.export(event)
    return {"revoked": True}


@command(
    "renew-token",
    "extend the caller's live token (or --subject-token) by its auth method's jwt-ttl, up to its max-ttl",
    SUBJECT,
    # Extending another's session changes its auth method's logins, as ending it does.
    needs=(Need((UPDATE,), AM, of="subject-token", path=_subject_auth_method),),
)
async def renew_token(call: Call) -> Answer:
    service, session = call.service, subject(call)
    target = call.args.get("subject-token") or call.token
    assert isinstance(target, str)
    method = service.engine.model.by_access_id.get(session.identity.access_id)
    if method is None:
        raise ApiError(404, "NotFound", "the token's auth method is gone")
    now = time.time()
    expires_at = method.renewed_expiry(session.issued_at, now)
    if expires_at <= session.expires_at:  # at its max TTL already: a renewal never shortens a token
        return {"expires-at": int(session.expires_at), "renewed": False}
    digest = token_hash(target)
    event = service.event(call.caller, "renew-token", own=target == call.token)
    if not await run_in_threadpool(service.audited_call, event, service.store.renew_token, digest, expires_at, now):
        raise ApiError(404, "NotFound", "subject-token: not a live token")  # ended meanwhile
    service.tokens.add(digest, replace(session, expires_at=expires_at))
    service.audit.export(event)
    return {"expires-at": int(expires_at), "renewed": True}


@command("lookup-token", "the caller's own session: identity attributes, auth method, issue and expiry, roles")
def lookup_token(call: Call) -> Answer:
    session, engine = call.caller, call.service.engine
    identity = session.identity
    method = engine.model.by_access_id.get(identity.access_id)
    return {
        "identity": identity.attributes(),
        "auth-method": method.name if method is not None else None,
        "issued-at": int(session.issued_at),
        "expires-at": int(session.expires_at),
        "roles": engine.roles_of(identity.access_id),
    }


@command(
    "export-policies",
    "the compiled Cedar policy set (needs list on every role and auth method)",
    reads_everything=True,
)
def export_policies(call: Call) -> Answer:
    return {"cedar": call.service.engine.export_cedar()}
