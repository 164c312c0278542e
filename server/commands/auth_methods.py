"""Auth methods: create and update (aws_iam, access_key), get, list, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from cedarkey.engine import ACCESS_KEY, ADMIN, AWS_IAM, AuthMethod, Capability, RuleType, errors, new_access_id
from cedarkey.engine.auth_method import MAX_BOUND_VALUES, SETTINGS, settings_from
from cedarkey.engine.delegation import widened_bindings

from ..errors import ApiError, protected
from ..service import Service
from ..tokens import access_key_hash, new_access_key
from .command import NAME, Answer, Call, Flag, Handler, Need, command

READ, CREATE, UPDATE, DELETE, LIST = (Capability(c) for c in ("read", "create", "update", "delete", "list"))
AM = RuleType.AUTH_METHOD

ACCOUNTS = "bound-aws-account-id"
#: The settings of the break-glass auth method that stay as they are.
_LOCKING = frozenset(("access_expires", "bound_ips"))
_FLAGS = {
    s.flag: Flag(
        s.flag,
        s.kind,
        help=s.help,
        pattern=s.pattern,
        what=s.what,
        max_length=s.max_length,
        minimum=s.minimum,
        maximum=s.maximum,
        max_items=MAX_BOUND_VALUES,
        example=[s.example] if s.kind == "list" else s.example,
        min_items=1 if s.flag == ACCOUNTS else 0,
    )
    for s in SETTINGS
}
AWS_FLAGS = tuple(_FLAGS[s.flag] for s in SETTINGS)
#: A new aws_iam auth method is bound to an account at least.
NEW_AWS_FLAGS = tuple(replace(f, required=True) if f.name == ACCOUNTS else f for f in AWS_FLAGS)
COMMON_FLAGS = tuple(_FLAGS[s.flag] for s in SETTINGS if not s.aws_only)


def _of_type(handler: Callable[[Call, Any], Awaitable[Answer]], am_type: str | None) -> Handler:
    """``handler`` for the commands of one auth method type (None: any type)."""

    async def run(call: Call) -> Answer:
        return await handler(call, am_type)

    return run


async def _create(call: Call, am_type: str) -> Answer:
    service, args, name = call.service, call.args, call.args["name"]
    am = AuthMethod(name=name, access_id=new_access_id(), type=am_type, **settings_from(args))  # type: ignore[arg-type]
    service.sts_urls.check(am.sts_url)
    key = new_access_key() if am_type == ACCESS_KEY else None
    key_hash = access_key_hash(key) if key else None

    def check() -> None:
        if name in service.engine.model.auth_methods:
            raise errors.auth_method_exists(name)

    await service.write(
        check,
        lambda: service.store.add_auth_method(am, key_hash),
        lambda: service.engine.add_auth_method(am),
        service.event(call.caller, "create-auth-method", name=name, type=am_type, new_access_id=am.access_id),
    )
    out: Answer = {"name": name, "access-id": am.access_id}
    if key:
        out["access-key"] = key
    return _with_warning(out, am)


async def _update(call: Call, am_type: str | None) -> Answer:
    """Changes the auth method ``name`` (of ``am_type`` when given: its own flags only fit that type)."""
    service, name, session = call.service, call.args["name"], call.caller
    if am_type is not None and service.engine.model.auth_method(name).type != am_type:
        raise ApiError(404, "NotFound", f"name: {name} is not an {am_type} auth method")
    fields = settings_from(call.args)
    if name == ADMIN and set(fields) & _LOCKING:  # either could end every administrator's login for good
        raise protected(f"{ADMIN} is the break-glass auth method: its access-expires and bound-ips stay as they are")
    am = service.engine.model.auth_method(name)

    def check() -> None:
        nonlocal am
        current = service.engine.model.auth_method(name)
        am = replace(current, **fields)  # the fields left out keep their value as of now
        if am.sts_url != current.sts_url:  # what its logins trust: never an ordinary field
            service.require_full_admin(session, "changing an auth method's sts-url")
            service.sts_urls.check(am.sts_url)
        if widened_bindings(current, am):
            service.require(session, CREATE, name, AM)

    await service.write(
        check,
        lambda: service.store.update_auth_method(am),
        lambda: _updated(service, am),
        service.event(session, "update-auth-method", name=name),
    )
    return _with_warning({"name": name, "access-id": am.access_id}, am)


def _updated(service: Service, am: AuthMethod) -> None:
    """The engine serves ``am`` from now on, and the sessions its bindings now refuse end."""
    service.engine.update_auth_method(am)
    service.state.end_refused_sessions(am.access_id)


for _name, _summary, _type, _flags in (
    ("create-auth-method-aws-iam", "create an AWS IAM auth method", AWS_IAM, NEW_AWS_FLAGS),
    ("create-auth-method", "create an access-key auth method; its key is shown once", ACCESS_KEY, COMMON_FLAGS),
):
    command(_name, _summary, NAME, *_flags, needs=(Need((CREATE,), AM),))(_of_type(_create, _type))


for _name, _summary, _type, _flags in (
    ("update-auth-method-aws-iam", "change an AWS IAM auth method", AWS_IAM, AWS_FLAGS),
    ("update-auth-method", "change the settings every auth method has", None, COMMON_FLAGS),
):
    command(
        _name,
        f"{_summary}; flags given replace, flags left out keep their value",
        NAME,
        *_flags,
        needs=(Need((UPDATE,), AM),),
    )(_of_type(_update, _type))


@command("get-auth-method", "show an auth method", NAME, needs=(Need((READ,), AM),))
def get_auth_method(call: Call) -> Answer:
    am = call.service.engine.model.auth_method(call.args["name"])
    return _with_warning(am.to_dict(), am)


@command("list-auth-methods", "auth methods the caller may list")
def list_auth_methods(call: Call) -> Answer:
    service = call.service
    ams = service.engine.model.auth_methods
    names = service.allowed_paths(call.caller, LIST, sorted(ams), AM)
    return {"auth-methods": [ams[n].to_dict() for n in names]}


@command(
    "delete-auth-method",
    "delete an auth method, its associations and its tokens",
    NAME,
    needs=(Need((DELETE,), AM),),
)
async def delete_auth_method(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    am = service.engine.model.auth_method(name)
    if name == ADMIN:
        raise protected(f"{ADMIN} is the break-glass auth method: it cannot be deleted")

    def apply() -> None:
        service.engine.delete_auth_method(name)
        service.tokens.drop_access_id(am.access_id)

    await service.write(
        lambda: service.engine.model.auth_method(name),
        lambda: service.store.delete_auth_method(name),
        apply,
        service.event(call.caller, "delete-auth-method", name=name),
    )
    return {"name": name, "deleted": True}


def _with_warning(out: Answer, am: AuthMethod) -> Answer:
    warning = am.binding_warning()
    if warning:
        out["warning"] = warning
    return out
