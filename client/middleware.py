"""An ASGI middleware (Starlette, FastAPI, any ASGI app) that protects a service's own routes with cedarkey.

    from cedarkey.client import Client
    from cedarkey.client.middleware import CedarkeyAuthz, Protected

    def protect(scope):  # which object a request touches, and how; None: not protected
        if scope["path"].startswith("/reports/"):
            return Protected(scope["path"], "read" if scope["method"] == "GET" else "update")
        return None

    app = CedarkeyAuthz(app, watcher=Client.from_profile("reports-service"), protect=protect)

A request carries its caller's cedarkey token (``Authorization: Bearer``); the middleware asks cedarkey's
``authorize`` with that token and answers 401 (no token, or one cedarkey refuses) or 403 (denied) itself, with
cedarkey's JSON error shape. Decisions are cached in the process, keyed by the token's hash and the request,
for the model version they were made at: the ``watcher`` client (the service's own profile) long-polls
``watch``, and every announced change drops the cache. A lost connection drops it too and nothing is cached
until the watch is back (never a cache trusted across a gap). A revoked token, or one its auth method's new
bindings refuse, moves the version too; a token's expiry does not, so an entry also ends after ``max_age``
seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from .sdk import Client

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]
#: How long one watch call waits on the server for a change, in seconds.
WATCH_WAIT = 25
#: After a failed watch call, the pause before the next one.
RETRY_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Protected:
    """The object a request touches and the capability it needs (cedarkey's path, capability, rule type)."""

    path: str
    capability: str
    rule_type: str = "item-rule"


@dataclass
class Stats:
    hits: int = 0
    asked: int = 0
    dropped: int = 0  # times the cache was dropped (a model change or a lost watch)


class CedarkeyAuthz:
    def __init__(
        self,
        app: ASGIApp,
        *,
        watcher: Client,
        protect: Callable[[Scope], Protected | None],
        max_age: float = 10.0,
        max_entries: int = 100_000,
        timeout: float = 5.0,
    ) -> None:
        self.app, self._protect, self._watcher = app, protect, watcher
        self._gateway = watcher.gateway_url
        self._max_age, self._max_entries, self._timeout = max_age, max_entries, timeout
        #: The model version the cache holds decisions of; None while the watch is not connected.
        self._version: str | None = None
        self._cache: dict[tuple[bytes, Protected], tuple[bool, str, float]] = {}
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.stats = Stats()

    # --- the watch -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts following the model's version (done at the first protected request if not before)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="cedarkey-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                answer = self._watcher.watch(version=self._version, wait=WATCH_WAIT)
                version = answer["version"]
                if not isinstance(version, str):
                    raise ValueError("watch answered no version")
            except Exception:  # whatever broke the watch, the cache is no longer trusted
                self._forget(None)
                self._stopping.wait(RETRY_SECONDS)
                continue
            if version != self._version:
                self._forget(version)

    def clear(self) -> None:
        """Drops every cached decision (the next request of each asks cedarkey)."""
        self._cache = {}

    def _forget(self, version: str | None) -> None:
        self._version = version
        if self._cache:
            self._cache = {}
            self.stats.dropped += 1

    def wait_until_watching(self, timeout: float = 5.0) -> bool:
        """True once the watch is connected (for tests and a service's readiness check)."""
        self.start()
        deadline = time.monotonic() + timeout
        while self._version is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._version is not None

    # --- requests ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        target = self._protect(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        self.start()
        token = _bearer(scope)
        if token is None:
            await _refuse(send, 401, "AuthenticationFailed", "a cedarkey token is needed (Authorization: Bearer)")
            return
        status, code, message = await self._decide(token, target)
        if status == 200:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, status, code, message)

    async def _decide(self, token: str, target: Protected) -> tuple[int, str, str]:
        key = (hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), target)
        version, now = self._version, time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and version is not None and cached[1] == version and now - cached[2] < self._max_age:
            self.stats.hits += 1
            return _answer(cached[0], target)
        self.stats.asked += 1
        try:
            allowed = await self._ask(token, target)
        except _Refused as refused:
            return refused.status, refused.code, refused.message
        if version is not None and version == self._version:  # no change announced while asking
            cache = self._cache
            if len(cache) >= self._max_entries:
                cache.pop(next(iter(cache)))
            cache[key] = (allowed, version, now)
        return _answer(allowed, target)

    async def _ask(self, token: str, target: Protected) -> bool:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:  # a client's connections belong to one loop
            self._http, self._http_loop = httpx.AsyncClient(base_url=self._gateway, timeout=self._timeout), loop
        request = {"path": target.path, "capability": target.capability, "rule-type": target.rule_type}
        body = orjson.dumps({"token": token, "requests": [request]})
        try:
            response = await self._http.post("/authorize", content=body, headers={"content-type": "application/json"})
            data = orjson.loads(response.content)
        except (httpx.HTTPError, orjson.JSONDecodeError):
            raise _Refused(503, "Unavailable", "cedarkey could not be asked") from None
        if response.status_code == 401:
            raise _Refused(401, "AuthenticationFailed", "cedarkey refused the token")
        if response.status_code != 200:
            raise _Refused(503, "Unavailable", f"cedarkey answered HTTP {response.status_code}")
        try:
            return data["decisions"][0]["decision"] == "allow"
        except (KeyError, IndexError, TypeError):
            raise _Refused(503, "Unavailable", "cedarkey's answer had no decision") from None


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def _answer(allowed: bool, target: Protected) -> tuple[int, str, str]:
    if allowed:
        return 200, "", ""
    return 403, "PermissionDenied", f"{target.capability} on {target.path} ({target.rule_type}) is not granted"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def _refuse(send: Any, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": code, "message": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
