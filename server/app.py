"""The HTTP layer: ``POST /<command>`` with a JSON body, ``GET /health``, ``/metrics``, ``/openapi.json``, and
the web console under ``/ui/`` (:mod:`.console`).

Everything a client sends is checked here before a handler sees it: the body's size, that it is a JSON
object, that every key is a flag of the command with the right type. Errors are JSON
``{"error": CODE, "message": ...}`` with a 4xx status; nothing a client sends makes a 500.
"""

from __future__ import annotations

import gc
import inspect
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from cedarkey.engine import ModelError
from cedarkey.engine.errors import clip, shown
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .commands import COMMANDS, Call, Command, check_needs
from .commands.login import refuse_login_request
from .console import console_routes
from .errors import ApiError, AuthenticationFailed, Unavailable, bad_request, from_model_error
from .memory import use_huge_pages
from .openapi import openapi_document
from .responses import PRIVATE, JSONResponse, PrivateJSONResponse, error_response
from .service import Service
from .store import StoreUnavailable
from .tokens import Session

log = logging.getLogger("cedarkey.server")
#: One line per command served, with ``serve --access-log``: never a token, a value or a raw path.
access = logging.getLogger("cedarkey.access")

#: A login's body: a proof is a few KB (and /auth answers anyone, so it reads no more than that).
AUTH_MAX_BODY = 64 * 1024


def is_json(content_type: bytes | None) -> bool:
    """``application/json``, with parameters or not (``; charset=utf-8``)."""
    if content_type == b"application/json":  # what every client of ours sends
        return True
    return content_type is not None and content_type.partition(b";")[0].strip().lower() == b"application/json"


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    length = content_type = None
    for name, value in request.scope["headers"]:  # one pass over the raw headers, for the two read here
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            content_type = value
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise too_large(limit)
    body = await read_body(request.receive, limit)
    if not body:
        return {}
    if not is_json(content_type):  # a browser's form post, say: never a command
        raise ApiError(415, "UnsupportedMediaType", "the body must be JSON, sent as Content-Type: application/json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("body: not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("body: must be a JSON object")
    if not _written_back(data, body) and len(_KEY_END.findall(body)) != _key_count(data) and _has_duplicate_key(body):
        raise bad_request("body: a key appears twice in one object")
    return data


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, refused past ``limit`` bytes: the ASGI messages read straight, since a command's
    body comes in one message nearly always (Starlette's ``Request.stream`` costs more than that read)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "PayloadTooLarge", f"request body larger than {limit} bytes")


#: The routes that answer GET only: a POST to one is a 405, not a call of an unknown command.
GET_ONLY = frozenset(("health", "metrics", "openapi.json", "ui"))
#: The status counted for a request whose client left before its body arrived (nginx's convention).
DISCONNECTED = 499

# Every key ends so; a string holding '\":' may match too, and only then does the exact pass run.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def _written_back(data: Any, body: bytes) -> bool:
    """Whether ``body`` is what orjson writes for ``data`` (as our clients send it): then no object of it names
    a key twice, since ``data``'s do not. The cheap proof; the other bodies are counted and checked."""
    try:
        return orjson.dumps(data) == body
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return False


def _key_count(value: Any) -> int:
    count, stack = 0, [value]
    while stack:  # not recursive: orjson parses nesting deeper than Python's recursion limit
        item = stack.pop()  # orjson makes exact dicts and lists: only those are stacked
        if type(item) is dict:
            count += len(item)
            stack += [v for v in item.values() if type(v) is dict or type(v) is list]
        else:
            stack += [v for v in item if type(v) is dict or type(v) is list]
    return count


def _has_duplicate_key(body: bytes) -> bool:
    """Whether an object of ``body`` (valid JSON) names a key twice, which orjson resolves silently."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise _DuplicateKey
        return {}

    try:
        json.loads(body, object_pairs_hook=pairs)
    except _DuplicateKey:
        return True
    except RecursionError:  # nested deeper than the stdlib parser goes: refused as too deep
        raise bad_request("body: nested too deeply") from None
    return False


class _DuplicateKey(Exception):
    pass


def check_args(command: Command, data: dict[str, Any]) -> dict[str, Any]:
    """The body's flags, checked against the command's declaration (:meth:`Flag.check`), with the defaults of
    those left out; ``token`` is taken out, and ``null`` is a flag left out (as the schema says)."""
    args: dict[str, Any] = {}
    for key, value in data.items():
        if key == "token":
            continue
        flag = command.flag(key)
        if flag is None:
            raise bad_request(f"{clip(key, 64)}: not a flag of {command.name}")
        if value is not None:
            args[key] = flag.check(value)
    for name in command.required:
        if name not in args:
            raise bad_request(f"{name}: required")
    if command.one_of and not any(all(f in args for f in group) for group in command.one_of):
        first, *others = command.one_of
        raise bad_request(f"{'+'.join(first)}: required, or " + " or ".join("+".join(g) for g in others))
    for name, default in command.defaults:
        args.setdefault(name, default)
    return args


def client_ip(request: Request) -> str | None:
    """The peer's address (what ``bound-ips`` is checked against); None when it is not an IP address."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


#: Where a call's token comes from: the body's ``token`` or an ``Authorization: Bearer`` header (the API), the
#: session cookie (the console).
TokenOf = Callable[[Request, dict[str, Any]], Any]


def bearer(request: Request, data: dict[str, Any]) -> Any:
    token = data.get("token")
    if token is None:
        for name, value in request.scope["headers"]:  # the first one counts, as with ``request.headers``
            if name == b"authorization":
                header = value.decode("latin-1")
                return header[7:].strip() if header[:7].lower() == "bearer " else None
    return token


def build_app(service: Service) -> Starlette:
    metrics = service.metrics
    limit = service.settings.max_body
    children: dict[tuple[str, int], Any] = {}
    timers = {name: metrics.latency.labels(name) for name in [*COMMANDS, "unknown"]}
    access_log = service.settings.access_log

    async def respond(
        request: Request,
        name: str,
        token_of: TokenOf = bearer,
        finish: Callable[[Any], Response] = PrivateJSONResponse,
    ) -> Response:
        """Serves the command ``name`` for ``request``: its JSON body checked against the declaration, the
        caller's token (``token_of``) and the declared decisions checked, the handler's answer made into a
        response by ``finish``; every refusal an error response, every call counted."""
        start = time.perf_counter()
        cmd = COMMANDS.get(name)
        label = name if cmd is not None else "unknown"
        data: dict[str, Any] = {}
        session: Session | None = None
        try:
            if name == "auth":
                service.check_login_rate(client_ip(request))
            if cmd is None:
                if name in GET_ONLY:
                    raise ApiError(405, "MethodNotAllowed", f"/{name} answers GET only", {"Allow": "GET, HEAD"})
                raise ApiError(404, "NotFound", f"no command {shown(name)}")
            if service.behind():  # another worker wrote: what its caller is told is what every answer shows
                await service.catch_up_with_writes()
            data = await read_json(request, AUTH_MAX_BODY if name == "auth" else limit)
            if cmd.authenticated:  # who asks comes first: a stranger learns nothing from a 400 about its body
                token = token_of(request, data)
                session = service.tokens.check(token, time.time()) or await service.session_or_lookup(token)
                call = Call(service, check_args(cmd, data), session, token)  # the peer's address: logins only
                check_needs(cmd, call)
            else:
                call = Call(service, check_args(cmd, data), source_ip=client_ip(request))
            result = cmd.handler(call)
            if inspect.isawaitable(result):
                result = await result
            response = finish(result)
        except ApiError as exc:
            if name == "auth" and 400 <= exc.status < 500 and exc.status != 429:
                if not isinstance(exc, AuthenticationFailed):
                    exc = refuse_login_request(service, data, exc.message, client_ip(request))
                service.login_refused(client_ip(request))
            response = error_response(exc)
        except ModelError as exc:
            response = error_response(from_model_error(exc))
        except StoreUnavailable as exc:
            log.warning("storage unavailable during %s: %s", name, exc)
            response = error_response(Unavailable())
        except ClientDisconnect:  # gone before its body arrived: nobody reads an answer, but it is counted
            log.info("client disconnected during %s's body", label)
            response = Response(status_code=DISCONNECTED)
        key = (label, response.status_code)
        counter = children.get(key)
        if counter is None:
            counter = children[key] = metrics.requests.labels(label, str(response.status_code))
        counter.inc()
        elapsed = time.perf_counter() - start
        timers[label].observe(elapsed)
        if access_log:
            caller = session.identity.access_id if session is not None else "-"
            access.info("%s /%s %d %.2f ms %s", request.method, label, response.status_code, elapsed * 1e3, caller)
        return response

    async def command(request: Request) -> Response:
        return await respond(request, request.path_params["command"])

    async def health(request: Request) -> Response:
        answer: dict[str, Any] = {"status": "ok", "server_id": service.settings.server_id, "version": "0.1.0"}
        if service.worker is not None:
            answer["worker"] = service.worker.index
        return JSONResponse(answer)

    async def metrics_endpoint(request: Request) -> Response:
        """The metrics name why logins were refused, which a 401 hides: only for a token that may list every
        role and auth method (or unauthenticated on ``--metrics-address``, see :func:`metrics_app`)."""
        try:
            session = await service.session_or_lookup(bearer(request, {}))
            service.require_list_everything(session)
        except ApiError as exc:
            return error_response(exc)
        return metrics_response(service)

    document = openapi_document(service.settings.server_id)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        return JSONResponse({"error": code, "message": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        await service.start()
        # The model loaded at start lives as long as the process: keep it out of the collector's way.
        gc.collect()
        gc.freeze()
        if service.settings.huge_pages:
            pages = await run_in_threadpool(use_huge_pages)
            log.info("huge pages: %d MiB advised, %d MiB collapsed", pages.advised >> 20, pages.collapsed >> 20)
        yield
        await service.aclose()

    app = CommandApp(
        respond,
        routes=[  # /{command} last: another method on a GET route is a 405 naming GET, not POST
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *console_routes(service, respond),
            Route("/{command}", command, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.service = service
    return app


Respond = Callable[[Request, str], Awaitable[Response]]


class CommandApp(Starlette):
    """Starlette, with ``POST /<command>`` served straight by ``respond``: the route ``/{command}`` would pick
    the same handler, after the error middleware, the router and its regular expressions had their turn,
    which cost a command call more than the decision it asks for. Everything else goes the routed way."""

    def __init__(self, respond: Respond, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            name = scope["path"][1:]
            if name in COMMANDS:
                scope["app"] = self
                response = await self._respond(Request(scope, receive), name)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def metrics_response(service: Service) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST, headers=PRIVATE)


def metrics_app(service: Service) -> Starlette:
    """``/metrics`` without a token, for ``--metrics-address`` (a listener only the monitoring network sees)."""

    async def metrics_endpoint(request: Request) -> Response:
        return metrics_response(service)

    return Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])
