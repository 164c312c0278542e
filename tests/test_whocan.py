"""who-can (engine/whocan.py) agrees with brute force: for random models, paths and identities, an identity
gets the capability exactly when one of the routes who-can lists admits it (Engine.decide is the judge), and
a deny marked ``always`` really stops every identity on its route."""

from __future__ import annotations

from typing import Any

from cedarkey.engine import AccessRole, AuthMethod, Engine, Identity, RoleRule
from cedarkey.engine.access_role import sub_claims_match
from cedarkey.policies import parse_rule_files, schema_text, who_can
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCHEMA = schema_text()

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACCESS_IDS = ["p-aaaaaaaaaaaaaaaa", "p-bbbbbbbbbbbbbbbb", "p-cccccccccccccccc"]
RULE_TYPES = ["item-rule", "role-rule"]
ACTIONS = ["read", "create", "update", "delete", "list"]
VALUES = st.text(st.sampled_from("ab"), max_size=3)
PATTERNS = st.text(st.sampled_from("ab*"), max_size=3)
SEGMENT = st.sampled_from(["a", "b", "ab", "ba"])
PATH = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
PATTERN = st.lists(st.sampled_from(["a", "b", "*", "a*", "*b"]), min_size=1, max_size=3).map(
    lambda s: "/" + "/".join(s)
)
CLAIMS = st.dictionaries(
    st.sampled_from(["role_name", "account"]), st.lists(PATTERNS, min_size=1, max_size=2), max_size=2
)


@st.composite
def engines(draw: st.DrawFn) -> Engine:
    engine = Engine(SCHEMA)
    n_ams = draw(st.integers(1, 3))
    for i in range(n_ams):
        engine.add_auth_method(AuthMethod(f"/am{i}", ACCESS_IDS[i], "access_key"))
    for r in range(draw(st.integers(1, 3))):
        name = f"/role{r}"
        engine.add_role(AccessRole(name))
        for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2]))):
            claims = tuple((k, tuple(dict.fromkeys(v))) for k, v in sorted(draw(CLAIMS).items()))
            am = f"/am{draw(st.integers(0, n_ams - 1))}"
            try:
                engine.associate(name, am, claims)
            except Exception:  # noqa: S112 - the same association twice: keep one
                continue
        for _ in range(draw(st.integers(0, 4))):
            deny = st.just(["deny"])
            caps = draw(st.one_of(deny, deny, st.lists(st.sampled_from(ACTIONS), min_size=1, unique=True)))
            engine.set_rule(name, RoleRule.parse(draw(st.sampled_from(RULE_TYPES)), draw(PATTERN), caps))
    return engine


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    attrs: dict[str, Any] = {"access_id": draw(st.sampled_from(ACCESS_IDS)), "auth_type": "access_key"}
    attrs["principal_type"] = "access-key"
    for attr in ("role_name", "account"):
        value = draw(st.one_of(st.none(), VALUES))
        if value is not None:
            attrs[attr] = value
    return Identity(**attrs)


def draw_case(data: st.DataObject) -> tuple[Engine, str, str, str, list[Identity]]:
    """A model, and a request aimed at it: mostly a path some rule pattern matches, a capability and rule
    type some rule has, and identities whose attributes often satisfy the model's sub-claims."""
    engine = data.draw(engines())
    rules = [r for role in engine.model.roles.values() for r in role.rules.values() if not r.is_deny]
    path, capability, rule_type = data.draw(PATH), data.draw(st.sampled_from(ACTIONS)), "item-rule"
    if rules and data.draw(st.integers(0, 4)):
        target = data.draw(st.sampled_from(rules))
        rule_type = str(target.rule_type)
        filled = "".join(
            p + (data.draw(st.sampled_from(["", "a", "b/a"])) if i < target.path.count("*") else "")
            for i, p in enumerate(target.path.split("*"))
        )
        if "//" not in filled and not filled.endswith("/"):
            path = filled
        granting = sorted(target.capabilities - {"deny"})
        if granting:
            capability = data.draw(st.sampled_from(granting))
    values = ["", "a", "b", "ab", "ba", "aa"]
    for assoc in engine.model.associations.values():
        values += [p.replace("*", "a") for _, patterns in assoc.sub_claims for p in patterns]
    people = data.draw(
        st.lists(
            st.builds(
                lambda access_id, role_name, account: Identity(
                    access_id, "access_key", "access-key", role_name=role_name, account=account
                ),
                st.sampled_from(ACCESS_IDS),
                st.one_of(st.none(), st.sampled_from(values)),
                st.one_of(st.none(), st.sampled_from(values)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return engine, path, capability, rule_type, people


@SETTINGS
@given(data=st.data())
def test_who_can_agrees_with_the_engine(data: st.DataObject) -> None:
    engine, path, capability, rule_type, people = draw_case(data)
    answer = who_can(engine, capability, path, rule_type)
    for identity in people:
        expected = engine.decide(identity, capability, path, rule_type).allowed
        assert answer.allows(identity) == expected, (identity, answer.to_dict())
    for route in answer.routes:
        assert capability in route.rule.capabilities and not route.rule.is_deny
        for identity in people:
            on_route = identity.access_id == route.association.access_id and sub_claims_match(
                route.association.sub_claims, identity
            )
            if on_route:
                for deny in route.denies:
                    if deny.always:
                        assert deny.applies(identity)
                if route.blocked:
                    assert not route.admits(identity)
    assert len(answer.to_dict()["routes"]) == len(answer.routes)


@SETTINGS
@given(engine=engines(), path=PATH, capability=st.sampled_from(ACTIONS), rule_type=st.sampled_from(RULE_TYPES))
def test_every_granting_rule_is_a_route(engine: Engine, path: str, capability: str, rule_type: str) -> None:
    """Complete: every (association, allow rule) pair that matches is listed, nothing else."""
    from cedarkey.engine.glob import glob_match

    answer = who_can(engine, capability, path, rule_type)
    expected = {
        (role.name, a.assoc_id, r.path)
        for role in engine.model.roles.values()
        for r in role.rules.values()
        if str(r.rule_type) == rule_type and capability in r.capabilities and glob_match(r.path, path)
        for a in role.associations.values()
    }
    assert {(r.role, r.association.assoc_id, r.rule.path) for r in answer.routes} == expected


def test_the_story_who_can_read_dev() -> None:
    rule_set = parse_rule_files(
        {
            "a.toml": """
[auth_method.iamAuth1]
bound_aws_account_id = ["123456789012"]
bound_role_name = ["dev-role"]

[role.dev-readers]
[[role.dev-readers.association]]
auth_method = "iamAuth1"
[[role.dev-readers.rule]]
path = "/dev/*"
capabilities = ["read", "list"]
[[role.dev-readers.rule]]
path = "/dev/secret/*"
capabilities = ["deny"]
""",
            "x.cedar": '@id("ip") forbid (principal, action == Action::"read", resource);',
        }
    )
    engine = rule_set.engine()
    data = who_can(engine, "read", "/dev/db", "item-rule").to_dict(rule_set.policy_sources())
    [route] = data["routes"]
    assert route["auth-method"]["name"] == "/iamAuth1"
    assert route["auth-method"]["bindings"] == {
        "bound-aws-account-id": ["123456789012"],
        "bound-role-name": ["dev-role"],
    }
    assert route["auth-method"]["source"] == "a.toml:2"
    assert route["role"] == "/dev-readers" and route["source"] == "a.toml:9"
    assert route["denies"] == [] and route["blocked"] is False
    assert [p["id"] for p in data["author-policies"]] == ['file:"x.cedar"/ip'] and "note" in data
    blocked = who_can(engine, "read", "/dev/secret/x", "item-rule").to_dict(rule_set.policy_sources())
    [route] = blocked["routes"]
    assert route["blocked"] is True and route["denies"][0]["always"] is True
    assert route["denies"][0]["source"] == "a.toml:12"
    assert who_can(engine, "update", "/dev/db", "item-rule").to_dict()["routes"] == []
    assert who_can(engine, "list", "/dev/db", "item-rule").to_dict()["author-policies"] == []


def test_denies_of_other_roles_are_listed_with_their_sub_claims() -> None:
    engine = Engine(SCHEMA)
    engine.add_auth_method(AuthMethod("/m", ACCESS_IDS[0], "access_key"))
    for name in ("/readers", "/blocked"):
        engine.add_role(AccessRole(name))
    engine.associate("/readers", "/m")
    engine.associate("/blocked", "/m", (("role_name", ("bad*",)),))
    engine.set_rule("/readers", RoleRule.parse("item-rule", "/*", ["read"]))
    engine.set_rule("/blocked", RoleRule.parse("item-rule", "/x/*", ["deny"]))
    [route] = who_can(engine, "read", "/x/y").routes
    [deny] = route.denies
    assert deny.role == "/blocked" and not deny.always and not route.blocked
    bad = Identity(ACCESS_IDS[0], "access_key", "access-key", role_name="bad-one")
    good = Identity(ACCESS_IDS[0], "access_key", "access-key", role_name="good")
    assert not route.admits(bad) and route.admits(good)
