"""The policy authors' subcommands: ``cedarkey policy check|plan|apply|export|test|pull DIR``, ``who-can``
and ``can``.

``check``, ``export`` and ``test`` work offline on a rules directory; ``plan`` and ``apply`` send the
directory's model to the server (``apply-model``, with ``dry-run`` for the plan); ``who-can`` and ``can``
answer offline from ``--policies DIR``, or from the server's model without it. The format of the files is
in ``policies/README.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from cedarkey.engine import ModelError
from cedarkey.policies import (
    RuleSet,
    export_with_sources,
    resolve_identity,
    run_tests,
    state_from_json,
    state_to_json,
    state_to_toml,
    who_can,
)
from cedarkey.policies import can as can_decide
from cedarkey.policies.loader import RulesDirectoryError, load_rule_set

from .sdk import Client

#: The subcommands this module owns (cli.py leaves them out of the command table's generic ones).
OWN_COMMANDS = frozenset({"policy", "who-can", "can"})

_RULE_TYPES = ("item-rule", "role-rule", "auth-method-rule")


def _out(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "policy",
        help="rule files: check, plan, apply, export, test, pull",
        description="Rule files (TOML and Cedar in a directory, see policies/README.md).",
    )
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    a = actions.add_parser("check", help="check a rules directory offline; each problem as FILE:LINE: message")
    a.add_argument("directory", type=Path)
    for name, text in (
        ("plan", "the difference between the files and the server's model (changes nothing)"),
        ("apply", "make the server's model what the files say, in one transaction"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("directory", type=Path)
        a.add_argument("--profile", default="default", help="profile to authenticate with (default: default)")
        a.add_argument("--json", action="store_true", help="print the server's JSON answer")
    a = actions.add_parser("export", help="the compiled Cedar, each policy with @source(FILE:LINE)")
    a.add_argument("directory", type=Path)
    a.add_argument("--output", type=Path, help="write to this file instead of stdout")
    a = actions.add_parser("test", help="run the test cases kept beside the rules")
    a.add_argument("directory", type=Path)
    a = actions.add_parser("pull", help="write the server's managed model as DIR/model.toml (and its Cedar files)")
    a.add_argument("directory", type=Path)
    a.add_argument("--profile", default="default", help="profile to authenticate with (default: default)")

    for name, text in (
        ("who-can", "every auth method, association and rule through which some identity gets CAPABILITY on PATH"),
        ("can", "the decision for one identity (a JSON file of its attributes), with the policies that made it"),
    ):
        a = sub.add_parser(name, help=text, description=text + "; offline with --policies DIR, else the server's")
        if name == "can":
            a.add_argument("--identity", type=Path, required=True, help="JSON file of the identity's attributes")
        a.add_argument("--path", required=True)
        a.add_argument("--capability", required=True, help="read | create | update | delete | list")
        a.add_argument("--rule-type", default="item-rule", choices=_RULE_TYPES)
        a.add_argument("--policies", type=Path, help="answer offline from this rules directory")
        a.add_argument("--profile", default="default", help="profile to authenticate with (without --policies)")


def run(ns: argparse.Namespace) -> int:
    try:
        if ns.subcommand == "policy":
            return _ACTIONS[ns.policy_action](ns)
        if ns.subcommand == "who-can":
            return _who_can(ns)
        return _can(ns)
    except RulesDirectoryError as exc:
        _err(f"cedarkey: {exc}")
        return 1
    except ModelError as exc:
        _err(f"cedarkey: {exc}")
        return 1


def _load(directory: Path, *, quiet_warnings: bool = False) -> RuleSet | None:
    """The checked directory; its errors (and warnings) go to stderr, and None when it has errors."""
    rule_set = load_rule_set(directory)
    if not quiet_warnings:
        for d in rule_set.warnings:
            _err(str(d))
    if rule_set.errors:
        for d in rule_set.errors:
            _err(str(d))
        _err(f"cedarkey: {len(rule_set.errors)} error(s) in {directory}")
        return None
    return rule_set


def _check(ns: argparse.Namespace) -> int:
    rule_set = load_rule_set(ns.directory)
    for d in sorted(rule_set.diagnostics):
        print(d)
    errors, warnings = len(rule_set.errors), len(rule_set.warnings)
    if errors:
        print(f"{errors} error(s), {warnings} warning(s)")
        return 1
    rules = sum(len(r.rules) for r in rule_set.roles.values())
    policies = sum(len(f.lines) for f in rule_set.cedar.values())
    print(
        f"OK: {len(rule_set.auth_methods)} auth method(s), {len(rule_set.roles)} role(s), {rules} rule(s), "
        f"{policies} Cedar polic{'y' if policies == 1 else 'ies'}, {len(rule_set.tests)} test(s); "
        f"{warnings} warning(s)"
    )
    return 0


def _model_payload(rule_set: RuleSet) -> str:
    model = state_to_json(rule_set.state())
    for am in model["auth-methods"]:
        del am["access-id"]  # the server's own ids count; a new auth method gets a fresh one
    return orjson.dumps(model).decode()


def _plan_or_apply(ns: argparse.Namespace) -> int:
    rule_set = _load(ns.directory)
    if rule_set is None:
        return 1
    dry_run = ns.policy_action == "plan"
    client = Client.from_profile(ns.profile)
    try:
        answer = client.call("apply-model", {"model": _model_payload(rule_set), "dry-run": int(dry_run)})
    finally:
        client.close()
    if ns.json:
        _out(answer)
        return 0
    sys.stdout.write(answer["plan"]["text"])
    if answer.get("applied"):
        for name, access_id in sorted((answer.get("created") or {}).items()):
            print(f"created auth method {name}: access id {access_id}")
        print("Applied.")
    elif not dry_run and answer["plan"]["changes"]:  # pragma: no cover - the server applies or refuses
        _err("cedarkey: the server did not apply the plan")
        return 1
    return 0


def _export(ns: argparse.Namespace) -> int:
    rule_set = _load(ns.directory)
    if rule_set is None:
        return 1
    engine = rule_set.engine()
    header = (
        f"// The Cedar compiled from {ns.directory}; @source is the FILE:LINE each policy comes from.\n"
        "// Access ids are offline placeholders: the server gives each auth method it creates its own.\n"
    )
    text = header + export_with_sources(engine, rule_set.policy_sources()).rstrip("\n") + "\n"
    if ns.output:
        ns.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _test(ns: argparse.Namespace) -> int:
    rule_set = _load(ns.directory, quiet_warnings=True)
    if rule_set is None:
        return 1
    results = run_tests(rule_set, rule_set.engine(), int(time.time()))
    for result in results:
        print(result.line())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _pull(ns: argparse.Namespace) -> int:
    client = Client.from_profile(ns.profile)
    try:
        state = state_from_json(client.call("export-model"))
    finally:
        client.close()
    directory: Path = ns.directory
    targets = {"model.toml": state_to_toml(state, f"The model of {client.gateway_url}, pulled by cedarkey.")}
    targets.update(state.cedar)
    existing = [name for name in targets if (directory / name).exists()]
    if existing:
        _err(f"cedarkey: {directory / existing[0]} exists; pull into an empty directory")
        return 1
    for name, text in targets.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _who_can(ns: argparse.Namespace) -> int:
    if ns.policies is not None:
        rule_set = _load(ns.policies, quiet_warnings=True)
        if rule_set is None:
            return 1
        result = who_can(rule_set.engine(), ns.capability, ns.path, ns.rule_type)
        _out(result.to_dict(rule_set.policy_sources()))
        return 0
    body = {"path": ns.path, "capability": ns.capability, "rule-type": ns.rule_type}
    _out(_server_call(ns.profile, "who-can", body))
    return 0


def _can(ns: argparse.Namespace) -> int:
    try:
        text = ns.identity.read_text(encoding="utf-8")
        attributes = orjson.loads(text)
    except OSError as exc:
        _err(f"cedarkey: --identity {ns.identity}: {exc.strerror or exc}")
        return 1
    except orjson.JSONDecodeError as exc:
        _err(f"cedarkey: --identity {ns.identity}: not valid JSON: {exc}")
        return 1
    if ns.policies is not None:
        rule_set = _load(ns.policies, quiet_warnings=True)
        if rule_set is None:
            return 1
        engine = rule_set.engine()
        identity = resolve_identity(attributes, engine.model)
        answer = can_decide(
            engine, identity, ns.capability, ns.path, ns.rule_type, int(time.time()), rule_set.policy_sources()
        )
    else:
        body = {"identity": text, "path": ns.path, "capability": ns.capability, "rule-type": ns.rule_type}
        answer = _server_call(ns.profile, "can", body)
    _out(answer)
    return 0


def _server_call(profile: str, command: str, body: dict[str, Any]) -> dict[str, Any]:
    client = Client.from_profile(profile)
    try:
        return client.call(command, body)
    finally:
        client.close()


_ACTIONS = {
    "check": _check,
    "plan": _plan_or_apply,
    "apply": _plan_or_apply,
    "export": _export,
    "test": _test,
    "pull": _pull,
}
