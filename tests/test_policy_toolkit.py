"""The Hypothesis toolkit (cedarkey.policies.testing) on the story's rules, as an author would use it
(policies/README.md shows these tests), and the toolkit's strategies checked against the engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cedarkey.engine import AuthMethod, Identity
from cedarkey.engine.glob import glob_match
from cedarkey.policies import RuleFilesError, offline_access_id, schema_text
from cedarkey.policies.testing import any_identity, load_rules, logins, paths, paths_inside, paths_outside
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCHEMA = schema_text()

STORY = Path(__file__).resolve().parents[1] / "policies" / "examples" / "story"
ENGINE = load_rules(STORY)
NOW = int(time.time())
CAPABILITIES = st.sampled_from(["read", "create", "update", "delete", "list"])
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
OTHER_ACCOUNTS = st.one_of(st.none(), st.text("0123456789", min_size=12, max_size=12), st.text(max_size=14)).filter(
    lambda a: a != "123456789012"
)


# --- the story's properties ------------------------------------------------------------------------------


@SETTINGS
@given(identity=any_identity(ENGINE, account=OTHER_ACCOUNTS), path=paths())
def test_no_identity_outside_account_123456789012_can_ever_read_anything(identity: Identity, path: str) -> None:
    logged_in = ENGINE.authenticate(identity, NOW).allowed
    assert not (logged_in and ENGINE.decide(identity, "read", path).allowed)


@SETTINGS
@given(identity=any_identity(ENGINE, role_name="dev-role"), path=paths_inside("/prod/*"), capability=CAPABILITIES)
def test_nothing_grants_prod_to_dev_role(identity: Identity, path: str, capability: str) -> None:
    assert not ENGINE.decide(identity, capability, path).allowed


@SETTINGS
@given(identity=logins(ENGINE.model.auth_method("iamAuth1")), path=paths_inside("/dev/*"))
def test_every_dev_role_machine_logs_in_and_reads_dev(identity: Identity, path: str) -> None:
    assert ENGINE.authenticate(identity, NOW).allowed
    assert ENGINE.decide(identity, "read", path).allowed and ENGINE.decide(identity, "list", path).allowed


@SETTINGS
@given(identity=logins(ENGINE.model.auth_method("iamAuth1"), satisfying=False))
def test_nobody_else_logs_in_through_iamAuth1(identity: Identity) -> None:
    assert not ENGINE.authenticate(identity, NOW).allowed


@SETTINGS
@given(identity=any_identity(ENGINE), path=paths_outside("/dev/*"), capability=CAPABILITIES)
def test_nothing_outside_dev_is_granted_to_anyone(identity: Identity, path: str, capability: str) -> None:
    assert not ENGINE.decide(identity, capability, path).allowed


# --- the strategies themselves ---------------------------------------------------------------------------

BINDINGS_AM = AuthMethod(
    "/bound",
    offline_access_id("/bound"),
    "aws_iam",
    bound_aws_account_id=("123456789012", "210987654321"),
    bound_arn=("arn:aws:iam::123456789012:role/app-*",),
    bound_role_name=("app-a", "app-b"),
    bound_ips=("10.0.0.0/8", "2001:db8::/32"),
)


@pytest.fixture(scope="module")
def bound_engine():  # type: ignore[no-untyped-def]
    from cedarkey.engine import Engine

    engine = Engine(SCHEMA)
    engine.add_auth_method(BINDINGS_AM)
    return engine


@SETTINGS
@given(data=st.data())
def test_logins_satisfy_or_break_the_bindings(bound_engine, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    good = data.draw(logins(BINDINGS_AM))
    assert bound_engine.authenticate(good, NOW).allowed, good
    bad = data.draw(logins(BINDINGS_AM, satisfying=False))
    decision = bound_engine.authenticate(bad, NOW)
    assert not decision.allowed and decision.reasons, bad


def test_logins_need_a_binding_to_break() -> None:
    with pytest.raises(ValueError, match="no binding"):
        logins(AuthMethod("/k", offline_access_id("/k"), "access_key"), satisfying=False)


@SETTINGS
@given(data=st.data(), pattern=st.sampled_from(["/dev/*", "/a*b", "/*/x/*", "/exact", "/*", "/x*y*z"]))
def test_paths_inside_and_outside_a_pattern(data: st.DataObject, pattern: str) -> None:
    inside = data.draw(paths_inside(pattern))
    assert glob_match(pattern, inside)
    outside = data.draw(paths_outside(pattern)) if pattern != "/*" else "/"
    assert outside == "/" or not glob_match(pattern, outside)


@SETTINGS
@given(path=paths(under="/prod"))
def test_paths_under_a_folder(path: str) -> None:
    assert path.startswith("/prod/")


def test_load_rules_refuses_broken_files(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('[role.r]\n[[role.r.rule]]\npath = "/x"\ncapabilities = ["reed"]\n')
    with pytest.raises(RuleFilesError, match=r"r\.toml:4: role /r: rule 1: capabilities"):
        load_rules(tmp_path)


def test_the_readme_example_runs() -> None:
    """policies/README.md's worked example is code an author can copy: run it."""
    import linecache
    import re

    readme = (STORY.parents[1] / "README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", readme, re.S)
    source = example.replace('"policies/examples/story"', repr(str(STORY)))
    # Hypothesis reads a test's source (inspect.getsource): give it this text under a name of its own, not
    # a relative "README.md" that resolves to whatever README the working directory holds.
    filename = "<policies/README.md example>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, object] = {}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 4
    for test in tests:
        test()
