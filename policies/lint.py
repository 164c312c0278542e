"""Cross-checks of a parsed rules directory: references that do not resolve, and rules that can never take
effect (an allow covered by a deny that always applies with it), decided exactly with :mod:`cedarkey.engine.glob`."""

from __future__ import annotations

from cedarkey.engine import ModelError, RuleType, canonical_path
from cedarkey.engine.access_role import SubClaims
from cedarkey.engine.glob import fresh_char, glob_match, pattern_covers

from .diagnostics import Diagnostic, Source
from .rule_set import AssociationDef, RoleDef, RuleDef, RuleSet
from .toml_writer import toml_key


def sub_claims_imply(specific: SubClaims, general: SubClaims) -> bool:
    """Whether every identity that satisfies ``specific`` satisfies ``general`` (exact, see pattern_covers)."""
    mine = dict(specific)
    for attr, patterns in general:
        own = mine.get(attr)
        if own is None:  # an identity without the attribute satisfies specific, not general
            return False
        for p in own:
            c = fresh_char(p, *patterns)
            instance = p.replace("*", c)
            if not any(glob_match(g, instance) for g in patterns):
                return False
    return True


def cross_check(rs: RuleSet) -> None:
    def error(src: Source, message: str) -> None:
        rs.diagnostics.append(Diagnostic(src.file, src.line, message))

    def warn(src: Source, message: str) -> None:
        rs.diagnostics.append(Diagnostic(src.file, src.line, message, "warning"))

    for role in rs.roles.values():
        kept: list[AssociationDef] = []
        seen: dict[tuple[str, SubClaims], AssociationDef] = {}
        for n, a in enumerate(role.associations, start=1):
            if a.am_name not in rs.auth_methods:
                error(
                    a.source,
                    f"role {role.name}: association {n}: auth_method: unknown auth method {a.am_name} (define it "
                    f"as [auth_method.{toml_key(a.am_name)}], or name an access_key method of the server with "
                    'type = "access_key")',
                )
                continue
            if (a.am_name, a.sub_claims) in seen:
                first = seen[(a.am_name, a.sub_claims)]
                warn(a.source, f"role {role.name}: association {n}: duplicate of the association at {first.source}")
                continue
            seen[(a.am_name, a.sub_claims)] = a
            kept.append(a)
        role.associations = kept
        by_key: dict[tuple[RuleType, str], RuleDef] = {}
        for r in role.rules:
            earlier = by_key.get(r.rule.key)
            if earlier is not None:
                warn(
                    earlier.source,
                    f"role {role.name}: rule {earlier.number}: duplicate rule ({r.rule.rule_type} on "
                    f"{r.rule.path}): replaced by rule {r.number} at {r.source}, so it never takes effect",
                )
            by_key[r.rule.key] = r
        role.rules = list(by_key.values())
        if role.rules and not role.associations:
            warn(role.source, f"role {role.name}: no association: none of its rules ever takes effect")
    for r_role, r, deny_role, deny in _covered_allows(rs):
        where = "" if deny_role.name == r_role.name else f" of role {deny_role.name}"
        warn(
            r.source,
            f"role {r_role.name}: rule {r.number} ({r.rule.rule_type} on {r.rule.path}) never takes effect: "
            f"the deny on {deny.rule.path}{where} at {deny.source} covers every path it matches, for every "
            "identity that holds it",
        )
    for case in rs.tests:
        ref = case.identity.get("$ref")
        if ref is not None and ref not in rs.identities:
            error(case.source, f"test {case.name!r}: identity: no [identity.{ref}] defined")
        name = case.identity.get("auth_method") if ref is None else rs.identities.get(ref, {}).get("auth_method")
        if isinstance(name, str):
            try:
                path = canonical_path(name, "auth_method")
            except ModelError:
                path = name
            if path not in rs.auth_methods:
                error(case.source, f"test {case.name!r}: identity: auth_method: unknown auth method {name}")


def _covered_allows(rs: RuleSet) -> list[tuple[RoleDef, RuleDef, RoleDef, RuleDef]]:
    """Allow rules that can never take effect: for each association of their role (each way of holding it)
    some deny rule of the same rule type covering the allow's pattern applies to every identity holding the
    role that way: a deny of a role associated with the same auth method whose sub-claims follow from the
    allow's association's. Its own role's denies are the common case."""
    denies: list[tuple[RoleDef, RuleDef, AssociationDef]] = [
        (role, r, a) for role in rs.roles.values() for r in role.rules if r.rule.is_deny for a in role.associations
    ]
    out: list[tuple[RoleDef, RuleDef, RoleDef, RuleDef]] = []
    for role in rs.roles.values():
        if not role.associations:
            continue
        for r in role.rules:
            if r.rule.is_deny:
                continue
            covering: tuple[RoleDef, RuleDef] | None = None
            for assoc in role.associations:
                found = None
                for d_role, d, d_assoc in denies:
                    if (
                        d.rule.rule_type == r.rule.rule_type
                        and d_assoc.am_name == assoc.am_name
                        and sub_claims_imply(assoc.sub_claims, d_assoc.sub_claims)
                        and pattern_covers(d.rule.path, r.rule.path)
                    ):
                        found = (d_role, d)
                        if d_role is role:
                            break
                if found is None:
                    covering = None
                    break
                if covering is None or found[0] is role:
                    covering = found
            if covering is not None:
                out.append((role, r, covering[0], covering[1]))
    return out
