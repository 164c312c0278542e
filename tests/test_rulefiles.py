"""Rule files (cedarkey.policies): parsing with file and line, checks and warnings, glob coverage, model
states (JSON and TOML round trips), plans, test cases and exports with sources. Pure: no server."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import pytest
from cedarkey.engine import AuthMethod, Identity, ModelError, RoleRule
from cedarkey.engine.glob import glob_match
from cedarkey.policies import (
    ModelState,
    RoleState,
    RuleFilesError,
    diff_states,
    export_with_sources,
    offline_access_id,
    parse_rule_files,
    resolve_identity,
    run_tests,
    state_from_json,
    state_to_json,
    state_to_toml,
)
from cedarkey.policies.lint import sub_claims_imply
from cedarkey.policies.loader import load_rule_set, load_rules, read_rule_files
from cedarkey.policies.toml_lines import TomlLines as _TomlLines
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "policies" / "examples"

AM = """
[auth_method.m]
bound_aws_account_id = ["123456789012"]
bound_role_name = ["dev-role"]
"""


def parse(**files: str):  # type: ignore[no-untyped-def]
    return parse_rule_files({name.replace("__", "."): text for name, text in files.items()})


def messages(rule_set) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(d) for d in sorted(rule_set.diagnostics)]


# --- the shipped examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["story", "deny"])
def test_examples_are_clean_and_their_tests_pass(name: str) -> None:
    rule_set = load_rule_set(EXAMPLES / name)
    assert rule_set.diagnostics == []
    assert rule_set.tests, "every example ships test cases"
    results = run_tests(rule_set, rule_set.engine(), int(time.time()))
    assert [r.line() for r in results if not r.passed] == []


def test_story_example_is_the_user_story() -> None:
    engine = load_rules(EXAMPLES / "story")
    am = engine.model.auth_method("iamAuth1")
    assert am.type == "aws_iam" and am.bound_aws_account_id == ("123456789012",) and am.bound_role_name == ("dev-role",)
    role = engine.model.role("dev-readers")
    assert [a.access_id for a in role.associations.values()] == [am.access_id]
    assert [r.to_dict() for r in role.rules.values()] == [
        {"rule-type": "item-rule", "path": "/dev/*", "capabilities": ["read", "list"]}
    ]


def test_deny_example_has_a_deny_and_a_raw_cedar_forbid() -> None:
    rule_set = load_rule_set(EXAMPLES / "deny")
    assert any(r.rule.is_deny for role in rule_set.roles.values() for r in role.rules)
    assert list(rule_set.cedar) == ["guest-network.cedar"]
    assert "forbid" in rule_set.cedar["guest-network.cedar"].text


# --- where things are ------------------------------------------------------------------------------------


def test_toml_lines_of_every_style() -> None:
    text = '''# comment [not.a.header]
title = """
[role.fake]
a "quoted" ] line
"""
[auth_method."/with/slash"]   # trailing comment
bound_arn = [
  "arn:aws:iam::1:role/a",   # one
  'arn:aws:iam::1:role/b',
]

[[ role . r . rule ]]
path = "/a"
[[role.r.rule]]
path = "/b"
capabilities = ["read"]

[role.r2]
rules = [
  { path = "/x", capabilities = ["list"] },
  { path = "/y",
    capabilities = ["read"] },
]
dotted.key = 1
literal = \'\'\'
[role.also.fake]
\'\'\'
'''
    lines = _TomlLines(text)
    assert lines.line(("title",)) == 2
    assert lines.line(("auth_method", "/with/slash")) == 6
    assert lines.line(("auth_method", "/with/slash", "bound_arn", 1)) == 9
    assert lines.line(("role", "r", "rule", 0)) == 12
    assert lines.line(("role", "r", "rule", 1, "capabilities")) == 16
    assert lines.line(("role", "r2", "rules", 0)) == 20
    assert lines.line(("role", "r2", "rules", 1, "capabilities")) == 22
    assert lines.line(("role", "r2", "dotted", "key")) == 24
    assert lines.line(("role", "r2", "rules", 1, "nothing-here")) == 21  # the nearest known ancestor
    assert ("role", "fake") not in lines.lines and ("role", "also", "fake") not in lines.lines


def test_errors_name_file_line_and_field() -> None:
    rule_set = parse(
        roles__toml=AM
        + """
[role.r]

[[role.r.association]]
auth_method = "nope"

[[role.r.rule]]
path = "/dev/*"
capabilities = ["read", "reed"]

[[role.r.rule]]
path = "/dev//x"
capabilities = ["read"]

[[role.r.rule]]
path = "/ok"
capabilities = ["read"]
rule_type = "item"
""",
    )
    assert messages(rule_set) == [
        "roles.toml:8: role /r: association 1: auth_method: unknown auth method /nope (define it as "
        '[auth_method.nope], or name an access_key method of the server with type = "access_key")',
        "roles.toml:13: role /r: rule 1: capabilities: unknown capability 'reed'; one of read, create, update, "
        "delete, list, deny",
        "roles.toml:16: role /r: rule 2: path: empty path segment (a doubled or trailing '/')",
        "roles.toml:22: role /r: rule 3: rule_type: unknown rule type 'item'; one of item-rule, role-rule, "
        "auth-method-rule",
    ]
    with pytest.raises(RuleFilesError) as info:
        rule_set.engine()
    assert len(info.value.diagnostics) == 4


def test_auth_method_errors() -> None:
    rule_set = parse(
        a__toml="""
[auth_method.a]
bound_aws_account_id = ["12345"]

[auth_method.b]
bound_role_name = ["x"]

[auth_method.c]
type = "access_key"
jwt_ttl = 60

[auth_method.d]
bound_aws_account_id = ["123456789012"]
bound_role_name = ["r"]
colour = "red"
jwt_ttl = "long"
"""
    )
    assert messages(rule_set) == [
        "a.toml:3: auth method /a: bound_aws_account_id: '12345' is not a 12-digit AWS account id",
        "a.toml:5: auth method /b: bound-aws-account-id: an aws_iam auth method needs at least one account",
        "a.toml:10: auth method /c: jwt_ttl: an access_key auth method in rule files only names one the server "
        "holds (it is never created or changed from files): give no other field",
        "a.toml:15: auth method /d: colour: unknown field; one of type, bound_aws_account_id, bound_arn, "
        "bound_role_name, bound_role_id, bound_resource_id, bound_user_name, bound_user_id, bound_ips, "
        "access_expires, jwt_ttl, max_ttl, sts_url",
        "a.toml:16: auth method /d: jwt_ttl: must be an integer",
    ]


def test_cedar_errors_point_at_the_policy() -> None:
    rule_set = parse(
        good__cedar='@id("fine")\npermit (principal, action, resource) when { principal has account };\n',
        schema__cedar="// first\npermit (principal, action, resource);\n\n"
        'forbid (principal, action, resource)\nwhen { principal.colour == "red" };\n',
        syntax__cedar="permit (principal, action, resource);\nforbid (principal action, resource);\n",
        twice__cedar='@id("x") permit (principal, action, resource);\n@id("x") forbid (principal, action, resource);',
    )
    assert messages(rule_set) == [
        "schema.cedar:4: fails the schema: attribute `colour` on entity type `Identity` not found",
        "syntax.cedar:2: not valid Cedar: unexpected token `action`",
        "twice.cedar:2: duplicate policy id 'x'",
    ]


def test_invalid_toml_gives_its_line() -> None:
    rule_set = parse(bad__toml='[role.r]\ndescription = "x"\ndescription = "y"\n')
    [diagnostic] = rule_set.diagnostics
    assert (diagnostic.file, diagnostic.line) == ("bad.toml", 3) and "invalid TOML" in diagnostic.message


def test_admin_role_and_duplicates_across_files_are_errors() -> None:
    rule_set = parse(
        a__toml=AM + '[role."/admin"]\n[role.r]\n',
        b__toml='[role.r]\ndescription = "again"\n[auth_method.m]\ntype = "access_key"\n',
    )
    assert messages(rule_set) == [
        "a.toml:5: role /admin: the /admin role is the server's own; rule files never define or change it",
        "b.toml:1: role /r: defined twice (also at a.toml:6)",
        "b.toml:3: auth method /m: defined twice (also at a.toml:2)",
    ]


def test_unknown_top_level_and_test_errors() -> None:
    rule_set = parse(
        t__toml=AM
        + """
[rolez.r]
[[test]]
identity = "ghost"
expect = "allow"
path = "/x"
capability = "read"
[[test]]
identity = { auth_method = "m" }
expect = "maybe"
[[test]]
identity = { auth_method = "m" }
expect_login = true
"""
    )
    assert messages(rule_set) == [
        "t.toml:6: file: rolez: unknown field; one of auth_method, role, test, identity",
        "t.toml:7: test 't.toml:7': identity: no [identity.ghost] defined",
        't.toml:14: test \'t.toml:12\': expect: must be "allow" or "deny"',
    ]


# --- warnings: rules that never take effect --------------------------------------------------------------


def role_with(rules: str, association: str = 'auth_method = "m"') -> str:
    return AM + f"[role.r]\n[[role.r.association]]\n{association}\n" + rules


def rule(path: str, caps: str, rule_type: str = "item-rule") -> str:
    return f'[[role.r.rule]]\npath = "{path}"\ncapabilities = [{caps}]\nrule_type = "{rule_type}"\n'


def test_an_allow_covered_by_a_deny_of_its_role_is_a_warning() -> None:
    rule_set = parse(r__toml=role_with(rule("/dev/a*", '"read"') + rule("/dev/*", '"deny"')))
    [warning] = rule_set.warnings
    assert str(warning) == (
        "r.toml:8: warning: role /r: rule 1 (item-rule on /dev/a*) never takes effect: the deny on /dev/* at "
        "r.toml:12 covers every path it matches, for every identity that holds it"
    )
    assert rule_set.errors == []


@pytest.mark.parametrize(
    ("allow", "deny", "covered"),
    [
        ("/dev/a*", "/dev/*", True),
        ("/dev/*", "/dev/*", True),
        ("/dev/x", "/dev/*", True),
        ("/dev/*/b", "/dev/*", True),
        ("/dev/*", "/dev/a*", False),
        ("/dev*", "/dev/*", False),  # /dev-x
        ("/a/*/c", "/a/*", True),
        ("/a*b", "/a*", True),
        ("/a*b", "/*b", True),
        ("/a*b", "/a*c", False),
        ("/*", "/*/*", False),
    ],
)
def test_coverage_cases(allow: str, deny: str, covered: bool) -> None:
    rule_set = parse(r__toml=role_with(rule(allow, '"read"') + rule(deny, '"deny"')))
    assert bool(rule_set.warnings) is covered, messages(rule_set)


def test_a_deny_of_another_rule_type_does_not_cover() -> None:
    rule_set = parse(r__toml=role_with(rule("/dev/a", '"read"') + rule("/dev/*", '"deny"', "role-rule")))
    assert rule_set.warnings == []


def test_a_deny_of_another_role_covers_only_identities_it_reaches() -> None:
    other = (
        '[role.o]\n[[role.o.association]]\nauth_method = "m"\n{claims}\n'
        '[[role.o.rule]]\npath = "/*"\ncapabilities = ["deny"]\n'
    )
    allow = role_with(rule("/dev/x", '"read"'), 'auth_method = "m"\nsub_claims = { role_name = "dev-*" }')
    for claims, covered in (
        ("", True),
        ('sub_claims = { role_name = "dev*" }', True),
        ('sub_claims = { role_name = ["dev-a*", "dev-*"] }', True),
        ('sub_claims = { role_name = "dev-a*" }', False),
        ('sub_claims = { account = "*" }', False),  # an identity without an account escapes it
    ):
        rule_set = parse(r__toml=allow, o__toml=other.format(claims=claims))
        assert bool(rule_set.warnings) is covered, (claims, messages(rule_set))


def test_duplicate_rules_and_roles_without_association_are_warnings() -> None:
    text = AM + "[role.r]\n" + rule("/a", '"read"') + rule("/a", '"list"')
    text = text.replace("role.r.", "role.r.")
    rule_set = parse(r__toml=text)
    assert messages(rule_set) == [
        "r.toml:5: warning: role /r: no association: none of its rules ever takes effect",
        "r.toml:6: warning: role /r: rule 1: duplicate rule (item-rule on /a): replaced by rule 2 at r.toml:10, so "
        "it never takes effect",
    ]
    assert [r.rule.capabilities for r in rule_set.roles["/r"].rules] == [frozenset({"list"})]


def test_least_privilege_warning() -> None:
    rule_set = parse(a__toml='[auth_method.wide]\nbound_aws_account_id = "123456789012"\n')
    [warning] = rule_set.warnings
    assert warning.line == 1 and "bound only to an AWS account" in warning.message


# --- sub-claims ------------------------------------------------------------------------------------------

CLAIMS = st.dictionaries(
    st.sampled_from(["role_name", "account"]),
    st.lists(st.text(st.sampled_from("ab*"), max_size=3), min_size=1, max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(specific=CLAIMS, general=CLAIMS)
def test_sub_claims_imply_is_exact(specific: dict, general: dict) -> None:
    spec = tuple((k, tuple(v)) for k, v in sorted(specific.items()))
    gen = tuple((k, tuple(v)) for k, v in sorted(general.items()))
    values = [None, *("".join(p) for n in range(4) for p in itertools.product("abc", repeat=n))]
    brute = True
    for role_name, account in itertools.product(values, values):
        attrs = {"role_name": role_name, "account": account}

        def ok(claims: tuple, attrs: dict = attrs) -> bool:
            return all(attrs[k] is not None and any(glob_match(p, attrs[k]) for p in v) for k, v in claims)

        if ok(spec) and not ok(gen):
            brute = False
            break
    assert sub_claims_imply(spec, gen) == brute


# --- states, JSON and TOML -------------------------------------------------------------------------------


def test_json_and_toml_round_trips() -> None:
    state = load_rule_set(EXAMPLES / "deny").state()
    again = state_from_json(state_to_json(state))
    assert state_to_json(again) == state_to_json(state)
    text = state_to_toml(state, "pulled\nfrom somewhere")
    assert text.startswith("# pulled\n# from somewhere\n")
    reparsed = parse_rule_files({"model.toml": text, **{k: v for k, v in state.cedar.items()}})
    assert reparsed.errors == []
    assert state_to_json(reparsed.state()) == state_to_json(state)


def test_toml_output_quotes_what_needs_quoting() -> None:
    am = AuthMethod(
        "/team/ci",
        offline_access_id("/team/ci"),
        "aws_iam",
        bound_aws_account_id=("123456789012",),
        bound_arn=("arn:aws:iam::123456789012:role/x*",),
        jwt_ttl=120,
    )
    state = ModelState({am.name: am})
    role = RoleState("/team/readers", 'say "hi"\n\x7f')
    role.associations[(am.name, (("role_name", ("a*", "b")),))] = None
    role.rules[(RoleRule.parse("role-rule", "/x*", ["deny"]).key)] = RoleRule.parse("role-rule", "/x*", ["deny"])
    state.roles[role.name] = role
    reparsed = parse_rule_files({"m.toml": state_to_toml(state)})
    assert reparsed.errors == [], messages(reparsed)
    assert state_to_json(reparsed.state()) == state_to_json(state)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "model"),
        ({"extra": 1}, "model"),
        ({"auth-methods": [{"name": "/a", "type": "aws_iam"}]}, "auth-methods[0].bound-aws-account-id"),
        ({"auth-methods": [{"name": "/a", "colour": 1}]}, "auth-methods[0].colour"),
        ({"roles": [{"name": "/r", "rules": [{"path": "/x", "capabilities": 3}]}]}, "roles[0].rules[0].capabilities"),
        ({"roles": [{"name": "/r", "rules": [{"path": "", "capabilities": ["read"]}]}]}, "roles[0].rules[0].path"),
        ({"roles": [{"name": "/r", "associations": [{"am-name": "/m"}]}]}, "roles[0].associations[0].am-name"),
        (
            {"roles": [{"name": "/r", "associations": [{"am-name": "/m", "sub-claims": {"role_name": 3}}]}]},
            "roles[0].associations[0].sub-claims",
        ),
        ({"cedar": {"a.cedar": 1}}, "cedar"),
    ],
)
def test_state_from_json_names_the_bad_field(data: object, field: str) -> None:
    with pytest.raises(ModelError) as info:
        state_from_json(data)
    assert info.value.field == field


# --- plans -----------------------------------------------------------------------------------------------


def server_state() -> ModelState:
    admin_key = AuthMethod("/admin", "p-adminadminadmin1", "access_key")
    old = AuthMethod("/old", "p-oldoldoldoldold1", "aws_iam", bound_aws_account_id=("123456789012",))
    m = AuthMethod(
        "/m", "p-mmmmmmmmmmmmmmm1", "aws_iam", bound_aws_account_id=("123456789012",), bound_role_name=("a",)
    )
    state = ModelState({a.name: a for a in (admin_key, old, m)})
    admin = RoleState("/admin", "administrators")
    admin.associations[("/admin", ())] = "ac-1"
    admin.rules[(RoleRule.parse("item-rule", "/*", ["read"]).key)] = RoleRule.parse("item-rule", "/*", ["read"])
    r = RoleState("/r", "old description")
    r.associations[("/m", ())] = "ac-2"
    r.rules[RoleRule.parse("item-rule", "/a", ["read"]).key] = RoleRule.parse("item-rule", "/a", ["read"])
    r.rules[RoleRule.parse("item-rule", "/b", ["read"]).key] = RoleRule.parse("item-rule", "/b", ["read"])
    gone = RoleState("/gone")
    state.roles = {"/admin": admin, "/r": r, "/gone": gone}
    state.cedar = {"x.cedar": "permit (principal, action, resource) when { false };"}
    return state


def test_plan_adds_changes_and_removes_only_what_is_managed() -> None:
    desired = parse_rule_files(
        {
            "m.toml": """
[auth_method.m]
bound_aws_account_id = ["123456789012"]
bound_role_name = ["b"]

[auth_method.new]
bound_aws_account_id = ["123456789012"]
bound_role_name = ["n"]

[auth_method.admin]
type = "access_key"

[role.r]
description = "old description"
[[role.r.association]]
auth_method = "new"
[[role.r.association]]
auth_method = "admin"
[[role.r.rule]]
path = "/a"
capabilities = ["read", "list"]
""",
            "y.cedar": "forbid (principal, action, resource) when { false };",
        }
    ).state()
    plan = diff_states(server_state(), desired)
    assert plan.text().splitlines() == [
        "~ auth method /m",
        '      bound-role-name: ["a"] -> ["b"]',
        "+ auth method /new (aws_iam)",
        '      bound-aws-account-id = ["123456789012"]',
        '      bound-role-name = ["n"]',
        "- auth method /old",
        "- role /gone (with its 0 associations and 0 rules)",
        "-   association /r -> /m",
        "+   association /r -> /new",
        "+   association /r -> /admin",
        "~   rule /r: item-rule /a [read] -> [read, list]",
        "-   rule /r: item-rule /b [read]",
        "- cedar x.cedar",
        "+ cedar y.cedar",
        "Plan: 4 to add, 2 to change, 5 to remove.",
    ]
    assert plan.summary() == {"add": 4, "change": 2, "remove": 5}
    assert not diff_states(server_state(), server_state())


def test_plan_refuses_what_is_not_managed() -> None:
    state = server_state()
    for change in (
        lambda s: s.roles["/admin"].rules.clear(),
        lambda s: s.auth_methods.__setitem__("/ghost", AuthMethod("/ghost", "p-ghostghostghost", "access_key")),
        lambda s: s.auth_methods.__setitem__(
            "/admin", AuthMethod("/admin", "p-adminadminadmin1", "aws_iam", bound_aws_account_id=("123456789012",))
        ),
    ):
        desired = server_state()
        change(desired)
        with pytest.raises(ModelError):
            diff_states(state, desired)
    # /admin given unchanged (as export-model gives it) is fine; removing an auth method /admin uses is not
    assert diff_states(state, server_state()).changes == []
    state.roles["/admin"].associations[("/old", ())] = "ac-9"
    desired = server_state()
    del desired.auth_methods["/old"]
    desired.roles["/admin"].associations[("/old", ())] = None
    with pytest.raises(ModelError, match="associated with the /admin role"):
        diff_states(state, desired)


# --- test cases, identities, exports ---------------------------------------------------------------------


def test_failing_cases_say_why() -> None:
    rule_set = parse(
        t__toml=role_with(rule("/dev/*", '"read"'))
        + """
[[test]]
name = "wrong"
identity = { auth_method = "m", account = "123456789012", role_name = "dev-role" }
path = "/dev/x"
capability = "read"
expect = "deny"

[[test]]
name = "login"
identity = { auth_method = "m", account = "123456789012", role_name = "other" }
expect_login = true

[[test]]
name = "bad identity"
identity = { auth_method = "m", colour = "red" }
expect_login = true
"""
    )
    results = run_tests(rule_set, rule_set.engine(), int(time.time()))
    assert [r.passed for r in results] == [False, False, False]
    assert results[0].message == 'expected deny, got allow (role:"/r"/item-rule:"/dev/*")'
    assert results[1].message == "expected login allowed, got refused (bound-role-name)"
    assert "unknown attribute 'colour'" in results[2].message


def test_resolve_identity_by_auth_method_name() -> None:
    engine = load_rules(EXAMPLES / "story")
    identity = resolve_identity({"auth_method": "iamAuth1", "role_name": "dev-role"}, engine.model)
    assert identity == Identity(
        access_id=offline_access_id("/iamAuth1"),
        auth_type="aws_iam",
        principal_type="assumed-role",
        role_name="dev-role",
    )
    with pytest.raises(ModelError):
        resolve_identity({"auth_method": "nope"}, engine.model)
    with pytest.raises(ModelError):
        resolve_identity({"auth_method": "iamAuth1", "access_id": "p-0000000000000000"}, engine.model)
    with pytest.raises(ModelError):
        resolve_identity({"access_id": ["x"], "principal_type": "user"}, engine.model)


def test_export_points_every_policy_at_its_file_and_line() -> None:
    rule_set = load_rule_set(EXAMPLES / "deny")
    text = export_with_sources(rule_set.engine(), rule_set.policy_sources())
    sources = re.findall(r'@source\("([^"]+)"\)', text)
    assert len(sources) == len(re.findall(r"^@id\(", text, re.M))
    assert set(sources) == {
        "auth_methods.toml:3",
        "auth_methods.toml:4",
        "auth_methods.toml:5",
        "roles.toml:10",
        "roles.toml:15",
        "roles.toml:27",
        "guest-network.cedar:3",
    }
    lines = {name: (EXAMPLES / "deny" / name.split(":")[0]).read_text().splitlines() for name in sources}
    assert lines["roles.toml:15"][14] == "[[role.ops.rule]]"


def test_reading_a_directory_skips_hidden_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.toml").write_text(AM)
    (tmp_path / "sub" / "b.cedar").write_text("permit (principal, action, resource) when { false };")
    (tmp_path / ".a.toml.swp").write_text("junk")
    (tmp_path / ".git" / "c.toml").write_text("junk")
    (tmp_path / "notes.md").write_text("junk")
    assert sorted(read_rule_files(tmp_path)) == ["a.toml", "sub/b.cedar"]
