"""Property tests: the engine agrees with the plain-Python reference model (tests/reference.py).

Random models (auth methods with random bindings, roles, associations with sub-claims, rules of all three
rule types incl. deny), random identities (often satisfying, often not) and random paths (many built from
the rule patterns, so that matches happen) with names drawn from all of Unicode. Incremental changes must
keep the engine in agreement with the reference and with an engine freshly loaded from the final model,
so that no cached slice ever serves a stale answer.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from cedarkey.engine import (
    AccessRole,
    Association,
    AuthMethod,
    Engine,
    Identity,
    ModelError,
    RoleRule,
    canonical_path,
    canonical_pattern,
    parse_capability,
    parse_rule_type,
    parse_sub_claims,
    slices,
)
from cedarkey.engine.errors import AlreadyExists
from cedarkey.engine.identity import CLAIM_ATTRIBUTES, STRING_ATTRIBUTES
from cedarkey.policies import schema_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import reference as ref

SCHEMA = schema_text()

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

RULE_TYPES = ref.RULE_TYPES
ACTIONS = ref.ACTIONS

# --- text ------------------------------------------------------------------------------------------------

#: Characters that make trouble in quoting, escaping and matching, plus the rest of Unicode.
TRICKY = list("ab*\"\\.' é{}()[]:;=@%$#&|<>,~`^?!+-_é😀\u2028\u2029\u0301\u200d\ufeff\ufffd\U0010ffff")
#: Every code point, with lone surrogates and controls drawn often (plain draws rarely give them).
ANY_CHAR = st.one_of(
    st.characters(codec=None),
    st.sampled_from(["\ud800", "\udfff", "\x00", "\n", "\t", "\x7f", "\x85", "\x9f", "\u2028", "*", "/"]),
)


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Strings over ANY_CHAR (``st.text`` would draw its surrogates far less often)."""
    return st.lists(ANY_CHAR, max_size=max_size).map("".join)


def chars(*, star: bool, slash: bool) -> st.SearchStrategy[str]:
    """Characters a valid name or pattern may hold (the invisible ones are drawn by ``any_text``)."""
    excluded = ("" if star else "*") + ("" if slash else "/")
    tricky = [c for c in TRICKY if c not in excluded and not ref.is_invisible(c)]
    drawn = st.characters(exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp"], exclude_characters=excluded)
    return st.one_of(st.sampled_from(tricky), drawn.filter(lambda c: not ref.is_invisible(c)))


def segment(*, star: bool) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["dev", "prod", "a", "b", 'x"y', "é\\", "db-password"]),
        st.text(chars(star=star, slash=False), min_size=1, max_size=4),
        *([st.sampled_from(["*", "a*", "*b", "d*v", "**"])] if star else []),
    ).filter(lambda s: s not in (".", ".."))


def object_path() -> st.SearchStrategy[str]:
    return st.lists(segment(star=False), min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))


def rule_pattern() -> st.SearchStrategy[str]:
    return st.lists(segment(star=True), min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))


def name() -> st.SearchStrategy[str]:
    """A role or auth method name, sometimes without its leading slash (the engine adds it), sometimes the
    break-glass name ``/admin``."""
    drawn = st.tuples(st.booleans(), st.lists(segment(star=False), min_size=1, max_size=2)).map(
        lambda t: ("/" if t[0] else "") + "/".join(t[1])
    )
    return st.one_of(drawn, st.sampled_from(["/admin", "admin"]))


def fill(data: st.DataObject, pattern: str, filler: st.SearchStrategy[str]) -> str:
    """``pattern`` with each ``*`` replaced by a drawn string: a string the pattern matches."""
    parts = pattern.split("*")
    out = parts[0]
    for part in parts[1:]:
        out += data.draw(filler) + part
    return out


# --- auth methods ----------------------------------------------------------------------------------------

POOLS: dict[str, list[str]] = {
    "bound_aws_account_id": ["111111111111", "222222222222", "123456789012"],
    "bound_arn": [
        "arn:aws:iam::111111111111:role/dev-role",
        "arn:aws:sts::111111111111:assumed-role/dev-role/*",
        "arn:aws:iam::*:role/*",
        "arn:aws:iam::222222222222:user/alice",
        "arn:*:*::*:*role*",
    ],
    "bound_role_name": ["dev-role", "prod-role", "a.b@c+=,"],
    "bound_role_id": ["AROA1", "AROAXYZ"],
    "bound_resource_id": ["i-0abc", "i-0def"],
    "bound_user_name": ["alice", "bob"],
    "bound_user_id": ["AIDA1", "AIDA2"],
}
CIDRS = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", "0.0.0.0/0", "10.1.2.3/8", "fd00::/8"]
PRINCIPAL_TYPES = ["assumed-role", "user", "federated-user", "root", "role", "access-key"]


@dataclass
class AmSpec:
    """An auth method as the test asked for it (the reference is built from this, not the engine's)."""

    name: str
    access_id: str
    type: str
    bindings: dict[str, tuple[str, ...]]
    bound_ips: tuple[str, ...]
    access_expires: int

    def build(self) -> AuthMethod:
        return AuthMethod(
            self.name,
            self.access_id,
            self.type,
            access_expires=self.access_expires,
            bound_ips=self.bound_ips,
            **self.bindings,  # type: ignore[arg-type]
        )

    def reference(self) -> ref.RefAuthMethod:
        path = ref.canonical(self.name, pattern=False)
        assert path is not None
        return ref.RefAuthMethod(
            path, self.access_id, self.type, dict(self.bindings), self.bound_ips, self.access_expires
        )


def draw_am(data: st.DataObject, am_name: str, access_id: str) -> AmSpec:
    am_type = data.draw(st.sampled_from(["aws_iam", "aws_iam", "aws_iam", "access_key"]))
    bindings: dict[str, tuple[str, ...]] = {}
    if am_type == "aws_iam":
        for binding, pool in POOLS.items():
            if binding == "bound_aws_account_id" or data.draw(st.integers(0, 3)) == 0:
                bindings[binding] = tuple(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2)))
    bound_ips = (
        tuple(data.draw(st.lists(st.sampled_from(CIDRS), max_size=2))) if data.draw(st.integers(0, 3)) == 0 else ()
    )
    expires = data.draw(st.sampled_from([0, 0, 50, 100]))
    return AmSpec(am_name, access_id, am_type, bindings, bound_ips, expires)


# --- the world: engine and reference side by side ---------------------------------------------------------


@dataclass
class World:
    engine: Engine = field(default_factory=lambda: Engine(SCHEMA))
    model: ref.RefModel = field(default_factory=ref.RefModel)
    ams: dict[str, AmSpec] = field(default_factory=dict)  # by canonical name
    assocs: dict[str, Association] = field(default_factory=dict)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    deleted_access_ids: list[str] = field(default_factory=list)

    # Every change goes to both; the engine must accept exactly what the reference expects it to.

    def add_auth_method(self, spec: AmSpec) -> None:
        self.engine.add_auth_method(spec.build())
        r = spec.reference()
        self.model.add_auth_method(r)
        self.ams[r.name] = spec

    def update_auth_method(self, spec: AmSpec) -> None:
        self.engine.update_auth_method(spec.build())
        r = spec.reference()
        self.model.update_auth_method(r)
        self.ams[r.name] = spec

    def delete_auth_method(self, am_name: str) -> None:
        am, gone = self.engine.delete_auth_method(am_name)
        assert am.name == am_name
        for assoc in gone:
            del self.assocs[assoc.assoc_id]
        self.model.delete_auth_method(am_name)
        self.deleted_access_ids.append(self.ams.pop(am_name).access_id)

    def add_role(self, role_name: str) -> str:
        role = AccessRole(role_name)
        path = ref.canonical(role_name, pattern=False)
        assert role.name == path
        self.engine.add_role(role)
        self.model.add_role(path)
        return path

    def delete_role(self, role_name: str) -> None:
        self.engine.delete_role(role_name)
        self.model.delete_role(role_name)
        for assoc_id in [a for a, x in self.assocs.items() if x.role_name == role_name]:
            del self.assocs[assoc_id]

    def associate(self, role_name: str, am_name: str, claims: dict[str, list[str]]) -> None:
        parsed = parse_sub_claims(claims)
        access_id = self.ams[am_name].access_id
        expected = {k: set(v) for k, v in claims.items() if v}
        try:
            assoc = self.engine.associate(role_name, am_name, parsed, f"ac-{next(self.counter)}")
        except AlreadyExists:
            role = self.model.roles[role_name]
            assert any(
                a.access_id == access_id and {k: set(v) for k, v in a.sub_claims.items()} == expected
                for a in role.associations.values()
            )
            return
        self.assocs[assoc.assoc_id] = assoc
        self.model.associate(
            ref.RefAssociation(assoc.assoc_id, role_name, access_id, {k: tuple(v) for k, v in claims.items()})
        )

    def delete_association(self, assoc_id: str) -> None:
        self.engine.delete_association(assoc_id)
        self.model.delete_association(assoc_id)
        del self.assocs[assoc_id]

    def set_rule(self, role_name: str, rule_type: str, pattern: str, caps: list[str]) -> None:
        rule = RoleRule.parse(rule_type, pattern, caps)
        path = ref.canonical(pattern, pattern=True)
        assert rule.path == path
        self.engine.set_rule(role_name, rule)
        self.model.set_rule(role_name, rule_type, path, caps)

    def delete_rule(self, role_name: str, rule_type: str, pattern: str) -> None:
        self.engine.delete_rule(role_name, rule_type, pattern)
        self.model.delete_rule(role_name, rule_type, pattern)

    def fresh(self) -> Engine:
        """An engine loaded from scratch with the world's current model."""
        engine = Engine(SCHEMA)
        roles = [AccessRole(n) for n in self.model.roles]
        rules = [
            (role.name, RoleRule.parse(rt, pattern, sorted(caps)))
            for role in self.model.roles.values()
            for (rt, pattern), caps in role.rules.items()
        ]
        engine.load([s.build() for s in self.ams.values()], roles, list(self.assocs.values()), rules)
        return engine

    def patterns(self) -> list[str]:
        return sorted({p for role in self.model.roles.values() for (_, p) in role.rules})


CAPS = st.one_of(
    st.just(["deny"]),
    *[st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=5, unique=True)] * 3,
)


def draw_claims(data: st.DataObject) -> dict[str, list[str]]:
    if data.draw(st.booleans()):
        return {}
    pattern = st.one_of(
        st.sampled_from(["dev-*", "*role*", "*", "alice", "assumed-role", "*-role", "AROA*", "1111*"]),
        st.text(chars(star=True, slash=True), min_size=1, max_size=5),
    )
    attrs = data.draw(st.lists(st.sampled_from(CLAIM_ATTRIBUTES), min_size=1, max_size=2, unique=True))
    return {a: data.draw(st.lists(pattern, min_size=1, max_size=2, unique=True)) for a in attrs}


def draw_world(data: st.DataObject, *, max_rules: int = 10) -> World:
    world = World()
    n_ams = data.draw(st.integers(1, 3), label="auth methods")
    am_names = data.draw(
        st.lists(name(), min_size=n_ams, max_size=n_ams, unique_by=lambda n: n.lstrip("/")), label="am names"
    )
    for i, am_name in enumerate(am_names):
        world.add_auth_method(draw_am(data, am_name, f"p-am{i:010d}"))
    role_names = data.draw(
        st.lists(name(), min_size=1, max_size=4, unique_by=lambda n: n.lstrip("/")), label="role names"
    )
    roles = [world.add_role(n) for n in role_names]
    ams = list(world.ams)
    for _ in range(data.draw(st.integers(1, 5), label="associations")):
        world.associate(data.draw(st.sampled_from(roles)), data.draw(st.sampled_from(ams)), draw_claims(data))
    shared = data.draw(st.lists(rule_pattern(), min_size=1, max_size=4), label="shared patterns")
    for _ in range(data.draw(st.integers(1, max_rules), label="rules")):
        pattern = data.draw(st.one_of(st.sampled_from(shared), rule_pattern()))
        world.set_rule(
            data.draw(st.sampled_from(roles)), data.draw(st.sampled_from(RULE_TYPES)), pattern, data.draw(CAPS)
        )
    return world


# --- identities and paths --------------------------------------------------------------------------------

FILLER = st.text(chars(star=False, slash=True), max_size=3)


def draw_identity(data: st.DataObject, world: World) -> dict[str, Any]:
    """Attributes of an identity: often aimed at one association (its auth method's access id, its
    sub-claims filled in), often satisfying the auth method's bindings, sometimes noise."""
    specs = list(world.ams.values())
    by_access_id = {s.access_id: s for s in specs}
    assocs = [a for role in world.model.roles.values() for a in role.associations.values()]
    target = data.draw(st.sampled_from(assocs), label="target") if assocs and data.draw(st.integers(0, 3)) else None
    spec = by_access_id[target.access_id] if target else data.draw(st.sampled_from(specs))
    access_id = data.draw(st.sampled_from([spec.access_id] * 6 + [s.access_id for s in specs] + ["p-unknown0000"]))
    auth_type = data.draw(st.sampled_from([spec.type] * 4 + ["aws_iam", "access_key", "aws_iam\n"]))
    satisfy = data.draw(st.booleans(), label="satisfy")
    noise = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
    claim_patterns: dict[str, list[str]] = {}
    for assoc in assocs:
        for attr, patterns in assoc.sub_claims.items():
            claim_patterns.setdefault(attr, []).extend(patterns)

    attrs: dict[str, Any] = {"access_id": access_id, "auth_type": auth_type}
    for attr in CLAIM_ATTRIBUTES:
        if target and attr in target.sub_claims and data.draw(st.integers(0, 5)):
            attrs[attr] = fill(data, data.draw(st.sampled_from(target.sub_claims[attr])), FILLER)
            continue
        options: list[str | None] = [] if attr == "principal_type" else [None]
        options += PRINCIPAL_TYPES if attr == "principal_type" else []
        for binding, battrs in ref.BINDING_ATTRIBUTES.items():
            if attr in battrs:
                values = spec.bindings.get(binding) or POOLS[binding]
                options += [fill(data, v, st.sampled_from(["", "x", "dev-role", "/a/b"])) for v in values]
        for pattern in claim_patterns.get(attr, []):
            options.append(fill(data, pattern, FILLER))
        options.append(data.draw(noise))
        if satisfy and attr != "principal_type" and len(options) > 2:
            options = options[1:-1]  # no None, no noise
        attrs[attr] = data.draw(st.sampled_from(options), label=attr)
    if satisfy and spec.bound_ips:
        network = ipaddress.ip_network(data.draw(st.sampled_from(spec.bound_ips)), strict=False)
        offset = data.draw(st.integers(0, min(network.num_addresses - 1, 2**20)))
        attrs["source_ip"] = str(network.network_address + offset)
    else:
        attrs["source_ip"] = data.draw(
            st.one_of(st.none(), st.ip_addresses().map(str), st.sampled_from(["10.9.8.7", "2001:db8::5"]))
        )
    return {k: v for k, v in attrs.items() if v is not None}


def make_identity(attrs: dict[str, Any]) -> Identity:
    return Identity(**attrs)


def draw_paths(data: st.DataObject, world: World, n: int = 6) -> list[str]:
    """Paths, mostly instances of the rule patterns (so that rules match), some near misses and noise."""
    patterns = world.patterns()
    paths = []
    for _ in range(n):
        kind = data.draw(st.integers(0, 5)) if patterns else 5
        if kind <= 2:
            paths.append(fill(data, data.draw(st.sampled_from(patterns)), FILLER))
        elif kind == 3:  # a pattern's literal prefix, short of the wildcard ("/dev" for "/dev/*")
            p = data.draw(st.sampled_from(patterns)).split("*", 1)[0].rstrip("/")
            paths.append(p or "/x")
        elif kind == 4:  # a pattern instance with a suffix
            paths.append(fill(data, data.draw(st.sampled_from(patterns)), FILLER) + data.draw(FILLER))
        else:
            paths.append(data.draw(object_path()))
    return paths


# --- checks ----------------------------------------------------------------------------------------------


def rule_reason(engine: Engine, pid: str) -> tuple[str, str]:
    src = engine.source(pid)
    assert src["kind"] == "rule", src
    return src["name"], src["path"]


def check_decisions(world: World, engine: Engine, identities: list[dict[str, Any]], paths: list[str]) -> None:
    """Every (identity, capability, path, rule type): engine (batch and single) == reference, and the
    reasons name exactly the determining rules."""
    for attrs in identities:
        identity = make_identity(attrs)
        requests: list[tuple[str, str, str]] = []
        for raw in paths:
            p = ref.canonical(raw, pattern=False)
            if p is None:
                with pytest.raises(ModelError):
                    engine.decide(identity, "read", raw)
                continue
            requests += [(c, raw, rt) for rt in RULE_TYPES for c in ACTIONS]
        decisions = engine.decide_batch(identity, requests)
        assert len(decisions) == len(requests)
        for (cap, raw, rt), decision in zip(requests, decisions, strict=True):
            p = ref.canonical(raw, pattern=False)
            assert p is not None
            granting, denying = world.model.matching_rules(attrs, cap, p, rt)
            expected = bool(granting) and not denying
            context = (attrs, cap, p, rt, granting, denying, decision)
            assert decision.allowed == expected, context
            assert not decision.errors, context
            reasons = {rule_reason(engine, pid) for pid in decision.reasons}
            if expected:
                assert reasons == granting, context
            elif denying:
                assert reasons == denying, context
            else:
                assert reasons == set(), context
        for (cap, raw, rt), decision in list(zip(requests, decisions, strict=True))[::17]:
            single = engine.decide(identity, cap, raw, rt)
            # Cedar reports reasons as a set: their order is not part of the answer
            assert (single.allowed, set(single.reasons), single.errors) == (
                decision.allowed,
                set(decision.reasons),
                decision.errors,
            )


def check_logins(world: World, engine: Engine, identities: list[dict[str, Any]]) -> None:
    for attrs in identities:
        identity = make_identity(attrs)
        for now in (0, 49, 50, 99, 100, 101):
            decision = engine.authenticate(identity, now)
            expected = world.model.authenticate(attrs, now)
            context = (attrs, now, decision)
            assert decision.allowed == expected, context
            assert not decision.errors, context
            parts = {engine.source(pid)["binding"] for pid in decision.reasons}
            if expected:
                assert parts == {"permit"}, context
            else:
                failing = {b.replace("_", "-") for b in world.model.failing_bindings(attrs, now)}
                assert parts == failing, context


# --- the properties --------------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_decisions_and_logins_agree_with_reference(data: st.DataObject) -> None:
    world = draw_world(data)
    identities = [draw_identity(data, world) for _ in range(data.draw(st.integers(1, 3)))]
    paths = draw_paths(data, world)
    with merge_limit(data):
        check_decisions(world, world.engine, identities, paths)
    check_logins(world, world.engine, identities)


def merge_limit(data: st.DataObject) -> Any:
    """The engine's limit on merged slices, drawn: the shipped one, or 0 (every slice asked on its own and the
    answers combined), so both ways of asking a question with policies in several slices are checked."""
    limit = data.draw(st.sampled_from([slices.MERGE_LIMIT, 0]), label="merge limit")
    return mock.patch.object(slices, "MERGE_LIMIT", limit)


def draw_change(data: st.DataObject, world: World) -> None:
    """One random change, applied to the engine and the reference alike."""
    roles = sorted(world.model.roles)
    kinds = [
        "set_rule",
        "set_rule",
        "replace_rule",
        "delete_rule",
        "associate",
        "delete_association",
        "delete_auth_method",
        "delete_role",
        "add_role",
        "add_auth_method",
        "update_auth_method",
    ]
    kind = data.draw(st.sampled_from(kinds), label="change")
    existing_rules = [(r, rt, p) for r in roles for (rt, p) in world.model.roles[r].rules]
    if kind == "set_rule" and roles:
        pattern = data.draw(st.one_of(st.sampled_from(world.patterns() or ["/a/*"]), rule_pattern()))
        world.set_rule(
            data.draw(st.sampled_from(roles)), data.draw(st.sampled_from(RULE_TYPES)), pattern, data.draw(CAPS)
        )
    elif kind == "replace_rule" and existing_rules:
        role_name, rt, pattern = data.draw(st.sampled_from(existing_rules))
        world.set_rule(role_name, rt, pattern, data.draw(CAPS))
    elif kind == "delete_rule" and existing_rules:
        world.delete_rule(*data.draw(st.sampled_from(existing_rules)))
    elif kind == "associate" and roles and world.ams:
        world.associate(
            data.draw(st.sampled_from(roles)), data.draw(st.sampled_from(sorted(world.ams))), draw_claims(data)
        )
    elif kind == "delete_association" and world.assocs:
        world.delete_association(data.draw(st.sampled_from(sorted(world.assocs))))
    elif kind == "delete_auth_method" and len(world.ams) > 1:
        world.delete_auth_method(data.draw(st.sampled_from(sorted(world.ams))))
    elif kind == "delete_role" and roles:
        world.delete_role(data.draw(st.sampled_from(roles)))
    elif kind == "add_role":
        new = data.draw(name())
        if ref.canonical(new, pattern=False) in world.model.roles:
            with pytest.raises(AlreadyExists):
                world.engine.add_role(AccessRole(new))
        else:
            world.add_role(new)
    elif kind == "add_auth_method":
        new = data.draw(name())
        # sometimes the access id of a deleted auth method: nothing of the old one may survive
        fresh_id = f"p-new{next(world.counter):09d}"
        access_id = data.draw(st.sampled_from([fresh_id, *world.deleted_access_ids]))
        spec = draw_am(data, new, access_id)
        if ref.canonical(new, pattern=False) in world.ams:
            with pytest.raises(AlreadyExists):
                world.engine.add_auth_method(spec.build())
        else:
            world.add_auth_method(spec)
            if access_id in world.deleted_access_ids:
                world.deleted_access_ids.remove(access_id)
    elif kind == "update_auth_method" and world.ams:
        old = world.ams[data.draw(st.sampled_from(sorted(world.ams)))]
        spec = draw_am(data, old.name, old.access_id)
        spec.type = old.type
        if spec.type == "access_key":
            spec.bindings = {}
        elif "bound_aws_account_id" not in spec.bindings:
            spec.bindings["bound_aws_account_id"] = ("111111111111",)
        world.update_auth_method(spec)


@settings(SETTINGS, max_examples=120)
@given(st.data())
def test_incremental_changes_never_serve_stale_answers(data: st.DataObject) -> None:
    with merge_limit(data):
        incremental_changes(data)


def incremental_changes(data: st.DataObject) -> None:
    world = draw_world(data, max_rules=8)
    identities = [draw_identity(data, world) for _ in range(2)]
    paths = draw_paths(data, world, n=4)
    check_decisions(world, world.engine, identities, paths)  # fills the slice cache
    check_logins(world, world.engine, identities)
    for _ in range(data.draw(st.integers(1, 8), label="changes")):
        draw_change(data, world)
        # the same questions again, after the change, plus some on the new patterns
        check_decisions(world, world.engine, identities, paths + draw_paths(data, world, n=2))
        check_logins(world, world.engine, identities)
    identities += [draw_identity(data, world) for _ in range(2)]  # callers of the final model
    fresh = world.fresh()
    # the incremental engine compiled exactly what a fresh load compiles
    assert fresh.policies() == world.engine.policies()
    check_decisions(world, fresh, identities, paths)
    check_logins(world, fresh, identities)
    for attrs in identities:
        identity = make_identity(attrs)
        requests = [(c, p, rt) for p in paths if ref.canonical(p, pattern=False) for rt in RULE_TYPES for c in ACTIONS]
        assert [d.allowed for d in fresh.decide_batch(identity, requests)] == [
            d.allowed for d in world.engine.decide_batch(identity, requests)
        ]


@settings(SETTINGS, max_examples=15)
@given(st.data())
def test_compiled_policies_validate(data: st.DataObject) -> None:
    world = draw_world(data)
    assert world.engine.validate() == []
    exported = world.engine.export_cedar()
    ids = {p["annotations"]["id"] for p in _parse_cedar(exported).values()}
    assert ids == set(world.engine.policies())


def _parse_cedar(text: str) -> dict[str, Any]:
    from cedarkey.engine import cedar

    return cedar.to_json(text) if text else {}


ERRORING = "forbid(principal, action, resource) when { principal has role_name && 9223372036854775807 + 1 > 0 };"


@settings(SETTINGS, max_examples=25)
@given(st.data())
def test_evaluation_errors_deny(data: st.DataObject) -> None:
    """An author policy that errors (integer overflow passes validation) turns every decision it takes
    part in into deny; identities that skip the erroring branch, and the break-glass auth method's (author
    policies never apply to it), still get the reference's answers."""
    world = draw_world(data)
    world.engine.set_author_policies({"overflow.cedar": ERRORING})
    identities = [draw_identity(data, world) for _ in range(2)]
    paths = [p for p in draw_paths(data, world, n=4) if ref.canonical(p, pattern=False)]
    for attrs in identities:
        identity = make_identity(attrs)
        requests = [(c, p, rt) for p in paths for rt in RULE_TYPES for c in ACTIONS]
        decisions = world.engine.decide_batch(identity, requests)
        login = world.engine.authenticate(identity, 0)
        if "role_name" in attrs and not world.model.is_break_glass(attrs):
            assert all(not d.allowed and d.errors for d in decisions)
            assert not login.allowed
            assert bool(login.errors) == (world.model.by_access_id(attrs["access_id"]) is not None)
        else:
            for (cap, p, rt), d in zip(requests, decisions, strict=True):
                assert d.allowed == world.model.decide(attrs, cap, ref.canonical(p, pattern=False) or "", rt)
                assert not d.errors
            assert login.allowed == world.model.authenticate(attrs, 0)


# --- input handling: accepted strings keep their meaning, refused ones raise ModelError -----------------

RAW_PATH = st.one_of(
    any_text(12),
    st.lists(
        st.one_of(st.sampled_from(["", ".", "..", "*", "a", "é", "\n", "\ud800", " "]), any_text(3)), max_size=4
    ).map("/".join),
    st.lists(st.sampled_from(["a", "/", "*"]), min_size=1020, max_size=1030).map("".join),
    st.tuples(st.sampled_from(["", "/"]), st.integers(1020, 1026)).map(lambda t: t[0] + "a" * t[1]),
    st.tuples(st.sampled_from(["", "/"]), st.integers(1020, 1026)).map(lambda t: t[0] + "a/*" * (t[1] // 3)),
)


@settings(SETTINGS, max_examples=200)
@given(RAW_PATH)
def test_canonical_paths_match_reference(raw: str) -> None:
    for pattern, fn in ((False, canonical_path), (True, canonical_pattern)):
        expected = ref.canonical(raw, pattern=pattern)
        if expected is None:
            with pytest.raises(ModelError):
                fn(raw)
        else:
            assert fn(raw) == expected


@settings(SETTINGS, max_examples=100)
@given(RAW_PATH, RAW_PATH, any_text(8), st.data())
def test_any_string_is_accepted_or_a_model_error(raw_name: str, raw_path: str, text: str, data: Any) -> None:
    """Names, rule patterns, object paths, capabilities, rule types and sub-claims from all of Unicode:
    the engine either accepts them (with the reference's canonical form) or raises ModelError."""
    engine = Engine(SCHEMA)
    am = AuthMethod("/am", "p-000000000000", "aws_iam", bound_aws_account_id="111111111111")
    engine.add_auth_method(am)

    def attempt(expect_ok: bool | None, fn: Any, *args: Any) -> Any:
        try:
            out = fn(*args)
        except ModelError:
            assert expect_ok is not True, (fn, args)
            return None
        assert expect_ok is not False, (fn, args)
        return out

    role_ok = ref.canonical(raw_name, pattern=False) is not None
    role = attempt(role_ok, AccessRole, raw_name)
    attempt(role_ok, AuthMethod, raw_name, "p-111111111111", "access_key")
    if role is None:
        role = AccessRole("/r")
    engine.add_role(role)
    assoc = engine.associate(role.name, "/am")
    rule_ok = ref.canonical(raw_path, pattern=True) is not None
    rule = attempt(rule_ok, RoleRule.parse, "item-rule", raw_path, ["read"])
    if rule is not None:
        engine.set_rule(role.name, rule)
    no_surrogates = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
    identity = Identity("p-000000000000", "aws_iam", "user", role_name=no_surrogates)
    path_ok = ref.canonical(raw_path, pattern=False) is not None
    decision = attempt(path_ok, engine.decide, identity, "read", raw_path)
    if decision is not None:
        assert decision.allowed == (rule is not None and ref.glob_match(rule.path, decision_path(raw_path)))
    attempt(None, engine.decide, identity, text, "/a")  # capability
    attempt(None, engine.decide, identity, "read", "/a", text)  # rule type
    attempt(text in ACTIONS, parse_capability, text)
    attempt(text in RULE_TYPES, parse_rule_type, text)
    attempt(None, RoleRule.parse, text, "/a", [text])
    attr = data.draw(st.sampled_from([*CLAIM_ATTRIBUTES, "source_ip", text]))
    claims = attempt(claim_ok(attr, text), parse_sub_claims, {attr: [text]})
    if claims:
        engine.delete_association(assoc.assoc_id)
        engine.associate(role.name, "/am", claims)
    key, _, pattern = f"{attr}={text}".partition("=")
    attempt(claim_ok(key, pattern), parse_sub_claims, [f"{attr}={text}"])
    assert engine.validate() == [] or not engine.policies()


def claim_ok(attr: str, pattern: str) -> bool:
    """Sub-claims the engine accepts: a known attribute (``-`` for ``_``, spaces around allowed) and a
    pattern of 1 to 256 characters without control characters."""
    return (
        attr.strip().replace("-", "_") in CLAIM_ATTRIBUTES
        and 1 <= len(pattern) <= 256
        and not any(ref.is_control(c) for c in pattern)
    )


def decision_path(raw: str) -> str:
    path = ref.canonical(raw, pattern=False)
    assert path is not None
    return path


@settings(SETTINGS, max_examples=100)
@given(
    st.dictionaries(
        st.sampled_from(STRING_ATTRIBUTES),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=10),
    ),
    st.sampled_from(["*", "a*", "*\\*", '*"*', "a", "*\u0301", "*\u2028*"]),
)
def test_identity_values_from_all_of_unicode(attrs: dict[str, str], pattern: str) -> None:
    """Identity attributes may hold anything (newlines, NULs, quotes, combining marks): sub-claim and
    binding matching stays literal and the engine never raises."""
    engine = Engine(SCHEMA)
    engine.add_auth_method(
        AuthMethod(
            "/am", "p-000000000000", "aws_iam", bound_aws_account_id="111111111111", bound_arn="arn:aws:iam::*:role/*"
        )
    )
    engine.add_role(AccessRole("/r"))
    claims = {attr: [pattern] for attr in attrs}
    engine.associate("/r", "/am", parse_sub_claims(claims))
    engine.set_rule("/r", RoleRule.parse("item-rule", "/*", ["read"]))
    identity = Identity("p-000000000000", "aws_iam", "user", **attrs)
    model = ref.RefModel()
    model.add_auth_method(
        ref.RefAuthMethod(
            "/am",
            "p-000000000000",
            "aws_iam",
            {"bound_aws_account_id": ("111111111111",), "bound_arn": ("arn:aws:iam::*:role/*",)},
        )
    )
    model.add_role("/r")
    model.associate(ref.RefAssociation("a", "/r", "p-000000000000", {k: tuple(v) for k, v in claims.items()}))
    model.set_rule("/r", "item-rule", "/*", ["read"])
    full = {"access_id": "p-000000000000", "auth_type": "aws_iam", "principal_type": "user", **attrs}
    assert engine.decide(identity, "read", "/x").allowed == model.decide(full, "read", "/x")
    assert engine.authenticate(identity, 0).allowed == model.authenticate(full, 0)


# --- the reference itself --------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=300)
@given(st.text(st.sampled_from("ab*/"), max_size=8), st.text(st.sampled_from("ab*/"), max_size=8))
def test_reference_glob_matches_a_regex(pattern: str, text: str) -> None:
    import re

    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    assert ref.glob_match(pattern, text) == (re.fullmatch(regex, text, re.DOTALL) is not None)
