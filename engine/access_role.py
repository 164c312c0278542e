"""Access roles: which auth methods (and which identities through them) get which role rules.

An association links a role to an auth method and may carry sub-claims: ``attribute=pattern`` conditions
on the identity (``*`` wildcard), so that one account-wide auth method can serve several roles. Within one
attribute any listed pattern matches; every attribute named must match; an identity without the attribute
does not match.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import grammar
from .capability import RuleType
from .errors import ModelError, shown
from .glob import glob_match
from .identity import CLAIM_ATTRIBUTES, Identity
from .path import canonical_path
from .role_rule import RoleRule

MAX_SUB_CLAIMS = 32
MAX_PATTERN_LENGTH = 256
MAX_DESCRIPTION = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DESCRIPTION = re.compile(grammar.DESCRIPTION)

SubClaims = tuple[tuple[str, tuple[str, ...]], ...]


def new_assoc_id() -> str:
    return "ac-" + secrets.token_hex(8)


def parse_sub_claims(value: object, field_name: str = "sub-claim") -> SubClaims:
    """Sub-claims from ``["key=pattern", ...]`` or ``{"key": "pattern" | ["pattern", ...]}``."""
    if value is None:
        return ()
    pairs: list[tuple[object, object]] = []
    if isinstance(value, Mapping):
        for key, patterns in value.items():
            for pattern in [patterns] if isinstance(patterns, str) else patterns:
                pairs.append((key, pattern))
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ModelError(field_name, "each sub-claim is 'attribute=pattern'")
            key, _, pattern = item.partition("=")
            pairs.append((key, pattern))
    else:
        raise ModelError(field_name, "must be a list of 'attribute=pattern'")
    if len(pairs) > MAX_SUB_CLAIMS:  # counted as given, repeats too: what the API's maxItems says
        raise ModelError(field_name, f"at most {MAX_SUB_CLAIMS} sub-claims")
    claims: dict[str, list[str]] = {}
    for key, pattern in pairs:
        if not isinstance(key, str) or not isinstance(pattern, str):
            raise ModelError(field_name, "attributes and patterns are strings")
        attribute = key.strip(" \t").replace("-", "_")
        if attribute not in CLAIM_ATTRIBUTES:
            raise ModelError(field_name, f"unknown attribute {shown(key)}; one of {', '.join(CLAIM_ATTRIBUTES)}")
        if not pattern or len(pattern) > MAX_PATTERN_LENGTH or _CONTROL.search(pattern):
            raise ModelError(field_name, f"pattern for {attribute} must be 1 to 256 printable characters")
        if pattern not in claims.setdefault(attribute, []):
            claims[attribute].append(pattern)
    return tuple((k, tuple(v)) for k, v in sorted(claims.items()))


def sub_claims_match(sub_claims: SubClaims, identity: Identity) -> bool:
    """The identity has every attribute named and each matches one of its patterns (what Cedar checks)."""
    for attr, patterns in sub_claims:
        value = getattr(identity, attr, None)
        if not isinstance(value, str) or not any(glob_match(p, value) for p in patterns):
            return False
    return True


@dataclass(frozen=True)
class Association:
    assoc_id: str
    role_name: str
    access_id: str
    sub_claims: SubClaims = ()

    def matches(self, identity: Identity) -> bool:
        """The identity came through this association's auth method and satisfies its sub-claims."""
        return identity.access_id == self.access_id and sub_claims_match(self.sub_claims, identity)

    def to_dict(self, am_name: str | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "assoc-id": self.assoc_id,
            "role-name": self.role_name,
            "access-id": self.access_id,
            "sub-claims": {k: list(v) for k, v in self.sub_claims},
        }
        if am_name is not None:
            out["am-name"] = am_name
        return out


@dataclass
class AccessRole:
    name: str
    description: str = ""
    associations: dict[str, Association] = field(default_factory=dict)
    rules: dict[tuple[RuleType, str], RoleRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = canonical_path(self.name, "name")
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION:
            raise ModelError("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
        if not _DESCRIPTION.fullmatch(self.description):
            raise ModelError("description", "control characters are not allowed (newlines and tabs are)")
