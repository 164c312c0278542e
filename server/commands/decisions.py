"""Decisions for other services (``authorize``, ``explain``), tokens (``revoke-token``) and the compiled policies
(``export-policies``). A service may ask about another caller with ``subject-token``: ``read`` on that caller's
auth method to ask, ``update`` to end its session.
"""

from __future__ import annotations

import time

from cedarkey.engine import Capability, ModelError, RuleType, parse_capability
from starlette.concurrency import run_in_threadpool

from ..errors import bad_request
from ..service import caller_name
from ..tokens import Session, token_hash
from .command import MAX_REQUESTS, RULE_TYPE, SUBJECT, Answer, Call, Flag, Need, command

READ, UPDATE = Capability.READ, Capability.UPDATE
AM = RuleType.AUTH_METHOD


def subject(call: Call) -> Session:
    """The session asked about: the caller's own, or ``subject-token``'s (BadRequest when it is not live)."""
    token = call.args.get("subject-token")
    if token is None:
        return call.caller
    found = call.service.tokens.check(token, time.time())
    if found is None:
        raise bad_request("subject-token: not a live token")
    if found.identity.access_id not in call.service.engine.model.by_access_id:
        raise bad_request("subject-token: its auth method is gone")
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
def authorize(call: Call) -> Answer:
    service, asked = call.service, subject(call)
    keys = [(r.get("capability"), r.get("path"), r.get("rule-type", "item-rule")) for r in call.args["requests"]]
    try:
        decisions = service.engine.decide_batch(asked.identity, keys)
    except ModelError as exc:
        field = exc.field if exc.field.startswith("requests[") else f"requests[0].{exc.field}"
        raise bad_request(f"{field}: {exc.message}") from None
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
    Flag("path", required=True),
    Flag("capability", required=True),
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
    await run_in_threadpool(service.store.revoke_token, digest)
    service.tokens.revoke(digest)
    service.audited(call.caller, "revoke-token", own=target == call.token)
    return {"revoked": True}


@command(
    "export-policies",
    "the compiled Cedar policy set (needs list on every role and auth method)",
    reads_everything=True,
)
def export_policies(call: Call) -> Answer:
    return {"cedar": call.service.engine.export_cedar()}
