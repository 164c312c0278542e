"""The OpenAPI document, generated from the commands' declarations and the console's constants: every route
the app serves but ``/openapi.json`` itself, and what each answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cedarkey.engine import RuleType, grammar
from cedarkey.engine.capability import ACTIONS

from .commands import COMMANDS, MAX_NAMES, MAX_REQUESTS, Command, Flag
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
    "PermissionDenied": "PermissionDenied, or UntrustedStsUrl for an STS URL this server does not trust",
    "AlreadyExists": "AlreadyExists, VersionConflict, or Ambiguous when several objects fit what was named",
    "Unavailable": "Unavailable (the store), or ItemUnreadable (a secret this server cannot decrypt)",
    "ConsoleRefused": "PermissionDenied, CrossSiteRequest or CsrfCheckFailed",
    "CrossSiteRequest": "CrossSiteRequest",
    "TooManyRequests": (
        "TooManyRequests (too many refused logins from this address) or TooManyTokens (the auth method holds its"
        " limit of live tokens); Retry-After says when to retry"
    ),
}
#: A login may also be refused for the refused logins before it, or its auth method's live tokens (429).
_LOGIN_ERRORS = (*_COMMAND_ERRORS, (429, "TooManyRequests"))

_HEALTH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status", "server_id", "version"],
    "properties": {
        "status": {"const": "ok"},
        "server_id": {"type": "string", "description": "what clients sign login proofs for"},
        "version": {"type": "string"},
        "worker": {"type": "integer", "minimum": 0, "description": "which process answered (serve --workers N)"},
    },
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
    """What :meth:`Flag.check` accepts, from the same fields; an optional flag may also be ``null``."""
    if flag.schema is not None:
        schema = dict(flag.schema)
    elif flag.kind == "int":
        schema = {"type": "integer", **_present(minimum=flag.minimum, maximum=flag.maximum)}
    elif flag.kind == "requests":
        schema = _requests()
    elif flag.kind == "list":
        schema = {"type": "array", "items": _string(flag), "maxItems": flag.max_items}
        schema.update(_present(minItems=flag.min_items or None))
    elif flag.kind == "names":
        several = {"type": "array", "items": _string(flag), "minItems": 1, "maxItems": MAX_NAMES}
        schema = {"anyOf": [_string(flag), several]}
    else:
        schema = _string(flag)
    return schema if flag.required else {"anyOf": [schema, {"type": "null"}]}


def _string(flag: Flag) -> dict[str, Any]:
    if flag.path:
        return _forms(_PATHS[flag.path]())
    pattern = grammar.anchored(flag.pattern) if flag.pattern else None
    out = {"type": "string", **_present(maxLength=flag.max_length, pattern=pattern)}
    if flag.choices:
        out["enum"] = list(flag.choices)
    return out


def _forms(forms: grammar.Forms) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "maxLength": longest, "pattern": pattern} for pattern, longest in forms]}


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


_PATHS = {
    "name": lambda: grammar.path_forms(wildcard=False),
    "pattern": lambda: grammar.path_forms(wildcard=True),
    "folder": grammar.folder_forms,
}


def _requests() -> dict[str, Any]:
    path = _forms(grammar.path_forms(wildcard=False))
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_REQUESTS,
        "items": {
            "type": "object",
            "required": ["path", "capability"],
            "additionalProperties": False,
            "properties": {
                "path": path,
                "capability": {"type": "string", "enum": list(ACTIONS)},
                "rule-type": {"type": "string", "enum": list(RuleType)},
            },
        },
    }


def _property(flag: Flag) -> dict[str, Any]:
    out = {**_schema(flag), "description": flag.help}
    if flag.default is not None:
        out["default"] = flag.default
    if flag.example is not None:
        out["examples"] = [flag.example]
    return out


def _body(cmd: Command, token: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cmd``'s JSON body: its flags, and ``token`` as the property of that name. It may be left out: an
    empty body is the empty object."""
    properties = {f.name: _property(f) for f in cmd.flags}
    if token is not None:
        properties["token"] = token
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in cmd.flags if f.required],
        "properties": properties,
    }
    if cmd.one_of:  # a flag sent as null is left out: each group's flags must be there and not null
        schema["anyOf"] = [
            {"required": list(group), "properties": {f: {"not": {"type": "null"}} for f in group}}
            for group in cmd.one_of
        ]
    # Without a body a command has no flags: a body is required when some flag is.
    required = bool(schema["required"] or cmd.one_of)
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _sign_out_body(ignored: dict[str, Any]) -> dict[str, Any]:
    """revoke-token's body, but the console ends its own session only: no ``subject-token`` (but null)."""
    body = _body(replace(COMMANDS["revoke-token"], flags=()), ignored)
    only_own = {"type": "null", "description": "the console ends its own session only"}
    body["content"]["application/json"]["schema"]["properties"]["subject-token"] = only_own
    return body


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


_NAME = {"name": "$response.body#/name"}
_ROLE = {"role-name": "$response.body#/name"}
_ACCESS_ID = {"access-id": "$response.body#/access-id"}
#: Where a command's answer leads: the commands that act on what it made, and their bodies (OpenAPI links,
#: which a client generator and schemathesis's stateful phase follow).
LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "create-auth-method": {
        "get-auth-method": _NAME,
        "update-auth-method": {**_NAME, "jwt-ttl": 600},
        "delete-auth-method": _NAME,
        "auth": {"access-type": "access_key", **_ACCESS_ID, "access-key": "$response.body#/access-key"},
    },
    "create-auth-method-aws-iam": {
        "get-auth-method": _NAME,
        "update-auth-method-aws-iam": {**_NAME, "bound-role-name": ["linked-role"]},
        "delete-auth-method": _NAME,
        "lookup-sts-url": _ACCESS_ID,
    },
    "create-role": {
        "get-role": _NAME,
        "update-role": {**_NAME, "description": "linked"},
        "delete-role": _NAME,
        "set-role-rule": {**_ROLE, "path": "/linked/*", "capability": ["read", "list"]},
        "assoc-role-am": {**_ROLE, "am-name": "/admin"},
    },
    "create-secret": {
        "get-secret-value": _NAME,
        "describe-item": _NAME,
        "update-secret-val": {**_NAME, "value": "linked"},
        "delete-item": _NAME,
    },
    "assoc-role-am": {"delete-assoc": {"assoc-id": "$response.body#/assoc-id"}},
    "set-role-rule": {
        "delete-role-rule": {
            "role-name": "$response.body#/role-name",
            "path": "$response.body#/path",
            "rule-type": "$response.body#/rule-type",
        }
    },
}


def _links(name: str, prefix: str = "") -> dict[str, Any]:
    return {
        target: {"operationId": prefix + target, "requestBody": body}
        for target, body in LINKS.get(name, {}).items()
        if not prefix or COMMANDS[target].authenticated  # the console signs in at /ui/session, not /ui/api/auth
    }


def _command_paths() -> dict[str, Any]:
    token = {"type": ["string", "null"], "description": "or Authorization: Bearer (null: the header's)"}
    return {
        f"/{cmd.name}": {
            "post": {
                "operationId": cmd.name,
                "summary": cmd.summary,
                "requestBody": _body(cmd, token if cmd.authenticated else None),
                "responses": {
                    "200": {**_json("success", {"type": "object"}), **_present(links=_links(cmd.name) or None)},
                    **_errors(*(_COMMAND_ERRORS if cmd.authenticated else _LOGIN_ERRORS)),
                },
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
                    **_errors(
                        (401, "AuthenticationFailed"),
                        (403, "CrossSiteRequest"),
                        (429, "TooManyRequests"),
                        (503, "Unavailable"),
                    ),
                },
            },
        },
        "/ui/session/end": {
            "post": {
                "operationId": "console-sign-out",
                "summary": "revoke-token, as the session's caller; the session cookie is cleared",
                "requestBody": _sign_out_body(ignored),
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
                    "responses": {
                        "200": {**_json("success", {"type": "object"}), **_present(links=_links(cmd.name, "console-"))},
                        **_errors(*_CONSOLE_ERRORS),
                    },
                    "security": session,
                }
            }
    return paths


def openapi_document(server_id: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "readiness and the server id clients sign login proofs for",
                "responses": {"200": _json("ready", _HEALTH)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, for a token that may list every role and auth method",
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_errors((401, "AuthenticationFailed"), (403, "PermissionDenied"), (503, "Unavailable")),
                },
                "security": [{"bearer": []}],
            }
        },
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
