"""Delegation never escalates: the ceiling against the reference model, and every grant path through the API.

The pentest that found it is replayed with real processes in ``test_security_processes.py``; here the
in-process API checks each rule of ``cedarkey.engine.delegation`` one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cedarkey.engine import ACTIONS, Capability, Grant, RuleType, canonical_pattern
from cedarkey.engine.auth_method import AuthMethod
from cedarkey.engine.delegation import widened_bindings
from cedarkey.engine.glob import glob_match
from hypothesis import given
from hypothesis import strategies as st

from tests import reference as ref
from tests.support.server import Api, running_api
from tests.test_engine_properties import (
    FILLER,
    SETTINGS,
    draw_identity,
    draw_world,
    fill,
    make_identity,
    rule_pattern,
)

ALL = list(ACTIONS)


# --- the ceiling against the reference ------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_the_ceiling_is_what_the_reference_decides_on_every_path(data: st.DataObject) -> None:
    """A caller holds a grant iff the reference allows each of its capabilities on every path its pattern
    matches: no witness means every drawn instance is allowed; a witness is a path the pattern matches where
    the reference denies that capability."""
    world = draw_world(data)
    attrs = draw_identity(data, world)
    ceiling = world.engine.ceiling(make_identity(attrs))
    rule_type = data.draw(st.sampled_from(ref.RULE_TYPES))
    pattern = canonical_pattern(data.draw(st.one_of(st.sampled_from(world.patterns() or ["/*"]), rule_pattern())))
    caps = data.draw(st.lists(st.sampled_from(ALL), min_size=1, max_size=3, unique=True))
    grant = Grant(RuleType(rule_type), pattern, frozenset(Capability(c) for c in caps), "the test")
    found = ceiling.witness(grant)
    if found is None:
        for _ in range(6):
            path = ref.canonical(fill(data, pattern, FILLER), pattern=False)
            if path is not None:
                assert all(world.model.decide(attrs, c, path, rule_type) for c in caps), (path, caps)
    else:
        capability, path, _ = found
        assert capability in caps and glob_match(pattern, path)
        assert ref.canonical(path, pattern=False) == path
        assert not world.model.decide(attrs, str(capability), path, rule_type)


def test_widened_bindings() -> None:
    base = AuthMethod(
        "/am", "p-000000000000", "aws_iam", bound_aws_account_id=("111111111111",), bound_role_name=("a", "b")
    )

    def change(**fields: Any) -> list[str]:
        return widened_bindings(base, AuthMethod(**{**base.__dict__, **fields}))

    assert change(bound_role_name=("a",)) == []  # fewer values: narrower
    assert change(bound_user_id=("AIDA1",)) == []  # a new binding: narrower
    assert change(bound_role_name=("a", "c")) == ["bound-role-name"]
    assert change(bound_role_name=()) == ["bound-role-name"]
    assert change(bound_aws_account_id=("111111111111", "222222222222")) == ["bound-aws-account-id"]
    assert change(jwt_ttl=7200) == ["jwt-ttl", "max-ttl"]  # the default max TTL follows jwt-ttl
    assert change(jwt_ttl=7200, max_ttl=7200) == ["jwt-ttl"]  # 8 x 3600 before: shorter
    assert change(max_ttl=40000) == ["max-ttl"]
    assert change(jwt_ttl=600) == []
    limited = AuthMethod(**{**base.__dict__, "access_expires": 100})
    assert widened_bindings(limited, base) == ["access-expires"]
    assert widened_bindings(base, limited) == []


# --- through the API --------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def caller(api: Api, name: str, rules: list[tuple[str, str, list[str]]]) -> str:
    """A token of a new access-key auth method ``name`` whose own role ``name-role`` holds ``rules``."""
    created = api.ok("create-auth-method", name=name)
    api.ok("create-role", name=f"{name}-role")
    api.ok("assoc-role-am", role_name=f"{name}-role", am_name=name)
    for rule_type, path, caps in rules:
        api.ok("set-role-rule", role_name=f"{name}-role", path=path, capability=caps, rule_type=rule_type)
    body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
    return api.client.post("/auth", content=orjson.dumps(body)).json()["token"]


def refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "PermissionDenied"
    for word in words:
        assert word in response.json()["message"], response.json()["message"]


TEAM = [
    ("role-rule", "/team/*", ["read", "update"]),
    ("item-rule", "/team/*", ["read", "create", "list"]),
]


@pytest.fixture
def team(api: Api) -> str:
    """The pentest's team admin: update on the /team roles, some item capabilities under /team."""
    api.ok("create-role", name="/team/ops")
    api.ok("create-secret", name="/prod/db-password", value="prod-secret")
    return caller(api, "/team/admin", TEAM)


def test_a_rule_may_grant_only_what_the_caller_holds_on_every_path_it_matches(api: Api, team: str) -> None:
    refused(
        api.call("set-role-rule", team, role_name="/team/ops", path="/*", capability=["read"]),
        "grants read on /*",
        "holds no read",
    )
    refused(
        api.call(
            "set-role-rule", team, role_name="/team/ops", path="/*", capability=["update"], rule_type="auth-method-rule"
        )
    )
    # Held on every path: /team/* covers /team/app/*, and read is held there.
    api.ok("set-role-rule", team, role_name="/team/ops", path="/team/app/*", capability=["read", "list"])
    # Not held: update (the team admin has no update on items), or a path outside /team.
    refused(api.call("set-role-rule", team, role_name="/team/ops", path="/team/app/*", capability=["update"]))
    refused(api.call("set-role-rule", team, role_name="/team/ops", path="/team*", capability=["read"]))
    assert api.call("get-secret-value", team, name="/prod/db-password").status_code == 403
    assert api.ok("get-role", name="/team/ops")["rules"] == [
        {"rule-type": "item-rule", "path": "/team/app/*", "capabilities": ["read", "list"]}
    ]


def test_associating_needs_update_on_the_auth_method_and_the_roles_rules(api: Api, team: str) -> None:
    other = api.ok("create-auth-method", name="/team/app-am")
    refused(api.call("assoc-role-am", team, role_name="/team/ops", am_name="/team/app-am"), "auth-method-rule")
    refused(api.call("assoc-role-am", team, role_name="/team/ops", am_name="/admin"))
    # With update on the auth method, the association hands out only what the caller holds.
    api.ok(
        "set-role-rule",
        role_name="/team/admin-role",
        path="/team/*",
        capability=["update"],
        rule_type="auth-method-rule",
    )
    api.ok("set-role-rule", role_name="/team/ops", path="/prod/*", capability=["read"])  # by the real admin
    refused(
        api.call("assoc-role-am", team, role_name="/team/ops", am_name="/team/app-am"),
        "the rules of /team/ops",
        "/prod/*",
    )
    api.ok("delete-role-rule", role_name="/team/ops", path="/prod/*")
    api.ok("set-role-rule", role_name="/team/ops", path="/team/x/*", capability=["read"])
    assert api.ok("assoc-role-am", team, role_name="/team/ops", am_name="/team/app-am")["am-name"] == "/team/app-am"
    assert other["access-id"]


def test_the_callers_own_deny_stops_its_grants(api: Api) -> None:
    token = caller(api, "/d/admin", [("role-rule", "/d/*", ALL), ("item-rule", "/d/*", ALL)])
    api.ok("set-role-rule", role_name="/d/admin-role", path="/d/secret/*", capability=["deny"])
    api.ok("create-role", name="/d/ops")
    refused(api.call("set-role-rule", token, role_name="/d/ops", path="/d/*", capability=["read"]), "own deny")
    api.ok("set-role-rule", token, role_name="/d/ops", path="/d/public/*", capability=["read"])


def test_lifting_a_deny_is_a_grant(api: Api, team: str) -> None:
    """A deny stops every capability: removing it, replacing it, or removing what carries it needs them all."""
    am = api.ok("create-auth-method", name="/team/app-am")
    api.ok("assoc-role-am", role_name="/team/ops", am_name="/team/app-am")
    api.ok("set-role-rule", role_name="/team/ops", path="/team/secret/*", capability=["deny"])
    refused(api.call("delete-role-rule", team, role_name="/team/ops", path="/team/secret/*"), "lifting")
    refused(api.call("set-role-rule", team, role_name="/team/ops", path="/team/secret/*", capability=["read"]))
    refused(api.call("delete-assoc", team, role_name="/team/ops", am_name="/team/app-am"))
    # One who holds every capability on the deny's paths may lift it.
    full = caller(api, "/team/owner", [("role-rule", "/team/*", ALL), ("item-rule", "/team/*", ALL)])
    api.ok(
        "set-role-rule", role_name="/team/owner-role", path="/team/*", capability=["read"], rule_type="auth-method-rule"
    )
    api.ok("delete-role-rule", full, role_name="/team/ops", path="/team/secret/*")
    assert am["access-id"]


def test_adding_a_deny_grants_nothing(api: Api, team: str) -> None:
    api.ok("set-role-rule", team, role_name="/team/ops", path="/prod/*", capability=["deny"])


def test_the_break_glass_admin_is_beyond_other_roles_denies(api: Api) -> None:
    """The second tester's lockout: a role with deny /* for every rule type associated with /admin (only a
    full admin may associate it) takes nothing from the administrator."""
    api.ok("create-role", name="/trap")
    for rule_type in ("item-rule", "role-rule", "auth-method-rule"):
        api.ok("set-role-rule", role_name="/trap", path="/*", capability=["deny"], rule_type=rule_type)
    api.ok("assoc-role-am", role_name="/trap", am_name="/admin")
    api.ok("create-secret", name="/prod/x", value="v")
    assert api.ok("get-secret-value", name="/prod/x")["value"] == "v"
    admin = api.admin
    body = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
    fresh = api.client.post("/auth", content=orjson.dumps(body)).json()["token"]
    assert api.ok("get-secret-value", fresh, name="/prod/x")["value"] == "v"
    api.ok("delete-role", fresh, name="/trap")


def test_only_a_full_admin_touches_admin(api: Api) -> None:
    """Everything on /* of one rule type is not everything: /admin stays a full admin's."""
    wide = caller(api, "/wide", [("role-rule", "/*", ALL), ("auth-method-rule", "/*", ALL)])
    refused(api.call("assoc-role-am", wide, role_name="/admin", am_name="/wide"), "every capability on /*")
    refused(api.call("assoc-role-am", wide, role_name="/wide-role", am_name="/admin"), "every capability on /*")


def test_the_break_glass_objects_cannot_be_broken(api: Api) -> None:
    admin_assoc = api.ok("get-role", name="/admin")["associations"][0]["assoc-id"]
    for command, body in (
        ("delete-auth-method", {"name": "/admin"}),
        ("delete-role", {"name": "/admin"}),
        ("set-role-rule", {"role-name": "/admin", "path": "/*", "capability": ["deny"]}),
        ("set-role-rule", {"role-name": "/admin", "path": "/x/*", "capability": ["read"]}),
        ("delete-role-rule", {"role-name": "/admin", "path": "/*"}),
        ("delete-assoc", {"assoc-id": admin_assoc}),
        ("delete-assoc", {"role-name": "/admin", "am-name": "/admin"}),
    ):
        refused(api.call(command, **body), "/admin")
    assert api.ok("get-auth-method", name="/admin")["name"] == "/admin"
    # A full admin may still associate other auth methods with /admin and remove them again.
    api.ok("create-auth-method", name="/ops/break-glass-2")
    assoc = api.ok("assoc-role-am", role_name="/admin", am_name="/ops/break-glass-2")
    api.ok("delete-assoc", assoc_id=assoc["assoc-id"])


def test_with_author_forbids_in_force_only_the_break_glass_admin_grants(api: Api, team: str) -> None:
    model = api.ok("export-model")
    freeze = 'forbid(principal, action, resource) when { context has path && context.path like "/frozen/*" };'
    model["cedar"] = {"freeze.cedar": freeze}
    api.ok("apply-model", model=orjson.dumps(model).decode())
    refused(
        api.call("set-role-rule", team, role_name="/team/ops", path="/team/a/*", capability=["read"]),
        "author Cedar",
    )
    api.ok("set-role-rule", role_name="/team/ops", path="/team/a/*", capability=["read"])


def test_apply_model_passes_the_same_ceiling(api: Api, team: str) -> None:
    """apply-model is the same changes in one step: the same decisions and the same ceiling."""
    lister = [("role-rule", "/*", ["list", "read"]), ("auth-method-rule", "/*", ["list"])]
    token = caller(api, "/team/planner", [*TEAM, *lister, ("role-rule", "/team/*", ["update", "create"])])
    model = api.ok("export-model", token)
    ops = next(r for r in model["roles"] if r["name"] == "/team/ops")
    ops["rules"] = [{"rule-type": "item-rule", "path": "/prod/*", "capabilities": ["read"]}]
    refused(api.call("apply-model", token, model=orjson.dumps(model).decode()), "holds no read")
    ops["rules"] = [{"rule-type": "item-rule", "path": "/team/x/*", "capabilities": ["read"]}]
    assert api.ok("apply-model", token, model=orjson.dumps(model).decode())["applied"] is True


def test_get_role_shows_only_the_auth_methods_the_caller_may_read(api: Api) -> None:
    api.ok("create-auth-method", name="/hidden/am")
    api.ok("create-role", name="/shown/role")
    api.ok("assoc-role-am", role_name="/shown/role", am_name="/hidden/am")
    token = caller(api, "/shown/reader", [("role-rule", "/shown/*", ["read", "list"])])
    [assoc] = api.ok("get-role", token, name="/shown/role")["associations"]
    assert assoc["access-id"] is None and assoc["am-name"] is None
    [listed] = [r for r in api.ok("list-roles", token)["roles"] if r["name"] == "/shown/role"]
    assert listed["associations"][0]["access-id"] is None
    assert api.ok("get-role", name="/shown/role")["associations"][0]["am-name"] == "/hidden/am"


def test_permission_is_checked_before_existence(api: Api) -> None:
    """assoc-role-am answered 404 for an auth method the caller may not even read: now 403 first."""
    api.ok("create-role", name="/p/role")
    token = caller(api, "/p/admin", [("role-rule", "/p/*", ["update"])])
    for am_name in ("/exists-not", "/admin"):
        refused(api.call("assoc-role-am", token, role_name="/p/role", am_name=am_name))
        refused(api.call("delete-assoc", token, role_name="/p/role", am_name=am_name))
