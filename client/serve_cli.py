"""``cedarkey serve`` and ``cedarkey init``: their flags, and where a flag's value may also come from.

Every ``serve`` flag may also be set in a TOML file (``--config PATH``; its keys are the flags' names without
the dashes in front, ``max-connections = 500``, a list for a repeatable flag, ``true`` for a switch) or in an
environment variable (``CEDARKEY_`` and the name in capitals, dashes as underscores: ``CEDARKEY_MAX_CONNECTIONS``;
``1``/``true``/``yes`` or ``0``/``false``/``no`` for a switch). A flag given beats the variable, which beats
the file; a repeatable flag given replaces the file's and the variable's list rather than adding to it.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from cedarkey.server.tokens import MAX_TOKENS_PER_AUTH_METHOD

ENV_PREFIX = "CEDARKEY_"
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
#: Flags that name where the others come from, or that only one place may say.
_NOT_SETTABLE = {"config", "help"}

SETTINGS_HELP = (
    "Every flag may also be set in the TOML file of --config (key: the flag's name, e.g. max-connections = 500) "
    "or in the environment (CEDARKEY_MAX_CONNECTIONS=500); a flag beats the environment, which beats the file."
)


class ConfigError(Exception):
    """A config file or variable that cannot be used: the message names it and what is wrong."""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server",
        description="run the server",
        epilog=SETTINGS_HELP,
        formatter_class=_WithDefaults,
    )
    p.add_argument("--config", type=Path, metavar="PATH", help="a TOML file of settings (see below)")
    _server_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 or :: for every interface)")
    p.add_argument("--port", type=int, default=8200, help="port to listen on (0: any free one, logged)")
    p.add_argument("--tls-cert", type=Path, metavar="PATH", help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="PATH", help="the PEM private key of --tls-cert")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="the server log's level")
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per request: method, command, status, duration, caller's access id",
    )
    p.add_argument("--policies", type=Path, help="serve the rule files in this directory (watched)")
    p.add_argument("--audit-decisions", action="store_true", help="audit every authorize call")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="uvicorn event loop")
    p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn HTTP parser")
    p.add_argument("--max-connections", type=int, default=1000, help="connections and requests at once; beyond: 503")
    p.add_argument(
        "--workers",
        type=_workers,
        default="1",
        metavar="N",
        help="server processes on the port, one per core at most ('auto': one per CPU); each with its engine, "
        "restarted if it dies",
    )
    p.add_argument(
        "--max-tokens-per-auth-method",
        type=_at_least_one,
        default=MAX_TOKENS_PER_AUTH_METHOD,
        metavar="N",
        help="live tokens one auth method may hold; a login beyond: 429",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a request head must arrive, and a body keep arriving, within this; a body be whole within six times it",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="believe X-Forwarded-For from these proxy addresses (comma-separated, or '*'); default: no one",
    )
    p.add_argument(
        "--allowed-sts-url",
        metavar="URL",
        action="append",
        default=[],
        help="an STS URL auth methods may point at, beside AWS's own endpoints (repeatable; '*' = one host label)",
    )
    p.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="also serve /metrics there, without a token (default: only on the main port, to a token)",
    )
    p.add_argument(
        "--no-huge-pages",
        dest="huge_pages",
        action="store_false",
        help="keep the loaded model on 4 KiB pages (default: advise and collapse it into huge pages, Linux)",
    )

    p = sub.add_parser(
        "init",
        help="create the data dir, master key, store and the admin (safe twice)",
        description="create the data dir, master key, store and the admin; on an initialized store, nothing",
    )
    _server_flags(p)
    p.add_argument(
        "--reset-admin",
        action="store_true",
        help="a new /admin access key (the old one and its tokens stop working), printed once; needs the store "
        "and its master key",
    )


class _WithDefaults(argparse.HelpFormatter):
    """Each flag's help ends with its default, unless it says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:  # argparse's hook for this
        text = action.help or ""
        if "default" in text or action.default in (None, [], False, True, argparse.SUPPRESS):
            return text
        return f"{text} (default: {action.default})"


def serve_parser() -> argparse.ArgumentParser:
    """The ``serve`` parser alone (what :func:`serve_argv` reads the flags of)."""
    sub = argparse.ArgumentParser(prog="cedarkey").add_subparsers()
    add_parsers(sub)
    return sub.choices["serve"]  # type: ignore[no-any-return]


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CEDARKEY_DATA_DIR", "./data")),
        help="the SQLite store, master.key and audit.log",
    )
    p.add_argument("--database-url", default=os.environ.get("CEDARKEY_DATABASE_URL"), help="PostgreSQL (several nodes)")
    p.add_argument("--server-id", help="the name clients sign login proofs for (default: cedarkey-HOSTNAME)")


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


def _workers(value: str) -> int:
    from cedarkey.server.workers import worker_count

    try:
        return worker_count(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a number from 1, or auto") from None


def settings_of(ns: argparse.Namespace) -> Any:
    from cedarkey.server.config import Settings

    settings = Settings(data_dir=ns.data_dir, database_url=ns.database_url)
    if ns.server_id:
        settings.server_id = ns.server_id
    return settings


# --- where a flag's value comes from -------------------------------------------------------------------------


def serve_argv(parser: argparse.ArgumentParser, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` of ``serve`` preceded by what the config file and the environment set: argparse keeps the last
    value given, so a flag beats both. ConfigError for a file or a variable that cannot be used."""
    options = _options(parser)
    given = {_flag_name(arg) for arg in argv if arg.startswith("--")}
    settings: dict[str, Any] = {}
    config = _config_path(argv)
    if config is not None:
        settings.update(_read_config(config, options))
    for name in options:
        value = env.get(ENV_PREFIX + name.upper().replace("-", "_"))
        if value is not None and name not in ("data-dir", "database-url"):  # those two: argparse's own default
            settings[name] = _env_value(name, value, options[name])
    before: list[str] = []
    for name, value in settings.items():
        if name in given and isinstance(options[name], argparse._AppendAction):
            continue  # a repeatable flag given replaces the list
        before.extend(_as_args(name, value, options[name]))
    return [*before, *argv]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    # argparse lists its actions nowhere public
    return {
        s[2:]: action
        for action in parser._actions
        for s in action.option_strings
        if s.startswith("--") and s[2:] not in _NOT_SETTABLE
    }


def _flag_name(arg: str) -> str:
    return arg[2:].split("=", 1)[0]


def _config_path(argv: Sequence[str]) -> Path | None:
    for n, arg in enumerate(argv):
        if arg == "--config" and n + 1 < len(argv):
            return Path(argv[n + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def _read_config(path: Path, options: Mapping[str, argparse.Action]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not TOML ({exc})") from None
    unknown = sorted(set(data) - set(options))
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting {unknown[0]!r} (the keys are serve's flag names)")
    for name, value in data.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) for v in items) or (isinstance(value, list) and _bool_in(value)):
            raise ConfigError(f"--config {path}: {name}: a string, number, boolean or list of them")
    return data


def _bool_in(values: list[Any]) -> bool:
    return any(isinstance(v, bool) for v in values)


def _env_value(name: str, value: str, action: argparse.Action) -> Any:
    variable = ENV_PREFIX + name.upper().replace("-", "_")
    if action.nargs == 0:
        if value.lower() not in (*_TRUE, *_FALSE):
            raise ConfigError(f"{variable}: 1, true or yes, or 0, false or no")
        return value.lower() in _TRUE
    if isinstance(action, argparse._AppendAction):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _as_args(name: str, value: Any, action: argparse.Action) -> list[str]:
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: true or false")
        return [f"--{name}"] if value else []
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
        raise ConfigError(f"{name}: one value, not a list")
    if isinstance(value, bool):
        raise ConfigError(f"{name}: not a boolean")
    return [arg for v in values for arg in (f"--{name}", str(v))]


# --- running ----------------------------------------------------------------------------------------------


def run_init(ns: argparse.Namespace, err: Any) -> int:
    """``init``: the admin's credentials as JSON on the start that creates them; exit 0 and a note on stderr
    when the store is initialized already. ``--reset-admin``: a new admin key, as JSON."""
    from cedarkey.server.main import initialize, reset_admin_key

    settings = settings_of(ns)
    if ns.reset_admin:
        admin, revoked = reset_admin_key(settings, _operator())
        print(orjson.dumps(admin).decode())
        err(
            f"cedarkey init: a new /admin access key (shown this once); the old one and {revoked} live token(s) "
            "are refused from now on"
        )
        return 0
    store, _, admin = initialize(settings)
    where = store.where
    store.close()
    if admin is None:
        err(
            f"cedarkey init: {where} is already initialized; nothing changed, the admin key is not shown again "
            "(cedarkey init --reset-admin issues a new one)"
        )
        return 0
    print(orjson.dumps(admin).decode())
    err(f"cedarkey init: initialized {where}; the admin key above is shown this once")
    return 0


def _operator() -> str:
    """Who runs ``init --reset-admin`` and where, for its audit record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} (cedarkey init --reset-admin)"


def run_serve(ns: argparse.Namespace, err: Any) -> int:
    from cedarkey.server.http_limits import Limits
    from cedarkey.server.main import check_settings, serve

    settings = settings_of(ns)
    settings.host, settings.port = ns.host, ns.port
    settings.tls_cert, settings.tls_key = ns.tls_cert, ns.tls_key
    settings.log_level, settings.access_log = getattr(logging, ns.log_level.upper()), ns.access_log
    settings.policies_dir, settings.audit_decisions = ns.policies, ns.audit_decisions
    settings.loop, settings.http, settings.huge_pages = ns.loop, ns.http, ns.huge_pages
    settings.forwarded_allow_ips = ns.forwarded_allow_ips
    settings.allowed_sts_urls = tuple(ns.allowed_sts_url)
    settings.metrics_address = ns.metrics_address
    settings.max_connections, settings.workers = ns.max_connections, ns.workers
    settings.max_tokens_per_auth_method = ns.max_tokens_per_auth_method
    timeout = ns.request_timeout  # a whole body may take six times it
    settings.http_limits = Limits(head_timeout=timeout, body_timeout=timeout, body_deadline=6 * timeout)
    try:
        check_settings(settings)
    except ValueError as exc:
        err(f"cedarkey serve: {exc}")
        return 2
    return serve(settings, on_admin=lambda admin: print(orjson.dumps(admin).decode(), flush=True))
