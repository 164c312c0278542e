"""The ``cedarkey`` command.

Every HTTP command is a subcommand with the same kebab-case flags (list flags repeat); JSON goes to stdout,
warnings and errors to stderr, and any error exits non-zero. ``get-secret-value`` prints the value itself.
Local commands: ``configure``, ``auth``, ``serve``, ``init``, ``dev``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cedarkey.server.commands import COMMANDS, Command
from cedarkey.server.secret_box import MasterKeyError
from cedarkey.server.store import StoreError

from . import policy_cli, serve_cli
from .profile import DEFAULT_GATEWAY, Profile, ProfileError, save_profile
from .sdk import ApiError, Client, LoginError, ServerIdError
from .secret_input import SecretInputError, add_secret_flag, secret_value

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
_LOCAL = ("auth", "lookup-sts-url")
_HEALTH_TIMEOUT = 5.0


def _out(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


def _add_command(sub: argparse._SubParsersAction, cmd: Command) -> None:
    p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.summary)
    p.add_argument("--profile", default="default", help="profile to authenticate with (default: default)")
    for flag in cmd.flags:
        dest = flag.name.replace("-", "_")
        text = flag.help + (" (repeatable)" if flag.kind == "list" else "")
        if flag.default is not None:
            text += f" (default {flag.default})"
        if flag.kind == "list":
            p.add_argument(f"--{flag.name}", dest=dest, action="append", required=flag.required, help=text)
        elif flag.kind == "names":
            text += " (repeatable)"
            p.add_argument(f"--{flag.name}", dest=dest, action="append", required=flag.required, help=text)
        elif flag.kind == "secret":
            add_secret_flag(p, flag, text)
        elif flag.kind == "int":
            p.add_argument(f"--{flag.name}", dest=dest, type=int, required=flag.required, help=text)
        elif flag.kind == "requests":
            p.add_argument("--requests", dest=dest, help="JSON list of {path, capability, rule-type}")
            p.add_argument("--path", dest="one_path", help="one request: the path")
            p.add_argument("--capability", dest="one_capability", help="one request: the capability")
            p.add_argument("--rule-type", dest="one_rule_type", default="item-rule", help="one request: rule type")
        else:
            choices = flag.choices or None
            p.add_argument(f"--{flag.name}", dest=dest, required=flag.required, choices=choices, help=text)
    p.set_defaults(command=cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cedarkey", description="cedarkey: authorization for AWS workloads")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)  # not "name": a flag's dest

    p = sub.add_parser("configure", help="write a profile", description="write a profile")
    p.add_argument("--profile", default="default")
    p.add_argument("--access-id", required=True)
    p.add_argument("--access-type", required=True, choices=["access_key", "aws_iam"])
    p.add_argument("--access-key")
    p.add_argument("--gateway-url", default=os.environ.get("CEDARKEY_GATEWAY_URL", DEFAULT_GATEWAY))
    p.add_argument("--sts-url", help="aws_iam: sign for this STS URL instead of asking the server")
    p.add_argument(
        "--server-id",
        help="the id of the cedarkey server login proofs are signed for (its serve --server-id); "
        "default: read once from the server's /health now and pinned (trust on first use)",
    )

    p = sub.add_parser("auth", help="log in with the profile and print the token")
    p.add_argument("--profile", default="default")

    serve_cli.add_parsers(sub)

    p = sub.add_parser("dev", help="local demo: moto's STS stand-in and a cedarkey server")
    p.add_argument("--data-dir", type=Path, default=Path("./data-dev"))
    p.add_argument("--port", type=int, default=8200)
    p.add_argument("--sts-port", type=int, default=0)

    policy_cli.add_parsers(sub)
    for cmd in COMMANDS.values():
        if cmd.name not in _LOCAL and cmd.name not in policy_cli.OWN_COMMANDS:
            _add_command(sub, cmd)
    return parser


def _body(cmd: Command, ns: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for flag in cmd.flags:
        value = getattr(ns, flag.name.replace("-", "_"), None)
        if flag.kind == "secret":
            value = secret_value(flag, ns)
        if flag.kind == "names" and value is not None and len(value) == 1:
            value = value[0]  # one name: the single form, whose answer is the value itself
        if flag.kind == "requests":
            if value is not None:
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise SystemExit("cedarkey: --requests is not valid JSON") from None
            elif ns.one_path and ns.one_capability:
                value = [{"path": ns.one_path, "capability": ns.one_capability, "rule-type": ns.one_rule_type}]
            else:
                raise SystemExit("cedarkey: give --requests JSON, or --path with --capability")
        if value is not None:
            body[flag.name] = value
    return body


def _login_failed(exc: LoginError) -> int:
    _err("can't setup cedarkey client: failed to get credentials.")
    cause = exc.cause
    if cause is not None and cause.status == 401:
        _err("error: Desc: Failed to authenticate token based access.")
        _err(f"Status 401 Unauthorized, Error: {cause.code}.")
        _err(f"Message: {cause.message}")
    else:
        _err(f"error: {exc}")
    return 1


def _api_failed(exc: ApiError) -> int:
    if exc.status in (0, 200):  # no answer, or not a cedarkey one: no status to report
        _err(f"cedarkey: {exc.message}")
        return 1
    reason = _REASONS.get(exc.status, "")
    _err(f"Status {exc.status} {reason}, Error: {exc.code}.".replace(" ,", ","))
    _err(f"Message: {exc.message}")
    return 1


def _configure(ns: argparse.Namespace) -> int:
    if ns.access_type == "access_key" and not ns.access_key:
        _err("cedarkey: --access-key is required with --access-type access_key")
        return 1
    gateway = ns.gateway_url.rstrip("/")
    if ns.server_id is not None:
        _check_server_id(ns.server_id, "--server-id")
    _check_gateway(gateway)
    profile = Profile(
        ns.profile,
        ns.access_id,
        ns.access_type,
        gateway,
        ns.access_key,
        ns.sts_url,
        server_id=_pin_server_id(gateway, ns.server_id),
    )
    save_profile(profile)
    print(f"Profile {ns.profile} successfully configured")
    return 0


def _check_gateway(gateway: str) -> None:
    """Refuses a URL that is not http(s) with a host; warns when it is plain http to a host not loopback."""
    scheme, host = _scheme_and_host(gateway)
    try:
        httpx.URL(gateway)
    except httpx.InvalidURL:
        host = None  # e.g. a host name IDNA refuses
    if scheme not in ("http", "https") or not host:
        raise ProfileError(f"--gateway-url {gateway!r}: an http:// or https:// URL with a host is needed")
    if scheme == "http" and not _is_loopback(host):
        _err(
            f"cedarkey: warning: --gateway-url {gateway} is plain http:// to a host that is not loopback: anyone on"
            " the network path can read its tokens, secrets and login proofs; use https://"
        )


def _scheme_and_host(url: str) -> tuple[str, str | None]:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "", None
    return parts.scheme, parts.hostname


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pin_server_id(gateway: str, given: str | None) -> str:
    """The server id the profile signs login proofs for: --server-id, else /health's (trust on first use)."""
    if given is not None:
        _warn_if_announced_differs(gateway, given)
        return given
    try:
        announced = _health(gateway)["server_id"]
    except ApiError as exc:
        raise ProfileError(
            f"cannot read the server id from {gateway}/health: {' '.join(exc.message.split())};"
            " check --gateway-url, or pin the server id with --server-id ID"
        ) from None
    _check_server_id(announced, f"{gateway}/health's server id")
    _err(
        f"cedarkey: signing login proofs for server id {announced!r} (read from {gateway}/health on first use;"
        " pin it with --server-id)"
    )
    return announced


def _warn_if_announced_differs(gateway: str, pinned: str) -> None:
    try:
        announced = _health(gateway)["server_id"]
    except ApiError:
        return  # pinning needs no network: an unreachable server is no reason to refuse
    if announced != pinned:
        _err(
            f"cedarkey: warning: {gateway}/health announces server id {announced!r}, not {pinned!r}:"
            " logins with this profile will be refused until they match"
        )


def _health(gateway: str) -> dict[str, Any]:
    client = Client(gateway, timeout=_HEALTH_TIMEOUT)
    try:
        return client.health()
    finally:
        client.close()


def _check_server_id(server_id: str, what: str) -> None:
    from .proof import ProofError, check_server_id

    try:
        check_server_id(server_id)
    except ProofError as exc:
        raise ProfileError(f"{what} {server_id!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["serve"]:
            argv = ["serve", *serve_cli.serve_argv(serve_cli.serve_parser(), argv[1:], os.environ)]
    except serve_cli.ConfigError as exc:
        _err(f"cedarkey serve: {exc}")
        return 2
    ns = parser.parse_args(argv)
    try:
        return _run(ns)
    except ServerIdError as exc:
        _err(f"cedarkey: {exc}")
        return 1
    except LoginError as exc:
        return _login_failed(exc)
    except ApiError as exc:
        return _api_failed(exc)
    except (ProfileError, MasterKeyError, StoreError, SecretInputError) as exc:  # its message says why
        _err(f"cedarkey: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing more to tell it, nor a traceback on exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a profile or file this machine refused: its own message names it
        where = f" ({exc.filename})" if exc.filename else ""
        _err(f"cedarkey: {exc.strerror or exc}{where}")
        return 1
    except Exception as exc:
        if os.environ.get("CEDARKEY_DEBUG"):
            raise
        _err(
            f"cedarkey: unexpected error {type(exc).__name__}: {str(exc)[:200]} (a bug in cedarkey: please report"
            " it; CEDARKEY_DEBUG=1 shows where it happened)"
        )
        return 1


def _run(ns: argparse.Namespace) -> int:
    name = ns.subcommand
    if name in policy_cli.OWN_COMMANDS:
        return policy_cli.run(ns)
    if name == "configure":
        return _configure(ns)
    if name == "serve":
        return serve_cli.run_serve(ns, _err)
    if name == "init":
        return serve_cli.run_init(ns, _err)
    if name == "dev":
        from cedarkey.dev.demo import run_dev

        return run_dev(ns.data_dir, ns.port, ns.sts_port)
    client = Client.from_profile(ns.profile)
    try:
        if name == "auth":
            token = client.login()
            _out({"token": token})
            return 0
        cmd: Command = ns.command
        answer = client.call(cmd.name, _body(cmd, ns))
        if cmd.name == "get-secret-value" and "value" in answer:  # one name: the value itself
            sys.stdout.write(str(answer["value"]) + "\n")
        elif cmd.name == "get-secret-value":
            _out(answer.get("values"))
        elif cmd.name == "export-policies":
            sys.stdout.write(str(answer["cedar"]))
        else:
            warning = answer.pop("warning", None) if isinstance(answer, dict) else None
            _out(answer)
            if warning:
                _err(f"warning: {warning}")
        return 0
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
