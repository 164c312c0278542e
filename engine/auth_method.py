"""Auth methods: how a caller proves who it is, and which proven identities may log in.

An ``aws_iam`` auth method is bound to at least one AWS account and optionally to ARNs (``*`` wildcard),
role names, role ids, resource ids (the session name of an EC2 instance profile: the instance id), user
names and user ids. Within one binding any listed value matches; every binding that is set must match.
``bound_ips`` (CIDRs) and ``access_expires`` apply to every type. An ``access_key`` auth method holds only
the hash of its key, which the server keeps: nothing secret lives here.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from .errors import ModelError, shown
from .path import canonical_path

AWS_IAM = "aws_iam"
ACCESS_KEY = "access_key"
TYPES = (AWS_IAM, ACCESS_KEY)

DEFAULT_STS_URL = "https://sts.amazonaws.com/"
DEFAULT_JWT_TTL = 3600
MAX_JWT_TTL = 30 * 24 * 3600
MAX_BOUND_VALUES = 100

_ACCOUNT = re.compile(r"\d{12}", re.ASCII)
_IAM_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_AWS_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_ARN = re.compile(r"arn:[a-z0-9*-]+:[a-z0-9*-]+:[a-z0-9*-]*:[0-9*]*:[\w+=,.@/*:-]{1,1900}", re.ASCII)
_ACCESS_ID = re.compile(r"p-[a-z0-9]{12,64}")


@dataclass(frozen=True)
class Setting:
    """A field of an auth method that its creator sets: its flag (the API's and the rule files' name), its
    dataclass field, its kind (``list`` of strings, ``int`` or ``str``) and what it means."""

    flag: str
    field: str
    kind: str
    help: str
    aws_only: bool = False


@dataclass(frozen=True)
class Binding(Setting):
    """One ``bound-*`` list of an aws_iam auth method and the identity attributes it tests."""

    identity_attributes: tuple[str, ...] = ()
    wildcard: bool = False


def _binding(flag: str, help: str, attributes: tuple[str, ...], *, wildcard: bool = False) -> Binding:
    return Binding(flag, flag.replace("-", "_"), "list", help, True, attributes, wildcard)


BINDINGS: tuple[Binding, ...] = (
    _binding("bound-aws-account-id", "AWS account ids allowed to log in (at least one)", ("account",)),
    _binding(
        "bound-arn",
        "ARNs allowed (* wildcard); matched against the STS ARN and its IAM ARN",
        ("arn", "iam_arn"),
        wildcard=True,
    ),
    _binding("bound-role-name", "IAM role names allowed", ("role_name",)),
    _binding("bound-role-id", "IAM role ids allowed (AROA...)", ("role_id",)),
    _binding(
        "bound-resource-id",
        "resource ids allowed: an assumed role's session name (an EC2 instance id), which the caller of "
        "AssumeRole chooses; pair it with a role binding",
        ("resource_id",),
    ),
    _binding("bound-user-name", "IAM user names allowed", ("user_name",)),
    _binding("bound-user-id", "IAM user ids allowed (AIDA...)", ("user_id",)),
)

#: Every field an auth method's creator sets, in the order the API lists them.
SETTINGS: tuple[Setting, ...] = (
    *BINDINGS,
    Setting("bound-ips", "bound_ips", "list", "CIDRs logins may come from"),
    Setting("access-expires", "access_expires", "int", "epoch seconds after which nobody can log in (0: never)"),
    Setting("jwt-ttl", "jwt_ttl", "int", "lifetime of issued tokens, in seconds (default 3600)"),
    Setting(
        "sts-url",
        "sts_url",
        "str",
        "STS endpoint the login proof is signed for (default https://sts.amazonaws.com/)",
        True,
    ),
)


def settings_from(values: Mapping[str, object]) -> dict[str, object]:
    """The dataclass fields of an auth method from ``{flag: value}`` (flags not given are left out)."""
    return {s.field: values[s.flag] for s in SETTINGS if s.flag in values}


#: The bindings that pin the role, which makes a resource id (a session name) mean something.
ROLE_BINDINGS = ("bound-role-name", "bound-role-id", "bound-arn")

_VALUE_CHECKS = {
    "bound_aws_account_id": (_ACCOUNT, "a 12-digit AWS account id"),
    "bound_arn": (_ARN, "an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, '*' allowed)"),
    "bound_role_name": (_IAM_NAME, "an IAM role name"),
    "bound_role_id": (_AWS_ID, "an IAM role id (e.g. AROA...)"),
    "bound_resource_id": (_IAM_NAME, "a resource id (e.g. an EC2 instance id)"),
    "bound_user_name": (_IAM_NAME, "an IAM user name"),
    "bound_user_id": (_AWS_ID, "an IAM user id (e.g. AIDA...)"),
}


def new_access_id() -> str:
    """A fresh access id: ``p-`` and 16 random base-36 characters."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "p-" + "".join(secrets.choice(alphabet) for _ in range(16))


@dataclass(frozen=True)
class AuthMethod:
    name: str
    access_id: str
    type: str
    access_expires: int = 0
    jwt_ttl: int = DEFAULT_JWT_TTL
    bound_ips: tuple[str, ...] = ()
    sts_url: str | None = None
    bound_aws_account_id: tuple[str, ...] = ()
    bound_arn: tuple[str, ...] = ()
    bound_role_name: tuple[str, ...] = ()
    bound_role_id: tuple[str, ...] = ()
    bound_resource_id: tuple[str, ...] = ()
    bound_user_name: tuple[str, ...] = ()
    bound_user_id: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "name", canonical_path(self.name, "name"))
        if not isinstance(self.access_id, str) or not _ACCESS_ID.fullmatch(self.access_id):
            raise ModelError("access-id", "must be 'p-' and 12 to 64 lower-case letters or digits")
        if self.type not in TYPES:
            raise ModelError("type", f"must be one of {', '.join(TYPES)}")
        set_(self, "access_expires", _int(self.access_expires, "access-expires", 0, 2**53))
        set_(self, "jwt_ttl", _int(self.jwt_ttl, "jwt-ttl", 60, MAX_JWT_TTL))
        set_(self, "bound_ips", _cidrs(self.bound_ips))
        for binding in BINDINGS:
            pattern, what = _VALUE_CHECKS[binding.field]
            values = _strings(getattr(self, binding.field), binding.flag)
            for value in values:
                if not pattern.fullmatch(value):
                    raise ModelError(binding.flag, f"{shown(value)} is not {what}")
            set_(self, binding.field, values)
        if self.type == AWS_IAM:
            if not self.bound_aws_account_id:
                raise ModelError("bound-aws-account-id", "an aws_iam auth method needs at least one account")
            set_(self, "sts_url", canonical_sts_url(self.sts_url or DEFAULT_STS_URL))
        else:
            bound = [b.flag for b in BINDINGS if getattr(self, b.field)]
            if bound:
                raise ModelError(bound[0], "only aws_iam auth methods have AWS bindings")
            if self.sts_url is not None:
                raise ModelError("sts-url", "only aws_iam auth methods have an STS URL")

    def bindings(self) -> list[tuple[Binding, tuple[str, ...]]]:
        """The AWS bindings that are set, with their values."""
        return [(b, getattr(self, b.field)) for b in BINDINGS if getattr(self, b.field)]

    def binding_warning(self) -> str | None:
        """A warning when the bindings let in more than they seem to: nothing but accounts (any identity there
        logs in), or a resource id without a role binding (the session name is chosen by whoever assumes the
        role, so it proves nothing alone)."""
        if self.type != AWS_IAM:
            return None
        flags = {b.flag for b, _ in self.bindings()}
        if flags == {"bound-aws-account-id"}:
            return (
                "this auth method is bound only to an AWS account: every identity in it can log in; "
                "least privilege wants at least one more binding (role name, ARN, role id, ...)"
            )
        if "bound-resource-id" in flags and not flags & set(ROLE_BINDINGS):
            return (
                "bound-resource-id is an assumed role's session name, which whoever calls AssumeRole chooses: "
                "pair it with a role binding (bound-role-name, bound-role-id or bound-arn)"
            )
        return None

    def to_dict(self) -> dict[str, object]:
        """The auth method as the API shows it (flag names as keys)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return out


def canonical_sts_url(value: object) -> str:
    """An STS endpoint URL: http(s), a host, an optional port and path; no userinfo, query or fragment."""
    if not isinstance(value, str) or len(value) > 512:
        raise ModelError("sts-url", "must be a URL of at most 512 characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ModelError("sts-url", "not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise ModelError("sts-url", "scheme must be https (or http for a local stand-in)")
    if not parts.hostname or "@" in parts.netloc:
        raise ModelError("sts-url", "needs a host and no user information")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ModelError("sts-url", "must not have a query or fragment")
    if any(ord(c) < 33 or ord(c) > 126 for c in value):
        raise ModelError("sts-url", "must be printable ASCII")
    if port == 0:
        raise ModelError("sts-url", "port 0 is not a port")
    host = _sts_host(parts.hostname.lower())
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path or '/'}"


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _sts_host(host: str) -> str:
    """``host`` (lower case, as ``urlsplit`` gives it) if an HTTP client can connect to it as written: an
    IPv6 address (answered in brackets), a dotted-quad IPv4 address, or a DNS name of 1-63 character labels
    (letters, digits, ``-`` and ``_``; no IDNA ``xn--`` label, which HTTP clients decode by rules of their
    own, and no STS endpoint has), at most 253 characters, with an optional final dot. A name whose last
    label is a number must be an IPv4 address: ``127.1`` or ``1.2.3.999`` mean different things to
    different resolvers, or nothing."""
    if ":" in host:
        try:
            if "%" in host:
                raise ValueError(host)
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ModelError("sts-url", "the host is not a valid IPv6 address (zone ids are not allowed)") from None
        return f"[{host}]"
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ModelError("sts-url", "the host is not a valid host name")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ModelError("sts-url", "the host is not a valid IPv4 address") from None
        return host
    if any(label.startswith("xn--") for label in labels):
        raise ModelError("sts-url", "internationalised (xn--) host names are not STS endpoints")
    return host


def _int(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdecimal() and len(value) < 20:
            value = int(value)
        else:
            raise ModelError(field, "must be an integer")
    if not low <= value <= high:
        raise ModelError(field, f"must be between {low} and {high}")
    return value


def _strings(values: object, field: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Iterable):
        raise ModelError(field, "must be a list of strings")
    out = []
    for value in values:
        if not isinstance(value, str) or not value:
            raise ModelError(field, "must be a list of non-empty strings")
        if value not in out:
            out.append(value)
    if len(out) > MAX_BOUND_VALUES:
        raise ModelError(field, f"at most {MAX_BOUND_VALUES} values")
    return tuple(out)


def _cidrs(values: object) -> tuple[str, ...]:
    out = []
    for value in _strings(values, "bound-ips"):
        try:
            if "%" in value:  # a scoped IPv6 zone: no meaning for a login's source address
                raise ValueError
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ModelError("bound-ips", f"{shown(value)} is not an IP address or CIDR") from None
    return tuple(dict.fromkeys(out))
