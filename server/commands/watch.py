"""``watch``: a long poll that announces the access model's version, so a service caching decisions (the
SDK's ASGI middleware) drops its cache exactly when a decision may have changed.

A version is an opaque string: this process's random instance id, its engine's version, which moves on every
change of auth methods, roles, associations, rules or author policies, whoever made it (this node, the change
feed, a reload), and how many tokens it ended early (revoked, refused by new bindings, their auth method
deleted). Another node, or this one restarted, answers another version: a watcher then drops its cache (never
trusts it across a lost connection). A token's expiry is no change: see the middleware's ``max_age``.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from .command import Answer, Call, Flag, command

#: This process's part of every version it announces.
INSTANCE = secrets.token_hex(8)
MAX_WAIT = 30
#: How often a waiting call looks at the engine's version (what a change's announcement can be late by).
POLL_SECONDS = 0.02


def model_version(call: Call) -> str:
    return f"{INSTANCE}-{call.service.engine.version}-{call.service.tokens.ended}"


@command(
    "watch",
    "the access model's version; with --version, waits (up to --wait seconds) until it is another",
    Flag("version", help="the version last seen: answer once it changed", max_length=64),
    Flag("wait", "int", default=MAX_WAIT, minimum=0, maximum=MAX_WAIT, help=f"seconds to wait at most ({MAX_WAIT})"),
)
async def watch(call: Call) -> Answer:
    seen, deadline = call.args.get("version"), time.monotonic() + call.args["wait"]
    current = model_version(call)
    while current == seen and time.monotonic() < deadline and not call.service.shutting_down:
        await asyncio.sleep(POLL_SECONDS)
        current = model_version(call)
    return {"version": current, "changed": current != seen}
