"""One declaration per command: its flags, whether the caller must be logged in, what it needs, its handler.

A command is ``POST /<name>`` with a JSON object whose keys are the flag names (list flags as JSON lists) and
the ``cedarkey NAME --flag ...`` subcommand. The HTTP layer validates a body against the flags (and applies
their defaults), checks the declared :class:`Need` decisions before the handler runs, and calls the handler
with a :class:`Call`; ``/openapi.json``, the CLI's subcommands and the permission tests are made from the same
declarations. Nothing keeps a second list: ``@command(...)`` registers, and ``cedarkey.server.commands``
imports one module per concept.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cedarkey.engine import Capability, RuleType, canonical_path, canonical_pattern, grammar
from cedarkey.engine.access_role import MAX_DESCRIPTION
from cedarkey.engine.capability import ACTIONS
from cedarkey.engine.errors import shown
from cedarkey.engine.path import MAX_PATH_LENGTH, canonical_folder

from ..errors import bad_request

if TYPE_CHECKING:
    from ..service import Service
    from ..tokens import Session

MAX_STRING = 8192
MAX_LIST = 1000
#: A secret's characters (a flag of kind ``secret``): what ``maxLength`` can say, unlike a count of bytes.
MAX_SECRET = 64 * 1024
#: Requests in one ``authorize`` call, at most.
MAX_REQUESTS = 1000
_REQUEST_KEYS = frozenset(("path", "capability", "rule-type"))
_DEFAULT_LENGTH = {"str": MAX_STRING, "secret": MAX_SECRET, "list": MAX_STRING, "names": MAX_STRING}
#: Names in one flag of kind ``names`` (``get-secret-value`` of several secrets), at most.
MAX_NAMES = 100

Args = dict[str, Any]
Answer = dict[str, Any]


@dataclass(frozen=True)
class Flag:
    """``kind``: ``str``, ``secret`` (a string that is never logged), ``list`` of strings, ``names`` (a string
    or a list of them), ``int``, or ``requests`` (authorize's list of decisions). ``default`` is what the
    handler sees when the flag is left out; ``choices`` the only values accepted; ``path``: the value is an
    object's path (``name``) or a rule's pattern (``pattern``), given to the handler in canonical form.
    ``pattern`` (an expression of :mod:`cedarkey.engine.grammar`, described by ``what``), ``max_length``,
    ``minimum``/``maximum`` and ``max_items`` bound a value (each item of a list): :meth:`check` enforces
    exactly what ``/openapi.json`` publishes from the same fields."""

    name: str
    kind: str = "str"
    required: bool = False
    help: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    path: str = ""
    pattern: str = ""
    what: str = ""
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    max_items: int = MAX_LIST
    min_items: int = 0
    #: A value that works, for the document (and the tests that call every command).
    example: Any = None
    #: The published schema, where the fields above cannot say it (the handler's checks then decide).
    schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    _matcher: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern and not self.path:  # a path's checks give reasons; tests/test_grammar.py proves them equal
            object.__setattr__(self, "_matcher", re.compile(self.pattern))
        if self.max_length is None and self.kind in _DEFAULT_LENGTH:
            object.__setattr__(self, "max_length", MAX_PATH_LENGTH if self.path else _DEFAULT_LENGTH[self.kind])

    def check(self, value: Any) -> Any:
        """``value`` as the handler sees it, or BadRequest naming this flag."""
        kind, key = self.kind, self.name
        if kind in ("str", "secret"):
            value = self._string(value, key)
        elif kind == "list":
            if not isinstance(value, list) or not self.min_items <= len(value) <= self.max_items:
                raise bad_request(f"{key}: must be a list of {self.min_items} to {self.max_items} strings")
            value = [self._string(v, key) for v in value]
        elif kind == "names":  # one name, or a list of them (each decided on its own)
            if isinstance(value, list):
                if not 1 <= len(value) <= MAX_NAMES:
                    raise bad_request(f"{key}: one name, or a list of 1 to {MAX_NAMES} names")
                value = list(dict.fromkeys(self._string(v, key) for v in value))  # the same name twice: once
            else:
                value = self._string(value, key)
        elif kind == "int":
            value = _integer(value, key, self.minimum, self.maximum)
        elif kind == "requests":
            value = _requests(value, key)
        return value

    def _string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise bad_request(f"{key}: must be a string")
        if self.max_length is not None and len(value) > self.max_length:
            raise bad_request(f"{key}: longer than {self.max_length} characters")
        if self.choices and value not in self.choices:
            raise bad_request(f"{key}: {shown(value)} is not one of {', '.join(self.choices)}")
        if self._matcher is not None and not self._matcher.fullmatch(value):
            # The value is not quoted: a key pasted as an access id would reach the audit log of a login.
            raise bad_request(f"{key}: not {self.what or 'of the documented syntax'}")
        if self.path:
            return _CANONICAL[self.path](value, key)
        return value


_CANONICAL = {"name": canonical_path, "pattern": canonical_pattern, "folder": canonical_folder}


def _integer(value: Any, key: str, low: int | None, high: int | None) -> int:
    if isinstance(value, float) and value.is_integer():  # JSON has one number type: 3600.0 is 3600
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key}: must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad_request(f"{key}: must be between {low} and {high}")
    return value


def _requests(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_REQUESTS:
        raise bad_request(f"{key}: must be a list of 1 to {MAX_REQUESTS} requests")
    for n, r in enumerate(value):
        if not isinstance(r, dict) or not set(r) <= _REQUEST_KEYS:
            raise bad_request(f"{key}[{n}]: must be an object with path, capability and rule-type")
        for k, v in r.items():
            if not isinstance(v, str) or len(v) > MAX_PATH_LENGTH:
                raise bad_request(f"{key}[{n}].{k}: must be a string of at most {MAX_PATH_LENGTH} characters")
    return value


@dataclass(frozen=True)
class Need:
    """A decision the caller must be allowed before the handler runs: one of ``capabilities`` on the object
    named by the flag ``of`` under ``rule_type``. With ``path``, the object's path comes from the call instead
    (None: nothing to decide, e.g. an optional flag left out)."""

    capabilities: tuple[Capability, ...]
    rule_type: RuleType
    of: str = "name"
    path: Callable[[Call], str | None] | None = None

    def object_paths(self, call: Call) -> list[str]:
        """The objects to decide on: none, one, or each of a flag of kind ``names``."""
        raw = self.path(call) if self.path is not None else call.args.get(self.of)
        if raw is None:
            return []
        return [canonical_path(p, self.of) for p in (raw if isinstance(raw, list) else [raw])]


Handler = Callable[["Call"], Awaitable[Answer] | Answer]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    handler: Handler
    flags: tuple[Flag, ...] = ()
    authenticated: bool = True
    needs: tuple[Need, ...] = ()
    #: The caller needs ``list`` on every role and auth method (what it answers names the whole model).
    reads_everything: bool = False
    #: Groups of flags of which a body gives (at least) one whole group, e.g. an id or two names.
    one_of: tuple[tuple[str, ...], ...] = ()
    _by_name: dict[str, Flag] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: The flags a body must give, and the defaults of the others (what validation applies).
    required: tuple[str, ...] = field(default=(), init=False, compare=False)
    defaults: tuple[tuple[str, Any], ...] = field(default=(), init=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update((f.name, f) for f in self.flags)
        object.__setattr__(self, "required", tuple(f.name for f in self.flags if f.required))
        object.__setattr__(self, "defaults", tuple((f.name, f.default) for f in self.flags if f.default is not None))

    def flag(self, name: str) -> Flag | None:
        return self._by_name.get(name)


@dataclass(frozen=True, slots=True)
class Call:
    """One command being served: its checked arguments, the caller's session (None before a login), the
    token it came with, and the TCP peer's address."""

    service: Service
    args: Args
    session: Session | None = None
    token: str | None = None
    source_ip: str | None = None

    @property
    def caller(self) -> Session:
        assert self.session is not None, "an authenticated command has a session"
        return self.session


REGISTRY: dict[str, Command] = {}


def command(
    name: str,
    summary: str,
    *flags: Flag,
    needs: tuple[Need, ...] = (),
    authenticated: bool = True,
    reads_everything: bool = False,
    one_of: tuple[tuple[str, ...], ...] = (),
) -> Callable[[Handler], Handler]:
    """Declares the command ``name`` served by the decorated handler."""

    def register(handler: Handler) -> Handler:
        if name in REGISTRY:
            raise ValueError(f"command {name!r} is declared twice")
        REGISTRY[name] = Command(name, summary, handler, flags, authenticated, needs, reads_everything, one_of)
        return handler

    return register


def check_needs(cmd: Command, call: Call) -> None:
    """Every decision ``cmd`` declares, for the caller of ``call``: PermissionDenied at the first refused."""
    service, session = call.service, call.caller
    if cmd.reads_everything:
        service.require_list_everything(session)
    for need in cmd.needs:
        for path in need.object_paths(call):
            service.require_any(session, need.capabilities, path, need.rule_type)


# --- flags several commands share -------------------------------------------------------------------------

NAME = Flag("name", required=True, help="object path, e.g. /dev/db-password (a leading / is added)", path="name")
ROLE_NAME = Flag("role-name", required=True, path="name")
AM_NAME = Flag("am-name", required=True, path="name")
RULE_TYPE = Flag("rule-type", default="item-rule", choices=tuple(RuleType), help=" | ".join(RuleType))
SUBJECT = Flag("subject-token", "secret", help="ask about another caller's token (see README)", max_length=256)
#: The object a question is about, and what is asked of it (``deny`` only takes capabilities away).
ASKED_PATH = Flag("path", required=True, help="object path, e.g. /dev/db-password", path="name")
ASKED_CAPABILITY = Flag("capability", required=True, choices=tuple(ACTIONS), help=" | ".join(ACTIONS), example="read")
DESCRIPTION = Flag(
    "description",
    help="free text",
    max_length=MAX_DESCRIPTION,
    pattern=grammar.DESCRIPTION,
    what="free text without control characters (newlines and tabs are allowed)",
)


def _capabilities(*allowed: str) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": MAX_LIST, "items": {"type": "string", "enum": list(allowed)}}


#: A rule's capabilities: some of the actions, or ``deny`` alone.
RULE_CAPABILITIES = {"anyOf": [_capabilities(*ACTIONS), _capabilities(Capability.DENY)]}
