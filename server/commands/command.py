"""One declaration per command: its flags, whether the caller must be logged in, what it needs, its handler.

A command is ``POST /<name>`` with a JSON object whose keys are the flag names (list flags as JSON lists) and
the ``cedarkey NAME --flag ...`` subcommand. The HTTP layer validates a body against the flags (and applies
their defaults), checks the declared :class:`Need` decisions before the handler runs, and calls the handler
with a :class:`Call`; ``/openapi.json``, the CLI's subcommands and the permission tests are made from the same
declarations. Nothing keeps a second list: ``@command(...)`` registers, and ``cedarkey.server.commands``
imports one module per concept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cedarkey.engine import Capability, RuleType, canonical_path

if TYPE_CHECKING:
    from ..service import Service
    from ..tokens import Session

MAX_STRING = 8192
MAX_LIST = 1000
#: Requests in one ``authorize`` call, at most.
MAX_REQUESTS = 1000

Args = dict[str, Any]
Answer = dict[str, Any]


@dataclass(frozen=True)
class Flag:
    """``kind``: ``str``, ``secret`` (a string that is never logged, up to 96 KiB), ``list`` of strings,
    ``int``, or ``requests`` (authorize's list of decisions). ``default`` is what the handler sees when the
    flag is left out; ``choices`` the only values accepted; ``path``: the value is an object's path
    (``name``) or a rule's pattern (``pattern``), given to the handler in canonical form."""

    name: str
    kind: str = "str"
    required: bool = False
    help: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    path: str = ""


@dataclass(frozen=True)
class Need:
    """A decision the caller must be allowed before the handler runs: one of ``capabilities`` on the object
    named by the flag ``of`` under ``rule_type``. With ``path``, the object's path comes from the call instead
    (None: nothing to decide, e.g. an optional flag left out)."""

    capabilities: tuple[Capability, ...]
    rule_type: RuleType
    of: str = "name"
    path: Callable[[Call], str | None] | None = None

    def object_path(self, call: Call) -> str | None:
        raw = self.path(call) if self.path is not None else call.args.get(self.of)
        return None if raw is None else canonical_path(raw, self.of)


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
) -> Callable[[Handler], Handler]:
    """Declares the command ``name`` served by the decorated handler."""

    def register(handler: Handler) -> Handler:
        if name in REGISTRY:
            raise ValueError(f"command {name!r} is declared twice")
        REGISTRY[name] = Command(name, summary, handler, flags, authenticated, needs, reads_everything)
        return handler

    return register


def check_needs(cmd: Command, call: Call) -> None:
    """Every decision ``cmd`` declares, for the caller of ``call``: PermissionDenied at the first refused."""
    service, session = call.service, call.caller
    if cmd.reads_everything:
        service.require_list_everything(session)
    for need in cmd.needs:
        path = need.object_path(call)
        if path is not None:
            service.require_any(session, need.capabilities, path, need.rule_type)


# --- flags several commands share -------------------------------------------------------------------------

NAME = Flag("name", required=True, help="object path, e.g. /dev/db-password (a leading / is added)", path="name")
ROLE_NAME = Flag("role-name", required=True, path="name")
AM_NAME = Flag("am-name", required=True, path="name")
RULE_TYPE = Flag("rule-type", default="item-rule", choices=tuple(RuleType), help=" | ".join(RuleType))
SUBJECT = Flag("subject-token", "secret", help="ask about another caller's token (see README)")
