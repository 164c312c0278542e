"""The OpenAPI document, generated from the commands' declarations."""

from __future__ import annotations

from typing import Any

from .commands import COMMANDS, Flag

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
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


def openapi_document(server_id: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "readiness and the server id clients sign login proofs for",
                "responses": {"200": {"description": "ready"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
    }
    for cmd in COMMANDS.values():
        properties = {f.name: _property(f) for f in cmd.flags}
        if cmd.authenticated:
            properties["token"] = {"type": "string", "description": "or Authorization: Bearer"}
        body = {
            "type": "object",
            "additionalProperties": False,
            "required": [f.name for f in cmd.flags if f.required],
            "properties": properties,
        }
        errors = {
            str(code): {"description": text, "content": {"application/json": {"schema": _ERROR}}}
            for code, text in (
                (400, "BadRequest"),
                (401, "AuthenticationFailed"),
                (403, "PermissionDenied"),
                (404, "NotFound"),
                (409, "AlreadyExists"),
                (413, "PayloadTooLarge"),
                (503, "Unavailable"),
            )
        }
        paths[f"/{cmd.name}"] = {
            "post": {
                "operationId": cmd.name,
                "summary": cmd.summary,
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                "responses": {"200": {"description": "success", "content": {"application/json": {}}}, **errors},
                **({"security": [{"bearer": []}]} if cmd.authenticated else {}),
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "cedarkey", "version": "0.1.0", "description": f"server id {server_id}"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
