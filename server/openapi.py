"""The OpenAPI document, generated from the commands' declarations and the console's constants: every route
the app serves but ``/openapi.json`` itself, and what each answers."""

from __future__ import annotations

from typing import Any

from .commands import COMMANDS, Command, Flag
from .console import ASSETS, COOKIE, CSRF_HEADER, HEADERS

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}

#: What a command may answer besides 200: (status, the name of the response in :data:`_ERROR_RESPONSES`).
_COMMAND_ERRORS = (
    (400, "BadRequest"),
    (401, "AuthenticationFailed"),
    (403, "PermissionDenied"),
    (404, "NotFound"),
    (409, "AlreadyExists"),
    (413, "PayloadTooLarge"),
    (415, "UnsupportedMediaType"),
    (503, "Unavailable"),
)
#: A command called from the console may also be refused as another site's request or for its CSRF header.
_CONSOLE_ERRORS = tuple((code, "ConsoleRefused" if code == 403 else name) for code, name in _COMMAND_ERRORS)
#: Every error response, by name; its description is the error codes it carries.
_ERROR_RESPONSES = {
    **{name: name for _, name in _COMMAND_ERRORS},
    "ConsoleRefused": "PermissionDenied, CrossSiteRequest or CsrfCheckFailed",
    "CrossSiteRequest": "CrossSiteRequest",
}

_SIGNED_IN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["signed-in", "caller", "access-id", "expires-at", "csrf"],
    "properties": {
        "signed-in": {"const": True},
        "caller": {"type": "string"},
        "access-id": {"type": "string"},
        "expires-at": {"type": "integer", "description": "Unix time the session's token expires"},
        "csrf": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": f"what every call with the cookie sends as {CSRF_HEADER}",
        },
    },
}
_SIGNED_OUT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["signed-in"],
    "properties": {"signed-in": {"const": False}},
}


def _schema(flag: Flag) -> dict[str, Any]:
    if flag.kind == "list":
        return {"type": "array", "items": {"type": "string"}, "maxItems": 1000}
    if flag.kind == "int":
        return {"type": "integer"}
    if flag.kind == "requests":
        return {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["path", "capability"],
                "additionalProperties": False,
                "properties": {
                    "path": {"type": "string"},
                    "capability": {"type": "string", "enum": ["read", "create", "update", "delete", "list"]},
                    "rule-type": {"type": "string", "enum": ["item-rule", "role-rule", "auth-method-rule"]},
                },
            },
        }
    return {"type": "string"}


def _property(flag: Flag) -> dict[str, Any]:
    out = {**_schema(flag), "description": flag.help}
    if flag.choices:
        out["enum"] = list(flag.choices)
    if flag.default is not None:
        out["default"] = flag.default
    return out


def _body(cmd: Command, token: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cmd``'s JSON body: its flags, and ``token`` as the property of that name. It may be left out: an
    empty body is the empty object."""
    properties = {f.name: _property(f) for f in cmd.flags}
    if token is not None:
        properties["token"] = token
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in cmd.flags if f.required],
        "properties": properties,
    }
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*codes: tuple[int, str]) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/{name}"} for code, name in codes}


def _header(description: str, **schema: str) -> dict[str, Any]:
    return {"required": True, "description": description, "schema": {"type": "string", **schema}}


#: The headers of every console page and of the session's answers (defined once, in the components).
_CONSOLE_HEADERS = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}


def _with_cookie(description: str) -> dict[str, Any]:
    return {"Set-Cookie": _header(description, pattern=f"^{COOKIE}=")}


def _command_paths() -> dict[str, Any]:
    token = {"type": "string", "description": "or Authorization: Bearer"}
    return {
        f"/{cmd.name}": {
            "post": {
                "operationId": cmd.name,
                "summary": cmd.summary,
                "requestBody": _body(cmd, token if cmd.authenticated else None),
                "responses": {"200": _json("success", {}), **_errors(*_COMMAND_ERRORS)},
                **({"security": [{"bearer": []}]} if cmd.authenticated else {}),
            }
        }
        for cmd in COMMANDS.values()
    }


def _console_paths() -> dict[str, Any]:
    """The web console (:mod:`.console`): its pages, its session, and every authenticated command as
    ``/ui/api/<command>``, called with the session cookie and the CSRF header."""
    session = [{"console-session": [], "console-csrf": []}]
    # The console acts only as the cookie's caller: a body's token is taken out and never looked at.
    ignored = {"description": "ignored: the console acts as the session cookie's caller"}
    redirect = {
        "get": {
            "summary": "the web console's address",
            "responses": {"303": {"description": "see /ui/", "headers": {"Location": _header("/ui/", const="/ui/")}}},
        }
    }
    files = {t.partition(";")[0]: {"schema": {"type": "string"}} for t in ASSETS.values()}
    paths: dict[str, Any] = {
        "/": redirect,
        "/ui": redirect,
        "/ui/": {
            "get": {
                "operationId": "console",
                "summary": "the web console's page",
                "responses": {
                    "200": {
                        "description": "index.html",
                        "headers": _CONSOLE_HEADERS,
                        "content": {"text/html": files["text/html"]},
                    }
                },
            }
        },
        "/ui/{asset}": {
            "get": {
                "operationId": "console-asset",
                "summary": "one of the console's files",
                "parameters": [
                    {"name": "asset", "in": "path", "required": True, "schema": {"type": "string", "enum": [*ASSETS]}}
                ],
                "responses": {
                    "200": {"description": "the file", "headers": _CONSOLE_HEADERS, "content": files},
                    **_errors((404, "NotFound")),
                },
            }
        },
        "/ui/session": {
            "get": {
                "operationId": "console-session",
                "summary": "whether the session cookie holds a live token, and the CSRF value for it",
                "parameters": [{"name": COOKIE, "in": "cookie", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _json("the session", {"oneOf": [_SIGNED_OUT, _SIGNED_IN]}, _CONSOLE_HEADERS)},
            },
            "post": {
                "operationId": "console-sign-in",
                "summary": "sign in with auth's body; the session cookie is set to the token, which is not shown",
                "requestBody": _body(COMMANDS["auth"]),
                "responses": {
                    "200": _json(
                        "signed in",
                        _SIGNED_IN,
                        {
                            **_CONSOLE_HEADERS,
                            **_with_cookie(f"{COOKIE}: the token (HttpOnly, SameSite=Strict, Path=/ui)"),
                        },
                    ),
                    **_errors((401, "AuthenticationFailed"), (403, "CrossSiteRequest"), (503, "Unavailable")),
                },
            },
        },
        "/ui/session/end": {
            "post": {
                "operationId": "console-sign-out",
                "summary": "revoke-token, as the session's caller; the session cookie is cleared",
                "requestBody": _body(COMMANDS["revoke-token"], ignored),
                "responses": {
                    "200": _json("signed out", {}, _with_cookie(f"{COOKIE} cleared")),
                    **_errors(*_CONSOLE_ERRORS),
                },
                "security": session,
            }
        },
    }
    for cmd in COMMANDS.values():
        if cmd.authenticated:  # signing in is /ui/session's
            paths[f"/ui/api/{cmd.name}"] = {
                "post": {
                    "operationId": f"console-{cmd.name}",
                    "summary": f"{cmd.summary} (as the session's caller)",
                    "requestBody": _body(cmd, ignored),
                    "responses": {"200": _json("success", {}), **_errors(*_CONSOLE_ERRORS)},
                    "security": session,
                }
            }
    return paths


def openapi_document(server_id: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "readiness and the server id clients sign login proofs for",
                "responses": {"200": {"description": "ready"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
        **_command_paths(),
        **_console_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "cedarkey", "version": "0.1.0", "description": f"server id {server_id}"},
        "paths": paths,
        "components": {
            "responses": {name: _json(text, _ERROR) for name, text in _ERROR_RESPONSES.items()},
            "headers": {name: _header(name, const=value) for name, value in HEADERS.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "console-session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
                "console-csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER},
            },
        },
    }
