"""A plain-Python reference model of cedarkey's access semantics, written from the spec, not the engine.

No Cedar, no engine imports: the property tests compare the engine with this model. Identities are plain
mappings of attribute name to value (``access_id``, ``auth_type``, ``account``, ``arn``, ...); a missing
key or ``None`` means the identity lacks the attribute.

Semantics in brief:

- ``*`` in a pattern matches any run of characters (``/`` included), everything else is literal and
  case-sensitive; the whole string must match.
- Login through an auth method needs the caller's access id and auth type to be the method's, and every
  binding that is set to match (any listed value; ARNs by glob on ``arn`` or ``iam_arn``; IPs by CIDR;
  ``access_expires`` 0 or ``now < access_expires``).
- A caller holds the roles with an association to its access id whose sub-claims all match (any pattern
  of an attribute; a missing attribute fails). Capability C on path P under rule type T is allowed iff a
  rule of type T of a held role matches P and grants C, and no rule of type T of a held role matching P
  is ``deny``.
- Break glass: an ``access_key`` auth method named ``/admin`` is beyond the deny rules of every role but
  ``/admin``: for its callers only ``/admin``'s denies count.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_PATH_LENGTH = 1024
RULE_TYPES = ("item-rule", "role-rule", "auth-method-rule")
ACTIONS = ("read", "create", "update", "delete", "list")
DENY = "deny"

# binding name (the auth method's field) -> identity attributes it tests
BINDING_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "bound_aws_account_id": ("account",),
    "bound_arn": ("arn", "iam_arn"),
    "bound_role_name": ("role_name",),
    "bound_role_id": ("role_id",),
    "bound_resource_id": ("resource_id",),
    "bound_user_name": ("user_name",),
    "bound_user_id": ("user_id",),
}
WILDCARD_BINDINGS = frozenset({"bound_arn"})

Identity = Mapping[str, object]


# --- matching --------------------------------------------------------------------------------------------


def glob_match(pattern: str, text: str) -> bool:
    """Whether ``text`` matches ``pattern`` as a whole, ``*`` matching any run of characters.

    A dynamic program over (pattern position, text position): ``reach[j]`` says whether the pattern read
    so far can consume exactly ``text[:j]``.
    """
    reach = [True] + [False] * len(text)
    for p in pattern:
        if p == "*":
            # '*' keeps every reachable position and extends it to every later one
            seen = False
            for j in range(len(text) + 1):
                seen = seen or reach[j]
                reach[j] = seen
        else:
            for j in range(len(text), 0, -1):
                reach[j] = reach[j - 1] and text[j - 1] == p
            reach[0] = False
    return reach[len(text)]


def is_control(ch: str) -> bool:
    """Control characters (Unicode category Cc: C0, DEL, C1) and lone surrogates."""
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF


def is_invisible(ch: str) -> bool:
    """Code points that show nothing or reorder text: format characters (Cf), the line and paragraph
    separators, and the noncharacters."""
    o = ord(ch)
    noncharacter = 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFF) in (0xFFFE, 0xFFFF)
    return noncharacter or o in (0x2028, 0x2029) or unicodedata.category(ch) == "Cf"


def canonical(value: object, *, pattern: bool) -> str | None:
    """The canonical form of a path (or, with ``pattern``, a rule pattern); ``None`` when refused."""
    if not isinstance(value, str) or not value:
        return None
    if any(is_control(c) or is_invisible(c) for c in value):
        return None
    if len(value) > MAX_PATH_LENGTH:
        return None
    value = unicodedata.normalize("NFC", value)  # one name however it is spelled in Unicode
    path = value if value.startswith("/") else "/" + value
    if len(path) > MAX_PATH_LENGTH:
        return None
    if not pattern and "*" in path:
        return None
    segments = path[1:].split("/")
    if any(s in ("", ".", "..") for s in segments):
        return None
    return path


# --- the model -------------------------------------------------------------------------------------------


@dataclass
class RefAuthMethod:
    name: str
    access_id: str
    type: str
    bindings: dict[str, tuple[str, ...]] = field(default_factory=dict)  # only the bindings that are set
    bound_ips: tuple[str, ...] = ()
    access_expires: int = 0


@dataclass
class RefAssociation:
    assoc_id: str
    role_name: str
    access_id: str
    sub_claims: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class RefRole:
    name: str
    associations: dict[str, RefAssociation] = field(default_factory=dict)
    rules: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # (type, pattern) -> caps


@dataclass
class RefModel:
    auth_methods: dict[str, RefAuthMethod] = field(default_factory=dict)
    roles: dict[str, RefRole] = field(default_factory=dict)

    # --- changes (the tests only make changes the engine accepts) ---------------------------------------

    def add_auth_method(self, am: RefAuthMethod) -> None:
        self.auth_methods[am.name] = am

    def update_auth_method(self, am: RefAuthMethod) -> None:
        self.auth_methods[am.name] = am

    def delete_auth_method(self, name: str) -> None:
        am = self.auth_methods.pop(name)
        for role in self.roles.values():
            for assoc_id in [a for a, x in role.associations.items() if x.access_id == am.access_id]:
                del role.associations[assoc_id]

    def add_role(self, name: str) -> None:
        self.roles[name] = RefRole(name)

    def delete_role(self, name: str) -> None:
        del self.roles[name]

    def associate(self, assoc: RefAssociation) -> None:
        self.roles[assoc.role_name].associations[assoc.assoc_id] = assoc

    def delete_association(self, assoc_id: str) -> None:
        for role in self.roles.values():
            role.associations.pop(assoc_id, None)

    def set_rule(self, role_name: str, rule_type: str, pattern: str, capabilities: Iterable[str]) -> None:
        self.roles[role_name].rules[(rule_type, pattern)] = frozenset(capabilities)

    def delete_rule(self, role_name: str, rule_type: str, pattern: str) -> None:
        del self.roles[role_name].rules[(rule_type, pattern)]

    def by_access_id(self, access_id: object) -> RefAuthMethod | None:
        for am in self.auth_methods.values():
            if am.access_id == access_id:
                return am
        return None

    # --- login -----------------------------------------------------------------------------------------

    def failing_bindings(self, identity: Identity, now: int) -> set[str]:
        """The bindings of the caller's auth method that refuse it (``bound_ips``, ``access_expires``
        included); empty when no auth method has the caller's access id."""
        am = self.by_access_id(identity.get("access_id"))
        if am is None:
            return set()
        failing = set()
        for binding, values in am.bindings.items():
            if not binding_matches(binding, values, identity):
                failing.add(binding)
        if am.bound_ips and not ip_matches(am.bound_ips, identity.get("source_ip")):
            failing.add("bound_ips")
        if am.access_expires and not now < am.access_expires:
            failing.add("access_expires")
        return failing

    def authenticate(self, identity: Identity, now: int) -> bool:
        am = self.by_access_id(identity.get("access_id"))
        if am is None or identity.get("auth_type") != am.type:
            return False
        return not self.failing_bindings(identity, now)

    # --- decisions -------------------------------------------------------------------------------------

    def is_break_glass(self, identity: Identity) -> bool:
        """The caller came through the access_key auth method named /admin."""
        admin = self.auth_methods.get("/admin")
        return admin is not None and admin.type == "access_key" and admin.access_id == identity.get("access_id")

    def held_roles(self, identity: Identity) -> list[RefRole]:
        """The roles with an association that matches the identity."""
        access_id = identity.get("access_id")
        return [
            role
            for role in self.roles.values()
            if any(
                a.access_id == access_id and sub_claims_match(a.sub_claims, identity)
                for a in role.associations.values()
            )
        ]

    def matching_rules(
        self, identity: Identity, capability: str, path: str, rule_type: str
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """``(granting, denying)``: (role name, pattern) of the held roles' rules of ``rule_type`` whose
        pattern matches ``path`` and that grant ``capability``, resp. are ``deny``."""
        granting: set[tuple[str, str]] = set()
        denying: set[tuple[str, str]] = set()
        break_glass = self.is_break_glass(identity)
        for role in self.held_roles(identity):
            for (rt, pattern), caps in role.rules.items():
                if rt != rule_type or not glob_match(pattern, path):
                    continue
                if DENY in caps:
                    if not break_glass or role.name == "/admin":
                        denying.add((role.name, pattern))
                elif capability in caps:
                    granting.add((role.name, pattern))
        return granting, denying

    def decide(self, identity: Identity, capability: str, path: str, rule_type: str = "item-rule") -> bool:
        granting, denying = self.matching_rules(identity, capability, path, rule_type)
        return bool(granting) and not denying


def binding_matches(binding: str, values: Iterable[str], identity: Identity) -> bool:
    """One binding: some listed value matches one of the identity attributes it tests."""
    for attr in BINDING_ATTRIBUTES[binding]:
        actual = identity.get(attr)
        if not isinstance(actual, str):
            continue
        for v in values:
            if glob_match(v, actual) if binding in WILDCARD_BINDINGS else v == actual:
                return True
    return False


def ip_matches(cidrs: Iterable[str], source_ip: object) -> bool:
    if not isinstance(source_ip, str):
        return False
    address = ipaddress.ip_address(source_ip)
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


def sub_claims_match(sub_claims: Mapping[str, Iterable[str]], identity: Identity) -> bool:
    for attr, patterns in sub_claims.items():
        actual = identity.get(attr)
        if not isinstance(actual, str) or not any(glob_match(p, actual) for p in patterns):
            return False
    return True
