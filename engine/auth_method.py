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

from . import grammar
from .errors import ModelError, shown
from .path import canonical_path

AWS_IAM = "aws_iam"
ACCESS_KEY = "access_key"
TYPES = (AWS_IAM, ACCESS_KEY)

DEFAULT_STS_URL = "https://sts.amazonaws.com/"
DEFAULT_JWT_TTL = 3600
MIN_JWT_TTL = 60
MAX_JWT_TTL = 30 * 24 * 3600
#: A token's lifetime by renewals, when ``max-ttl`` is not set: this many times its ``jwt-ttl`` (at most 30 days).
MAX_TTL_FACTOR = 8
MAX_EPOCH = 2**53
MAX_BOUND_VALUES = 100

_ACCESS_ID = re.compile(grammar.ACCESS_ID)
_STS_URL = re.compile(grammar.STS_URL)
_CIDR = re.compile(grammar.CIDR)


@dataclass(frozen=True)
class Setting:
    """A field of an auth method that its creator sets: its flag (the API's and the rule files' name), its
    dataclass field, its kind (``list`` of strings, ``int`` or ``str``), what it means, and the values it
    takes: a :mod:`.grammar` expression (each item of a list) and ``what`` it means, or an integer range."""

    flag: str
    field: str
    kind: str
    help: str
    aws_only: bool = False
    pattern: str = ""
    what: str = ""
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    #: A value it takes (each item of a list), for the API's document.
    example: object = None


@dataclass(frozen=True)
class Binding(Setting):
    """One ``bound-*`` list of an aws_iam auth method and the identity attributes it tests."""

    identity_attributes: tuple[str, ...] = ()
    wildcard: bool = False


def _binding(
    flag: str,
    help: str,
    attributes: tuple[str, ...],
    pattern: str,
    what: str,
    example: str,
    *,
    wildcard: bool = False,
) -> Binding:
    field = flag.replace("-", "_")
    return Binding(
        flag,
        field,
        "list",
        help,
        True,
        pattern,
        what,
        example=example,
        identity_attributes=attributes,
        wildcard=wildcard,
    )


BINDINGS: tuple[Binding, ...] = (
    _binding(
        "bound-aws-account-id",
        "AWS account ids allowed to log in (at least one)",
        ("account",),
        grammar.ACCOUNT,
        "a 12-digit AWS account id",
        "123456789012",
    ),
    _binding(
        "bound-arn",
        "ARNs allowed (* wildcard); matched against the STS ARN and its IAM ARN",
        ("arn", "iam_arn"),
        grammar.ARN,
        "an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, '*' allowed)",
        "arn:aws:iam::123456789012:role/dev-*",
        wildcard=True,
    ),
    _binding(
        "bound-role-name", "IAM role names allowed", ("role_name",), grammar.IAM_NAME, "an IAM role name", "dev-role"
    ),
    _binding(
        "bound-role-id",
        "IAM role ids allowed (AROA...)",
        ("role_id",),
        grammar.AWS_ID,
        "an IAM role id (AROA...)",
        "AROA3XFRBF535EXAMPLE",
    ),
    _binding(
        "bound-resource-id",
        "resource ids allowed: an assumed role's session name (an EC2 instance id), which the caller of "
        "AssumeRole chooses; pair it with a role binding",
        ("resource_id",),
        grammar.IAM_NAME,
        "a resource id (e.g. an EC2 instance id)",
        "i-0123456789abcdef0",
    ),
    _binding(
        "bound-user-name", "IAM user names allowed", ("user_name",), grammar.IAM_NAME, "an IAM user name", "deploy"
    ),
    _binding(
        "bound-user-id",
        "IAM user ids allowed (AIDA...)",
        ("user_id",),
        grammar.AWS_ID,
        "an IAM user id (AIDA...)",
        "AIDA3XFRBF535EXAMPLE",
    ),
)

#: Every field an auth method's creator sets, in the order the API lists them.
SETTINGS: tuple[Setting, ...] = (
    *BINDINGS,
    Setting(
        "bound-ips",
        "bound_ips",
        "list",
        "CIDRs logins may come from",
        pattern=grammar.CIDR,
        what="a CIDR",
        example="10.0.0.0/8",
    ),
    Setting(
        "access-expires",
        "access_expires",
        "int",
        "epoch seconds after which nobody can log in (0: never)",
        minimum=0,
        maximum=MAX_EPOCH,
        example=0,
    ),
    Setting(
        "jwt-ttl",
        "jwt_ttl",
        "int",
        f"lifetime of issued tokens, in seconds (default {DEFAULT_JWT_TTL})",
        minimum=MIN_JWT_TTL,
        maximum=MAX_JWT_TTL,
        example=DEFAULT_JWT_TTL,
    ),
    Setting(
        "max-ttl",
        "max_ttl",
        "int",
        f"a token's whole lifetime, renewals included, from its login, in seconds; below jwt-ttl it cuts "
        f"tokens short (0, the default: {MAX_TTL_FACTOR} times jwt-ttl, at most {MAX_JWT_TTL})",
        minimum=0,
        maximum=MAX_JWT_TTL,
        example=0,
    ),
    Setting(
        "sts-url",
        "sts_url",
        "str",
        f"STS endpoint the login proof is signed for (default {DEFAULT_STS_URL})",
        True,
        pattern=grammar.STS_URL,
        what="an http(s) URL with a host, an optional port and path, and no query",
        max_length=grammar.MAX_STS_URL,
        example=DEFAULT_STS_URL,
    ),
)
_PATTERNS = {s.field: (re.compile(s.pattern), s.what) for s in BINDINGS}


def settings_from(values: Mapping[str, object]) -> dict[str, object]:
    """The dataclass fields of an auth method from ``{flag: value}`` (flags not given are left out)."""
    return {s.field: values[s.flag] for s in SETTINGS if s.flag in values}


#: The bindings that pin the role, which makes a resource id (a session name) mean something.
ROLE_BINDINGS = ("bound-role-name", "bound-role-id", "bound-arn")


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
    max_ttl: int = 0
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
        set_(self, "access_expires", _int(self.access_expires, "access-expires", 0, MAX_EPOCH))
        set_(self, "jwt_ttl", _int(self.jwt_ttl, "jwt-ttl", MIN_JWT_TTL, MAX_JWT_TTL))
        set_(self, "max_ttl", _int(self.max_ttl, "max-ttl", 0, MAX_JWT_TTL))
        set_(self, "bound_ips", _cidrs(self.bound_ips))
        for binding in BINDINGS:
            pattern, what = _PATTERNS[binding.field]
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

    def token_max_ttl(self) -> int:
        """How long a token may live by renewals, from its login (``max-ttl``, or its default)."""
        return self.max_ttl or min(MAX_TTL_FACTOR * self.jwt_ttl, MAX_JWT_TTL)

    def renewed_expiry(self, issued_at: float, now: float) -> float:
        """When a token issued at ``issued_at`` and renewed (or issued) at ``now`` expires: a ``jwt-ttl`` from
        now, never past its max TTL (as Vault caps a TTL above the max TTL)."""
        return min(now + self.jwt_ttl, issued_at + self.token_max_ttl())

    def to_dict(self) -> dict[str, object]:
        """The auth method as the API shows it (flag names as keys)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return out


def canonical_sts_url(value: object) -> str:
    """An STS endpoint URL (:data:`.grammar.STS_URL`): http(s), a host an HTTP client connects to as written
    (an IPv6 address in brackets, a dotted-quad IPv4 address, or a DNS name with no IDNA ``xn--`` label and no
    number as its last label), an optional port and path; no userinfo, query or fragment. The host is
    answered in lower case."""
    if not isinstance(value, str) or len(value) > grammar.MAX_STS_URL:
        raise ModelError("sts-url", f"must be a URL of at most {grammar.MAX_STS_URL} characters")
    if not _STS_URL.fullmatch(value):
        raise ModelError("sts-url", "must be http(s)://HOST[:PORT][/PATH] in printable ASCII, with no query")
    parts = urlsplit(value)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path or '/'}"


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
    values = list(values)
    if len(values) > MAX_BOUND_VALUES:  # counted as given, repeats too: what the API's maxItems says
        raise ModelError(field, f"at most {MAX_BOUND_VALUES} values")
    for value in values:
        if not isinstance(value, str) or not value:
            raise ModelError(field, "must be a list of non-empty strings")
    return tuple(dict.fromkeys(values))


def _cidrs(values: object) -> tuple[str, ...]:
    out = []
    for value in _strings(values, "bound-ips"):
        try:
            if not _CIDR.fullmatch(value):  # no zone ids, netmask forms or leading zeros
                raise ValueError
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ModelError("bound-ips", f"{shown(value)} is not an IP address or CIDR") from None
    return tuple(dict.fromkeys(out))
