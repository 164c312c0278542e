"""The web console at ``/ui/``: static pages whose script calls the same commands as the CLI, with the caller's
token in a cookie.

- ``GET /ui/`` and its assets (``server/ui/``): HTML, one script, one stylesheet; nothing from elsewhere.
- ``POST /ui/session``: sign in, with ``auth``'s body. The answer sets the session cookie (the token, never
  the key: ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``, ``Secure`` over TLS, as long-lived as the token)
  and gives the page its CSRF value; ``GET /ui/session`` gives them again to a page that was reloaded.
- ``POST /ui/api/<command>``: an authenticated command, decided exactly as ``POST /<command>`` is.
- ``POST /ui/session/end``: ``revoke-token`` of the cookie's token, and the cookie cleared.

Every POST must come from the console's own origin (``Origin`` and ``Sec-Fetch-Site``, when the browser
sends them) and carry a JSON body, and every call with the cookie carries the header ``X-CSRF-Token``: an
HMAC of a fixed label keyed by the token, which a page on another origin cannot compute (it never sees the
cookie), which any node of a cluster can check (no server key to share), and which says nothing of the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .commands import COMMANDS
from .errors import ApiError, Unavailable
from .responses import PRIVATE, JSONResponse, error_response
from .service import Service, caller_name
from .store import StoreUnavailable
from .tokens import Session

COOKIE = "cedarkey_console"
CSRF_HEADER = "x-csrf-token"
_CSRF_LABEL = b"cedarkey console csrf"

#: Where the console's script may load from and talk to: this origin only; no inline script or style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    **PRIVATE,
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

#: How the console serves a command: the token from a request and the answer's response.
Respond = Callable[..., Awaitable[Response]]


def csrf_value(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def cross_site(request: Request) -> ApiError | None:
    """Why a POST is not the console's own (None when it is): another origin, or another site's page."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return ApiError(403, "CrossSiteRequest", f"a {fetch_site} request cannot act in the console")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return ApiError(403, "CrossSiteRequest", "the request's Origin is not this console's")
    return None


def cookie_token(request: Request, data: dict[str, Any]) -> str | None:
    """The cookie's token, for a request whose CSRF header proves it came from a console page; the body's
    ``token`` is never looked at (the console acts only as the cookie's caller)."""
    token = request.cookies.get(COOKIE)
    sent = request.headers.get(CSRF_HEADER, "")
    if not token or not hmac.compare_digest(sent.encode(), csrf_value(token).encode()):
        raise ApiError(403, "CsrfCheckFailed", f"the {CSRF_HEADER} header does not match the session")
    return token


def own_token(request: Request, data: dict[str, Any]) -> str | None:
    """The cookie's token, for signing out: the console ends its own session, never another token."""
    if data.get("subject-token") is not None:
        raise ApiError(400, "BadRequest", "subject-token: signing out ends the console's own session only")
    return cookie_token(request, data)


def cookie_flags(request: Request) -> dict[str, Any]:
    return {"path": "/ui", "secure": request.url.scheme == "https", "httponly": True, "samesite": "strict"}


def console_routes(service: Service, respond: Respond) -> list[Route]:
    pages = {name: resources.files(__package__).joinpath("ui", name).read_bytes() for name in ASSETS}

    def asset(request: Request) -> Response:
        name = request.path_params.get("asset", "index.html")
        if name not in ASSETS:
            return error_response(ApiError(404, "NotFound", "no such console page"))
        return Response(pages[name], media_type=ASSETS[name], headers=HEADERS)

    def to_console(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=303)

    def answer(session: Session, token: str) -> dict[str, Any]:
        return {
            "signed-in": True,
            "caller": caller_name(session.identity),
            "access-id": session.identity.access_id,
            "expires-at": int(session.expires_at),
            "csrf": csrf_value(token),
        }

    def signed_in(request: Request, token: str) -> Response:
        session = service.tokens.check(token, time.time())
        assert session is not None, "a token just issued"
        body = answer(session, token)
        response = JSONResponse(body, headers=HEADERS)
        lifetime = max(0, body["expires-at"] - int(time.time()))
        response.set_cookie(COOKIE, token, max_age=lifetime, **cookie_flags(request))
        return response

    async def sign_in(request: Request) -> Response:
        refused = cross_site(request)
        if refused is not None:
            return error_response(refused)
        return await respond(request, "auth", finish=lambda result: signed_in(request, result["token"]))

    async def current(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        try:  # a token another node issued a moment ago counts, as it does for /ui/api
            session = await service.session_or_lookup(token)
        except ApiError:
            return JSONResponse({"signed-in": False}, headers=HEADERS)
        except StoreUnavailable:
            return error_response(Unavailable())
        return JSONResponse(answer(session, token), headers=HEADERS)

    async def session_route(request: Request) -> Response:
        return await (sign_in(request) if request.method == "POST" else current(request))

    async def sign_out(request: Request) -> Response:
        refused = cross_site(request)
        response = error_response(refused) if refused else await respond(request, "revoke-token", own_token)
        if response.status_code in (200, 401):  # ended, or already over; a refused request changes nothing
            response.delete_cookie(COOKIE, **cookie_flags(request))
        return response

    async def api(request: Request) -> Response:
        name = request.path_params["command"]
        cmd = COMMANDS.get(name)
        if cmd is None or not cmd.authenticated:  # signing in is /ui/session's
            return error_response(ApiError(404, "NotFound", "no such console command"))
        refused = cross_site(request)
        if refused is not None:
            return error_response(refused)
        return await respond(request, name, cookie_token)

    return [
        Route("/", to_console, methods=["GET"]),
        Route("/ui", to_console, methods=["GET"]),
        Route("/ui/", asset, methods=["GET"]),
        Route("/ui/session", session_route, methods=["GET", "POST"]),
        Route("/ui/session/end", sign_out, methods=["POST"]),
        Route("/ui/api/{command}", api, methods=["POST"]),
        Route("/ui/{asset}", asset, methods=["GET"]),
    ]
