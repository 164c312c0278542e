"""Every command, declared in the module of its concept (see :mod:`.command`): the one list is this module's
``CONCEPTS``, in the order the API, the CLI and ``/openapi.json`` show them."""

from . import audit, auth_methods, decisions, items, login, model_sync, roles, watch
from .command import MAX_LIST, MAX_NAMES, MAX_REQUESTS, MAX_STRING, REGISTRY, Call, Command, Flag, Need, check_needs

CONCEPTS = (login, auth_methods, roles, items, decisions, model_sync, audit, watch)

_ORDER = {module.__name__: n for n, module in enumerate(CONCEPTS)}
#: The commands by name, concept by concept, each in the order its module declares it.
COMMANDS: dict[str, Command] = dict(sorted(REGISTRY.items(), key=lambda kv: _ORDER[kv[1].handler.__module__]))

__all__ = [
    "COMMANDS",
    "MAX_LIST",
    "MAX_NAMES",
    "MAX_REQUESTS",
    "MAX_STRING",
    "Call",
    "Command",
    "Flag",
    "Need",
    "check_needs",
]
