"""A secret flag's value (``--value``, ``--subject-token``...) from elsewhere than the command line, where shell
history and ``ps`` would show it: ``--NAME -`` reads standard input (a prompt that does not echo, on a
terminal), ``--NAME-file PATH`` reads a file. Both are taken exactly as they are (a trailing newline is part
of the value: ``printf %s``, not ``echo``, or a prompt). An empty ``--value`` is refused unless
``--allow-empty``: it is far more often an unset shell variable than a wanted secret.
"""

from __future__ import annotations

import argparse
import getpass
import io
import sys
from pathlib import Path
from typing import TextIO

from cedarkey.server.commands import Flag

STDIN = "-"


class SecretInputError(Exception):
    """A secret flag's value cannot be read: the message names the flag and why."""


def add_secret_flag(p: argparse.ArgumentParser, flag: Flag, text: str) -> None:
    dest = flag.name.replace("-", "_")
    group = p.add_mutually_exclusive_group(required=flag.required)
    group.add_argument(f"--{flag.name}", dest=dest, help=f"{text} ('-': read it from standard input)")
    group.add_argument(
        f"--{flag.name}-file", dest=f"{dest}_file", type=Path, metavar="PATH", help=f"read --{flag.name} from PATH"
    )
    if flag.name == "value":
        p.add_argument("--allow-empty", action="store_true", help="accept an empty --value")


def secret_value(flag: Flag, ns: argparse.Namespace, stdin: TextIO | None = None) -> str | None:
    """The flag's value as given, read from standard input or from its file; None when it was not given."""
    dest = flag.name.replace("-", "_")
    given, path = getattr(ns, dest, None), getattr(ns, f"{dest}_file", None)
    if path is not None:
        value = _read_file(flag, path)
    elif given == STDIN:
        value = _read_stdin(flag, stdin or sys.stdin)
    else:
        value = given
    if value is None:
        return None
    if flag.max_length is not None and len(value) > flag.max_length:
        raise SecretInputError(f"--{flag.name}: longer than {flag.max_length} characters, the server's limit")
    if value == "" and flag.name == "value" and not ns.allow_empty:
        raise SecretInputError("--value is empty (an unset variable?): give --allow-empty if that is what you mean")
    return value


def _read_file(flag: Flag, path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return _bounded(flag, f, f"--{flag.name}-file {path}")
    except OSError as exc:
        raise SecretInputError(f"--{flag.name}-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretInputError(f"--{flag.name}-file {path}: not UTF-8 text") from None
    except ValueError:  # a NUL in the path
        raise SecretInputError(f"--{flag.name}-file: not a usable path") from None


def _read_stdin(flag: Flag, stdin: TextIO) -> str:
    if stdin is sys.stdin and hasattr(stdin, "buffer"):  # UTF-8 whatever the locale, line ends as sent
        stdin = io.TextIOWrapper(stdin.buffer, encoding="utf-8", newline="")
    if stdin.isatty():
        try:
            return getpass.getpass(f"{flag.name}: ")
        except EOFError:
            raise SecretInputError(f"--{flag.name} -: nothing was typed") from None
    try:
        return _bounded(flag, stdin, f"--{flag.name} - (standard input)")
    except UnicodeDecodeError:
        raise SecretInputError(f"--{flag.name} -: standard input is not UTF-8 text") from None


def _bounded(flag: Flag, f: TextIO, what: str) -> str:
    """At most one character more than the flag's limit: a huge file is refused without reading it whole."""
    limit = flag.max_length
    text = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(text) > limit:
        raise SecretInputError(f"{what}: longer than {limit} characters, the server's limit")
    return text
