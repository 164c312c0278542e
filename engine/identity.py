"""The principal: who a verified login says the caller is.

An :class:`Identity` is built by the server from a verified STS answer (``aws_iam``) or from an access key
check (``access_key``); the engine turns it into the attributes of a Cedar ``Identity`` entity. Every
attribute but ``access_id``, ``auth_type`` and ``principal_type`` is optional: Cedar policies test them with
``has`` before they read them, so a missing attribute never makes a policy error.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ModelError, shown

#: Optional string attributes, in schema order. Sub-claims may test any of them.
STRING_ATTRIBUTES: tuple[str, ...] = (
    "account",
    "arn",
    "iam_arn",
    "role_name",
    "role_id",
    "session_name",
    "resource_id",
    "user_name",
    "user_id",
    "federated_name",
)

PRINCIPAL_TYPES = ("assumed-role", "user", "federated-user", "root", "role", "access-key")

#: Every attribute a sub-claim may name.
CLAIM_ATTRIBUTES: tuple[str, ...] = ("principal_type", *STRING_ATTRIBUTES)

MAX_ATTRIBUTE_LENGTH = 2048
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Identity:
    access_id: str
    auth_type: str
    principal_type: str
    account: str | None = None
    arn: str | None = None
    iam_arn: str | None = None
    role_name: str | None = None
    role_id: str | None = None
    session_name: str | None = None
    resource_id: str | None = None
    user_name: str | None = None
    user_id: str | None = None
    federated_name: str | None = None
    source_ip: str | None = None
    # The parsed Cedar entities for this identity, built once on first use (see Engine).
    _entities: Any = field(default=None, compare=False, repr=False, hash=False)
    # The engine's memo for this identity (see engine/memo.py): a reference to skip the lookup by value.
    _decisions: Any = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("access_id", "auth_type", "principal_type", *STRING_ATTRIBUTES):
            value = getattr(self, name)
            if value is None and name not in ("access_id", "auth_type", "principal_type"):
                continue
            if not isinstance(value, str) or len(value) > MAX_ATTRIBUTE_LENGTH:
                raise ModelError(name, "must be a string of at most 2048 characters")
            if _SURROGATE.search(value):
                raise ModelError(name, "lone surrogates are not text")
        if self.source_ip is not None:
            try:
                if not isinstance(self.source_ip, str) or "%" in self.source_ip:
                    raise ValueError
                object.__setattr__(self, "source_ip", str(ipaddress.ip_address(self.source_ip)))
            except ValueError:
                raise ModelError("source_ip", "not an IP address (scoped IPv6 addresses are not)") from None

    def attributes(self) -> dict[str, Any]:
        """The identity's set attributes as plain values (what a user sees and what rule tests name)."""
        values = ((name, getattr(self, name)) for name in _ATTRIBUTE_NAMES)
        return {name: value for name, value in values if value is not None}

    def entity(self) -> dict[str, Any]:
        """The Cedar JSON entity of this principal."""
        attrs = self.attributes()
        if self.source_ip is not None:
            attrs["source_ip"] = {"__extn": {"fn": "ip", "arg": self.source_ip}}
        return {"uid": PRINCIPAL_UID, "attrs": attrs, "parents": []}

    @classmethod
    def from_attributes(cls, data: object) -> Identity:
        """An identity from a JSON object of attributes (e.g. a test case or ``can --identity FILE``)."""
        if not isinstance(data, dict):
            raise ModelError("identity", "must be a JSON object")
        names = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelError("identity", f"unknown attribute {shown(unknown[0])}")
        for required in ("access_id", "principal_type"):
            if required not in data:
                raise ModelError(required, "is required")
        values = dict(data)
        values.setdefault("auth_type", "aws_iam")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError("identity", str(exc)) from None


PRINCIPAL_UID = {"type": "Identity", "id": "caller"}

#: The attribute fields, in declaration order (the private memo fields are not attributes).
_ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Identity) if not f.name.startswith("_"))
