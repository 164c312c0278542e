"""Static secrets: create, read the value (of one version, or of several secrets), update it (keeping the
previous version or not, only if still at a version), roll back, delete (an item or one version), describe
(its versions, never a value), list.

A value is stored only as ciphertext bound to its item's id, name and version (``cedarkey.server.secret_box``):
every version on its own. An update always makes a new version number, so check-and-set (``cas``) can tell two
writers apart; without ``keep-prev-version`` the value it replaces is gone (as Akeyless overwrites the latest),
with it that value stays readable by its number, up to the item's ``max-versions`` (the oldest goes first).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from cedarkey.engine import Capability, RuleType, VersionConflict, errors
from starlette.concurrency import run_in_threadpool

from ..errors import ApiError, bad_request
from ..secret_box import SecretBoxError
from ..service import caller_name
from ..store import DEFAULT_MAX_VERSIONS, MAX_VERSIONS, STATIC_SECRET, StoredItem, new_item_id
from .command import DESCRIPTION, NAME, Answer, Call, Flag, Need, command

log = logging.getLogger("cedarkey.server")

READ, CREATE, UPDATE, DELETE, LIST = (Capability(c) for c in ("read", "create", "update", "delete", "list"))
ITEM = RuleType.ITEM
#: A version number: JSON's exact integers are bounded; no item gets near it.
MAX_VERSION_NUMBER = 2**53
VALUE = Flag("value", "secret", required=True, help="the secret's value")
NAMES = Flag(
    "name",
    "names",
    required=True,
    help="object path, e.g. /dev/db-password, or a list of them (then the answer is values by name)",
    path="name",
)
VERSION = Flag("version", "int", minimum=1, maximum=MAX_VERSION_NUMBER, help="a version number (default: the latest)")
MAX_VERSIONS_FLAG = Flag(
    "max-versions",
    "int",
    minimum=1,
    maximum=MAX_VERSIONS,
    help=f"versions kept, the latest included (create's default {DEFAULT_MAX_VERSIONS}; update: unchanged)",
)
KEEP_PREV = Flag(
    "keep-prev-version",
    default="false",
    choices=("true", "false"),
    help="true: the value replaced stays readable as an earlier version",
)
CAS = Flag(
    "cas",
    "int",
    minimum=1,
    maximum=MAX_VERSION_NUMBER,
    help="only if the latest version is this one; else 409 VersionConflict naming the current one",
)
#: Tries of a write that lost a race with another node writing the same item, before a VersionConflict.
ATTEMPTS = 3


@command(
    "create-secret",
    "create a static secret",
    NAME,
    VALUE,
    DESCRIPTION,
    MAX_VERSIONS_FLAG,
    needs=(Need((CREATE,), ITEM),),
)
async def create_secret(call: Call) -> Answer:
    service, args, name = call.service, call.args, call.args["name"]
    value = _secret_value(args["value"])
    now = time.time()
    item = StoredItem(
        name,
        STATIC_SECRET,
        b"",
        b"",
        now,
        now,
        1,
        args.get("description") or "",
        new_item_id(),
        args.get("max-versions") or DEFAULT_MAX_VERSIONS,
        caller_name(call.caller.identity),
    )
    nonce, ciphertext = service.box.encrypt(item, value)
    await service.write_store(
        lambda: service.store.add_item(replace(item, nonce=nonce, ciphertext=ciphertext)),
        service.event(call.caller, "create-secret", name=name),
    )
    return {"name": name, "version": 1}


@command(
    "get-secret-value",
    "the secret's value (or the values of several secrets, by name)",
    NAMES,
    VERSION,
    needs=(Need((READ,), ITEM),),
)
async def get_secret_value(call: Call) -> Answer:
    names, version = call.args["name"], call.args.get("version")
    if isinstance(names, list):  # each at ``version`` when given: a name without it is a 404 naming it
        return {"values": {name: (await _read(call, name, version))[0] for name in names}}
    value, item = await _read(call, names, version)
    return {"name": names, "value": value, "version": item.version}


async def _read(call: Call, name: str, version: int | None) -> tuple[str, StoredItem]:
    """The value of ``name`` (at ``version``, else its latest), audited."""
    store = call.service.store
    if version is None:
        item = await run_in_threadpool(store.get_item, name)
    else:
        item = await run_in_threadpool(store.get_item_version, name, version)
    value = _open(call, item)
    call.service.audited(call.caller, "get-secret-value", name=name, version=item.version)
    return value, item


@command(
    "update-secret-val",
    "replace a secret's value: a new version",
    NAME,
    VALUE,
    KEEP_PREV,
    CAS,
    MAX_VERSIONS_FLAG,
    needs=(Need((UPDATE,), ITEM),),
)
async def update_secret_val(call: Call) -> Answer:
    service, args, name = call.service, call.args, call.args["name"]
    value = _secret_value(args["value"])
    event = service.event(call.caller, "update-secret-val", name=name)
    item = await service.write_store(
        lambda: _store_next_version(call, name, value, args.get("cas"), args["keep-prev-version"] == "true", event),
        event,
    )
    return {"name": name, "version": item.version}


@command(
    "rollback-secret",
    "make a version's value the new latest version (the latest's own: a copy of it)",
    NAME,
    replace(VERSION, required=True, help="the version whose value becomes the latest"),
    needs=(Need((UPDATE,), ITEM),),
)
async def rollback_secret(call: Call) -> Answer:
    service, name, version = call.service, call.args["name"], call.args["version"]
    earlier = await run_in_threadpool(service.store.get_item_version, name, version)
    value = _open(call, earlier)
    event = service.event(call.caller, "rollback-secret", name=name, from_version=version)
    item = await service.write_store(lambda: _store_next_version(call, name, value, None, True, event), event)
    return {"name": name, "version": item.version, "from-version": version}


def _store_next_version(
    call: Call, name: str, value: str, cas: int | None, keep_previous: bool, event: object
) -> StoredItem:
    """The value as the item's next version, encrypted for it; another node writing the same item meanwhile
    makes it try again (VersionConflict once it lost :data:`ATTEMPTS` times in a row). With ``cas``, only while
    the latest version is that one."""
    service = call.service
    for attempt in range(ATTEMPTS):
        current = service.store.get_item(name)
        if cas is not None and current.version != cas:
            raise errors.item_at(name, current.version, cas)
        version = current.version + 1
        nonce, ciphertext = service.box.encrypt(replace(current, version=version), value)
        event.fields["version"] = version  # type: ignore[attr-defined]  # the record names the version written
        try:
            return service.store.update_item(
                name,
                ciphertext,
                nonce,
                time.time(),
                version=version,
                keep_previous=keep_previous,
                max_versions=call.args.get("max-versions"),
                updated_by=caller_name(call.caller.identity),
            )
        except VersionConflict:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@command(
    "delete-item",
    "delete an item, or one earlier version of it",
    NAME,
    replace(VERSION, help="delete only this earlier version (the latest stays: roll back first)"),
    needs=(Need((DELETE,), ITEM),),
)
async def delete_item(call: Call) -> Answer:
    service, name, version = call.service, call.args["name"], call.args.get("version")
    if version is not None:
        await service.write_store(
            lambda: service.store.delete_item_version(name, version),
            service.event(call.caller, "delete-item", name=name, version=version),
        )
        return {"name": name, "deleted": True, "version": version}
    await service.write_store(
        lambda: service.store.delete_item(name), service.event(call.caller, "delete-item", name=name)
    )
    return {"name": name, "deleted": True}


@command(
    "describe-item",
    "an item's metadata and versions (never a value)",
    NAME,
    needs=(Need((READ, LIST), ITEM),),
)
async def describe_item(call: Call) -> Answer:
    store, name = call.service.store, call.args["name"]
    item = await run_in_threadpool(store.get_item, name)
    kept = await run_in_threadpool(store.item_versions, name)
    versions = [(item.version, item.updated_at, item.updated_by)]
    versions += [(v.version, v.created_at, v.created_by) for v in kept if v.version < item.version]
    return {
        **_item_dict(item),
        "max_versions": item.max_versions,
        "versions": [{"version": n, "created_at": int(at), "created_by": by} for n, at, by in versions],
    }


@command("list-items", "items the caller may list", Flag("path", help="only items under this folder", path="folder"))
async def list_items(call: Call) -> Answer:
    service = call.service
    items = await run_in_threadpool(service.store.list_items)
    folder = call.args.get("path")
    if folder:  # "/dev", "/dev/" and "dev" are the same; "/" is everything
        items = [i for i in items if i.name.startswith(folder)]
    allowed = set(service.allowed_paths(call.caller, LIST, [i.name for i in items], ITEM))
    visible = [_item_dict(i) for i in items if i.name in allowed]
    folders = sorted({i["item_name"].rsplit("/", 1)[0] + "/" for i in visible})
    return {"items": visible, "folders": folders}


def _open(call: Call, item: StoredItem) -> str:
    service = call.service
    try:
        return service.box.decrypt(item, item.nonce, item.ciphertext, legacy=service.legacy_items)
    except SecretBoxError:
        log.error("item %s v%d cannot be decrypted: wrong master key or corrupted ciphertext", item.name, item.version)
        raise ApiError(503, "ItemUnreadable", f"{item.name} cannot be decrypted on this server") from None


def _secret_value(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("value: not valid Unicode text") from None
    return value


def _item_dict(item: StoredItem) -> Answer:
    return {
        "item_name": item.name,
        "item_type": "STATIC_SECRET",
        "description": item.description,
        "version": item.version,
        "created_at": int(item.created_at),
        "updated_at": int(item.updated_at),
    }
