"""Logging in: ``auth`` (an access key, or an AWS IAM proof checked by STS) and ``lookup-sts-url``.

Every refused login answers the same 401 ``AuthenticationFailed``; the real reason goes to the audit log and
to the ``cedarkey_login_failures`` metric (see ``cedarkey.server.sts.LoginFailed``). Two limits answer 429
with ``Retry-After`` instead: an address whose refused logins spent its budget (``TooManyRequests``, before
anything is checked: ``cedarkey.server.login_limit``), and a verified caller whose auth method holds its
limit of live tokens (``TooManyTokens``: the sessions already issued keep working).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import TYPE_CHECKING, Any

from cedarkey.engine import ACCESS_KEY, AWS_IAM, AuthMethod, Identity, NotFound, grammar
from cedarkey.engine.errors import clip, shown
from starlette.concurrency import run_in_threadpool

from ..errors import ApiError, AuthenticationFailed, too_many
from ..proofs import claimed_proof, start_login
from ..service import caller_name
from ..store import AuditEvent, StoredToken
from ..sts import MAX_CLOUD_ID, LoginFailed
from ..tokens import Session, access_key_hash, new_token, token_hash
from .command import Answer, Args, Call, Flag, command

#: Longer than any key new_access_key makes; a longer one cannot match.
MAX_ACCESS_KEY = 256
ACCESS_ID = Flag(
    "access-id",
    required=True,
    help="the auth method's access id (p-...)",
    pattern=grammar.ACCESS_ID,
    what="an access id (p-...)",
    example="p-0123456789abcdef",
)

if TYPE_CHECKING:
    from ..service import Service


@command(
    "auth",
    "log in; answers a token",
    Flag("access-type", required=True, help="access_key | aws_iam", choices=(ACCESS_KEY, AWS_IAM)),
    ACCESS_ID,
    Flag("access-key", "secret", help="with access_key", max_length=MAX_ACCESS_KEY),
    Flag("cloud-id", "secret", help="with aws_iam: the signed GetCallerIdentity proof", max_length=MAX_CLOUD_ID),
    authenticated=False,
)
async def auth(call: Call) -> Answer:
    service, args, source_ip = call.service, call.args, call.source_ip
    access_type, access_id = args["access-type"], args["access-id"]
    start_login()
    try:
        identity = await _verified(service, access_type, access_id, args, source_ip)
        am = service.engine.model.by_access_id.get(identity.access_id)
        if am is None:
            raise LoginFailed("unknown_access_id", "the auth method was deleted during the login")
        now = time.time()
        _refuse_beyond_token_cap(service, am, access_type, source_ip, now)
        token = new_token()
        stored = StoredToken(
            token_hash(token), identity.access_id, identity.attributes(), now, am.renewed_expiry(now, now)
        )
        event = service.audit.event(
            "login",
            outcome="success",
            access_id=access_id,
            access_type=access_type,
            caller=caller_name(identity),
            source_ip=source_ip,
        )
        try:
            if not await _add_token(service, stored, claimed_proof(now), event):
                raise LoginFailed("replay", "this proof was already used (on another node)")
        except NotFound:
            raise LoginFailed("unknown_access_id", "the auth method was deleted during the login") from None
    except LoginFailed as exc:
        _failed(service, access_id, access_type, exc.reason, str(exc), source_ip)
        raise AuthenticationFailed() from None
    service.audit.export(event)
    service.tokens.add(stored.token_hash, Session(identity, now, stored.expires_at))
    service.metrics.logins.labels(access_type).inc()
    return {"token": token, "expires-at": int(stored.expires_at)}


@command(
    "lookup-sts-url",
    "the STS URL an aws_iam auth method's login proof must be signed for (nothing else)",
    ACCESS_ID,
    authenticated=False,
)
def lookup_sts_url(call: Call) -> Answer:
    am = call.service.engine.model.by_access_id.get(call.args["access-id"])
    if am is None or am.type != AWS_IAM:
        raise ApiError(404, "NotFound", "no aws_iam auth method has this access id")
    return {"sts-url": am.sts_url}


def refuse_login_request(service: Service, data: dict[str, Any], problem: str, source_ip: str | None) -> ApiError:
    """The answer to a ``/auth`` request refused before any login check (not JSON, too large, a missing,
    unknown or ill-typed flag): the same 401 as every refused login, the problem in the audit log."""
    _failed(service, data.get("access-id"), data.get("access-type"), "bad_request", problem, source_ip)
    return AuthenticationFailed()


def _refuse_beyond_token_cap(service: Service, am: AuthMethod, access_type: str, ip: str | None, now: float) -> None:
    """429 TooManyTokens when the auth method holds its limit of live tokens: the sessions already issued keep
    working, and the refusal counts against the caller's address as every refused login does."""
    limit = service.settings.max_tokens_per_auth_method
    wait = service.tokens.wait_for_room(am.access_id, limit, now)
    if wait is None:
        return
    detail = f"the auth method holds {limit} live tokens, its limit"
    _failed(service, am.access_id, access_type, "token_limit", detail, ip)
    service.login_refused(ip)
    raise too_many("TooManyTokens", f"{detail}; the soonest expires in {max(1, math.ceil(wait))} s", wait)


async def _add_token(
    service: Service, stored: StoredToken, proof: tuple[bytes, float, float] | None, event: AuditEvent
) -> bool:
    """The token write (and proof claim) of a login, with its audit ``event``: on the event loop when the store
    can do it without waiting (SQLite, uncontended: a third of a thread hop), else in a worker thread."""
    with service.store.audited(event):  # no await inside: no other coroutine runs in the block
        written = service.store.add_token_now(stored, proof)
    if written is None:
        written = await run_in_threadpool(service.audited_call, event, service.store.add_token, stored, proof)
    return written


async def _verified(service: Service, access_type: str, access_id: str, args: Args, source_ip: str | None) -> Identity:
    """Who the login proves the caller is, once its auth method's bindings accept it."""
    am = service.engine.model.by_access_id.get(access_id)
    if am is None:
        raise LoginFailed("unknown_access_id", "no auth method has this access id")
    if access_type != am.type:
        raise LoginFailed("wrong_access_type", f"auth method is {am.type}, login used {access_type}")
    if am.type == ACCESS_KEY:
        key = args.get("access-key")
        if not isinstance(key, str):
            raise LoginFailed("missing_access_key", "no access-key given")
        expected = await run_in_threadpool(service.store.access_key_hash, access_id)
        given = access_key_hash(key)
        if expected is None or not hmac.compare_digest(given, expected):
            raise LoginFailed("bad_access_key", "access key does not match")
        identity = Identity(access_id=access_id, auth_type=ACCESS_KEY, principal_type="access-key", source_ip=source_ip)
    else:
        cloud_id = args.get("cloud-id")
        if not isinstance(cloud_id, str):
            raise LoginFailed("missing_cloud_id", "no cloud-id given")
        if not service.sts_urls.allows(am.sts_url or ""):
            raise LoginFailed("sts_url_not_allowed", f"the auth method's STS URL {am.sts_url} is not allowed here")
        attributes = await service.verifier.verify(cloud_id, am.sts_url or "")
        identity = Identity(access_id=access_id, auth_type=AWS_IAM, source_ip=source_ip, **attributes)
    decision = service.engine.authenticate(identity, int(time.time()))
    if not decision.allowed:
        failed = ", ".join(r.rsplit("/", 1)[-1] for r in decision.reasons) or "no permit"
        raise LoginFailed(
            "binding_mismatch", f"auth method refused the identity: {failed}; identity {caller_name(identity)}"
        )
    return identity


def _failed(service: Service, access_id: object, access_type: object, reason: str, detail: str, ip: str | None) -> None:
    service.metrics.login_failures.labels(reason).inc()
    if service.refusal_counted(ip, reason):  # a limited address: one line per interval counts its refusals
        return
    service.audit.write(
        "login",
        outcome="failure",
        access_id=_logged_access_id(service, access_id),
        access_type=access_type if access_type in (ACCESS_KEY, AWS_IAM) else _short(access_type),
        reason=reason,
        detail=clip(detail, 300),
        source_ip=ip,
    )


def _logged_access_id(service: Service, value: object) -> str | None:
    """An access id as a refused login's record shows it: as sent when an auth method has it, else only a
    short hash (it may be an access key sent in the wrong field, which a log must never hold)."""
    if not isinstance(value, str):
        return None
    if value in service.engine.model.by_access_id:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _short(value: object) -> str | None:
    """A client-sent string for the audit log, quoted and cut short (None when it is not a string)."""
    return shown(value, 40) if isinstance(value, str) else None
