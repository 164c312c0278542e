"""Static secrets: create, read the value, update it, delete, describe (never the value), list.

A value is stored only as ciphertext bound to its item's id, name and version (``cedarkey.server.secret_box``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from cedarkey.engine import Capability, RuleType, VersionConflict
from starlette.concurrency import run_in_threadpool

from ..errors import ApiError, bad_request
from ..secret_box import SecretBoxError
from ..store import STATIC_SECRET, StoredItem, new_item_id
from .command import DESCRIPTION, NAME, Answer, Call, Flag, Need, command

log = logging.getLogger("cedarkey.server")

READ, CREATE, UPDATE, DELETE, LIST = (Capability(c) for c in ("read", "create", "update", "delete", "list"))
ITEM = RuleType.ITEM
VALUE = Flag("value", "secret", required=True, help="the secret's value")


@command(
    "create-secret",
    "create a static secret",
    NAME,
    VALUE,
    DESCRIPTION,
    needs=(Need((CREATE,), ITEM),),
)
async def create_secret(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    value = _secret_value(call.args["value"])
    now = time.time()
    item = StoredItem(name, STATIC_SECRET, b"", b"", now, now, 1, call.args.get("description") or "", new_item_id())
    nonce, ciphertext = service.box.encrypt(item, value)
    await service.write_store(
        lambda: service.store.add_item(replace(item, nonce=nonce, ciphertext=ciphertext)),
        service.event(call.caller, "create-secret", name=name),
    )
    return {"name": name, "version": 1}


@command("get-secret-value", "the secret's value", NAME, needs=(Need((READ,), ITEM),))
async def get_secret_value(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    item = await run_in_threadpool(service.store.get_item, name)
    try:
        value = service.box.decrypt(item, item.nonce, item.ciphertext, legacy=service.legacy_items)
    except SecretBoxError:
        log.error("item %s cannot be decrypted: wrong master key or corrupted ciphertext", name)
        raise ApiError(503, "ItemUnreadable", f"{name} cannot be decrypted on this server") from None
    service.audited(call.caller, "get-secret-value", name=name, version=item.version)
    return {"name": name, "value": value, "version": item.version}


@command("update-secret-val", "replace a secret's value", NAME, VALUE, needs=(Need((UPDATE,), ITEM),))
async def update_secret_val(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    value = _secret_value(call.args["value"])
    event = service.event(call.caller, "update-secret-val", name=name)

    def store_next_version() -> StoredItem:
        """The value as the item's next version, encrypted for it; another node writing the same item
        meanwhile makes it try again (VersionConflict once it lost three times in a row)."""
        attempts = 3
        while True:
            current = service.store.get_item(name)
            version = current.version + 1
            nonce, ciphertext = service.box.encrypt(replace(current, version=version), value)
            event.fields["version"] = version  # the record names the version this attempt writes
            try:
                return service.store.update_item(name, ciphertext, nonce, time.time(), version=version)
            except VersionConflict:
                attempts -= 1
                if not attempts:
                    raise

    item = await service.write_store(store_next_version, event)
    return {"name": name, "version": item.version}


@command("delete-item", "delete an item", NAME, needs=(Need((DELETE,), ITEM),))
async def delete_item(call: Call) -> Answer:
    service, name = call.service, call.args["name"]
    await service.write_store(
        lambda: service.store.delete_item(name), service.event(call.caller, "delete-item", name=name)
    )
    return {"name": name, "deleted": True}


@command("describe-item", "an item's metadata (never its value)", NAME, needs=(Need((READ, LIST), ITEM),))
async def describe_item(call: Call) -> Answer:
    return _item_dict(await run_in_threadpool(call.service.store.get_item, call.args["name"]))


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
