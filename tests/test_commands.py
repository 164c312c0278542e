"""The command declarations are the one source: the HTTP validation, the permission checks, /openapi.json and
the CLI all follow them. Each test here reads COMMANDS and checks one consumer against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cedarkey.client.cli import build_parser
from cedarkey.server.commands import COMMANDS, CONCEPTS, MAX_NAMES, Command, Flag

from tests.support.server import Api, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("data")) as api:
        yield api


@pytest.fixture(scope="module")
def nobody(api: Api) -> str:
    """A caller with no rules at all."""
    created = api.ok("create-auth-method", name="/apps/nobody")
    body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
    return api.client.post("/auth", content=orjson.dumps(body)).json()["token"]


def sample(flag: Flag) -> Any:
    """A well-formed value for ``flag``, of the kind its declaration says."""
    if flag.example is not None:
        return flag.example
    if flag.choices:
        return flag.choices[0]
    if flag.kind == "int":
        return 1
    if flag.kind == "requests":
        return [{"path": "/x", "capability": "read"}]
    if flag.path == "pattern":
        return "/x/*"
    return {"identity": '{"auth_method": "/admin"}', "model": "{}"}.get(flag.name, "/x")


def body(cmd: Command) -> dict[str, Any]:
    """The required flags, and those that name the objects the command's needs are decided on."""
    named = {n.of for n in cmd.needs}
    return {f.name: sample(f) for f in cmd.flags if f.required or (f.name in named and f.kind != "secret")}


GUARDED = [c for c in COMMANDS.values() if (c.needs and any(n.path is None for n in c.needs)) or c.reads_everything]


def test_every_command_is_declared_in_a_concept_module_once() -> None:
    modules = {m.__name__ for m in CONCEPTS}
    for cmd in COMMANDS.values():
        assert cmd.handler.__module__ in modules, cmd.name
        assert cmd.summary and len({f.name for f in cmd.flags}) == len(cmd.flags), cmd.name
        for need in cmd.needs:
            assert need.path is not None or cmd.flag(need.of) is not None, (cmd.name, need.of)


@pytest.mark.parametrize("cmd", GUARDED, ids=[c.name for c in GUARDED])
def test_a_caller_without_the_declared_needs_is_refused_before_the_handler(api: Api, nobody: str, cmd: Command) -> None:
    """The declared decisions are checked before anything else: for an object that does not exist, too."""
    answer = api.call(cmd.name, nobody, **{k.replace("-", "_"): v for k, v in body(cmd).items()})
    assert answer.status_code == 403, answer.text
    message = answer.json()["message"]
    expected = "list" if cmd.reads_everything else " or ".join(str(c) for c in cmd.needs[0].capabilities)
    assert f"no {expected} permission" in message
    rule_type = "" if cmd.reads_everything else str(cmd.needs[0].rule_type)
    assert rule_type in message


def test_defaults_and_choices_are_applied_at_the_edge(api: Api) -> None:
    # rule-type left out: the declared default (item-rule) is what the handler sees.
    assert api.ok("explain", path="/x", capability="read")["rule-type"] == "item-rule"
    refused = api.call("explain", path="/x", capability="read", rule_type="fly-rule")
    assert refused.status_code == 400 and "rule-type" in refused.json()["message"]
    # A path flag arrives canonical: "team/ops" is "/team/ops".
    assert api.ok("create-role", name="team/ops")["name"] == "/team/ops"


def test_openapi_says_what_the_declarations_say(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    for cmd in COMMANDS.values():
        schema = document["paths"][f"/{cmd.name}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for flag in cmd.flags:
            prop = schema["properties"][flag.name]
            assert prop.get("default") == flag.default, (cmd.name, flag.name)
            value = prop if flag.required else _not_null(prop)
            if flag.kind == "names":  # one name, or a list of them, each of a name's forms
                one, several = value["anyOf"]
                assert several["items"] == one and several["maxItems"] == MAX_NAMES, (cmd.name, flag.name)
                value = one
            if flag.path:  # a path's forms: with its leading '/', and without (one character shorter)
                assert max(form["maxLength"] for form in value["anyOf"]) == flag.max_length, (cmd.name, flag.name)
            elif flag.kind in ("str", "secret"):
                assert value.get("enum", []) == list(flag.choices), (cmd.name, flag.name)
                assert value["maxLength"] == flag.max_length, (cmd.name, flag.name)
            if flag.kind == "list" and flag.schema is None:
                assert value["maxItems"] == flag.max_items and value.get("minItems", 0) == flag.min_items
                assert value["items"].get("enum", []) == list(flag.choices), (cmd.name, flag.name)
            if flag.kind == "int":
                assert (value.get("minimum"), value.get("maximum")) == (flag.minimum, flag.maximum), flag.name
        assert set(schema["required"]) == {f.name for f in cmd.flags if f.required}
        assert len(schema.get("anyOf", [])) == len(cmd.one_of)


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional flag's schema but ``null`` (which is a flag left out)."""
    first, null = prop["anyOf"]
    assert null == {"type": "null"}
    return first


def test_the_cli_has_a_subcommand_with_every_flag_of_every_command(tmp_path: Path) -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "subcommand").choices  # argparse keeps them here
    for cmd in COMMANDS.values():
        if cmd.name in ("auth", "lookup-sts-url"):  # the CLI logs in by itself
            continue
        options = {o for a in subparsers[cmd.name]._actions for o in a.option_strings}
        for flag in cmd.flags:
            if flag.kind != "requests":
                assert f"--{flag.name}" in options, (cmd.name, flag.name)
