"""A toolkit for testing rule files with Hypothesis: load a rules directory into an engine, draw identities
that do or do not satisfy an auth method's bindings, and paths inside or outside a rule pattern.

Hypothesis is a development dependency (``pip install 'cedarkey[dev]'``): this module imports it only when a
strategy is asked for, so importing it (and ``load_rules``) needs nothing more. A worked example::

    from cedarkey.policies.testing import any_identity, load_rules, paths, paths_inside
    from hypothesis import given, strategies as st

    ENGINE = load_rules("policies/examples/story")

    @given(identity=any_identity(ENGINE, role_name="dev-role"), path=paths_inside("/prod/*"),
           capability=st.sampled_from(["read", "create", "update", "delete", "list"]))
    def test_nothing_grants_prod_to_dev_role(identity, path, capability):
        assert not ENGINE.decide(identity, capability, path).allowed

``policies/README.md`` has more (logins, accounts, paths outside a pattern).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cedarkey.engine.auth_method import ACCESS_KEY, AWS_IAM, AuthMethod
from cedarkey.engine.engine import Engine
from cedarkey.engine.errors import ModelError
from cedarkey.engine.glob import glob_match
from cedarkey.engine.identity import PRINCIPAL_TYPES, STRING_ATTRIBUTES, Identity
from cedarkey.engine.path import canonical_path

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = [
    "any_identity",
    "load_rules",
    "logins",
    "model_values",
    "paths",
    "paths_inside",
    "paths_outside",
    "segments",
]

#: Attribute values that show up in AWS identities, used beside random text.
_SAMPLE_VALUES: dict[str, list[str]] = {
    "account": ["123456789012", "210987654321", "111111111111"],
    "role_name": ["dev-role", "prod-role", "ops-role", "admin"],
    "session_name": ["i-0abc1234def567890", "alice", "build-42"],
    "resource_id": ["i-0abc1234def567890"],
    "user_name": ["alice", "bob"],
    "role_id": ["AROAEXAMPLE1", "AROAEXAMPLE2"],
    "user_id": ["AIDAEXAMPLE1"],
}


def load_rules(directory: str | os.PathLike[str], schema_text: str | None = None) -> Engine:
    """An engine serving exactly the rules directory, offline (see :mod:`cedarkey.policies.loader`, which does
    the reading: the engine itself does no I/O). Raises ``RuleFilesError`` listing every error of the files.
    An auth method's access id is ``offline_access_id(name)``; ``any_identity`` and ``logins`` fill it in."""
    from .loader import load_rules as load

    return load(directory, schema_text)


def _st() -> Any:
    try:
        from hypothesis import strategies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("cedarkey.policies.testing needs hypothesis: pip install 'cedarkey[dev]'") from exc
    return strategies


# --- paths ---------------------------------------------------------------------------------------------


def segments() -> SearchStrategy[str]:
    """One path segment: mostly readable names, sometimes any printable Unicode (never ``/``, ``*``, ``.``
    or ``..``)."""
    st = _st()
    readable = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1, max_size=8)
    unicode = st.text(st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="/*"), min_size=1, max_size=4)
    return st.one_of(readable, readable, unicode).filter(lambda s: s not in (".", ".."))


def _valid_path(path: str) -> bool:
    try:
        return canonical_path(path) == path
    except ModelError:
        return False


def paths(under: str = "") -> SearchStrategy[str]:
    """Canonical object paths, e.g. ``/dev/db-password``; with ``under="/prod"`` only paths below it."""
    st = _st()
    prefix = under.rstrip("/")
    return st.lists(segments(), min_size=1, max_size=4).map(lambda s: prefix + "/" + "/".join(s)).filter(_valid_path)


def paths_inside(pattern: str) -> SearchStrategy[str]:
    """Canonical paths that the rule pattern matches (each ``*`` filled with text, ``/`` included)."""
    st = _st()
    parts = pattern.split("*")
    filler = st.one_of(st.just(""), st.lists(segments(), min_size=1, max_size=3).map("/".join), segments())

    @st.composite
    def inside(draw: DrawFn) -> str:
        out = parts[0]
        for part in parts[1:]:
            out += draw(filler) + part
        return out

    return inside().filter(lambda p: _valid_path(p) and glob_match(pattern, p))


def paths_outside(pattern: str) -> SearchStrategy[str]:
    """Canonical paths the rule pattern does not match: arbitrary ones and near misses (a path inside,
    truncated, extended, or with one character changed)."""
    st = _st()

    @st.composite
    def near_miss(draw: DrawFn) -> str:
        path = draw(paths_inside(pattern))
        how = draw(st.sampled_from(["truncate", "extend", "change", "prefix"]))
        if how == "truncate" and len(path) > 2:
            return path[: draw(st.integers(2, len(path) - 1))]
        if how == "extend":
            return path + draw(st.sampled_from(["x", "/x", "-", "~"]))
        if how == "prefix":
            return "/" + draw(segments()) + path
        i = draw(st.integers(1, len(path) - 1)) if len(path) > 1 else 0
        replacement = draw(st.sampled_from("xyzXYZ0-_"))
        return path[:i] + (replacement if path[i] != replacement else "q") + path[i + 1 :]

    return st.one_of(near_miss(), near_miss(), paths()).filter(lambda p: _valid_path(p) and not glob_match(pattern, p))


# --- identities ----------------------------------------------------------------------------------------


def _fill_stars(pattern: str) -> SearchStrategy[str]:
    st = _st()
    parts = pattern.split("*")
    fill = st.one_of(st.just(""), st.text(st.sampled_from("abcdefgh0123456789-/:"), max_size=6))
    return st.tuples(*[fill for _ in parts[1:]]).map(
        lambda fills: parts[0] + "".join(f + p for f, p in zip(fills, parts[1:], strict=True))
    )


def model_values(engine: Engine) -> dict[str, list[str]]:
    """Per identity attribute, the values an engine's model mentions: bound values, sub-claim patterns
    (``*`` filled with ``x``) and a few usual AWS values: good material for identities that hit the rules."""
    values: dict[str, set[str]] = {k: set(v) for k, v in _SAMPLE_VALUES.items()}
    for am in engine.model.auth_methods.values():
        for binding, bound in am.bindings():
            for attr in binding.identity_attributes:
                values.setdefault(attr, set()).update(v.replace("*", "x") for v in bound)
    for assoc in engine.model.associations.values():
        for attr, patterns in assoc.sub_claims:
            values.setdefault(attr, set()).update(p.replace("*", "x") for p in patterns)
    return {k: sorted(v) for k, v in values.items()}


def _value(st: Any, pool: Iterable[str]) -> SearchStrategy[str]:
    pool = list(pool)
    text = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-:/*"), min_size=1, max_size=12)
    return st.one_of(st.sampled_from(pool), text) if pool else text


def _ips(st: Any) -> SearchStrategy[str]:
    return st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


def any_identity(engine: Engine, *, auth_method: str | None = None, **fixed: Any) -> SearchStrategy[Identity]:
    """Identities that came through one of ``engine``'s auth methods (or the one named), with each optional
    attribute absent, one the model mentions, or random. ``fixed`` pins attributes: a value, None (absent)
    or a strategy, e.g. ``account=st.text().filter(lambda a: a != "123456789012")``."""
    st = _st()
    ams = list(engine.model.auth_methods.values())
    if auth_method is not None:
        ams = [engine.model.auth_method(auth_method)]
    if not ams:
        raise ValueError("the engine has no auth method: no identity can come through one")
    pools = model_values(engine)

    @st.composite
    def identity(draw: DrawFn) -> Identity:
        am = draw(st.sampled_from(ams))
        attrs: dict[str, Any] = {"access_id": am.access_id, "auth_type": am.type}
        attrs["principal_type"] = "access-key" if am.type == ACCESS_KEY else draw(st.sampled_from(PRINCIPAL_TYPES))
        for attr in STRING_ATTRIBUTES:
            if draw(st.booleans()):
                attrs[attr] = draw(_value(st, pools.get(attr, ())))
        if draw(st.booleans()):
            attrs["source_ip"] = draw(_ips(st))
        for attr, value in fixed.items():
            attrs[attr] = draw(value) if isinstance(value, st.SearchStrategy) else value
        return Identity(**{k: v for k, v in attrs.items() if v is not None})

    return identity()


def logins(am: AuthMethod, *, satisfying: bool = True) -> SearchStrategy[Identity]:
    """Identities logging in through ``am`` that satisfy every one of its bindings (and ``bound_ips``), or,
    with ``satisfying=False``, that break at least one of them (the attribute absent, or a value none of the
    bound ones matches). ``access_expires`` is about the time of the login, not the identity: choose ``now``.
    """
    st = _st()
    conditions: list[tuple[str, Any]] = [(b.field, (b, values)) for b, values in am.bindings()]
    if am.bound_ips:
        conditions.append(("bound_ips", am.bound_ips))
    if not satisfying and not conditions:
        raise ValueError(f"{am.name} has no binding: every identity through it satisfies them")
    base = {"access_id": am.access_id, "auth_type": am.type}

    def matching(values: Iterable[str], wildcard: bool) -> SearchStrategy[str]:
        values = list(values)
        return st.one_of(*[_fill_stars(v) for v in values]) if wildcard else st.sampled_from(values)

    def not_matching(values: Iterable[str], wildcard: bool) -> SearchStrategy[str | None]:
        values = list(values)

        def misses(v: str) -> bool:
            return not any(glob_match(p, v) if wildcard else p == v for p in values)

        return st.one_of(st.none(), _value(st, _SAMPLE_VALUES.get("account", [])).filter(misses))

    def ip_inside(cidrs: Iterable[str]) -> SearchStrategy[str]:
        networks = [ipaddress.ip_network(c) for c in cidrs]
        return st.sampled_from(networks).flatmap(
            lambda n: st.integers(0, n.num_addresses - 1).map(lambda i: str(n.network_address + i))
        )

    def ip_outside(cidrs: Iterable[str]) -> SearchStrategy[str | None]:
        networks = [ipaddress.ip_network(c) for c in cidrs]
        return st.one_of(
            st.none(), _ips(st).filter(lambda ip: not any(ipaddress.ip_address(ip) in n for n in networks))
        )

    @st.composite
    def identity(draw: DrawFn) -> Identity:
        attrs: dict[str, Any] = dict(base)
        attrs["principal_type"] = "access-key" if am.type == ACCESS_KEY else "assumed-role"
        broken: set[int] = set()
        if not satisfying:
            broken = set(draw(st.sets(st.integers(0, len(conditions) - 1), min_size=1)))
        for n, (name, condition) in enumerate(conditions):
            if name == "bound_ips":
                attrs["source_ip"] = draw(ip_outside(condition) if n in broken else ip_inside(condition))
                continue
            binding, values = condition
            if n in broken:
                for attr in binding.identity_attributes:
                    attrs[attr] = draw(not_matching(values, binding.wildcard))
            else:
                attr = draw(st.sampled_from(binding.identity_attributes))
                attrs[attr] = draw(matching(values, binding.wildcard))
        if am.type == AWS_IAM and "session_name" not in attrs and draw(st.booleans()):
            attrs["session_name"] = draw(st.sampled_from(_SAMPLE_VALUES["session_name"]))
        return Identity(**{k: v for k, v in attrs.items() if v is not None})

    return identity()
