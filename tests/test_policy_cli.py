"""``cedarkey policy plan|apply|pull``, ``who-can`` and ``can`` against a running server (``cedarkey init``, then
``cedarkey serve`` in a subprocess), the offline subcommands, and apply-model's all-or-nothing transaction."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cedarkey.policies import state_to_json
from cedarkey.policies.loader import load_rule_set
from cedarkey.server.apply import stored_author_policies
from cedarkey.server.store import StoreUnavailable

from tests.support.server import CEDARKEY, Api, ServerProcess, cli, cli_ok, running_api, start_server

EXAMPLES = Path(__file__).resolve().parents[1] / "policies" / "examples"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data = tmp_path_factory.mktemp("data")
    init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    proc = start_server(data)
    try:
        yield proc, json.loads(init.stdout)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(server: tuple[ServerProcess, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    proc, creds = server
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "CEDARKEY_HOME": str(home)}
    cli_ok(
        env,
        "configure",
        "--access-id",
        creds["access_id"],
        "--access-key",
        creds["access_key"],
        "--access-type",
        "access_key",
        "--gateway-url",
        proc.url,
    )
    return env


def copy_example(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target)
    return target


def test_plan_apply_and_plan_again(admin: dict[str, str], tmp_path: Path) -> None:
    rules = copy_example(tmp_path, "story")
    plan = cli_ok(admin, "policy", "plan", str(rules))
    assert plan.splitlines() == [
        "+ auth method /iamAuth1 (aws_iam)",
        '      bound-aws-account-id = ["123456789012"]',
        '      bound-role-name = ["dev-role"]',
        '+ role /dev-readers: "machines of the dev account: read the dev folder"',
        "+   association /dev-readers -> /iamAuth1",
        "+   rule /dev-readers: item-rule /dev/* [read, list]",
        "Plan: 4 to add, 0 to change, 0 to remove.",
    ]
    assert cli(admin, "get-role", "--name", "/dev-readers").returncode == 1  # a plan changes nothing

    applied = cli_ok(admin, "policy", "apply", str(rules))
    assert applied.startswith(plan)
    [access_id] = re.findall(r"^created auth method /iamAuth1: access id (p-[a-z0-9]+)$", applied, re.M)
    assert applied.endswith("Applied.\n")
    am = json.loads(cli_ok(admin, "get-auth-method", "--name", "iamAuth1"))
    assert am["access-id"] == access_id
    assert cli_ok(admin, "policy", "plan", str(rules)) == "No changes: the server already holds what the files say.\n"

    # an edit: one rule changed, one added, the auth method's binding changed
    roles = rules / "roles.toml"
    roles.write_text(
        roles.read_text().replace('["read", "list"]', '["read"]')
        + '\n[[role.dev-readers.rule]]\npath = "/shared/*"\ncapabilities = ["list"]\n'
    )
    methods = rules / "auth_methods.toml"
    methods.write_text(methods.read_text().replace('["dev-role"]', '["dev-role", "dev-role-2"]'))
    (rules / "tests.toml").unlink()
    assert cli_ok(admin, "policy", "plan", str(rules)).splitlines() == [
        "~ auth method /iamAuth1",
        '      bound-role-name: ["dev-role"] -> ["dev-role","dev-role-2"]',
        "~   rule /dev-readers: item-rule /dev/* [read, list] -> [read]",
        "+   rule /dev-readers: item-rule /shared/* [list]",
        "Plan: 1 to add, 2 to change, 0 to remove.",
    ]
    cli_ok(admin, "policy", "apply", str(rules))
    role = json.loads(cli_ok(admin, "get-role", "--name", "/dev-readers"))
    assert [(r["path"], r["capabilities"]) for r in role["rules"]] == [("/dev/*", ["read"]), ("/shared/*", ["list"])]
    assert json.loads(cli_ok(admin, "get-auth-method", "--name", "iamAuth1"))["access-id"] == access_id  # kept

    # the server's /admin is untouched by all this
    assert json.loads(cli_ok(admin, "get-role", "--name", "/admin"))["rules"]


def test_who_can_and_can_against_the_server_and_offline(admin: dict[str, str], tmp_path: Path) -> None:
    rules = copy_example(tmp_path, "deny")
    cli_ok(admin, "policy", "apply", str(rules))
    online = json.loads(cli_ok(admin, "who-can", "--path", "/prod/root-ca/key", "--capability", "read"))
    offline = json.loads(
        cli_ok(admin, "who-can", "--policies", str(rules), "--path", "/prod/root-ca/key", "--capability", "read")
    )
    assert [r["role"] for r in online["routes"]] == ["/admin", "/ops"]  # the /admin role reads everything
    for answer in (online, offline):
        [route] = [r for r in answer["routes"] if r["role"] != "/admin"]
        assert route["role"] == "/ops" and route["blocked"] is True
        assert route["denies"][0]["rule"]["path"] == "/prod/root-ca/*"
        assert [p["file"] for p in answer["author-policies"]] == ["guest-network.cedar"]
    assert offline["routes"][0]["source"] == "roles.toml:10"

    identity = tmp_path / "ops.json"
    identity.write_text(
        json.dumps(
            {
                "auth_method": "ops",
                "account": "123456789012",
                "role_name": "ops-role",
                "iam_arn": "arn:aws:iam::123456789012:role/ops-role",
                "source_ip": "10.0.0.1",
            }
        )
    )
    for extra in ((), ("--policies", str(rules))):
        answer = json.loads(
            cli_ok(
                admin, "can", "--identity", str(identity), "--path", "/prod/app/db", "--capability", "update", *extra
            )
        )
        assert answer["decision"] == "allow" and answer["reasons"] == ['role:"/ops"/item-rule:"/prod/*"']
        assert answer["login"]["decision"] == "allow"
        answer = json.loads(
            cli_ok(
                admin, "can", "--identity", str(identity), "--path", "/prod/root-ca/k", "--capability", "read", *extra
            )
        )
        assert answer["decision"] == "deny" and answer["reasons"] == ['role:"/ops"/item-rule:"/prod/root-ca/*"']
    identity.write_text(
        json.dumps(
            {"auth_method": "ops", "account": "123456789012", "role_name": "ops-role", "source_ip": "203.0.113.9"}
        )
    )
    answer = json.loads(
        cli_ok(admin, "can", "--identity", str(identity), "--path", "/prod/app/db", "--capability", "read")
    )
    assert answer["decision"] == "deny" and answer["reasons"] == ['file:"guest-network.cedar"/no-guest-network']
    assert answer["login"]["decision"] == "deny"


def test_pull_writes_files_that_plan_no_change(admin: dict[str, str], tmp_path: Path) -> None:
    rules = copy_example(tmp_path, "deny")
    cli_ok(admin, "policy", "apply", str(rules))
    pulled = tmp_path / "pulled"
    out = cli_ok(admin, "policy", "pull", str(pulled))
    assert "model.toml" in out and (pulled / "guest-network.cedar").exists()
    assert "error" not in cli_ok(admin, "policy", "check", str(pulled))
    assert cli_ok(admin, "policy", "plan", str(pulled)).startswith("No changes")
    assert cli(admin, "policy", "pull", str(pulled)).returncode == 1  # never overwrites


def test_a_non_admin_cannot_plan_or_apply(
    admin: dict[str, str], server: tuple[ServerProcess, Any], tmp_path: Path
) -> None:
    key = json.loads(cli_ok(admin, "create-auth-method", "--name", "/limited-cli"))
    cli_ok(admin, "create-role", "--name", "/limited-cli")
    cli_ok(admin, "assoc-role-am", "--role-name", "/limited-cli", "--am-name", "/limited-cli")
    cli_ok(
        admin,
        "set-role-rule",
        "--role-name",
        "/limited-cli",
        "--path",
        "/dev-readers",
        "--capability",
        "update",
        "--rule-type",
        "role-rule",
    )
    env = {**admin, "CEDARKEY_HOME": str(tmp_path / "limited")}
    cli_ok(
        env,
        "configure",
        "--access-id",
        key["access-id"],
        "--access-key",
        key["access-key"],
        "--access-type",
        "access_key",
        "--gateway-url",
        server[0].url,
    )
    for action in ("plan", "apply"):
        result = cli(env, "policy", action, str(EXAMPLES / "story"))
        assert result.returncode == 1 and "PermissionDenied" in result.stderr
    result = cli(env, "who-can", "--path", "/x", "--capability", "read")
    assert result.returncode == 1 and "PermissionDenied" in result.stderr


def test_offline_subcommands(tmp_path: Path) -> None:
    env = dict(os.environ)
    out = cli_ok(env, "policy", "check", str(EXAMPLES / "story"))
    assert out.startswith("OK: 1 auth method(s), 1 role(s), 1 rule(s), 0 Cedar policies, 8 test(s)")
    tests = cli_ok(env, "policy", "test", str(EXAMPLES / "deny")).splitlines()
    assert tests[-1] == "8 passed, 0 failed" and all(line.startswith("PASS ") for line in tests[:-1])
    export = cli_ok(env, "policy", "export", str(EXAMPLES / "story"))
    assert '@source("roles.toml:9")' in export and '@id("role:\\"/dev-readers\\"/item-rule:\\"/dev/*\\"")' in export

    broken = copy_example(tmp_path, "story")
    (broken / "roles.toml").write_text((broken / "roles.toml").read_text().replace('"list"', '"lisst"'))
    result = cli(env, "policy", "check", str(broken))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "roles.toml:11: role /dev-readers: rule 1: capabilities: unknown capability 'lisst'; one of read, create, "
        "update, delete, list, deny",
        "1 error(s), 0 warning(s)",
    ]
    for action in ("plan", "apply", "test", "export"):
        result = cli(env, "policy", action, str(broken))
        assert result.returncode == 1 and "roles.toml:11:" in result.stderr

    failing = copy_example(tmp_path, "deny")
    tests_file = failing / "tests.toml"
    tests_file.write_text(
        tests_file.read_text().replace('capability = "list"\nexpect = "deny"', 'capability = "list"\nexpect = "allow"')
    )
    result = cli(env, "policy", "test", str(failing))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "7 passed, 1 failed"
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL the deny also stops listing the root CA (tests.toml:29): expected allow, got deny "
        '(role:"/ops"/item-rule:"/prod/root-ca/*")'
    ]
    assert cli(env, "policy", "check", str(tmp_path / "missing")).returncode == 1


# --- apply-model in process: one transaction, all or nothing ---------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def model_of(name: str) -> str:
    return orjson.dumps(state_to_json(load_rule_set(EXAMPLES / name).state())).decode()


def test_apply_is_all_or_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    store = api.service.store
    calls = {"n": 0}
    set_rule = store.set_rule

    def failing_set_rule(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("disk full")
        set_rule(*args)

    monkeypatch.setattr(store, "set_rule", failing_set_rule)
    before_cedar = api.ok("export-policies")["cedar"]
    response = api.call("apply-model", model=model_of("deny"))
    assert response.status_code == 503
    assert calls["n"] == 2  # it failed half way through
    assert sorted(r.name for r in store.load().roles) == ["/admin"]
    assert sorted(a.name for a in store.load().auth_methods) == ["/admin"]
    assert stored_author_policies(store) == {}
    assert api.ok("export-policies")["cedar"] == before_cedar
    monkeypatch.undo()
    answer = api.ok("apply-model", model=model_of("deny"))
    assert answer["applied"] is True and list(answer["created"]) == ["/ops"]
    assert sorted(r.name for r in store.load().roles) == ["/admin", "/auditors", "/ops"]


def test_dry_run_and_refusals(api: Api) -> None:
    plan = api.ok("apply-model", model=model_of("story"), dry_run=1)
    assert plan["applied"] is False and "created" not in plan and plan["plan"]["summary"]["add"] == 4
    assert api.call("get-role", name="/dev-readers").status_code == 404
    for model, message in (
        ("not json", "model: not valid JSON"),
        ('{"roles": [{"name": "/admin"}]}', "/admin is the server's own role"),
        ('{"auth-methods": [{"name": "/admin", "bound-aws-account-id": ["123456789012"]}]}', "access_key"),
        ('{"auth-methods": [{"name": "/ghost", "type": "access_key"}]}', "no access_key auth method"),
        ('{"cedar": {"x.cedar": "permit (principal, action, resource) when { principal.nope };"}}', "schema"),
        ('{"roles": [{"name": "/r", "rules": [{"path": "/x", "capabilities": ["reed"]}]}]}', "roles[0].rules[0]"),
    ):
        response = api.call("apply-model", model=model)
        assert response.status_code == 400, (model, response.text)
        assert message in response.json()["message"], (model, response.text)


def test_export_apply_round_trip_and_author_policies_survive_a_reload(api: Api) -> None:
    api.ok("apply-model", model=model_of("deny"))
    exported = api.ok("export-model")
    assert set(exported["cedar"]) == {"guest-network.cedar"}
    assert api.ok("apply-model", model=orjson.dumps(exported).decode(), dry_run=1)["plan"]["changes"] == []
    service = api.service
    service.load()  # the engine rebuilt from the store keeps the author policies apply handed to the service
    assert "guest-network" in service.engine.export_cedar()
    service._author_policies = {}  # a new process: load() reads them back from the store
    service.load()
    assert "guest-network" in service.engine.export_cedar()
    assert api.ok("apply-model", model=model_of("deny"), dry_run=1)["plan"]["changes"] == []


def test_a_role_description_change_recreates_the_role(api: Api) -> None:
    api.ok("apply-model", model=model_of("story"))
    data = state_to_json(load_rule_set(EXAMPLES / "story").state())
    data["roles"][0]["description"] = "new words"
    answer = api.ok("apply-model", model=orjson.dumps(data).decode())
    assert [c["action"] + " " + c["kind"] for c in answer["plan"]["changes"]] == ["change role"]
    role = api.ok("get-role", name="/dev-readers")
    assert role["description"] == "new words" and len(role["rules"]) == 1 and len(role["associations"]) == 1
    stored = api.service.store.load()
    assert sorted(a.assoc_id for a in stored.associations) == sorted(api.service.engine.model.associations)


def test_removing_an_auth_method_drops_its_tokens_and_associations(api: Api) -> None:
    api.ok("apply-model", model=model_of("story"))
    access_id = api.ok("get-auth-method", name="/iamAuth1")["access-id"]
    from cedarkey.engine import Identity
    from cedarkey.server.tokens import Session, token_hash

    identity = Identity(access_id, "aws_iam", "assumed-role")
    api.service.tokens.add(token_hash("t-gone"), Session(identity, 0, 10**10))
    data = state_to_json(load_rule_set(EXAMPLES / "story").state())
    data["auth-methods"] = []
    data["roles"][0]["associations"] = []
    answer = api.ok("apply-model", model=orjson.dumps(data).decode())
    assert answer["plan"]["summary"] == {"add": 0, "change": 0, "remove": 2}
    assert api.service.tokens.check("t-gone", 1) is None
    assert api.ok("get-role", name="/dev-readers")["associations"] == []
