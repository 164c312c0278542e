"""Unit tests of the engine: bindings, rules, sub-claims, paths, explanations, export, author policies,
and the cedar.py fast path against cedarpy's public API."""

from __future__ import annotations

from typing import Any

import cedarpy
import orjson
import pytest
from cedarkey.engine import (
    AccessRole,
    AuthMethod,
    Engine,
    Identity,
    ModelError,
    NotFound,
    RoleRule,
    RuleType,
    canonical_path,
    canonical_pattern,
    cedar,
    compile,
    parse_sub_claims,
    slices,
)
from cedarkey.engine import engine as engine_module
from cedarkey.engine.decision import Decision, decision_of
from cedarkey.policies import schema_text

SCHEMA = schema_text()

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
ACCESS_ID = "p-aaaaaaaaaaaa"


def auth_method(**kwargs: Any) -> AuthMethod:
    kwargs.setdefault("bound_aws_account_id", (ACCOUNT,))
    return AuthMethod("/aws", ACCESS_ID, "aws_iam", **kwargs)


def identity(**kwargs: Any) -> Identity:
    values: dict[str, Any] = {"access_id": ACCESS_ID, "auth_type": "aws_iam", "principal_type": "assumed-role"}
    values["account"] = ACCOUNT
    values.update(kwargs)
    return Identity(**{k: v for k, v in values.items() if v is not None})


def engine_with(am: AuthMethod | None = None) -> Engine:
    engine = Engine(SCHEMA)
    engine.add_auth_method(am or auth_method())
    return engine


def rule(rule_type: str, path: str, *caps: str) -> RoleRule:
    return RoleRule.parse(rule_type, path, list(caps))


def role_engine(*rules: RoleRule, sub_claims: Any = None, roles: int = 1) -> Engine:
    """An engine with one auth method and role(s) ``/r0``... associated with it, ``rules`` on ``/r0``."""
    engine = engine_with()
    for i in range(roles):
        engine.add_role(AccessRole(f"/r{i}"))
        engine.associate(f"/r{i}", "/aws", parse_sub_claims(sub_claims))
    for r in rules:
        engine.set_rule("/r0", r)
    return engine


# --- auth method bindings ---------------------------------------------------------------------------------

ARN_ROLE = "arn:aws:iam::123456789012:role/dev-role"
ARN_SESSION = "arn:aws:sts::123456789012:assumed-role/dev-role/i-0abc"

BINDING_CASES = [
    # (bindings, identity attributes, allowed)
    pytest.param({}, {}, True, id="account-accepts"),
    pytest.param({}, {"account": OTHER_ACCOUNT}, False, id="account-refuses"),
    pytest.param({}, {"account": None}, False, id="account-missing"),
    pytest.param({"bound_aws_account_id": (OTHER_ACCOUNT, ACCOUNT)}, {}, True, id="account-any-of-list"),
    pytest.param({"bound_arn": (ARN_ROLE,)}, {"arn": ARN_ROLE}, True, id="arn-exact"),
    pytest.param(
        {"bound_arn": ("arn:aws:sts::123456789012:assumed-role/dev-role/*",)},
        {"arn": ARN_SESSION},
        True,
        id="arn-wildcard-on-arn",
    ),
    pytest.param(
        {"bound_arn": ("arn:aws:iam::*:role/dev-*",)},
        {"arn": ARN_SESSION, "iam_arn": ARN_ROLE},
        True,
        id="arn-wildcard-on-iam-arn",
    ),
    pytest.param(
        {"bound_arn": ("arn:aws:iam::*:role/prod-*",)},
        {"arn": ARN_SESSION, "iam_arn": ARN_ROLE},
        False,
        id="arn-refuses",
    ),
    pytest.param({"bound_arn": ("arn:aws:iam::*:role/DEV-*",)}, {"iam_arn": ARN_ROLE}, False, id="arn-case-sensitive"),
    pytest.param({"bound_arn": (ARN_ROLE,)}, {"arn": ARN_ROLE + "x"}, False, id="arn-whole-string"),
    pytest.param({"bound_arn": ("arn:aws:iam::*:role/*",)}, {}, False, id="arn-missing"),
    pytest.param({"bound_role_name": ("dev-role",)}, {"role_name": "dev-role"}, True, id="role-name-accepts"),
    pytest.param({"bound_role_name": ("dev-role",)}, {"role_name": "dev-role2"}, False, id="role-name-refuses"),
    pytest.param({"bound_role_name": ("dev.role",)}, {"role_name": "devXrole"}, False, id="role-name-literal"),
    pytest.param({"bound_role_name": ("dev-role",)}, {}, False, id="role-name-missing"),
    pytest.param({"bound_role_id": ("AROA1", "AROA2")}, {"role_id": "AROA2"}, True, id="role-id-accepts"),
    pytest.param({"bound_role_id": ("AROA1",)}, {"role_id": "aroa1"}, False, id="role-id-refuses"),
    pytest.param({"bound_resource_id": ("i-0abc",)}, {"resource_id": "i-0abc"}, True, id="resource-id-accepts"),
    pytest.param({"bound_resource_id": ("i-0abc",)}, {"resource_id": "i-0def"}, False, id="resource-id-refuses"),
    pytest.param({"bound_user_name": ("alice",)}, {"user_name": "alice"}, True, id="user-name-accepts"),
    pytest.param({"bound_user_name": ("alice",)}, {"user_name": "bob"}, False, id="user-name-refuses"),
    pytest.param({"bound_user_id": ("AIDA1",)}, {"user_id": "AIDA1"}, True, id="user-id-accepts"),
    pytest.param({"bound_user_id": ("AIDA1",)}, {"user_id": "AIDA9"}, False, id="user-id-refuses"),
    pytest.param({"bound_user_id": ("AIDA1",)}, {}, False, id="user-id-missing"),
    pytest.param({"bound_ips": ("10.0.0.0/8",)}, {"source_ip": "10.1.2.3"}, True, id="ips-v4-accepts"),
    pytest.param({"bound_ips": ("10.0.0.0/8",)}, {"source_ip": "11.1.2.3"}, False, id="ips-v4-refuses"),
    pytest.param({"bound_ips": ("192.168.1.7",)}, {"source_ip": "192.168.1.7"}, True, id="ips-v4-single"),
    pytest.param({"bound_ips": ("2001:db8::/32",)}, {"source_ip": "2001:db8:1::5"}, True, id="ips-v6-accepts"),
    pytest.param({"bound_ips": ("2001:db8::/32",)}, {"source_ip": "2001:db9::5"}, False, id="ips-v6-refuses"),
    pytest.param({"bound_ips": ("0.0.0.0/0",)}, {"source_ip": "::1"}, False, id="ips-v6-not-in-v4-range"),
    pytest.param({"bound_ips": ("10.0.0.0/8", "::1")}, {"source_ip": "::1"}, True, id="ips-any-of-list"),
    pytest.param({"bound_ips": ("10.0.0.0/8",)}, {}, False, id="ips-missing-source"),
    pytest.param(
        {"bound_role_name": ("dev-role",), "bound_user_id": ("AIDA1",)},
        {"role_name": "dev-role"},
        False,
        id="every-binding-must-match",
    ),
    pytest.param(
        {"bound_role_name": ("dev-role",), "bound_user_id": ("AIDA1",)},
        {"role_name": "dev-role", "user_id": "AIDA1"},
        True,
        id="every-binding-matches",
    ),
]


@pytest.mark.parametrize(("bindings", "attrs", "allowed"), BINDING_CASES)
def test_binding(bindings: dict[str, Any], attrs: dict[str, Any], allowed: bool) -> None:
    engine = engine_with(auth_method(**bindings))
    decision = engine.authenticate(identity(**attrs), 1000)
    assert decision.allowed is allowed
    assert not decision.errors
    if not allowed:
        assert decision.reasons, "a refused login names the bindings that failed"


def test_refused_login_names_each_failing_binding() -> None:
    engine = engine_with(auth_method(bound_role_name=("dev-role",), bound_user_id=("AIDA1",), access_expires=10))
    decision = engine.authenticate(identity(account=OTHER_ACCOUNT, role_name="dev-role"), 10)
    parts = {engine.source(pid)["binding"] for pid in decision.reasons}
    assert parts == {"bound-aws-account-id", "bound-user-id", "access-expires"}


@pytest.mark.parametrize(
    ("expires", "now", "allowed"),
    [
        (0, 2**40, True),
        (1000, 999, True),
        (1000, 1000, False),
        (1000, 1001, False),
    ],
)
def test_access_expires(expires: int, now: int, allowed: bool) -> None:
    engine = engine_with(auth_method(access_expires=expires))
    assert engine.authenticate(identity(), now).allowed is allowed


def test_login_needs_the_auth_methods_access_id_and_type() -> None:
    engine = engine_with()
    assert engine.authenticate(identity(), 0).allowed
    assert not engine.authenticate(identity(access_id="p-bbbbbbbbbbbb"), 0).allowed
    assert not engine.authenticate(identity(auth_type="access_key"), 0).allowed


def test_access_key_auth_method() -> None:
    engine = Engine(SCHEMA)
    engine.add_auth_method(AuthMethod("/key", ACCESS_ID, "access_key", bound_ips=("10.0.0.0/8",)))
    key = Identity(ACCESS_ID, "access_key", "access-key", source_ip="10.0.0.1")
    assert engine.authenticate(key, 0).allowed
    assert not engine.authenticate(Identity(ACCESS_ID, "access_key", "access-key", source_ip="9.0.0.1"), 0).allowed
    assert not engine.authenticate(Identity(ACCESS_ID, "aws_iam", "access-key", source_ip="10.0.0.1"), 0).allowed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bound_aws_account_id": ()},
        {"bound_aws_account_id": ("12345",)},
        {"bound_role_name": ("dev role",)},
        {"bound_role_id": ("AROA-1",)},
        {"bound_role_name": ("dev-*",)},  # only ARNs have wildcards
        {"bound_arn": ("not-an-arn",)},
        {"bound_ips": ("10.0.0.0/33",)},
        {"bound_ips": ("bogus",)},
        {"access_expires": -1},
        {"bound_user_name": ("",)},
    ],
)
def test_bad_auth_method_raises_model_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ModelError):
        auth_method(**kwargs)


# --- rules ----------------------------------------------------------------------------------------------


def test_deny_beats_allow_across_two_roles() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read", "list"), roles=2)
    caller = identity()
    assert engine.decide(caller, "read", "/dev/db-password").allowed
    engine.set_rule("/r1", rule("item-rule", "/dev/db-*", "deny"))
    for cap in ("read", "list", "create"):
        decision = engine.decide(caller, cap, "/dev/db-password")
        assert not decision.allowed
    assert engine.decide(caller, "read", "/dev/other").allowed
    decision = engine.decide(caller, "read", "/dev/db-password")
    assert [engine.source(pid)["name"] for pid in decision.reasons] == ["/r1"]


def test_deny_of_a_role_the_caller_does_not_hold_does_not_apply() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    engine.add_role(AccessRole("/other"))
    engine.set_rule("/other", rule("item-rule", "/dev/*", "deny"))
    assert engine.decide(identity(), "read", "/dev/x").allowed


def test_rule_types_are_independent() -> None:
    engine = role_engine(
        rule("item-rule", "/dev/*", "read"),
        rule("role-rule", "/dev/*", "deny"),
        rule("auth-method-rule", "/dev/*", "update"),
    )
    caller = identity()
    assert engine.decide(caller, "read", "/dev/x", "item-rule").allowed
    assert not engine.decide(caller, "read", "/dev/x", "role-rule").allowed
    assert not engine.decide(caller, "read", "/dev/x", "auth-method-rule").allowed
    assert engine.decide(caller, "update", "/dev/x", "auth-method-rule").allowed
    assert not engine.decide(caller, "update", "/dev/x", "item-rule").allowed


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/dev/*", "/dev/a", True),
        ("/dev/*", "/dev/a/b", True),
        ("/dev/*", "/dev", False),
        ("/dev/*", "/devx/a", False),
        ("/dev*", "/dev", True),
        ("/dev*", "/devx/y", True),
        ("/*/secret", "/a/b/secret", True),
        ("/*/secret", "/a/b/secret2", False),
        ("/a*b*c", "/abc", True),
        ("/a*b*c", "/aXbYc", True),
        ("/a*b*c", "/aXcYb", False),
        ("/Dev/*", "/dev/a", False),
        ("/exact", "/exact", True),
        ("/exact", "/exact/more", False),
        ("/*", "/anything/at/all", True),
        ('/q"u\\o*', '/q"u\\ote', True),
        ("/é*", "/é\u0301", True),
        ("/e*", "/é", False),
    ],
)
def test_pattern_matching(pattern: str, path: str, matches: bool) -> None:
    engine = role_engine(rule("item-rule", pattern, "read"))
    assert engine.decide(identity(), "read", path).allowed is matches


def test_no_rule_means_deny() -> None:
    engine = role_engine()
    decision = engine.decide(identity(), "read", "/dev/x")
    assert not decision.allowed and not decision.reasons
    assert engine.explain(identity(), "read", "/dev/x")["why"].startswith("denied: no rule")


def test_setting_a_rule_again_replaces_it() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    caller = identity()
    assert engine.decide(caller, "read", "/dev/x").allowed
    old = engine.set_rule("/r0", rule("item-rule", "dev/*", "create"))
    assert old == rule("item-rule", "/dev/*", "read")
    assert not engine.decide(caller, "read", "/dev/x").allowed
    assert engine.decide(caller, "create", "/dev/x").allowed
    engine.set_rule("/r0", rule("item-rule", "/dev/*", "deny"))
    assert not engine.decide(caller, "create", "/dev/x").allowed
    engine.set_rule("/r0", rule("item-rule", "/dev/*", "read", "update"))
    assert engine.decide(caller, "update", "/dev/x").allowed
    assert len(engine.model.roles["/r0"].rules) == 1
    assert len([p for p in engine.policies() if p.startswith("role:")]) == 1


def test_delete_rule_association_role_and_auth_method() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), rule("item-rule", "/prod/*", "read"))
    caller = identity()
    engine.delete_rule("/r0", "item-rule", "/prod/*")
    assert not engine.decide(caller, "read", "/prod/x").allowed
    assert engine.decide(caller, "read", "/dev/x").allowed
    with pytest.raises(NotFound):
        engine.delete_rule("/r0", "item-rule", "/prod/*")
    (assoc,) = engine.model.roles["/r0"].associations.values()
    engine.delete_association(assoc.assoc_id)
    assert not engine.decide(caller, "read", "/dev/x").allowed
    engine.associate("/r0", "/aws")
    assert engine.decide(caller, "read", "/dev/x").allowed
    engine.delete_auth_method("/aws")
    assert not engine.decide(caller, "read", "/dev/x").allowed
    assert not engine.authenticate(caller, 0).allowed
    engine.delete_role("/r0")
    assert engine.policies() == {}


@pytest.mark.parametrize(
    ("caps", "error"),
    [
        ([], "at least one"),
        (["deny", "read"], "cannot be combined"),
        (["write"], "unknown capability"),
    ],
)
def test_bad_rule_capabilities(caps: list[str], error: str) -> None:
    with pytest.raises(ModelError, match=error):
        RoleRule.parse("item-rule", "/a", caps)


def test_empty_batch() -> None:
    assert role_engine(rule("item-rule", "/dev/*", "read")).decide_batch(identity(), []) == []


def test_batch_keeps_the_order_of_requests() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), rule("role-rule", "/r/*", "list"))
    requests = [
        ("read", "/dev/a", "item-rule"),
        ("read", "/r/a", "role-rule"),
        ("list", "/r/a", "role-rule"),
        ("read", "/dev", "item-rule"),
        ("read", "dev/b", "item-rule"),
    ]
    assert [d.allowed for d in engine.decide_batch(identity(), requests)] == [True, False, True, False, True]


def test_bad_requests_raise_model_error() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    for cap, path, rt in [
        ("deny", "/a", "item-rule"),
        ("write", "/a", "item-rule"),
        ("read", "/a", "x-rule"),
        ("read", "/a/*", "item-rule"),
        ("read", 5, "item-rule"),
    ]:
        with pytest.raises(ModelError):
            engine.decide(identity(), cap, path, rt)
        with pytest.raises(ModelError):
            engine.decide_batch(identity(), [("read", "/dev/x", "item-rule"), (cap, path, rt)])


# --- sub-claims -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "attrs", "allowed"),
    [
        (None, {}, True),
        ({"role_name": "dev-*"}, {"role_name": "dev-role"}, True),
        ({"role_name": "dev-*"}, {"role_name": "prod-role"}, False),
        ({"role_name": "dev-*"}, {}, False),
        ({"role_name": ["dev-*", "ops-*"]}, {"role_name": "ops-role"}, True),
        ({"role_name": "dev-*", "principal_type": "assumed-role"}, {"role_name": "dev-role"}, True),
        ({"role_name": "dev-*", "principal_type": "user"}, {"role_name": "dev-role"}, False),
        (["role-name=dev-*", "session-name=i-*"], {"role_name": "dev-x", "session_name": "i-0abc"}, True),
        (["role-name=dev-*", "session-name=i-*"], {"role_name": "dev-x"}, False),
        ({"arn": "*:assumed-role/*/*"}, {"arn": ARN_SESSION}, True),
        ({"role_name": "*a*"}, {"role_name": "b\nab"}, True),
        ({"role_name": "dev"}, {"role_name": "DEV"}, False),
    ],
)
def test_sub_claims(claims: Any, attrs: dict[str, Any], allowed: bool) -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), sub_claims=claims)
    assert engine.decide(identity(**attrs), "read", "/dev/x").allowed is allowed


def test_a_second_association_with_other_sub_claims_widens_the_role() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), sub_claims={"role_name": "dev-*"})
    assert not engine.decide(identity(role_name="ops"), "read", "/dev/x").allowed
    engine.associate("/r0", "/aws", parse_sub_claims({"role_name": "ops"}))
    assert engine.decide(identity(role_name="ops"), "read", "/dev/x").allowed
    assert engine.decide(identity(role_name="dev-1"), "read", "/dev/x").allowed


def test_a_plain_role_gains_and_loses_a_sub_claims_association() -> None:
    """A role whose associations are all plain is evaluated by routing alone (compile.routed_rule_policy): a
    sub-claims association added to it must bring its test back, and removing it must lift it again."""
    engine = role_engine(rule("item-rule", "/dev/*", "read"), rule("item-rule", "/dev/x*", "deny"))
    other = AuthMethod("/aws2", "p-bbbbbbbbbbbb", "aws_iam", bound_aws_account_id=(ACCOUNT,))
    engine.add_auth_method(other)
    ops, dev = (
        identity(access_id=other.access_id, role_name="ops"),
        identity(access_id=other.access_id, role_name="dev-1"),
    )
    assert engine.decide(identity(), "read", "/dev/a").allowed
    assert not engine.decide(dev, "read", "/dev/a").allowed  # not associated: no route, no grant
    assoc = engine.associate("/r0", "/aws2", parse_sub_claims({"role_name": "dev-*"}))
    assert engine.decide(dev, "read", "/dev/a").allowed
    assert not engine.decide(ops, "read", "/dev/a").allowed
    assert not engine.decide(dev, "read", "/dev/xa").allowed
    assert engine.decide(identity(role_name="ops"), "read", "/dev/a").allowed  # the plain association holds
    engine.delete_association(assoc.assoc_id)
    assert not engine.decide(dev, "read", "/dev/a").allowed
    assert engine.decide(identity(role_name="ops"), "read", "/dev/a").allowed
    assert engine.decide(identity(), "read", "/dev/a").reasons == ('role:"/r0"/item-rule:"/dev/*"',)


def test_a_plain_role_exports_its_association_test() -> None:
    """The routed form is how the engine evaluates, never what it exports: the policy keeps its principal test."""
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    text = engine.export_cedar()
    assert f'((principal.access_id) == "{ACCESS_ID}")' in text and "permit(principal is Identity" in text
    stranger = identity(access_id="p-cccccccccccc")
    assert not WholeSet(engine).decide(stranger, "read", "/dev/a", "Item").allowed
    assert not engine.decide(stranger, "read", "/dev/a").allowed


def test_the_break_glass_auth_method_is_beyond_a_plain_roles_deny() -> None:
    """A role associated with the break-glass auth method is not plain for its deny rules (they leave that
    association out), so its caller is never denied by them, while the others are."""
    engine = role_engine(rule("item-rule", "/dev/*", "read"), rule("item-rule", "/dev/x*", "deny"))
    admin = AuthMethod("/admin", "p-dddddddddddd", "access_key")
    engine.add_auth_method(admin)
    engine.associate("/r0", "/admin")
    glass = Identity(admin.access_id, "access_key", "access-key")
    assert engine.decide(glass, "read", "/dev/a").allowed
    assert engine.decide(glass, "read", "/dev/xa").reasons == ('role:"/r0"/item-rule:"/dev/*"',)
    assert engine.decide(glass, "read", "/dev/xa").allowed
    assert engine.decide(identity(), "read", "/dev/xa").reasons == ('role:"/r0"/item-rule:"/dev/x*"',)


@pytest.mark.parametrize(
    "claims",
    [
        {"nosuch": "x"},
        {"role_name": ""},
        {"role_name": "a\nb"},
        {"role_name": "x" * 257},
        ["role_name"],
        "role_name=x",
        {"source_ip": "10.*"},
    ],
)
def test_bad_sub_claims(claims: Any) -> None:
    with pytest.raises(ModelError):
        parse_sub_claims(claims)


# --- paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "//a",
        "/a//b",
        "/a/",
        "/a/./b",
        "/a/../b",
        "/..",
        ".",
        "/a\nb",
        "/a\x00",
        "/a\x7f",
        "/a\x85",
        "/a\ud800",
        "a" * 1024,
        "/" + "a" * 1024,
        5,
        None,
    ],
)
def test_bad_paths(raw: Any) -> None:
    with pytest.raises(ModelError):
        canonical_path(raw)
    with pytest.raises(ModelError):
        canonical_pattern(raw)


def test_paths() -> None:
    assert canonical_path("a/b") == "/a/b"
    assert canonical_path("/a/b") == "/a/b"
    assert canonical_path("/" + "a" * 1023) == "/" + "a" * 1023
    assert canonical_path("a" * 1023) == "/" + "a" * 1023
    assert canonical_path("/a/.b/..c/ /\"'\\") == "/a/.b/..c/ /\"'\\"
    assert canonical_pattern("dev/*") == "/dev/*"
    with pytest.raises(ModelError, match="reserved"):
        canonical_path("/dev/*")
    with pytest.raises(ModelError):
        AccessRole("/r/*")


# --- the user story ---------------------------------------------------------------------------------------


def test_user_story() -> None:
    engine = Engine(SCHEMA)
    engine.add_auth_method(
        AuthMethod("/dev-aws", ACCESS_ID, "aws_iam", bound_aws_account_id=(ACCOUNT,), bound_role_name=("dev-role",))
    )
    engine.add_role(AccessRole("/dev-readers"))
    engine.associate("/dev-readers", "/dev-aws")
    engine.set_rule("/dev-readers", rule("item-rule", "/dev/*", "read", "list"))

    dev = identity(role_name="dev-role", arn="arn:aws:sts::123456789012:assumed-role/dev-role/s")
    assert engine.authenticate(dev, 0).allowed
    assert engine.decide(dev, "read", "/dev/db-password").allowed
    assert engine.decide(dev, "list", "/dev/db-password").allowed
    assert not engine.decide(dev, "read", "/prod/db-password").allowed
    assert not engine.decide(dev, "create", "/dev/db-password").allowed

    other = identity(role_name="other-role")
    login = engine.authenticate(other, 0)
    assert not login.allowed
    assert [engine.source(pid)["binding"] for pid in login.reasons] == ["bound-role-name"]
    assert engine.validate() == []


# --- explain and export -----------------------------------------------------------------------------------


def test_explain_names_the_determining_rule() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), rule("item-rule", "/dev/secret*", "deny"))
    caller = identity()
    allowed = engine.explain(caller, "read", "dev/x")
    assert allowed["decision"] == "allow"
    assert allowed["path"] == "/dev/x"
    assert [(d["kind"], d["name"], d["path"], d["rule-type"]) for d in allowed["determining"]] == [
        ("rule", "/r0", "/dev/*", "item-rule")
    ]
    assert allowed["roles"] == ["/r0"]
    assert 'like "/dev/*"' in allowed["cedar"]

    denied = engine.explain(caller, "read", "/dev/secret-1")
    assert denied["decision"] == "deny"
    assert [(d["name"], d["path"], d["capabilities"]) for d in denied["determining"]] == [
        ("/r0", "/dev/secret*", ["deny"])
    ]
    assert "deny rule" in denied["why"]
    assert {d["path"] for d in denied["considered"]} == {"/dev/*", "/dev/secret*"}

    nobody = engine.explain(identity(access_id="p-bbbbbbbbbbbb"), "read", "/dev/x")
    assert nobody["decision"] == "deny" and nobody["determining"] == []
    assert "no access role" in nobody["why"]


def test_export_cedar_contains_every_policy_id() -> None:
    engine = role_engine(
        rule("item-rule", "/dev/*", "read"),
        rule("role-rule", '/q"uo\\te/*', "deny"),
        rule("auth-method-rule", "/ünï/😀*", "list"),
        sub_claims={"role_name": 'a"b\\*'},
    )
    engine.update_auth_method(auth_method(bound_role_name=("dev-role",), bound_ips=("10.0.0.0/8",), access_expires=5))
    engine.set_author_policies({"extra.cedar": '@id("mine") forbid(principal, action, resource) when { false };'})
    text = engine.export_cedar()
    ids = {p["annotations"]["id"] for p in cedar.to_json(text).values()}
    assert ids == set(engine.policies())
    assert len(ids) == 3 + 5 + 1
    for pid in engine.policies():
        if pid.isascii():  # Cedar escapes '"' and '\\' as JSON does (and other characters as \u{...})
            assert f"@id({orjson.dumps(pid).decode()})" in text
    assert engine.validate() == []


def test_export_keeps_every_annotation_that_evaluation_leaves_out() -> None:
    """Handles are built without annotations (they never change a decision); what the engine shows keeps
    each policy's ``@id`` and an author's other annotations, in their order."""
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    text = '@advice("ask ops") @id("mine") @owner("sec") forbid(principal, action, resource) when { false };'
    engine.set_author_policies({"extra.cedar": text})
    (pid,) = engine.author_policies()
    written = [("advice", "ask ops"), ("id", pid), ("owner", "sec")]
    shown = engine.author_policies()[pid]["annotations"]
    assert list(shown.items()) == written
    shown["owner"] = "changed by a caller"
    assert list(engine.author_policies()[pid]["annotations"].items()) == written
    exported = {p["annotations"]["id"]: p["annotations"] for p in cedar.to_json(engine.export_cedar()).values()}
    assert list(exported[pid].items()) == written
    (rule_id,) = engine.decide(identity(), "read", "/dev/x").reasons
    assert set(exported) == set(engine.policies())
    assert all(exported[i] == {"id": i} for i in exported if i != pid)
    assert rule_id in exported


# --- author policies --------------------------------------------------------------------------------------

FORBID_RANGE = """
@id("office-only")
forbid(principal, action, resource)
when { principal has source_ip && principal.source_ip.isInRange(ip("203.0.113.0/24")) };
"""


def test_author_forbid_on_source_ip_denies() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    inside, outside = identity(source_ip="203.0.113.9"), identity(source_ip="198.51.100.1")
    assert engine.decide(inside, "read", "/dev/x").allowed
    engine.set_author_policies({"global.cedar": FORBID_RANGE})
    decision = engine.decide(inside, "read", "/dev/x")
    assert not decision.allowed
    assert decision.reasons == ('file:"global.cedar"/office-only',)
    assert engine.explain(inside, "read", "/dev/x")["determining"][0]["kind"] == "author"
    assert not engine.authenticate(inside, 0).allowed
    assert engine.decide(outside, "read", "/dev/x").allowed
    assert engine.authenticate(outside, 0).allowed
    assert engine.decide(identity(), "read", "/dev/x").allowed
    engine.set_author_policies({})
    assert engine.decide(inside, "read", "/dev/x").allowed


def test_author_policies_are_the_authors_and_only_theirs() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    assert engine.author_policies() == {}
    engine.set_author_policies({"global.cedar": FORBID_RANGE})
    authored = engine.author_policies()
    assert list(authored) == ['file:"global.cedar"/office-only']
    assert authored == {pid: p for pid, p in engine.policies().items() if engine.source(pid)["kind"] == "author"}


def test_author_permit_joins_decisions() -> None:
    engine = role_engine()
    public = 'permit(principal, action == Action::"read", resource is Item) when { context.path like "/pub/*" };'
    engine.set_author_policies({"p.cedar": public})
    assert engine.decide(identity(), "read", "/pub/x").allowed
    assert not engine.decide(identity(), "read", "/priv/x").allowed
    assert not engine.decide(identity(), "list", "/pub/x").allowed


@pytest.mark.parametrize(
    "text",
    [
        "permit(principal, action, resource) when { principal.nosuch == 1 };",
        "permit(principal, action, resource) when { principal.source_ip.isLoopback() };",  # optional attribute
        'permit(principal, action == Action::"read", resource) when { context.now > 0 };',
        'permit(principal, action, resource) when { 1 + "a" };',
        "this is not cedar",
        'permit(principal, action == Action::"frobnicate", resource);',
    ],
)
def test_author_policy_failing_the_schema_raises_model_error(text: str) -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    engine.set_author_policies({"good.cedar": FORBID_RANGE})
    before = engine.policies()
    with pytest.raises(ModelError):
        engine.set_author_policies({"good.cedar": FORBID_RANGE, "bad.cedar": text})
    assert engine.policies() == before
    assert not engine.decide(identity(source_ip="203.0.113.9"), "read", "/dev/x").allowed


def test_author_policy_error_names_its_source() -> None:
    engine = role_engine()
    with pytest.raises(ModelError) as syntax:
        engine.set_author_policies({"team/bad.cedar": "nonsense"})
    assert syntax.value.field == "team/bad.cedar"
    with pytest.raises(ModelError) as schema:
        engine.set_author_policies({"team/bad.cedar": "permit(principal, action, resource) when { principal.x == 1 };"})
    assert schema.value.field == "team/bad.cedar"


def test_duplicate_author_ids_are_refused() -> None:
    engine = role_engine()
    twice = '@id("x") forbid(principal, action, resource) when { false };\n' * 2
    with pytest.raises(ModelError, match="duplicate"):
        engine.set_author_policies({"a.cedar": twice})


def test_evaluation_error_is_deny() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    engine.set_author_policies(
        {"overflow.cedar": "forbid(principal, action, resource) when { 9223372036854775807 + 1 > 0 };"}
    )
    decision = engine.decide(identity(), "read", "/dev/x")
    assert not decision.allowed and decision.errors
    assert engine.explain(identity(), "read", "/dev/x")["why"].startswith("an evaluation error")
    login = engine.authenticate(identity(), 0)
    assert not login.allowed and login.errors


def public_request(capability: str, path: str, entity_type: str) -> dict[str, Any]:
    """The request of one public ``cedarpy.is_authorized`` call on a path, as the engine asks it."""
    return {
        "principal": {"type": "Identity", "id": "caller"},
        "action": {"type": "Action", "id": capability},
        "resource": {"type": entity_type, "id": path},
        "context": {"path": path},
    }


class WholeSet:
    """One public ``cedarpy.is_authorized`` call on every policy the engine exports, keyed by id."""

    def __init__(self, engine: Engine) -> None:
        self.policies = cedar.policy_set(engine.policies())

    def decide(self, caller: Identity, capability: str, path: str, entity_type: str) -> Decision:
        entities = cedarpy.Entities.from_json_str(orjson.dumps([caller.entity()]).decode())
        public = cedarpy.is_authorized(public_request(capability, path, entity_type), self.policies, entities)
        errors = [e.replace('\\"', '"') for e in public.diagnostics.errors]  # Cedar's message escapes the id
        return decision_of(
            {"decision": public.decision.value, "diagnostics": {"reason": public.diagnostics.reasons, "errors": errors}}
        )


def test_decisions_name_policies_by_id_as_the_whole_set_does() -> None:
    """Cedar knows a handle's policies by their positions; a decision names them by id, its reasons and its
    evaluation errors the same as one public call on every policy, keyed by id (the id as it is, unescaped)."""
    engine = role_engine(
        rule("item-rule", "/dev/*", "read"),
        rule("item-rule", "/dev/a", "read"),
        rule("item-rule", "/dev/x*", "deny"),
        roles=2,
    )
    engine.set_rule("/r1", rule("item-rule", "/dev/*", "read"))
    overflow = 'forbid(principal, action, resource is Item) when { context.path == "/dev/boom" && %d + 1 > 0 };'
    engine.set_author_policies({"overflow.cedar": overflow % (2**63 - 1)})
    whole, caller = WholeSet(engine), identity()
    seen = set()
    for path in ("/dev/a", "/dev/xa", "/dev/boom"):
        mine = engine.decide(caller, "read", path)
        assert mine == whole.decide(caller, "read", path, "Item"), path
        seen.add((mine.allowed, len(mine.reasons), len(mine.errors)))
    assert seen == {(True, 3, 0), (False, 1, 0), (False, 0, 1)}  # three permits of two roles; a deny; an error


def encoded(text: str) -> list[bytes]:
    return [orjson.dumps(p) for p in cedar.to_json(text).values()]


def test_a_handle_names_back_only_its_own_positions() -> None:
    handle = cedar.ParsedSets().handle(["a", "b"], encoded("permit(principal, action, resource);" * 2))
    text = "error while evaluating policy `{}`: overflow"
    assert handle.named(Decision(False, ("1",), (text.format(0),))) == Decision(False, ("b",), (text.format("a"),))
    for other in (text.format(2), text.format("x"), "error while evaluating policy `1", "other `0`: x"):
        assert handle.named(Decision(False, (), (other,))).errors == (other,)


def test_equal_policies_share_one_parsed_set_while_a_handle_holds_it() -> None:
    sets = cedar.ParsedSets()
    read, write = (
        encoded('permit(principal, action == Action::"read", resource);'),
        encoded('permit(principal, action == Action::"update", resource);'),
    )
    mine, theirs = sets.handle(["m/read", "m/write"], read + write), sets.handle(["t/write", "t/read"], write + read)
    assert mine.policies is theirs.policies and len(sets) == 1  # listed in another order, the same set
    other = sets.handle(["o/read"], read)
    assert other.policies is not mine.policies and len(sets) == 2
    request = {
        "principal": {"type": "Identity", "id": "caller"},
        "action": {"type": "Action", "id": "update"},
        "resource": {"type": "Item", "id": "/x"},
        "context": "{}",
    }
    assert [h.evaluate([request], cedar.NO_ENTITIES)[0].reasons for h in (mine, theirs)] == [("m/write",), ("t/write",)]
    del mine, theirs
    assert len(sets) == 1  # freed with the last handle that held it


def test_roles_with_equal_rules_decide_apart() -> None:
    """Two roles holding the same rule evaluate one parsed set; each caller's decision names its own role's."""
    engine = Engine(SCHEMA)
    for n in range(2):
        engine.add_auth_method(AuthMethod(f"/aws{n}", f"p-{n:012d}", "aws_iam", bound_aws_account_id=(ACCOUNT,)))
        engine.add_role(AccessRole(f"/r{n}"))
        engine.associate(f"/r{n}", f"/aws{n}", parse_sub_claims(None))
        engine.set_rule(f"/r{n}", rule("item-rule", "/shared/*", "read"))
    for n in range(2):
        decision = engine.decide(identity(access_id=f"p-{n:012d}"), "read", "/shared/x")
        assert decision == Decision(True, (compile_id(f"/r{n}", "/shared/*"),))
    assert not engine.decide(identity(access_id="p-000000000000"), "update", "/shared/x").allowed


def team_engine(teams: int) -> Engine:
    """``teams`` roles cut alike, each with its own auth method: a tree, a token under any job, an exact path."""
    engine = Engine(SCHEMA)
    for n in range(teams):
        engine.add_auth_method(AuthMethod(f"/aws{n}", f"p-{n:012d}", "aws_iam", bound_aws_account_id=(ACCOUNT,)))
        engine.add_role(AccessRole(f"/r{n}"))
        engine.associate(f"/r{n}", f"/aws{n}", parse_sub_claims(None))
        for pattern, cap in (
            (f"/t{n:03d}/app/*", "read"),
            (f"/t{n:03d}/ci/*/token", "update"),
            (f"/t{n:03d}/x", "list"),
        ):
            engine.set_rule(f"/r{n}", rule("item-rule", pattern, cap))
    return engine


def test_roles_cut_alike_share_parsed_sets_and_decide_apart() -> None:
    """A rule is evaluated past its literal prefix (compile.routed_rule_policy), so teams whose trees differ
    only in their names share every parsed set; each decision still tests its own path and names its role."""
    assert team_engine(40).parsed_sets == team_engine(1).parsed_sets
    engine = team_engine(3)
    me, other = identity(access_id="p-000000000001"), identity(access_id="p-000000000002")
    assert engine.decide(me, "read", "/t001/app/a/b").reasons == (compile_id("/r1", "/t001/app/*"),)
    assert engine.decide(me, "update", "/t001/ci/job 7/token").allowed
    assert engine.decide(me, "list", "/t001/x").allowed
    for cap, path in (("update", "/t001/ci/token"), ("update", "/t001/ci/j/tokens"), ("list", "/t001/xy")):
        assert not engine.decide(me, cap, path).allowed, path
    for cap, path in (("read", "/t001/app/a"), ("update", "/t001/ci/j/token"), ("list", "/t001/x")):
        assert not engine.decide(other, cap, path).allowed, path  # the same shape, another team's tree
        assert engine.decide(other, cap, path.replace("t001", "t002")).allowed, path


def test_decision_from_synthetic_answers() -> None:
    allow = {"decision": "Allow", "diagnostics": {"reason": ["p1"], "errors": []}}
    assert decision_of(allow).allowed and decision_of(allow).reasons == ("p1",)
    erroring = {"decision": "Allow", "diagnostics": {"reason": ["p1"], "errors": ["boom"]}}
    assert not decision_of(erroring).allowed and decision_of(erroring).errors == ("boom",)
    structured = {"decision": "Allow", "diagnostics": {"reason": [], "errors": [{"policy_id": "x", "error": "e"}]}}
    assert not decision_of(structured).allowed
    assert not decision_of({"decision": "Deny", "diagnostics": {}}).allowed


def test_answers_that_differ_only_in_their_metrics_share_one_decision() -> None:
    def answer(decision: str, reason: list[str], errors: list[str], micros: int) -> str:
        diagnostics = {"reason": reason, "id_annotations_by_reason": {}, "errors": errors}
        metrics = {"authz_duration_micros": micros}
        fields = {"decision": decision, "correlation_id": None, "diagnostics": diagnostics, "metrics": metrics}
        return orjson.dumps(fields).decode()

    answers = cedar.AnswerDecisions(size=3)
    tricky = 'a ,"metrics": b'  # in a JSON string its quotes are escaped: it cannot end the answer early
    cases = [("Allow", ["p2", "p1"], []), ("Deny", ["f1"], []), ("Deny", [], [tricky]), ("Allow", ["p1"], ["e"])]
    for args in cases:
        first, second = answer(*args, 3), answer(*args, 40)
        decision = answers.of(first)
        assert decision == decision_of(orjson.loads(first))
        assert answers.of(second) is decision
    assert len(answers) == 3  # the oldest went


def test_answers_from_cedarpy_are_remembered_and_others_decoded_in_full() -> None:
    request = {
        "principal": {"type": "Identity", "id": "caller"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Item", "id": "/dev/a"},
        "context": orjson.dumps({"path": "/dev/a"}).decode(),
    }
    handle = cedar.policy_set(role_engine(rule("item-rule", "/dev/*", "read")).policies())
    texts = cedarpy._internal.is_authorized_batch([request, request], handle, cedar.NO_ENTITIES, None, False)
    answers = cedar.AnswerDecisions()
    assert answers.of(texts[0]) is answers.of(texts[1]) and len(answers) == 1
    # fields in another order (as a cedarpy release might write them): the text before the metrics is not all
    # of the answer, so nothing is remembered and every answer is decoded
    other = cedar.AnswerDecisions()
    early = '{"decision":"Allow","metrics":{"m":1},"diagnostics":{"reason":["p1"],"errors":[]}}'
    late_error = '{"decision":"Allow","metrics":{"m":2},"diagnostics":{"reason":["p1"],"errors":["boom"]}}'
    assert other.of(early) == Decision(True, ("p1",))
    assert other.of(late_error) == Decision(False, (), ("boom",))
    assert len(other) == 0


# --- cedar.py fast path vs cedarpy's public API -----------------------------------------------------------


def test_fast_path_agrees_with_public_is_authorized() -> None:
    engine = role_engine(
        rule("item-rule", "/dev/*", "read", "list"),
        rule("item-rule", "/dev/secret/*", "deny"),
        rule("role-rule", "/*", "update"),
        sub_claims={"role_name": "dev-*"},
    )
    engine.update_auth_method(auth_method(bound_role_name=("dev-role",), bound_ips=("10.0.0.0/8",), access_expires=100))
    engine.set_author_policies({"o.cedar": FORBID_RANGE.replace("203.0.113.0/24", "10.9.0.0/16")})
    policies = engine.policies()
    handle = cedar.policy_set(policies)
    overflow = dict(policies)
    overflow["boom"] = cedar.to_json(
        '@id("boom") forbid(principal, action, resource) when { principal has user_id && 9223372036854775807 + 1 > 0 };'
    )["policy0"]
    overflow_handle = cedar.policy_set(overflow)

    callers = [
        identity(role_name="dev-role", source_ip="10.0.0.1"),
        identity(role_name="dev-role", source_ip="10.9.1.1"),
        identity(role_name="ops", user_id="AIDA1"),
        identity(role_name='dev-x\n"', account="000000000000"),
    ]
    requests: list[dict[str, Any]] = []
    for cap in ("read", "list", "update", "create"):
        for path in ("/dev/a", "/dev/secret/x", "/prod/a"):
            for entity_type in ("Item", "AccessRole"):
                requests.append(public_request(cap, path, entity_type))
    for now in (0, 99, 100):
        requests.append(
            {
                "principal": {"type": "Identity", "id": "caller"},
                "action": {"type": "Action", "id": "authenticate"},
                "resource": {"type": "AuthMethod", "id": ACCESS_ID},
                "context": {"now": now},
            }
        )
    outcomes = set()
    for caller in callers:
        entities = cedarpy.Entities.from_json_str(orjson.dumps([caller.entity()]).decode())
        fast_entities = cedar.entities([caller.entity()])
        for ps in (handle, overflow_handle):
            fast = cedar.evaluate(
                [{**r, "context": orjson.dumps(r["context"]).decode()} for r in requests], ps, fast_entities
            )
            for request, decision in zip(requests, fast, strict=True):
                public = cedarpy.is_authorized(request, ps, entities)
                diagnostics = {"reason": public.diagnostics.reasons, "errors": public.diagnostics.errors}
                expected = decision_of({"decision": public.decision.value, "diagnostics": diagnostics})
                assert (decision.allowed, decision.reasons) == (expected.allowed, expected.reasons), request
                assert len(decision.errors) == len(expected.errors), request
                outcomes.add((public.decision.value, bool(public.diagnostics.errors)))
    assert outcomes == {("Allow", False), ("Deny", False), ("Deny", True)}


def test_engine_decisions_match_public_is_authorized_on_the_whole_set() -> None:
    """The sliced engine and one cedarpy call on every compiled policy give the same answers."""
    engine = role_engine(
        rule("item-rule", "/dev/*", "read"),
        rule("item-rule", "/dev/x*", "deny"),
        rule("item-rule", "/*", "list"),
        roles=3,
    )
    engine.set_rule("/r1", rule("item-rule", "/dev/y", "create"))
    engine.set_rule("/r2", rule("role-rule", "/dev/*", "read"))
    whole, caller = WholeSet(engine), identity()
    for cap in ("read", "list", "create"):
        for path in ("/dev/a", "/dev/xa", "/dev/y", "/dev", "/other"):
            for rt, entity_type in (("item-rule", "Item"), ("role-rule", "AccessRole")):
                mine = engine.decide(caller, cap, path, rt)
                assert mine == whole.decide(caller, cap, path, entity_type), (cap, path, rt)


# --- input that Cedar could not take is refused up front, as a ModelError -----------------------------------


def test_identity_with_lone_surrogate_is_a_model_error() -> None:
    with pytest.raises(ModelError):
        identity(role_name="\ud800")


def test_identity_with_scoped_ipv6_is_a_model_error() -> None:
    with pytest.raises(ModelError):
        identity(source_ip="fe80::1%eth0")


def test_bound_ips_with_scoped_ipv6_is_a_model_error() -> None:
    with pytest.raises(ModelError):
        auth_method(bound_ips=("fe80::1%1",))


def _remembered(engine: Engine, caller: Identity) -> int:
    return len(engine.memos.of(caller))


@pytest.mark.parametrize("change", ["delete_role", "delete_rule", "set_rule", "delete_association", "delete_am"])
def test_a_change_drops_the_memos_of_the_callers_it_concerns(change: str) -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    caller = identity()
    assert engine.decide(caller, "read", "/dev/x").allowed
    (assoc,) = engine.model.roles["/r0"].associations.values()
    {
        "delete_role": lambda: engine.delete_role("/r0"),
        "delete_rule": lambda: engine.delete_rule("/r0", "item-rule", "/dev/*"),
        "set_rule": lambda: engine.set_rule("/r0", rule("item-rule", "/dev/*", "deny")),
        "delete_association": lambda: engine.delete_association(assoc.assoc_id),
        "delete_am": lambda: engine.delete_auth_method("/aws"),
    }[change]()
    assert not engine.decide(caller, "read", "/dev/x").allowed


def test_a_change_keeps_the_memos_of_callers_it_cannot_concern() -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"))
    engine.add_auth_method(AuthMethod("/other", "p-bbbbbbbbbbbb", "aws_iam", bound_aws_account_id=(ACCOUNT,)))
    engine.add_role(AccessRole("/unrelated"))
    engine.associate("/unrelated", "/other")
    caller = identity()
    assert engine.decide(caller, "read", "/dev/x").allowed
    engine.set_rule("/unrelated", rule("item-rule", "/*", "read"))
    engine.add_role(AccessRole("/empty"))
    assert _remembered(engine, caller) == 1
    engine.set_rule("/r0", rule("item-rule", "/ops/*", "read"))
    assert _remembered(engine, caller) == 0


# --- several slices, one question ------------------------------------------------------------------------


def compile_id(role_name: str, path: str) -> str:
    return compile.rule_policy_id(role_name, RuleType.ITEM, path)


def _native_calls(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the engine's native evaluations (one entry per call, the number of requests it carried)."""
    real = engine_module.cedar.evaluate
    calls: list[int] = []

    def counting(requests: list[Any], policies: Any, ents: Any) -> list[dict[str, Any]]:
        calls.append(len(requests))
        return real(requests, policies, ents)

    monkeypatch.setattr(engine_module.cedar, "evaluate", counting)
    return calls


def test_policies_of_several_roles_and_the_authors_are_asked_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), roles=2)
    engine.set_rule("/r1", rule("item-rule", "/dev/a/*", "list"))
    engine.set_author_policies({"p.cedar": FORBID_RANGE})
    calls = _native_calls(engine, monkeypatch)
    caller, inside = identity(), identity(source_ip="203.0.113.9")
    assert engine.decide(caller, "read", "/dev/a/x").reasons == (compile_id("/r0", "/dev/*"),)
    assert engine.decide(caller, "list", "/dev/a/x").reasons == (compile_id("/r1", "/dev/a/*"),)
    assert not engine.decide(inside, "read", "/dev/a/x").allowed
    assert calls == [1, 1, 1]
    # a change rebuilds the parts, so the merged handle of the old ones is never asked again
    engine.set_rule("/r1", rule("item-rule", "/dev/a/*", "deny"))
    denied = engine.decide(caller, "read", "/dev/a/x")
    assert (denied.allowed, denied.reasons) == (False, (compile_id("/r1", "/dev/a/*"),))
    engine.set_author_policies({})
    assert not engine.decide(caller, "list", "/dev/a/y").allowed
    assert engine.decide(inside, "read", "/dev/b").allowed


def test_a_merged_slice_reads_the_caller_when_a_part_does(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = role_engine(rule("item-rule", "/dev/*", "read"), sub_claims={"role_name": "dev-*"})
    engine.add_role(AccessRole("/plain"))
    engine.associate("/plain", "/aws")
    engine.set_rule("/plain", rule("item-rule", "/dev/*", "list"))
    calls = _native_calls(engine, monkeypatch)
    developer, other = identity(role_name="dev-ci"), identity(role_name="ops")
    assert engine.decide(developer, "read", "/dev/x").reasons == (compile_id("/r0", "/dev/*"),)
    assert not engine.decide(other, "read", "/dev/x").allowed
    assert engine.decide(other, "list", "/dev/x").allowed
    assert calls == [1, 1, 1]


def test_a_union_over_the_merge_limit_is_asked_of_each_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = role_engine(*(rule("item-rule", f"/dev/{'/'.join('abcdefgh'[: k + 1])}/*", "read") for k in range(8)))
    engine.add_role(AccessRole("/r1"))
    engine.associate("/r1", "/aws")
    engine.set_rule("/r1", rule("item-rule", "/dev/*", "deny"))
    monkeypatch.setattr(slices, "MERGE_LIMIT", 8)
    calls = _native_calls(engine, monkeypatch)
    path = "/dev/a/b/c/d/e/f/g/h/x"  # all 8 rules of /r0 and the deny of /r1: 9 policies
    decision = engine.decide(identity(), "read", path)
    assert (decision.allowed, decision.reasons) == (False, (compile_id("/r1", "/dev/*"),))
    assert calls == [1, 1]
    engine.delete_rule("/r1", "item-rule", "/dev/*")
    assert len(engine.decide(identity(), "read", path).reasons) == 8
