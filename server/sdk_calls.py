"""The SDK's typed calls, written from the one command registry: ``cedarkey/client/commands.py`` is this
module's output, and a test fails when the two differ (a command or flag added without regenerating).

    python -m cedarkey.server.sdk_calls > client/commands.py
"""

from __future__ import annotations

import textwrap

from .commands import COMMANDS, Command, Flag

_TYPES = {
    "str": "str",
    "secret": "str",
    "list": "list[str]",
    "names": "str | list[str]",
    "int": "int",
    "requests": "list[dict[str, str]]",
}

_HEAD = '''"""Typed calls, one per command: ``client.get_secret_value("/dev/db")``, ``client.authorize([...])``.

Written by ``python -m cedarkey.server.sdk_calls`` from the server's command registry: do not edit by hand.
Each answers the command's JSON object; a refusal raises :class:`cedarkey.client.sdk.ApiError` with the API's
``status`` and ``code`` (e.g. ``PermissionDenied``). An argument left as None is left out of the request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Commands(ABC):
    """The commands, for a class that supplies :meth:`call` (authenticated) and :meth:`call_anonymous`."""

    @abstractmethod
    def call(self, command: str, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Sends ``command`` with ``body`` and the caller's token; its answer."""

    @abstractmethod
    def call_anonymous(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Sends ``command`` with ``body`` and no token (``auth``, ``lookup-sts-url``); its answer."""
'''


def _param(flag: Flag) -> str:
    kind = _TYPES[flag.kind]
    return f"{_py(flag)}: {kind}" if flag.required else f"{_py(flag)}: {kind} | None = None"


def _py(flag: Flag) -> str:
    return flag.name.replace("-", "_")


def _method(cmd: Command) -> str:
    required = [f for f in cmd.flags if f.required]
    optional = [f for f in cmd.flags if not f.required]
    params = ["self", *(_param(f) for f in required)]
    if optional:
        params += ["*", *(_param(f) for f in optional)]
    signature = f"    def {cmd.name.replace('-', '_')}({', '.join(params)}) -> dict[str, Any]:"
    if len(signature) > 120:
        signature = "\n".join(
            [f"    def {cmd.name.replace('-', '_')}(", *(f"        {p}," for p in params), "    ) -> dict[str, Any]:"]
        )
    body = "{" + ", ".join(f'"{f.name}": {_py(f)}' for f in cmd.flags) + "}"
    call = "self.call" if cmd.authenticated else "self.call_anonymous"
    line = f'        return {call}("{cmd.name}", {body})'
    if len(line) > 120:
        items = "".join(f'                "{f.name}": {_py(f)},\n' for f in cmd.flags)
        line = f'        return {call}(\n            "{cmd.name}",\n            {{\n{items}            }},\n        )'
    summary = cmd.summary[0].upper() + cmd.summary[1:]
    summary = summary if summary[-1] in ".?" else summary + "."
    doc = textwrap.fill(f'"""{summary}"""', 120, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return f"{signature}\n{doc}\n{line}\n"


def source() -> str:
    """The text of ``cedarkey/client/commands.py``."""
    return _HEAD + "".join("\n" + _method(cmd) for cmd in sorted(COMMANDS.values(), key=lambda c: c.name))


if __name__ == "__main__":
    print(source(), end="")
