"""Errors of the access model.

Each carries a machine-readable ``code`` (the HTTP layer maps it to a status) and the ``field`` that was
wrong, so a caller can say exactly which input to fix.
"""

from __future__ import annotations

#: How many characters of a client's value a message shows.
SHOWN = 100


class ModelError(ValueError):
    """Input that the access model refuses. ``code`` is ``BadRequest`` unless a subclass says otherwise."""

    code = "BadRequest"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class NotFound(ModelError):
    code = "NotFound"


class AlreadyExists(ModelError):
    code = "AlreadyExists"


class VersionConflict(ModelError):
    """The object changed since the caller read it (another writer got there first)."""

    code = "VersionConflict"


def clip(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object, limit: int = SHOWN) -> str:
    """A client's value as a message quotes it: its repr, cut short (a megabyte sent must not come back, nor
    go to a log, a megabyte long)."""
    return clip(repr(value), limit)


# --- the catalog: every "no such ..." and "... already exists" the model, the service and the stores raise --
# (``name`` None: a constraint said it, not a check that knew the name)


def _what(kind: str, name: object) -> str:
    return kind if name is None else f"{kind} {shown(name)}"


def no_auth_method(name: object = None, field: str = "name") -> NotFound:
    return NotFound(field, f"no {_what('auth method', name)}")


def no_access_id(access_id: object = None, field: str = "access-id") -> NotFound:
    return NotFound(field, f"no {_what('auth method with access id', access_id)}")


def auth_method_exists(name: object = None) -> AlreadyExists:
    return AlreadyExists("name", f"{_what('auth method', name)} already exists")


def access_id_taken() -> AlreadyExists:
    return AlreadyExists("access-id", "access id already in use")


def no_role(name: object = None, field: str = "name") -> NotFound:
    return NotFound(field, f"no {_what('access role', name)}")


def role_exists(name: object = None) -> AlreadyExists:
    return AlreadyExists("name", f"{_what('access role', name)} already exists")


def no_association(assoc_id: object = None) -> NotFound:
    return NotFound("assoc-id", f"no {_what('association', assoc_id)}")


def assoc_id_taken() -> AlreadyExists:
    return AlreadyExists("assoc-id", "association id already in use")


def already_associated() -> AlreadyExists:
    return AlreadyExists("am-name", "this role is already associated with that auth method")


def no_rule(role_name: object, rule_type: object, path: object) -> NotFound:
    return NotFound("path", f"role {shown(role_name)} has no {rule_type} on {shown(path)}")


def no_item(name: object = None) -> NotFound:
    return NotFound("name", f"no {_what('item', name)}")


def item_exists(name: object = None) -> AlreadyExists:
    return AlreadyExists("name", f"{_what('item', name)} already exists")


def item_not_at(name: object, version: int) -> VersionConflict:
    return VersionConflict("name", f"item {shown(name)} is not at version {version}")


def no_item_version(name: object, version: int) -> NotFound:
    return NotFound("version", f"item {shown(name)} has no version {version}")


def latest_version_kept(name: object, version: int) -> VersionConflict:
    return VersionConflict(
        "version", f"version {version} is the latest of {shown(name)}: roll back to another first, or delete the item"
    )


def item_at(name: object, current: int, expected: int) -> VersionConflict:
    return VersionConflict("cas", f"item {shown(name)} is at version {current}, not {expected}")


def token_taken() -> AlreadyExists:
    return AlreadyExists("token", "a token with that hash is already stored")


def keeps_identity() -> ModelError:
    return ModelError("name", "an update keeps the auth method's access id and type")
