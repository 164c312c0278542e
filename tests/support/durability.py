"""kill -9 rounds: writers against a real ``cedarkey serve``, a SIGKILL at a random moment, a restart, and a
check that every acknowledged write is there with its acknowledged value, that nothing is half-written, that
the database opens cleanly, and that tokens issued before the kill still work.

Used by ``tests/test_durability.py`` (a few rounds) and ``bench/durability.py`` (20 on SQLite, 5 on
PostgreSQL). Each writer owns its names, so its own acknowledgements say what the state must be; a write
whose answer never came (the kill, or a cut database connection) may or may not have happened, and either
outcome is accepted for it, nothing else.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.server import CEDARKEY, start_server

WRITERS = 8
JSON = {"content-type": "application/json"}
_GONE = object()  # an item deleted (or never created)


@dataclass
class Writer:
    """One writer's names and what the server acknowledged of them: an item's value (or _GONE), a role's
    rule capabilities; ``maybe`` holds the other outcome of each write whose answer never came."""

    number: int
    prefix: str
    items: dict[str, Any] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    rules: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    maybe_items: dict[str, set[Any]] = field(default_factory=dict)
    maybe_roles: set[str] = field(default_factory=set)
    maybe_rules: dict[tuple[str, str], list[list[str]]] = field(default_factory=dict)
    acknowledged: int = 0
    error: str | None = None


@dataclass
class RoundResult:
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    audit_missing: int = 0
    #: Writes that were committed but never answered (the kill came between), and of those, the unaudited.
    in_flight: list[str] = field(default_factory=list)
    in_flight_unaudited: int = 0
    integrity: str = "ok"
    #: Writes refused with a status that is no outage (a bug of the server or of the writers).
    errors: list[str] = field(default_factory=list)


def _post(url: str, command: str, token: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/{command}", content=orjson.dumps({**body, "token": token}), headers=JSON, timeout=10)


def _write(url: str, token: str, w: Writer, rng: random.Random, stop: threading.Event) -> None:
    order = ["read", "create", "update", "delete", "list"]
    n = 0
    while not stop.is_set():
        n += 1
        op = rng.choice(("create-secret", "update-secret-val", "set-role-rule", "create-role", "delete-item"))
        # a name whose last write went unanswered has an unknown state: writing it again could be refused
        live = [k for k, v in w.items.items() if v is not _GONE and k not in w.maybe_items]
        rules_role = f"{w.prefix}/rules"
        if op in ("update-secret-val", "delete-item") and not live:
            op = "create-secret"
        name = f"{w.prefix}/r{n}"
        if op == "set-role-rule" and rules_role not in w.roles:  # its role first
            op, name = "create-role", rules_role
        if op == "create-secret":
            name, value = f"{w.prefix}/s{n}", f"v{n}-" + secrets.token_hex(4)
            body: dict[str, Any] = {"name": name, "value": value}
        elif op == "update-secret-val":
            name, value = rng.choice(live), f"u{n}-" + secrets.token_hex(4)
            body = {"name": name, "value": value}
        elif op == "delete-item":
            name, value = rng.choice(live), _GONE
            body = {"name": name}
        elif op == "create-role":
            body = {"name": name}
        else:
            path = f"/p{rng.randrange(20)}/*"
            caps = sorted(rng.sample(order, rng.randint(1, 3)), key=order.index)
            body = {"role-name": rules_role, "path": path, "capability": caps}
        try:
            answer = _post(url, op, token, **body)
        except httpx.HTTPError:  # no answer: the server was killed mid-write; the outcome is unknown
            _unknown(w, op, body)
            return
        if answer.status_code == 503:  # the database went away under it: the outcome is unknown
            _unknown(w, op, body)
            continue
        if answer.status_code == 409 and op == "create-role" and body["name"] in w.maybe_roles:
            answer = _post(url, "get-role", token, name=body["name"])  # the unanswered create had happened
        if answer.status_code != 200:  # a refusal of a well-formed write: the test's failure, reported
            w.error = f"{op}: {answer.status_code} {answer.text[:300]}"
            return
        w.acknowledged += 1
        if op in ("create-secret", "update-secret-val", "delete-item"):
            w.items[body["name"]] = body.get("value", _GONE)
            w.maybe_items.pop(body["name"], None)
        elif op == "create-role":
            w.roles.add(body["name"])
        else:
            w.rules[(rules_role, body["path"])] = body["capability"]
            w.maybe_rules.pop((rules_role, body["path"]), None)


def _unknown(w: Writer, op: str, body: dict[str, Any]) -> None:
    """A write whose answer never came: it may have happened."""
    if op in ("create-secret", "update-secret-val", "delete-item"):
        w.maybe_items.setdefault(body["name"], set()).add(body.get("value", _GONE))
    elif op == "create-role":
        w.maybe_roles.add(body["name"])
    else:
        w.maybe_rules.setdefault((body["role-name"], body["path"]), []).append(body["capability"])


def _check(url: str, token: str, writers: list[Writer], result: RoundResult) -> None:
    for w in writers:
        result.acknowledged += w.acknowledged
        for name, value in w.items.items():
            allowed = {value} | w.maybe_items.get(name, set())
            answer = _post(url, "get-secret-value", token, name=name)
            if answer.status_code == 404:
                got: Any = _GONE
            elif answer.status_code == 200:
                got = answer.json()["value"]
            else:
                result.corrupted.append(f"{name}: {answer.status_code} {answer.text[:200]}")
                continue
            if got != value and got in allowed:  # an unanswered write that happened: it must be audited too
                result.in_flight.append(name)
            if got not in allowed:
                target = result.lost if got is _GONE or value is _GONE else result.corrupted
                target.append(f"{name}: acknowledged {value!r}, found {got!r}")
        for name in w.roles:
            if _post(url, "get-role", token, name=name).status_code != 200:
                result.lost.append(f"role {name}")
        for (role, path), caps in w.rules.items():
            answer = _post(url, "get-role", token, name=role)
            rules = {r["path"]: r["capabilities"] for r in answer.json().get("rules", [])}
            allowed_caps = [caps, *w.maybe_rules.get((role, path), [])]
            allowed_sorted = [sorted(c) for c in allowed_caps]
            if path not in rules:
                result.lost.append(f"rule {role} {path}")
            elif sorted(rules[path]) not in allowed_sorted:
                result.corrupted.append(f"rule {role} {path}: {rules[path]} not one of {allowed_caps}")


def _audited_names(log: Path) -> set[str]:
    text = log.read_text() if log.exists() else ""
    return {orjson.loads(line).get("name") for line in text.splitlines() if line}


def _unaudited(named: set[str], writers: list[Writer]) -> int:
    """Acknowledged writes of items and roles whose name no audit record carries."""
    missing = 0
    for w in writers:
        missing += sum(1 for name in w.items if name not in named)
        missing += sum(1 for name in w.roles if name not in named)
    return missing


@dataclass
class Target:
    """Where a round's server keeps its data: a data dir (SQLite) and, for PostgreSQL, a database URL."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def flags(self) -> list[str]:
        return ["--database-url", self.database_url] if self.database_url else []


def initialized(data_dir: Path, database_url: str | None = None) -> tuple[Target, dict[str, str]]:
    """``cedarkey init`` for a target; the admin's access id and key."""
    env = {"CEDARKEY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()} if database_url else {}
    target = Target(data_dir, database_url, env)
    init = subprocess.run(
        [CEDARKEY, "init", "--data-dir", str(data_dir), *target.flags()],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return target, orjson.loads(init.stdout)


def one_round(
    target: Target,
    admin: dict[str, str],
    rng: random.Random,
    *,
    cut: Callable[[], None] | None = None,
) -> RoundResult:
    """Start, write from WRITERS threads, (``cut`` the database connections,) SIGKILL, restart, check."""
    log = target.data_dir / "server.log"
    server = start_server(target.data_dir, *target.flags(), env=target.env, log=log)
    login = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
    token = httpx.post(f"{server.url}/auth", content=orjson.dumps(login), headers=JSON).json()["token"]
    round_id = secrets.token_hex(3)
    writers = [Writer(k, f"/w{round_id}-{k}") for k in range(WRITERS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=_write, args=(server.url, token, w, random.Random(rng.random()), stop)) for w in writers
    ]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.5, 2.0))
    if cut is not None:
        cut()
        time.sleep(rng.uniform(0.1, 0.3))
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    result = RoundResult(errors=[w.error for w in writers if w.error])
    if target.database_url is None:
        result.integrity = _integrity(target.data_dir / "cedarkey.db")
    again = start_server(target.data_dir, *target.flags(), env=target.env, log=target.data_dir / "server2.log")
    try:
        _check(again.url, token, writers, result)  # the token from before the kill
    finally:
        again.stop()
    named = _audited_names(target.data_dir / "audit.log")
    result.audit_missing = _unaudited(named, writers)
    result.in_flight_unaudited = sum(1 for name in result.in_flight if name not in named)
    if result.integrity != "ok":
        result.corrupted.append(f"integrity_check: {result.integrity}")
    return result


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
